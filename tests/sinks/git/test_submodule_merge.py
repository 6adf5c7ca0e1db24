"""The ``merge`` and ``rebase`` submodule strategies on real repositories with real submodules.

Each scenario makes a submodule whose checkout in the task's worktree has a
commit of its own while the superproject records another (so neither holds
the other), applies the strategy through :class:`GitWorkspace`, and checks
the result with the git CLI: ``git fsck --strict`` on both repositories,
``git submodule status`` in the worktree, and the submodule's history.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from armor_rx.errors import GitError, SubmoduleConflict
from armor_rx.sinks.git import GitWorkspace

from .conftest import Events, fsck, git, make_repo, started


def _head(path: Path) -> str:
    return git(path, "rev-parse", "HEAD").strip()


def _submodule_status(worktree: Path) -> str:
    return git(worktree, "submodule", "status", "lib").rstrip("\n")


def _fsck_module(worktree: Path) -> None:
    git_dir = git(worktree / "lib", "rev-parse", "--absolute-git-dir").strip()
    fsck(Path(git_dir))


@pytest.fixture
def diverged(ws: GitWorkspace, repo: Path, tmp_path: Path) -> tuple[GitWorkspace, Path, str, str]:
    """A task whose submodule ``lib`` has its own commit on top of an older commit than the recorded one.

    Returns (workspace, worktree, recorded commit, checked-out commit).
    """
    lib = make_repo(tmp_path / "lib")
    (lib / "notes.txt").write_text("one\ntwo\nthree\n")
    git(lib, "add", "notes.txt")
    git(lib, "commit", "-q", "-m", "notes")
    older = _head(lib)
    (lib / "upstream.txt").write_text("from upstream\n")
    git(lib, "add", "upstream.txt")
    git(lib, "commit", "-q", "-m", "upstream moves on")
    recorded = _head(lib)
    git(repo, "submodule", "add", "-q", str(lib), "lib")
    git(repo, "commit", "-q", "-m", "add lib")
    path = started(ws, "subs")
    git(path, "submodule", "update", "--init", "-q", "lib")
    # The agent works in the submodule from an older commit, on a branch of its own.
    git(path / "lib", "checkout", "-q", "-b", "agent-work", older)
    (path / "lib" / "mine.txt").write_text("the agent's work\n")
    git(path / "lib", "add", "mine.txt")
    git(path / "lib", "commit", "-q", "-m", "agent work")
    actual = _head(path / "lib")
    assert _submodule_status(path).startswith("+")  # git agrees: checked out is not what is recorded
    return ws, path, recorded, actual


def test_merge_makes_a_merge_commit_and_records_it(diverged: tuple[GitWorkspace, Path, str, str], repo: Path,
                                                    events: Events) -> None:
    ws, path, recorded, actual = diverged
    [status] = ws.submodules("subs", "merge")
    merged = _head(path / "lib")
    assert (status.state, status.action, status.actual, status.recorded) == ("clean", "merged", merged, merged)
    assert status.previous == (recorded, actual)
    assert git(path / "lib", "rev-list", "--parents", "-n1", "HEAD").split() == [merged, actual, recorded]
    assert git(path / "lib", "symbolic-ref", "HEAD").strip() == "refs/heads/agent-work"  # the agent's branch moved
    assert (path / "lib" / "mine.txt").read_text() == "the agent's work\n"
    assert (path / "lib" / "upstream.txt").read_text() == "from upstream\n"
    assert git(path / "lib", "status", "--porcelain") == ""
    # Recorded in the superproject: git sees the checkout as what is staged, and a checkpoint commits it.
    assert _submodule_status(path) == f" {merged} lib (heads/agent-work)"
    assert git(path, "diff", "--cached", "--submodule=short", "--name-only").split() == ["lib"]
    cp = ws.checkpoint("subs")
    assert git(repo, "ls-tree", cp.commit, "lib").split()[2] == merged
    payload = events.of("git.submodule.status")[-1]
    assert payload["action"] == "merged" and payload["previous"] == {"recorded": recorded, "actual": actual}
    fsck(repo)
    _fsck_module(path)


def test_rebase_replays_the_submodules_own_commits(diverged: tuple[GitWorkspace, Path, str, str], repo: Path) -> None:
    ws, path, recorded, actual = diverged
    (path / "lib" / "mine.txt").write_text("the agent's work, second go\n")
    git(path / "lib", "commit", "-q", "-am", "agent work 2")
    actual = _head(path / "lib")
    [status] = ws.submodules("subs", "rebase")
    rebased = _head(path / "lib")
    assert (status.state, status.action, status.actual) == ("clean", "rebased", rebased)
    # Linear: the two own commits, now on top of the recorded commit, same messages and author.
    log = git(path / "lib", "log", "--format=%P %s|%an", f"{recorded}..HEAD").splitlines()
    assert len(log) == 2
    assert log[1].startswith(recorded + " agent work|Test") and log[0].endswith("agent work 2|Test")
    git(path / "lib", "merge-base", "--is-ancestor", recorded, "HEAD")  # raises if not
    assert (path / "lib" / "mine.txt").read_text() == "the agent's work, second go\n"
    assert (path / "lib" / "upstream.txt").exists()
    assert git(path / "lib", "diff", actual, rebased, "--name-only").split() == ["upstream.txt"]
    assert _submodule_status(path).startswith(f" {rebased} lib")
    assert git(path / "lib", "status", "--porcelain") == ""
    fsck(repo)
    _fsck_module(path)


@pytest.mark.parametrize("strategy", ["merge", "rebase"])
def test_a_conflict_is_refused_and_changes_nothing(diverged: tuple[GitWorkspace, Path, str, str], repo: Path,
                                                   strategy: str) -> None:
    ws, path, recorded, _ = diverged
    # Upstream and the agent both change the same line of notes.txt.
    git(path / "lib", "checkout", "-q", recorded)
    git(path / "lib", "checkout", "-q", "agent-work")
    (path / "lib" / "notes.txt").write_text("one\nTWO (agent)\nthree\n")
    git(path / "lib", "commit", "-q", "-am", "agent edits notes")
    lib_git = Path(git(path / "lib", "rev-parse", "--absolute-git-dir").strip())
    # The recorded commit moves too: the superproject records an upstream commit that edits the same line.
    upstream = ws.repo_path.parent / "lib"
    (upstream / "notes.txt").write_text("one\nTWO (upstream)\nthree\n")
    git(upstream, "commit", "-q", "-am", "upstream edits notes")
    git(path / "lib", "fetch", "-q", "origin")
    conflicting = _head(upstream)
    git(path, "update-index", "--cacheinfo", f"160000,{conflicting},lib")
    git(path, "commit", "-q", "-m", "record the upstream edit")
    before = (_head(path / "lib"), _submodule_status(path), (lib_git / "index").read_bytes(),
              git(path, "ls-files", "-s", "lib"), (path / "lib" / "notes.txt").read_text())
    with pytest.raises(SubmoduleConflict) as caught:
        ws.submodules("subs", strategy)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "lib" in message and "notes.txt" in message and "\n" not in message
    assert ("git -C lib merge" if strategy == "merge" else "git -C lib rebase") in message
    after = (_head(path / "lib"), _submodule_status(path), (lib_git / "index").read_bytes(),
             git(path, "ls-files", "-s", "lib"), (path / "lib" / "notes.txt").read_text())
    assert after == before
    assert git(path / "lib", "status", "--porcelain") == ""
    fsck(repo)
    _fsck_module(path)


@pytest.mark.parametrize("strategy", ["merge", "rebase"])
def test_uncommitted_changes_are_never_merged_over(diverged: tuple[GitWorkspace, Path, str, str], strategy: str) -> None:
    ws, path, _, actual = diverged
    (path / "lib" / "mine.txt").write_text("not committed yet\n")
    with pytest.raises(SubmoduleConflict, match=r"lib \(diverged and dirty\); commit or discard the changes in lib"):
        ws.submodules("subs", strategy)  # type: ignore[arg-type]
    assert _head(path / "lib") == actual
    assert (path / "lib" / "mine.txt").read_text() == "not committed yet\n"


def test_rebase_refuses_to_flatten_a_merge(diverged: tuple[GitWorkspace, Path, str, str]) -> None:
    ws, path, _, actual = diverged
    git(path / "lib", "checkout", "-q", "-b", "side", f"{actual}~1")
    (path / "lib" / "side.txt").write_text("side\n")
    git(path / "lib", "add", "side.txt")
    git(path / "lib", "commit", "-q", "-m", "side")
    git(path / "lib", "checkout", "-q", "agent-work")
    git(path / "lib", "merge", "-q", "--no-edit", "side")
    head = _head(path / "lib")
    with pytest.raises(SubmoduleConflict, match="merge commit.*choose the strategy 'merge'"):
        ws.submodules("subs", "rebase")
    assert _head(path / "lib") == head
    [status] = ws.submodules("subs", "merge")  # merge keeps it
    assert status.action == "merged"


def test_when_one_side_holds_the_other(ws: GitWorkspace, repo: Path, tmp_path: Path) -> None:
    """Ahead of the recorded commit: kept as is (recorded in the index); behind: fast-forwarded to it."""
    lib = make_repo(tmp_path / "lib")
    first = _head(lib)
    (lib / "later.txt").write_text("later\n")
    git(lib, "add", "later.txt")
    git(lib, "commit", "-q", "-m", "later")
    git(repo, "submodule", "add", "-q", str(lib), "lib")
    git(repo, "commit", "-q", "-m", "add lib")
    recorded = _head(lib)
    path = started(ws, "subs")
    git(path, "submodule", "update", "--init", "-q", "lib")
    git(path / "lib", "checkout", "-q", first)
    [behind] = ws.submodules("subs", "rebase")
    assert (behind.action, _head(path / "lib"), (path / "lib" / "later.txt").exists()) == ("fast-forward", recorded, True)
    (path / "lib" / "ahead.txt").write_text("ahead\n")
    git(path / "lib", "add", "ahead.txt")
    git(path / "lib", "commit", "-q", "-m", "ahead")
    ahead = _head(path / "lib")
    [kept] = ws.submodules("subs", "merge")
    assert (kept.action, kept.actual, _head(path / "lib")) == ("up-to-date", ahead, ahead)
    assert _submodule_status(path).startswith(f" {ahead} lib")
    fsck(repo)


def test_a_missing_recorded_commit_is_a_clear_error(diverged: tuple[GitWorkspace, Path, str, str], repo: Path) -> None:
    ws, path, _, actual = diverged
    git(path, "update-index", "--cacheinfo", "160000,1234567890123456789012345678901234567890,lib")
    git(path, "commit", "-q", "-m", "record a commit lib does not have")
    with pytest.raises(GitError, match="does not have the recorded commit 1234567890.*fetch it"):
        ws.submodules("subs", "merge")
    assert _head(path / "lib") == actual


def test_unknown_strategy_lists_them_all(diverged: tuple[GitWorkspace, Path, str, str]) -> None:
    ws, _, _, _ = diverged
    with pytest.raises(GitError, match="'squash'.*skip, reset, fail, merge, rebase"):
        ws.submodules("subs", "squash")  # type: ignore[arg-type]


def test_rewriting_strategies_run_frozen_and_under_the_task_lock(diverged: tuple[GitWorkspace, Path, str, str]) -> None:
    """As a restore does: the task's container is frozen, and the task lock is held, while submodules are rewritten."""
    from contextlib import contextmanager

    from filelock import FileLock, Timeout

    ws, _, _, _ = diverged
    seen: list[tuple[str, bool]] = []

    @contextmanager
    def freeze(task_id: str):  # type: ignore[no-untyped-def]
        try:
            FileLock(str(ws.git_dir / "locks" / f"{task_id}.lock"), timeout=0).acquire()
            locked = False
        except Timeout:
            locked = True
        seen.append((task_id, locked))
        yield

    ws.freeze = freeze
    ws.submodules("subs", "skip")
    assert seen == []  # reading only: nothing frozen
    ws.submodules("subs", "merge")
    assert seen == [("subs", True)]
