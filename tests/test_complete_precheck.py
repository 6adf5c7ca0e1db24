"""A completion bound to be refused is refused before it is requested: the task keeps running, its work untouched."""

from __future__ import annotations

import pytest

from armor_rx import Armor, State
from armor_rx.errors import GitError


def test_merging_a_task_that_started_from_a_commit_is_refused_and_the_task_keeps_running(repo, git):
    head = git(repo, "rev-parse", "HEAD").strip()
    with Armor(repo) as armor:
        armor.create_task("detached", base_ref=head)
        armor.start("detached")
        (armor.worktree("detached") / "work.txt").write_text("done\n")
        for merge in ("ff", "merge", "three-way", "manual"):
            with pytest.raises(GitError, match="not a branch.*merge='none'"):
                armor.complete("detached", merge=merge)
            assert armor.task("detached").state is State.RUNNING
        with pytest.raises(GitError, match="unknown merge mode 'squash'"):
            armor.complete("detached", merge="squash")
        assert armor.task("detached").state is State.RUNNING
        assert (armor.worktree("detached") / "work.txt").read_text() == "done\n"
        armor.complete("detached", merge="none")
        assert armor.task("detached").state is State.COMPLETED
    assert git(repo, "show", "task/detached:work.txt") == "done\n"
    git(repo, "fsck", "--strict")  # raises if git finds anything wrong
