"""Branches and worktrees, checked with the git CLI."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from armor_rx.errors import GitError, PathEscape, WorktreeDirty
from armor_rx.sinks.git import GitWorkspace

from .conftest import Events, git, started


def test_branch_and_worktree_visible_to_git(ws: GitWorkspace, repo: Path, events: Events) -> None:
    branch = ws.create_branch("fix-login")
    assert branch == "task/fix-login"
    path = ws.add_worktree("fix-login", branch)
    assert path == ws.state_dir / "worktrees" / "fix-login"
    listing = git(repo, "worktree", "list", "--porcelain")
    assert f"worktree {path}" in listing
    assert "branch refs/heads/task/fix-login" in listing
    assert "nothing to commit, working tree clean" in git(path, "status")
    assert (path / "run.sh").stat().st_mode & 0o100
    assert (path / "link").is_symlink()
    # plain git can work in it
    (path / "new.txt").write_text("x\n")
    git(path, "add", "new.txt")
    git(path, "commit", "-q", "-m", "by hand")
    assert "by hand" in git(repo, "log", "--oneline", "task/fix-login")
    assert events.kinds() == ["git.branch.requested", "git.branch.created", "git.worktree.created"]
    # the user's checkout does not see the state dir
    assert git(repo, "status", "--porcelain") == ""


def test_add_worktree_is_idempotent(ws: GitWorkspace) -> None:
    path = started(ws, "again")
    assert ws.add_worktree("again", "task/again") == path


def test_branch_conflict_gets_unique_suffix(ws: GitWorkspace, repo: Path, events: Events) -> None:
    first = ws.create_branch("dup")
    second = ws.create_branch("dup")
    assert first == "task/dup" and second.startswith("task/dup-") and second != first
    assert events.of("git.branch.conflict")[0]["branch"] == "task/dup"
    assert second in git(repo, "branch", "--list", "task/*")


def test_fifty_threads_get_fifty_branches(ws: GitWorkspace, repo: Path) -> None:
    names: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(50)

    def ask() -> None:
        barrier.wait()
        try:
            names.append(ws.create_branch("same"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(names)) == 50
    listed = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/task/").split()
    assert sorted(listed) == sorted(names)


def test_base_ref_and_bad_base(ws: GitWorkspace, repo: Path) -> None:
    git(repo, "branch", "other")
    assert ws.create_branch("on-other", "other") == "task/on-other"
    assert ws.records.require("on-other").base_branch == "refs/heads/other"
    with pytest.raises(GitError, match="cannot resolve revision 'nope'"):
        ws.create_branch("x", "nope")


def test_remove_refuses_dirty_then_checkpoints(ws: GitWorkspace, repo: Path, events: Events) -> None:
    path = started(ws, "dirty")
    (path / "README.md").write_text("changed\n")
    (path / "untracked.txt").write_text("new\n")
    with pytest.raises(WorktreeDirty, match="2 changed path"):
        ws.remove_worktree("dirty", on_dirty="refuse")
    assert path.exists()
    ws.remove_worktree("dirty")
    assert not path.exists()
    assert str(path) not in git(repo, "worktree", "list")
    cps = ws.checkpoints("dirty")
    assert len(cps) == 1
    assert git(repo, "show", f"{cps[0].commit}:untracked.txt") == "new\n"
    assert events.of("git.worktree.removed")[0]["checkpoint"] == cps[0].id
    # The stat cache went with the worktree (the checkpoints stay).
    assert not list((ws.git_dir / "cache").glob("dirty.json*"))


def test_remove_clean_makes_no_checkpoint(ws: GitWorkspace) -> None:
    started(ws, "clean")
    ws.remove_worktree("clean", on_dirty="refuse")
    assert ws.checkpoints("clean") == []


def test_prune_stale(ws: GitWorkspace, repo: Path, events: Events) -> None:
    keep = started(ws, "keep")
    gone = started(ws, "gone")
    (gone / "work.txt").write_text("unsaved\n")
    lost = started(ws, "lost")
    import shutil

    shutil.rmtree(lost)  # directory deleted behind our back: git admin entry is stale
    pruned = ws.prune_stale({"keep"})
    assert sorted(pruned) == ["gone", "lost"]
    assert keep.exists() and not gone.exists()
    listing = git(repo, "worktree", "list", "--porcelain")
    assert str(keep) in listing and str(gone) not in listing and str(lost) not in listing
    assert "work.txt" in git(repo, "ls-tree", "-r", "--name-only", "refs/armor/checkpoints/gone")
    assert len(events.of("git.worktree.pruned")) == 2


def test_resolve_path(ws: GitWorkspace) -> None:
    path = started(ws, "paths")
    assert ws.resolve_path("paths", "src/app.py") == path.resolve() / "src" / "app.py"
    with pytest.raises(PathEscape):
        ws.resolve_path("paths", "../../etc/passwd")


def test_not_a_repo(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not a git repository"):
        GitWorkspace(tmp_path, tmp_path / "state").start()


def test_remove_without_a_record_checks_against_the_worktree_head(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "orphan")
    (path / "work.py").write_text("precious\n")
    ws.records.delete("orphan")
    with pytest.raises(WorktreeDirty):
        ws.remove_worktree("orphan", on_dirty="refuse")
    assert (path / "work.py").read_text() == "precious\n"
    ws.remove_worktree("orphan")  # saved first
    assert not path.exists()
    assert git(repo, "show", "refs/armor/checkpoints/orphan:work.py") == "precious\n"
    clean = started(ws, "orphan2")
    ws.records.delete("orphan2")
    ws.remove_worktree("orphan2", on_dirty="refuse")  # matches its HEAD: nothing to save
    assert not clean.exists() and ws.checkpoints("orphan2") == []


def test_prune_stale_keeps_going_past_refusals_and_locked(ws: GitWorkspace, repo: Path, events: Events) -> None:
    nested = started(ws, "a-nested")
    (nested / "lib").mkdir()
    git(nested / "lib", "init", "-q")
    locked = started(ws, "b-locked")
    (locked / "work.txt").write_text("mine\n")
    git(repo, "worktree", "lock", str(locked))
    plain = started(ws, "c-plain")
    pruned = ws.prune_stale(set())
    assert pruned == ["c-plain"] and not plain.exists()
    assert nested.exists() and locked.exists() and (locked / "work.txt").exists()
    kept = {p["path"]: p["reason"] for p in events.of("git.worktree.kept")}
    assert kept[str(locked)] == "locked" and "nested repository" in kept[str(nested)]
    git(repo, "worktree", "unlock", str(locked))
    import shutil

    shutil.rmtree(nested / "lib" / ".git")
    ws.prune_stale(set())


def test_a_worktree_with_the_same_name_is_never_deleted(ws: GitWorkspace, repo: Path, tmp_path: Path) -> None:
    """The user's locked worktree on an unplugged drive shares the task's name: its admin dir stays."""
    usb = tmp_path / "usb"
    git(repo, "worktree", "add", "-q", "-b", "mine", str(usb / "fix-login"))
    git(repo, "worktree", "lock", "--reason", "on a USB stick", str(usb / "fix-login"))
    (usb / "fix-login" / "staged.txt").write_text("staged work\n")
    git(usb / "fix-login", "add", "staged.txt")
    usb.rename(tmp_path / "unplugged")
    path = started(ws, "fix-login")
    (tmp_path / "unplugged").rename(usb)
    listing = git(repo, "worktree", "list", "--porcelain")
    assert str(usb / "fix-login") in listing and str(path) in listing and "locked on a USB stick" in listing
    assert git(usb / "fix-login", "status", "--porcelain") == "A  staged.txt\n"
    assert git(path, "status", "--porcelain") == ""
    ws.remove_worktree("fix-login")
    assert git(usb / "fix-login", "status", "--porcelain") == "A  staged.txt\n"


def test_a_stale_admin_dir_of_ours_is_reclaimed(ws: GitWorkspace, repo: Path) -> None:
    import shutil

    first = started(ws, "again")
    shutil.rmtree(first)  # gone behind our back; its admin dir is stale
    ws.records.delete("again")
    path = ws.add_worktree("again", "task/again")
    assert sorted(p.name for p in (repo / ".git" / "worktrees").iterdir()) == ["again"]
    assert git(path, "status", "--porcelain") == ""
