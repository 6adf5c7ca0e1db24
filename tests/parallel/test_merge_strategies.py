"""Merge strategies at completion (first-wins, three-way, rebase, manual), checked with the real git CLI."""

import pytest

from armor_rx import Armor
from armor_rx.model.events import to_plain


def two_tasks(armor, edit, line_a, line_b):
    """Tasks a and b from main, a changing app.py at ``line_a`` and b at ``line_b``."""
    for name, line in (("a", line_a), ("b", line_b)):
        armor.create_task(name)
        armor.start(name)
        edit(armor.worktree(name) / "app.py", line, f"{name}'s line {line}")


def untouched(repo, git, before):
    """main, the user's checkout and the repository are as they were (nothing half-applied)."""
    assert git(repo, "rev-parse", "main").strip() == before
    assert git(repo, "status", "--porcelain") == ""
    assert "<<<<<<<" not in (repo / "app.py").read_text()
    git(repo, "fsck", "--strict")


def test_first_wins_refuses_a_later_task_on_the_same_file(repo, edit, git):
    with Armor(repo) as armor:
        two_tasks(armor, edit, 3, 30)  # different lines: a line merge would take both, first-wins does not
        (armor.worktree("b") / "b-only.txt").write_text("b\n")
        first = to_plain(armor.complete("a", merge="first-wins").payload)
        assert first["merged"] is True and first["reason"] == "fast-forward" and first["strategy"] == "first-wins"
        landed = git(repo, "rev-parse", "main").strip()
        second = to_plain(armor.complete("b", merge="first-wins").payload)
        assert second["merged"] is False and second["reason"] == "conflict" and second["conflicts"] == ["app.py"]
        conflict = to_plain(list(armor.history(task_id="b", kind="git.merge.conflict"))[0].payload)
        assert conflict["paths"] == ["app.py"] and conflict["strategy"] == "first-wins"
        assert conflict["landed"]["app.py"]["commit"] == landed  # a's commit won the file
        assert conflict["landed"]["app.py"]["subject"] == "armor-rx: complete task a"
    untouched(repo, git, landed)
    assert "a's line 3" in (repo / "app.py").read_text() and not (repo / "b-only.txt").exists()
    assert git(repo, "rev-parse", "task/b").strip() == second["commit"]  # b's work is kept on its branch
    assert "b's line 30" in git(repo, "show", "task/b:app.py")


def test_first_wins_merges_a_later_task_on_other_files(repo, edit, git):
    with Armor(repo) as armor:
        for name in ("a", "b"):
            armor.create_task(name)
            armor.start(name)
        edit(armor.worktree("a") / "app.py", 1, "a")
        (armor.worktree("b") / "README.md").write_text("b's readme\n")
        assert to_plain(armor.complete("a", merge="first-wins").payload)["merged"] is True
        b = to_plain(armor.complete("b", merge="first-wins").payload)
        assert b["merged"] is True and b["reason"] == "merge"
    assert git(repo, "rev-list", "--parents", "-n1", "main").count(" ") == 2  # a merge commit
    assert (repo / "README.md").read_text() == "b's readme\n" and (repo / "app.py").read_text().startswith("a\n")
    git(repo, "fsck", "--strict")


def test_three_way_takes_both_sides_on_different_lines(repo, edit, git):
    with Armor(repo) as armor:
        two_tasks(armor, edit, 3, 30)
        assert to_plain(armor.complete("a", merge="three-way").payload)["merged"] is True
        b = to_plain(armor.complete("b", merge="three-way").payload)
        assert b["merged"] is True and b["reason"] == "merge" and b["strategy"] == "three-way"
    text = (repo / "app.py").read_text()
    assert "a's line 3" in text and "b's line 30" in text
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "show", "main:app.py") == text
    git(repo, "fsck", "--strict")


def test_three_way_conflict_applies_nothing(repo, edit, git):
    with Armor(repo) as armor:
        two_tasks(armor, edit, 5, 5)
        armor.complete("a", merge="three-way")
        landed = git(repo, "rev-parse", "main").strip()
        b = to_plain(armor.complete("b", merge="three-way").payload)
        assert b["merged"] is False and b["reason"] == "conflict" and b["conflicts"] == ["app.py"]
    untouched(repo, git, landed)
    assert "a's line 5" in (repo / "app.py").read_text()


