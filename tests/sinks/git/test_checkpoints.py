"""Checkpoints on refs/armor/checkpoints/<task>: capture, restore, retention."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from armor_rx.errors import CheckpointNotFound, CheckpointsOwnedElsewhere, GitError
from armor_rx.sinks.git import CheckpointPolicy, GitWorkspace, blobs
from armor_rx.sinks.git.checkpoints import CheckpointStore

from .conftest import Events, fsck, git, started


def snapshot(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every file under root (not .git) as (kind+mode, content)."""
    out: dict[str, tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git" and not os.path.islink(os.path.join(dirpath, d))]
        names = filenames + [d for d in os.listdir(dirpath) if os.path.islink(os.path.join(dirpath, d)) and d not in filenames]
        for name in names:
            if name == ".git":
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                out[rel] = ("link", os.fsencode(os.readlink(full)))
            else:
                exe = bool(os.stat(full).st_mode & stat.S_IXUSR)
                out[rel] = ("exe" if exe else "file", Path(full).read_bytes())
    return out


def test_checkpoint_is_a_commit_on_a_shadow_ref(ws: GitWorkspace, repo: Path, events: Events) -> None:
    path = started(ws, "cp")
    branch_tip = git(repo, "rev-parse", "task/cp").strip()
    (path / "README.md").write_text("edited\n")
    (path / "new.txt").write_text("untracked\n")
    (path / "src" / "app.py").unlink()
    cp = ws.checkpoint("cp", "first")
    assert cp.id == "cp-1"
    assert git(repo, "rev-parse", "refs/armor/checkpoints/cp").strip() == cp.commit
    assert git(repo, "rev-parse", "task/cp").strip() == branch_tip  # branch untouched
    files = git(repo, "ls-tree", "-r", "--name-only", cp.commit).split()
    assert "new.txt" in files and "src/app.py" not in files
    assert git(repo, "show", f"{cp.commit}:README.md") == "edited\n"
    assert "first" in git(repo, "log", "refs/armor/checkpoints/cp")
    assert events.of("checkpoint.created")[0]["checkpoint"] == "cp-1"
    cp2 = ws.checkpoint("cp")
    assert [c.id for c in ws.checkpoints("cp")] == ["cp-1", "cp-2"]
    assert git(repo, "rev-parse", f"{cp2.commit}^1").strip() == cp.commit
    assert git(repo, "rev-parse", f"{cp2.commit}^2").strip() == branch_tip
    log = git(repo, "log", "--format=%s", "refs/armor/checkpoints/cp")
    assert "first" in log and "initial" in log


def test_modes_and_symlinks_are_kept(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "modes")
    cp = ws.checkpoint("modes")
    listing = git(repo, "ls-tree", "-r", cp.commit)
    assert "100755 blob" in listing.split("run.sh")[0].splitlines()[-1]
    assert any(line.startswith("120000") and line.endswith("link") for line in listing.splitlines())


def test_excludes_gitignore_and_size_limit(repo: Path, tmp_path: Path, events: Events) -> None:
    policy = CheckpointPolicy(excludes=("*.log", "build/"), max_file_size=1000)
    with GitWorkspace(repo, tmp_path / "s2", emit=events, checkpoint_policy=policy) as ws:
        path = started(ws, "ex")
        (path / "a.log").write_text("log\n")
        (path / "build").mkdir()
        (path / "build" / "out.o").write_text("obj\n")
        (path / ".gitignore").write_text("secret.txt\n")
        (path / "secret.txt").write_text("s\n")
        (path / "big.bin").write_bytes(b"x" * 5000)
        (path / "keep.txt").write_text("k\n")
        cp = ws.checkpoint("ex")
        files = git(repo, "ls-tree", "-r", "--name-only", cp.commit).split()
        assert "keep.txt" in files and ".gitignore" in files
        assert not {"a.log", "build/out.o", "secret.txt", "big.bin"} & set(files)
        assert cp.skipped == ("big.bin",)
        # restore leaves excluded files alone
        (path / "keep.txt").unlink()
        ws.restore("ex", cp.id)
        assert (path / "keep.txt").exists() and (path / "a.log").exists() and (path / "big.bin").exists()
    fsck(repo)


def test_incremental_scan_rehashes_only_changes(ws: GitWorkspace) -> None:
    path = started(ws, "inc")
    for i in range(30):
        (path / f"f{i}.txt").write_text(f"{i}\n")
    store = ws.checkpoints_store
    first = store.scan("inc", path)
    # make the cache trustworthy (entries younger than the racy window are re-hashed)
    cache = store.stat_cache("inc")
    cache.save(first.dirs, 10**19, first.trees, first.tree)
    (path / "f3.txt").write_text("changed\n")
    second = store.scan("inc", path)
    assert second.hashed == 1
    assert second.tree != first.tree
    assert second.trees["src"] == first.trees["src"]  # untouched directory reused as is
    # A cache whose root tree is gone from the store (git gc) is not trusted.
    cache.save(second.dirs, 10**19, second.trees, b"0" * 40)
    third = store.scan("inc", path)
    assert third.hashed == len(third.cache)
    assert third.tree == second.tree


def test_large_file_is_streamed(ws: GitWorkspace, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobs, "SMALL_FILE", 1024)
    monkeypatch.setattr(blobs, "CHUNK", 4096)
    path = started(ws, "large")
    data = os.urandom(100_000) + b"tail"
    (path / "big.bin").write_bytes(data)
    cp = ws.checkpoint("large")
    sha = git(repo, "rev-parse", f"{cp.commit}:big.bin").strip()
    assert git(repo, "hash-object", str(path / "big.bin")).strip() == sha
    (path / "big.bin").write_bytes(b"other")
    ws.restore("large", cp.id)
    assert (path / "big.bin").read_bytes() == data


def _random_edit(rng: random.Random, root: Path, step: int) -> None:
    files = [p for p in root.rglob("*") if (p.is_file() or p.is_symlink()) and ".git" not in p.parts]
    for _ in range(rng.randint(1, 8)):
        action = rng.choice(["add", "edit", "delete", "chmod", "link", "dir-to-file"])
        files = [f for f in files if os.path.lexists(f)]  # an earlier action may have removed some
        if action == "add" or not files:
            d = root / rng.choice(["", "src", "deep/er/dir", "n"])
            try:
                d.mkdir(parents=True, exist_ok=True)
            except (NotADirectoryError, FileExistsError):
                continue
            target = d / f"new{step}_{rng.randint(0, 999)}.txt"
            if not target.is_symlink() and not target.is_dir():
                target.write_bytes(os.urandom(rng.randint(0, 3000)))
        elif action == "edit":
            f = rng.choice(files)
            if not f.is_symlink():
                f.write_bytes(os.urandom(rng.randint(0, 2000)))
        elif action == "delete":
            f = rng.choice(files)
            f.unlink()
            files.remove(f)
        elif action == "chmod":
            f = rng.choice(files)
            if not f.is_symlink():
                f.chmod(f.stat().st_mode ^ 0o111)
        elif action == "link":
            target = root / f"ln{step}_{rng.randint(0, 99)}"
            if not os.path.lexists(target):
                os.symlink(rng.choice(["README.md", "missing", "src"]), target)
        elif action == "dir-to-file":
            d = root / "deep"
            if d.is_dir() and not d.is_symlink():
                import shutil

                shutil.rmtree(d)
                d.write_text("now a file\n")


@pytest.mark.parametrize("seed", range(12))
def test_restore_round_trip(ws: GitWorkspace, seed: int) -> None:
    rng = random.Random(seed)
    task = f"rt{seed}"
    path = started(ws, task)
    saved = []
    for step in range(4):
        _random_edit(rng, path, step)
        cp = ws.checkpoint(task)
        saved.append((cp.id, snapshot(path)))
    for cp_id, expected in rng.sample(saved, len(saved)):
        _random_edit(rng, path, 99)
        ws.restore(task, cp_id)
        assert snapshot(path) == expected, cp_id


def test_restore_checkpoints_unsaved_work_first(ws: GitWorkspace, events: Events) -> None:
    path = started(ws, "safe")
    cp = ws.checkpoint("safe")
    (path / "precious.txt").write_text("do not lose\n")
    ws.restore("safe", cp.id)
    assert not (path / "precious.txt").exists()
    restored = events.of("checkpoint.restored")[0]
    assert restored["safety_checkpoint"] == "cp-2"
    ws.restore("safe", "cp-2")
    assert (path / "precious.txt").read_text() == "do not lose\n"


def test_unknown_checkpoint(ws: GitWorkspace) -> None:
    started(ws, "nocp")
    with pytest.raises(CheckpointNotFound, match="no checkpoint 'cp-9'"):
        ws.restore("nocp", "cp-9")


def test_retention_drops_objects(repo: Path, tmp_path: Path, events: Events) -> None:
    policy = CheckpointPolicy(keep_last=2)
    with GitWorkspace(repo, tmp_path / "s3", emit=events, checkpoint_policy=policy) as ws:
        path = started(ws, "ret")
        blobs_made = []
        for i in range(4):
            (path / "data.bin").write_bytes(os.urandom(2000) + bytes([i]))
            ws.checkpoint("ret", f"n{i}")
            blobs_made.append(git(repo, "hash-object", str(path / "data.bin")).strip())
        cps = ws.checkpoints("ret")
        assert [c.id for c in cps] == ["cp-3", "cp-4"]
        assert [c.message for c in cps] == ["n2", "n3"]
        assert events.of("checkpoint.pruned")[-1]["checkpoints"] == ["cp-2"]
        ws.restore("ret", "cp-3")
        assert git(repo, "hash-object", str(path / "data.bin")).strip() == blobs_made[2]
    git(repo, "gc", "--prune=now", "-q")
    assert git(repo, "cat-file", "-e", blobs_made[0], check=False) == ""
    import subprocess

    gone = subprocess.run(["git", "cat-file", "-e", blobs_made[0]], cwd=repo)
    kept = subprocess.run(["git", "cat-file", "-e", blobs_made[3]], cwd=repo)
    assert gone.returncode != 0 and kept.returncode == 0
    fsck(repo)


def test_storage_cap(repo: Path, tmp_path: Path) -> None:
    policy = CheckpointPolicy(keep_last=None, max_bytes=5000)
    with GitWorkspace(repo, tmp_path / "s4", checkpoint_policy=policy) as ws:
        path = started(ws, "cap")
        for i in range(5):
            (path / f"r{i}.bin").write_bytes(os.urandom(3000))
            ws.checkpoint("cap")
        cps = ws.checkpoints("cap")
        assert sum(c.bytes_added for c in cps) <= 5000 or len(cps) == 1
        assert cps[-1].id == "cp-5"
    fsck(repo)


def test_branch_from_checkpoint(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "src-task")
    (path / "idea.txt").write_text("idea\n")
    cp = ws.checkpoint("src-task")
    branch = ws.branch_from_checkpoint(cp.id, "fork", source_task_id="src-task")
    assert branch == "task/fork"
    fork = ws.add_worktree("fork", branch)
    assert (fork / "idea.txt").read_text() == "idea\n"
    assert "nothing to commit" in git(fork, "status")
    assert git(repo, "rev-parse", f"{branch}^").strip() == cp.head


def test_tracked_files_survive_excludes_and_size_limit(repo: Path, tmp_path: Path, events: Events) -> None:
    """Excludes and max_file_size apply to untracked files: completion never deletes what it did not look at."""
    (repo / "data").mkdir()
    (repo / "data" / "train.csv").write_text("a,b\n")
    (repo / "app.log").write_text("tracked log\n")
    (repo / "logo.png").write_bytes(b"P" * 5000)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tracked files the policy would exclude")
    policy = CheckpointPolicy(excludes=("data/", "*.log"), max_file_size=1000)
    with GitWorkspace(repo, tmp_path / "s3", emit=events, checkpoint_policy=policy) as ws:
        path = started(ws, "keep")
        (path / "new.py").write_text("x\n")
        (path / "fresh.log").write_text("untracked log\n")
        cp = ws.checkpoint("keep")
        in_cp = git(repo, "ls-tree", "-r", "--name-only", cp.commit).split()
        assert {"data/train.csv", "app.log", "new.py"} <= set(in_cp) and "fresh.log" not in in_cp
        assert cp.skipped == ("logo.png",) and ws.checkpoints("keep")[-1].skipped == ("logo.png",)
        branch = ws.branch_from_checkpoint(cp.id, "child", source_task_id="keep")
        assert git(repo, "diff", "--name-status", "main", branch) == "A\tnew.py\n"
        result = ws.complete("keep", "done", merge="ff")
        assert result.merged
        assert git(repo, "diff", "--name-status", "HEAD~1", "HEAD") == "A\tnew.py\n"
        assert (repo / "data" / "train.csv").exists() and (repo / "app.log").exists()
        assert git(repo, "status", "--porcelain") == ""
    fsck(repo)


def test_restore_refuses_to_replace_what_it_never_saved(repo: Path, tmp_path: Path, events: Events) -> None:
    (repo / ".gitignore").write_text("*.env\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore env files")
    policy = CheckpointPolicy(max_file_size=1000)
    with GitWorkspace(repo, tmp_path / "s4", emit=events, checkpoint_policy=policy) as ws:
        path = started(ws, "spots")
        (path / "out").write_text("a file\n")
        one = ws.checkpoint("spots", "out is a file")
        (path / "out").unlink()
        (path / "out").mkdir()
        (path / "out" / "model.bin").write_bytes(b"x" * 5000)  # too large: never saved
        (path / "out" / "secrets.env").write_text("KEY=1\n")  # ignored: never saved
        (path / "out" / "notes.txt").write_text("notes\n")
        with pytest.raises(GitError, match=r"out/model.bin, out/secrets.env"):
            ws.restore("spots", one.id)
        assert (path / "out" / "model.bin").exists() and (path / "out" / "notes.txt").read_text() == "notes\n"
        (path / "out" / "model.bin").unlink()
        (path / "out" / "secrets.env").unlink()
        ws.restore("spots", one.id)  # only saved files in the way: fine
        assert (path / "out").read_text() == "a file\n"
        (path / "out").unlink()
        (path / "d").mkdir()
        (path / "d" / "f").write_text("x\n")
        two = ws.checkpoint("spots", "d is a directory")
        (path / "d" / "f").unlink()
        (path / "d").rmdir()
        (path / "d").write_bytes(b"y" * 5000)  # a large file where the target needs a directory
        with pytest.raises(GitError, match=r": d;"):
            ws.restore("spots", two.id)
        assert (path / "d").read_bytes() == b"y" * 5000
    fsck(repo)


def test_non_utf8_names_sort_as_git_does_and_the_cache_survives(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "bytes")
    raw = os.fsencode(path)
    old = 1_000_000_000  # well outside the racy window, so the cache keeps what it can
    for name in (b"\x80raw", "\u00e9t\u00e9".encode(), b"caf\xe9.txt", b"sub.txt", b"sub-a"):
        full = os.path.join(raw, name)
        with open(full, "wb") as f:
            f.write(name + b"\n")
        os.utime(full, (old, old))
    (path / "sub").mkdir()
    (path / "sub" / "x").write_text("x\n")
    os.mkdir(os.path.join(raw, b"d\xff"))
    with open(os.path.join(raw, b"d\xff", b"in"), "wb") as f:
        f.write(b"in\n")
    cp = ws.checkpoint("bytes")
    fsck(repo)
    assert ws.checkpoints_store.stat_cache("bytes").path.exists()
    assert ws.checkpoint("bytes").tree == cp.tree  # same files, same tree, cache or not
    os.unlink(os.path.join(raw, b"caf\xe9.txt"))
    ws.restore("bytes", cp.id)
    with open(os.path.join(raw, b"caf\xe9.txt"), "rb") as f:
        assert f.read() == b"caf\xe9.txt\n"


def test_names_that_mean_dot_git_elsewhere_are_skipped(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "aliases")
    (path / ".GIT" / "hooks").mkdir(parents=True)
    (path / ".GIT" / "hooks" / "post-checkout").write_text("#!/bin/sh\necho pwned\n")
    (path / "git~1").write_text("ntfs short name\n")
    (path / ".g\u200cit").mkdir()  # HFS+ ignores the zero-width non-joiner
    (path / ".g\u200cit" / "config").write_text("[core]\n")
    (path / "sub" / ".git").mkdir(parents=True)
    (path / "sub" / ".git" / "x").write_text("y\n")
    (path / ".gitignore").write_text("")
    (path / "GITHUB.md").write_text("fine\n")
    cp = ws.checkpoint("aliases")
    assert set(cp.skipped) == {".GIT", "git~1", ".g\u200cit"}
    files = git(repo, "ls-tree", "-r", "--name-only", "-z", cp.commit).split("\0")
    assert ".gitignore" in files and "GITHUB.md" in files
    assert not [f for f in files if f.lower().startswith((".git/", "git~", "sub/"))] and ".GIT/hooks/post-checkout" not in files
    result = ws.complete("aliases", "done", merge="ff")
    assert result.merged and not (repo / ".GIT").exists()
    fsck(repo)


def test_two_state_directories_never_share_a_task_checkpoint_ref(repo: Path, tmp_path: Path) -> None:
    with GitWorkspace(repo, tmp_path / "one") as one, GitWorkspace(repo, tmp_path / "two") as two:
        assert one.state_id and two.state_id and one.state_id != two.state_id
        # Both start a task 't' before either has checkpointed (branches differ by suffix).
        path_one = started(one, "t")
        path_two = started(two, "t")
        (path_one / "mine.txt").write_text("one\n")
        cp = one.checkpoint("t")
        assert cp.owner == one.state_id
        assert f"Armor-State: {one.state_id}" in git(repo, "log", "-1", "--format=%B", cp.commit)
        tip = git(repo, "rev-parse", "refs/armor/checkpoints/t").strip()
        (path_two / "theirs.txt").write_text("two\n")
        with pytest.raises(CheckpointsOwnedElsewhere) as refused:
            two.checkpoint("t")
        assert f"git update-ref -d refs/armor/checkpoints/t" in str(refused.value)
        with pytest.raises(CheckpointsOwnedElsewhere):
            two.restore("t", cp.id)
        assert (path_two / "theirs.txt").read_text() == "two\n"  # nothing touched
        # A new task with that id is refused before any branch is made.
        branches = git(repo, "branch", "--list", "task/*")
        with pytest.raises(CheckpointsOwnedElsewhere):
            two.create_branch("t")
        assert git(repo, "branch", "--list", "task/*") == branches
        assert git(repo, "rev-parse", "refs/armor/checkpoints/t").strip() == tip
        # The owner keeps going, also after a restart of its state directory.
        one.stop()
        one.start()
        assert one.checkpoint("t", "again").seq == 2
        # Following the message frees the id for the other state directory.
        git(repo, "update-ref", "-d", "refs/armor/checkpoints/t")
        assert two.checkpoint("t").seq == 1
    fsck(repo)


def test_retention_batches_its_rewrites_and_keeps_at_least_keep_last(repo: Path, tmp_path: Path, events: Events) -> None:
    policy = CheckpointPolicy(keep_last=10)
    with GitWorkspace(repo, tmp_path / "batch", emit=events, checkpoint_policy=policy) as ws:
        path = started(ws, "many")
        for n in range(1, 31):
            (path / "n.txt").write_text(f"{n}\n")
            ws.checkpoint("many", f"n{n}")
            ids = [c.seq for c in ws.checkpoints("many")]
            assert ids == list(range(ids[0], n + 1))  # contiguous, newest last
            assert min(n, 10) <= len(ids) <= 11
        # A prune drops two at a time (every other checkpoint), not one each time.
        pruned = events.of("checkpoint.pruned")
        assert pruned and all(len(p["checkpoints"]) == 2 for p in pruned)
        assert len(pruned) == 10
        # git sees the same chain: the kept checkpoints, then the task branch it started from.
        listed = git(repo, "log", "--format=%s", "--first-parent", "refs/armor/checkpoints/many").split()
        assert listed == [f"n{c.seq}" for c in reversed(ws.checkpoints("many"))] + ["initial"]
    fsck(repo)


def test_history_follows_the_ref_when_someone_else_moves_it(repo: Path, tmp_path: Path) -> None:
    with GitWorkspace(repo, tmp_path / "moved") as ws:
        path = started(ws, "mv")
        for n in range(5):
            (path / "n.txt").write_text(f"{n}\n")
            ws.checkpoint("mv", f"n{n}")
        assert [c.id for c in ws.checkpoints("mv")] == ["cp-1", "cp-2", "cp-3", "cp-4", "cp-5"]
        third = ws.checkpoints("mv")[2].commit
        git(repo, "update-ref", "refs/armor/checkpoints/mv", third)  # a user resets the ref
        assert [c.id for c in ws.checkpoints("mv")] == ["cp-1", "cp-2", "cp-3"]
        # Another store on the same repository prunes (rewrites every kept commit).
        other = CheckpointStore(ws.repo, tmp_path / "other-cache", b"x <x@y>", CheckpointPolicy(keep_last=1), ws.state_id)
        other.prune("mv")
        assert [(c.id, c.message) for c in ws.checkpoints("mv")] == [("cp-3", "n2")]
        assert ws.checkpoint("mv").id == "cp-4"
    fsck(repo)


def test_history_hands_out_copies(ws: GitWorkspace) -> None:
    path = started(ws, "copies")
    for n in range(3):
        (path / "n.txt").write_text(f"{n}\n")
        ws.checkpoint("copies")
    mine = ws.checkpoints("copies")
    mine.reverse()
    mine.clear()
    (path / "n.txt").write_text("more\n")
    ws.checkpoint("copies")
    assert [c.id for c in ws.checkpoints("copies")] == ["cp-1", "cp-2", "cp-3", "cp-4"]


def test_the_state_id_is_made_once_even_by_racing_starts(repo: Path, tmp_path: Path) -> None:
    import threading

    spaces = [GitWorkspace(repo, tmp_path / "racing") for _ in range(8)]
    barrier = threading.Barrier(len(spaces))
    errors: list[BaseException] = []

    def start(ws: GitWorkspace) -> None:
        barrier.wait()
        try:
            ws.start()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(ws,)) for ws in spaces]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({ws.state_id for ws in spaces}) == 1
    assert (tmp_path / "racing" / "git" / "id").read_text().strip() == spaces[0].state_id
    assert not list((tmp_path / "racing" / "git").glob("id.*"))
    for ws in spaces:
        ws.stop()
