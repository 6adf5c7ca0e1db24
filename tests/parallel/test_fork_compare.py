"""Fork one checkpoint into several tasks, then compare what each did; checked with the git CLI."""

import pytest

from armor_rx import Armor, State
from armor_rx.errors import CheckpointNotFound, ConfigError, TaskExists


def test_fork_a_checkpoint_into_three_and_compare(repo, edit, git):
    with Armor(repo) as armor:
        armor.create_task("solve")
        armor.start("solve")
        (armor.worktree("solve") / "plan.txt").write_text("the plan\n")
        cp = armor.checkpoint("solve", "plan").payload["checkpoint"]
        (armor.worktree("solve") / "later.txt").write_text("after the checkpoint\n")
        started = armor.fork("solve", cp, into=3)
        names = [e.task_id for e in started]
        assert names == ["solve-1", "solve-2", "solve-3"]
        for name in names:
            wt = armor.worktree(name)
            assert armor.task(name).state is State.RUNNING
            assert (wt / "plan.txt").read_text() == "the plan\n" and not (wt / "later.txt").exists()
        # Three competing attempts.
        edit(armor.worktree("solve-1") / "app.py", 2, "attempt one")
        edit(armor.worktree("solve-2") / "app.py", 2, "attempt two")
        (armor.worktree("solve-2") / "extra.py").write_text("x = 1\ny = 2\n")
        (armor.worktree("solve-3") / "plan.txt").unlink()
        result = armor.compare(names)
        by = {t.task_id: {f.path: f for f in t.files} for t in result.tasks}
        one = by["solve-1"]
        assert set(one) == {"app.py"} and (one["app.py"].added, one["app.py"].removed) == (1, 1)
        assert by["solve-2"]["extra.py"].status == "added" and by["solve-2"]["extra.py"].added == 2
        assert by["solve-3"]["plan.txt"].status == "deleted" and by["solve-3"]["plan.txt"].removed == 1
        assert result.shared == {"app.py": ("solve-1", "solve-2")}
        payload = result.to_payload()
        assert [t["task_id"] for t in payload["tasks"]] == names and payload["tasks"][1]["added"] == 3
        table = result.table()
        assert "app.py" in table and "+1 -1" in table and "solve-3" in table
        # Each has its own branch and worktree.
        listed = git(repo, "worktree", "list")
        for name in names:
            assert str(armor.worktree(name)) in listed
            assert git(repo, "show", f"task/{name}:plan.txt") == "the plan\n"
        # A second fork counts on from the first free number.
        assert [e.task_id for e in armor.fork("solve", cp, into=1)] == ["solve-4"]
    git(repo, "fsck", "--strict")


def test_fork_with_names_and_refusals(repo):
    with Armor(repo) as armor:
        armor.create_task("t")
        armor.start("t")
        (armor.worktree("t") / "f.txt").write_text("f\n")
        cp = armor.checkpoint("t").payload["checkpoint"]
        before = {x.task_id for x in armor.tasks()}
        with pytest.raises(CheckpointNotFound):
            armor.fork("t", "cp-99", into=2)
        with pytest.raises(ConfigError, match="either"):
            armor.fork("t", cp)
        with pytest.raises(ConfigError, match="1 to 100"):
            armor.fork("t", cp, into=0)
        with pytest.raises(TaskExists):
            armor.fork("t", cp, names=["x", "t"])
        with pytest.raises(ConfigError, match="more than once"):
            armor.fork("t", cp, names=["x", "x"])
        assert {x.task_id for x in armor.tasks()} == before  # nothing made by a refused fork
        assert [e.task_id for e in armor.fork("t", cp, names=["left", "right"])] == ["left", "right"]
        assert (armor.worktree("right") / "f.txt").read_text() == "f\n"
