"""Parallel tasks with a real container each: conflicts seen at exec boundaries, forks get their own containers."""

import time

import pytest

from armor_rx import Armor
from armor_rx.model.events import to_plain

pytestmark = pytest.mark.docker


def detected(armor, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        armor.wait_idle()
        found = [to_plain(e.payload) for e in armor.history(kind="conflict.detected")]
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("no conflict.detected")


def test_conflict_at_exec_boundaries_and_fork_containers(repo, engine, sandbox, cleanup_containers, git):
    with Armor(repo, docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        for name in ("a", "b"):
            armor.create_task(name)
            armor.start(name)
        assert armor.exec("a", ["sh", "-c", "echo from-a > README.md"]).payload["exit_code"] == 0
        assert armor.exec("b", ["sh", "-c", "echo from-b > README.md"]).payload["exit_code"] == 0
        found = detected(armor)
        assert found[0]["tasks"] == ["a", "b"] and found[0]["paths"] == ["README.md"] and found[0]["overlap"] is True
        assert list(armor.history(kind="checkpoint.created")) == []  # seen at the exec boundary alone

        cp = armor.checkpoint("a").payload["checkpoint"]
        forks = [e.task_id for e in armor.fork("a", cp, into=2)]
        for name in forks:
            assert len(engine.client.containers.list(filters={"label": f"armor.task={name}"})) == 1
            assert armor.exec(name, ["cat", "README.md"]).payload["exit_code"] == 0
            assert (armor.worktree(name) / "README.md").read_text() == "from-a\n"
        armor.exec(forks[1], ["sh", "-c", "echo more >> README.md"])
        compared = armor.compare(forks)
        assert [len(t.files) for t in compared.tasks] == [0, 1] and compared.tasks[1].added == 1
    git(repo, "fsck", "--strict")
