"""A task's diff, checked against the real git CLI on real repositories."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import orjson
import pytest

from armor_rx.errors import CheckpointNotFound, GitError, TaskNotFound
from armor_rx.sinks.git import CheckpointPolicy, FileChange, GitWorkspace, TaskDiff

from .conftest import GIT_ENV, Events, fsck, git, make_repo, started

STATUS = {"A": "added", "M": "modified", "D": "deleted", "T": "type-changed"}


def git_changes(repo: Path, old: str, new: str) -> list[tuple[str, str]]:
    """``git diff --name-status`` between two tree-ishes, as (path, status)."""
    out = git(repo, "diff", "--no-renames", "--name-status", "-z", old, new).split("\0")
    return [(path, STATUS[letter]) for letter, path in zip(out[0::2], out[1::2])]


def git_patch(repo: Path, old: str, new: str) -> str:
    """``git diff`` between two tree-ishes, byte for byte (a carriage return stays one)."""
    done = subprocess.run(
        ["git", "diff", "--no-renames", "--no-color", old, new],
        cwd=repo, env={**os.environ, **GIT_ENV}, capture_output=True, check=True,
    )
    return done.stdout.decode("utf-8", "replace")


def apply_to(repo: Path, tmp_path: Path, commit: str, patch: str) -> str:
    """Apply ``patch`` onto ``commit`` in a fresh clone; the resulting tree id."""
    clone = tmp_path / f"clone-{commit[:7]}-{os.urandom(3).hex()}"
    git(tmp_path, "clone", "-q", "--no-checkout", str(repo), str(clone))
    git(clone, "checkout", "-q", "--detach", commit)
    (tmp_path / "p.patch").write_bytes(patch.encode())
    git(clone, "apply", "--check", str(tmp_path / "p.patch"))
    git(clone, "apply", "--index", str(tmp_path / "p.patch"))
    return git(clone, "write-tree").strip()


def test_changes_against_base_match_git_and_the_patch_applies(ws: GitWorkspace, repo: Path, tmp_path: Path) -> None:
    path = started(ws, "edits")
    base = git(repo, "rev-parse", "HEAD").strip()
    (path / "README.md").write_text("hello\nworld\n")  # modified
    (path / "new.txt").write_text("brand new\nno newline at the end")  # added
    (path / "empty.txt").write_text("")  # added, empty
    (path / "src" / "app.py").unlink()  # deleted
    (path / "run.sh").chmod(0o644)  # mode only
    (path / "link").unlink()
    (path / "link").write_text("a file now\n")  # symlink -> file
    os.symlink("README.md", path / "readme-link")  # new symlink
    (path / "deep" / "er").mkdir(parents=True)
    (path / "deep" / "er" / "crlf.txt").write_bytes(b"one\r\ntwo\rthree\n")

    diff = ws.diff("edits")

    assert diff.against == "base" and diff.old_commit == base and not diff.truncated
    assert [(f.path, f.status) for f in diff.files] == git_changes(repo, base, diff.new_tree)
    by_path = {f.path: f for f in diff.files}
    assert by_path["run.sh"] == FileChange("run.sh", "modified", 0o100755, 0o100644)
    assert by_path["link"] == FileChange("link", "type-changed", 0o120000, 0o100644)
    assert by_path["readme-link"] == FileChange("readme-link", "added", None, 0o120000)
    assert by_path["src/app.py"] == FileChange("src/app.py", "deleted", 0o100644, None)
    # Simple edits: the same bytes git prints; and the patch rebuilds the scanned tree on the base.
    assert diff.patch == git_patch(repo, base, diff.new_tree)
    assert apply_to(repo, tmp_path, base, diff.patch) == diff.new_tree


def test_binary_files_say_they_differ(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "bin")
    base = git(repo, "rev-parse", "HEAD").strip()
    (path / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    (path / "README.md").write_bytes(b"hello\x00binary now\n")
    diff = ws.diff("bin")
    assert "Binary files /dev/null and b/blob.bin differ\n" in diff.patch
    assert "Binary files a/README.md and b/README.md differ\n" in diff.patch
    assert diff.patch == git_patch(repo, base, diff.new_tree)


def test_names_are_quoted_like_git(ws: GitWorkspace, repo: Path, tmp_path: Path) -> None:
    (repo / "my notes.txt").write_text("old\n")
    (repo / "gone file.txt").write_text("bye\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "names with spaces")
    path = started(ws, "names")
    base = git(repo, "rev-parse", "HEAD").strip()
    (path / "my notes.txt").write_text("new\n")
    (path / "gone file.txt").unlink()
    (path / "caf\u00e9 menu.txt").write_text("espresso\n")
    (path / 'tab\there "q"').write_text("odd\n")
    diff = ws.diff("names")
    assert '"b/caf\\303\\251 menu.txt"' in diff.patch
    assert diff.patch == git_patch(repo, base, diff.new_tree)
    assert apply_to(repo, tmp_path, base, diff.patch) == diff.new_tree


def test_a_moved_submodule(ws: GitWorkspace, repo: Path, tmp_path: Path) -> None:
    lib = make_repo(tmp_path / "lib")
    git(repo, "submodule", "add", "-q", str(lib), "lib")
    git(repo, "commit", "-q", "-m", "add a submodule")
    path = started(ws, "sub")
    git(path, "submodule", "update", "--init", "-q", "lib")
    (path / "lib" / "extra.txt").write_text("e\n")
    git(path / "lib", "add", "extra.txt")
    git(path / "lib", "commit", "-q", "-m", "moved on")
    diff = ws.diff("sub")
    assert diff.files == (FileChange("lib", "modified", 0o160000, 0o160000),)
    assert "+Subproject commit " + git(path / "lib", "rev-parse", "HEAD").strip() in diff.patch
    assert diff.patch == git_patch(repo, git(repo, "rev-parse", "HEAD").strip(), diff.new_tree)


def test_against_a_checkpoint(ws: GitWorkspace, repo: Path, tmp_path: Path) -> None:
    path = started(ws, "since")
    (path / "a.txt").write_text("one\n")
    cp = ws.checkpoint("since")
    (path / "a.txt").write_text("one\ntwo\n")
    (path / "b.txt").write_text("b\n")

    diff = ws.diff("since", "cp-1")

    assert (diff.against, diff.old_commit) == ("cp-1", cp.commit)
    assert [(f.path, f.status) for f in diff.files] == [("a.txt", "modified"), ("b.txt", "added")]
    assert diff.patch == git_patch(repo, cp.commit, diff.new_tree)
    assert apply_to(repo, tmp_path, cp.commit, diff.patch) == diff.new_tree
    assert ws.diff("since", "1") == diff  # any name the checkpoint answers to
    assert [f.path for f in ws.diff("since").files] == ["a.txt", "b.txt"]  # against base: a.txt is added


def test_unchanged_worktree_has_an_empty_diff(ws: GitWorkspace, repo: Path) -> None:
    started(ws, "same")
    diff = ws.diff("same")
    assert diff.files == () and diff.patch == "" and not diff.truncated
    assert diff.new_tree == git(repo, "rev-parse", "HEAD^{tree}").strip()


def test_symlinks_are_not_followed_out_of_the_worktree(ws: GitWorkspace, tmp_path: Path) -> None:
    path = started(ws, "links")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("do not read\n")
    os.symlink(str(outside), path / "out-dir")
    os.symlink(str(outside / "secret.txt"), path / "out-file")
    diff = ws.diff("links")
    assert [(f.path, f.new_mode) for f in diff.files] == [("out-dir", 0o120000), ("out-file", 0o120000)]
    assert "do not read" not in diff.patch
    assert f"+{outside / 'secret.txt'}\n\\ No newline at end of file" in diff.patch


def test_state_directory_and_excludes_never_appear(repo: Path, tmp_path: Path) -> None:
    # The default layout: the state directory (and so the worktrees) inside the repository.
    policy = CheckpointPolicy(excludes=("*.log",))
    with GitWorkspace(repo, repo / ".armor", checkpoint_policy=policy) as ws:
        path = started(ws, "inside")
        (path / "kept.txt").write_text("k\n")
        (path / "noise.log").write_text("excluded\n")
        (path / ".gitignore").write_text("ignored.txt\n")
        (path / "ignored.txt").write_text("i\n")
        (path / ".armor-tmp-0123456789ab-1").write_text("a crashed restore's temp file\n")
        diff = ws.diff("inside")
        assert [f.path for f in diff.files] == [".gitignore", "kept.txt"]
        assert ".armor" not in diff.patch.replace(".armor-tmp", "")  # no state path at all
        assert ".armor-tmp" not in diff.patch and "noise.log" not in diff.patch
    fsck(repo)


def test_files_the_scan_skips_for_size_are_not_shown_as_deleted(repo: Path, tmp_path: Path) -> None:
    (repo / "logo.png").write_bytes(b"P" * 5000)
    git(repo, "add", "logo.png")
    git(repo, "commit", "-q", "-m", "a big tracked file")
    with GitWorkspace(repo, tmp_path / "s", checkpoint_policy=CheckpointPolicy(max_file_size=1000)) as ws:
        path = started(ws, "big")
        (path / "README.md").write_text("changed\n")
        diff = ws.diff("big")
    assert [f.path for f in diff.files] == ["README.md"] and diff.skipped == ("logo.png",)


def test_patch_is_capped(ws: GitWorkspace) -> None:
    path = started(ws, "huge")
    for i in range(20):
        (path / f"gen{i:02}.txt").write_text("".join(f"line {n}\n" for n in range(200)))
    (path / "zz-huge.txt").write_text("x" * 5000 + "\n")

    diff = ws.diff("huge", max_patch_bytes=4000)

    assert diff.truncated and len(diff.patch.encode()) <= 4000 and diff.patch.endswith("\n")
    assert len(diff.files) == 21  # every change is listed, whatever the patch holds
    whole = ws.diff("huge")
    assert not whole.truncated and whole.patch.startswith(diff.patch)
    # A file bigger than the cap is left out of the patch, the smaller ones are kept.
    big = ws.diff("huge", max_patch_bytes=3000)
    assert big.truncated and "zz-huge.txt" not in big.patch


def test_payload_round_trip(ws: GitWorkspace) -> None:
    path = started(ws, "json")
    (path / "README.md").write_text("caf\u00e9\n")
    (path / "bin").write_bytes(b"\x00\xff")
    os.chmod(path / "run.sh", 0o644)
    diff = ws.diff("json")
    payload = diff.to_payload()
    assert TaskDiff.from_payload(json.loads(json.dumps(payload))) == diff
    assert TaskDiff.from_payload(orjson.loads(orjson.dumps(payload))) == diff
    with pytest.raises(ValueError, match="unknown file change status 'renamed'"):
        FileChange.from_payload({"path": "a", "status": "renamed", "old_mode": None, "new_mode": None})


def test_unknown_task_checkpoint_or_worktree(ws: GitWorkspace) -> None:
    started(ws, "known")
    with pytest.raises(CheckpointNotFound, match=r"no checkpoint 'cp-7'.*armor-rx checkpoints known"):
        ws.diff("known", "cp-7")
    with pytest.raises(TaskNotFound):
        ws.diff("ghost")
    ws.create_branch("branch-only")
    with pytest.raises(GitError, match="has no worktree"):
        ws.diff("branch-only")


def test_diff_records_nothing(ws: GitWorkspace, repo: Path, events: Events) -> None:
    path = started(ws, "quiet")
    ws.checkpoint("quiet")
    (path / "README.md").write_text("changed\n")
    refs = git(repo, "for-each-ref")
    seen = list(events.items)
    cache = ws.git_dir / "cache" / "quiet.json"
    cached = cache.read_bytes() if cache.exists() else None
    ws.diff("quiet")
    ws.diff("quiet", "cp-1")
    assert git(repo, "for-each-ref") == refs
    assert events.items == seen
    assert (cache.read_bytes() if cache.exists() else None) == cached
    assert [cp.id for cp in ws.checkpoints("quiet")] == ["cp-1"]


def test_session_diff(repo: Path) -> None:
    from armor_rx import Armor

    with Armor(repo) as armor:
        armor.create_task("fix")
        armor.start("fix")
        (armor.worktree("fix") / "fix.py").write_text("fixed = True\n")
        cp = armor.checkpoint("fix").payload["checkpoint"]
        (armor.worktree("fix") / "README.md").unlink()
        before = [e.kind for e in armor.history(task_id="fix")]

        base = armor.diff("fix")
        since = armor.diff("fix", cp)

        assert [(f.path, f.status) for f in base.files] == [("README.md", "deleted"), ("fix.py", "added")]
        assert [(f.path, f.status) for f in since.files] == [("README.md", "deleted")]
        assert not any(f.path.startswith(".armor") for f in base.files)
        assert [e.kind for e in armor.history(task_id="fix")] == before
        with pytest.raises(CheckpointNotFound, match="armor-rx checkpoints fix"):
            armor.diff("fix", "cp-99")
        with pytest.raises(TaskNotFound):
            armor.diff("nope")
        armor.create_task("idle")
        with pytest.raises(GitError, match="has not started"):
            armor.diff("idle")