def test_rebase_replays_onto_the_other_tasks_result(repo, edit, git):
    with Armor(repo) as armor:
        two_tasks(armor, edit, 3, 30)
        armor.complete("a", merge="three-way")
        a_tip = git(repo, "rev-parse", "main").strip()
        b = to_plain(armor.complete("b", message="b's work", merge="rebase").payload)
        assert b["merged"] is True and b["reason"] == "rebase" and b["strategy"] == "rebase"
    assert git(repo, "log", "--merges", "--format=%H", "main") == ""  # linear: no merge commit
    tip = git(repo, "rev-parse", "main").strip()
    assert tip != b["commit"]  # a new commit, not b's own
    assert git(repo, "rev-parse", "main^").strip() == a_tip  # replayed on top of a's result
    assert git(repo, "log", "-1", "--format=%s", "main").strip() == "b's work"
    text = (repo / "app.py").read_text()
    assert "a's line 3" in text and "b's line 30" in text
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "task/b").strip() == b["commit"]  # the task's own branch is kept as it was
    git(repo, "fsck", "--strict")


def test_rebase_of_several_commits_and_its_conflict(repo, edit, git):
    with Armor(repo) as armor:
        two_tasks(armor, edit, 8, 8)
        wt = armor.worktree("b")
        # b commits twice inside its worktree (as an agent may), then completes.
        git(wt, "commit", "-qam", "b one")
        (wt / "second.txt").write_text("two\n")
        git(wt, "add", "second.txt")
        git(wt, "commit", "-qm", "b two")
        armor.complete("a", merge="ff")
        landed = git(repo, "rev-parse", "main").strip()
        b = to_plain(armor.complete("b", merge="rebase").payload)
        assert b["merged"] is False and b["reason"] == "conflict" and b["conflicts"] == ["app.py"]
    untouched(repo, git, landed)
    assert not (repo / "second.txt").exists()


def test_rebase_replays_each_commit(repo, edit, git):
    with Armor(repo) as armor:
        two_tasks(armor, edit, 2, 20)
        wt = armor.worktree("b")
        git(wt, "commit", "-qam", "b one")
        (wt / "second.txt").write_text("two\n")
        git(wt, "add", "second.txt")
        git(wt, "commit", "-qm", "b two")
        armor.complete("a", merge="ff")
        a_tip = git(repo, "rev-parse", "main").strip()
        assert to_plain(armor.complete("b", merge="rebase").payload)["merged"] is True
    subjects = git(repo, "log", "--format=%s", f"{a_tip}..main").split("\n")
    assert subjects[:2] == ["b two", "b one"] and git(repo, "log", "--merges", "--format=%H", "main") == ""
    assert (repo / "second.txt").read_text() == "two\n"
    git(repo, "fsck", "--strict")


def test_manual_leaves_the_branch_and_says_how(repo, edit, git):
    with Armor(repo) as armor:
        two_tasks(armor, edit, 3, 30)
        before = git(repo, "rev-parse", "main").strip()
        done = to_plain(armor.complete("b", merge="manual").payload)
        assert done["merged"] is False and done["reason"] == "manual"
        event = to_plain(list(armor.history(task_id="b", kind="git.merge.manual"))[0].payload)
        assert event["branch"] == "task/b" and "git merge --no-ff task/b" in event["how"]["merge"]
        assert done["how"] == event["how"]
    untouched(repo, git, before)
    # The instructions work: a person merges by hand.
    git(repo, "merge", "--no-ff", "-q", "-m", "by hand", "task/b")
    assert "b's line 30" in (repo / "app.py").read_text()
    git(repo, "fsck", "--strict")


def test_unknown_mode_is_refused(repo):
    with Armor(repo) as armor:
        armor.create_task("a")
        armor.start("a")
        with pytest.raises(Exception, match="unknown merge mode 'octopus'"):
            armor.complete("a", merge="octopus")
