"""Review: ``armor-rx complete --merge ff`` whose merge is refused must not read as merged.

Invariant: when a merge was asked for and not done (a conflict, an untracked
file in the user's checkout in the way), the CLI says so on stderr (why, which
paths, the branch that holds the work) and exits non-zero; before the fix it
printed "task t1 completed (now completed)" and exited 0, so a script went on
as if the work were on main. One case (an untracked file in the way).
"""

from __future__ import annotations

from tests.service.conftest import armor_cli


def test_a_refused_merge_is_reported_and_exits_non_zero(repo, no_docker):
    assert armor_cli("start", "t1", "--repo", repo).returncode == 0
    worktree = armor_cli("tasks", "--repo", repo)  # the service is up; the worktree is where armor says
    assert worktree.returncode == 0
    (repo / ".armor" / "worktrees" / "t1" / "new.txt").write_text("from the task\n")
    (repo / "new.txt").write_text("the user's own, untracked\n")
    done = armor_cli("complete", "t1", "--merge", "ff", "--repo", repo)
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "not merged" in done.stderr and "new.txt" in done.stderr, done.stderr
    assert (repo / "new.txt").read_text() == "the user's own, untracked\n"
    ok = armor_cli("start", "t2", "--repo", repo)
    assert ok.returncode == 0
    (repo / ".armor" / "worktrees" / "t2" / "other.txt").write_text("fine\n")
    merged = armor_cli("complete", "t2", "--merge", "ff", "--repo", repo)
    assert merged.returncode == 0 and "not merged" not in merged.stderr, merged.stderr
