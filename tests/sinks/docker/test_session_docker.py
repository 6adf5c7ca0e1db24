"""Armor(repo, docker=True): the whole session with a real container per task."""

import contextlib
import subprocess

import pytest

from armor_rx import Armor, State

pytestmark = pytest.mark.docker


def test_session_runs_commands_in_the_task_container(repo, engine, sandbox, cleanup_containers, git):
    with Armor(repo, docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        armor.create_task("hello")
        armor.start("hello")
        containers = engine.client.containers.list(filters={"label": "armor.task=hello"})
        assert len(containers) == 1
        out = []
        armor.events("exec.output", task_id="hello").subscribe(lambda e: out.append(e.payload["data"]))
        done = armor.exec("hello", ["sh", "-c", "cat README.md; echo made > note.txt; exit 3"])
        armor.wait_idle()
        assert done.payload["exit_code"] == 3
        assert "hello" in "".join(out)
        assert (armor.worktree("hello") / "note.txt").read_text() == "made\n"
        started = next(iter(armor.history(kind="container.started", task_id="hello")))
        assert started.payload  # the effective settings are recorded
        armor.complete("hello", message="agent work", merge="ff")
        assert armor.task("hello").state is State.COMPLETED
        assert engine.client.containers.list(all=True, filters={"label": "armor.task=hello"}) == []
    assert "note.txt" in git(repo, "ls-tree", "-r", "--name-only", "main")
    git(repo, "fsck", "--strict")


def test_session_with_dead_engine_is_a_clear_error(repo, monkeypatch, tmp_path):
    from armor_rx.errors import DockerUnavailable

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(DockerUnavailable) as info:
        Armor(repo, docker=True).open()
    assert "DOCKER_HOST" in str(info.value)
    # The failed open released the state directory: a plain session opens fine.
    with Armor(repo) as armor:
        assert armor.tasks() == []


def test_a_reopened_session_finds_its_running_task_interrupted_and_resume_replaces_the_container(repo, engine, sandbox,
                                                                                                   cleanup_containers):
    """Issue 12 item 1: the process that ran the task died (no close), so whatever drove the task died with it and a
    command may still run in its container: the next session records the task interrupted (cause crash), and resume
    gives it a new container on the same worktree, removing the dead session's."""
    import sys

    script = f"""
import sys
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).resolve().parents[3])!r})
from armor_rx import Armor
from armor_rx.sinks.docker import SandboxSpec
armor = Armor({str(repo)!r}, docker=True, sandbox=SandboxSpec(image={sandbox.image!r}, wall_clock=120), sweep_interval=None).open()
armor.create_task("long")
armor.start("long")
armor.exec("long", ["sh", "-c", "echo kept > kept.txt"])
print("started", flush=True)
import os; os._exit(0)  # the process dies: no close, the container stays
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "started" in proc.stdout, proc.stderr
    before = engine.client.containers.list(filters={"label": "armor.task=long"})
    assert [c.status for c in before] == ["running"]
    with Armor(repo, docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        assert armor.task("long").state is State.INTERRUPTED
        report = [e for e in armor.history(task_id="long") if e.kind == "task.interrupted"][-1].payload
        assert report["cause"] == "crash" and report["request_kind"] is None
        assert [c["status"] for c in report["findings"]["docker"]["containers"]] == ["running"]
        resumed = armor.resume("long")
        assert resumed.kind == "task.resumed"
        now = engine.client.containers.list(all=True, filters={"label": "armor.task=long"})
        assert [c.id for c in now] != [c.id for c in before] and len(now) == 1  # the dead session's is gone
        done = armor.exec("long", ["cat", "kept.txt"])
        assert done.payload["exit_code"] == 0
        armor.complete("long")
    assert engine.client.containers.list(all=True, filters={"label": "armor.task=long"}) == []


def test_rollback_freezes_the_container_so_nothing_races_the_restore(repo, engine, sandbox, cleanup_containers):
    with Armor(repo, docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        armor.create_task("busy")
        armor.start("busy")
        worktree = armor.worktree("busy")
        (worktree / "keep.txt").write_text("v1\n")
        cp = armor.checkpoint("busy").payload["checkpoint"]
        (worktree / "keep.txt").write_text("v2\n")
        container = engine.client.containers.list(filters={"label": "armor.task=busy"})[0]
        states = []
        original = armor.git.freeze

        @contextlib.contextmanager
        def watching(task_id):
            with original(task_id) as paused:
                container.reload()
                states.append(container.status)  # as seen while the worktree is rewritten
                yield paused

        armor.git.freeze = watching
        armor.rollback("busy", cp)
        assert states == ["paused"]
        container.reload()
        assert container.status == "running"
        assert (worktree / "keep.txt").read_text() == "v1\n"
        assert armor.exec("busy", ["cat", "keep.txt"]).payload["exit_code"] == 0


def test_the_adaptive_policy_checkpoints_before_a_risky_command_in_a_real_container(
        repo, engine, sandbox, cleanup_containers, git):
    with Armor(repo, docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        armor.create_task("risky")
        armor.start("risky", checkpoint_policy="adaptive")
        armor.exec("risky", ["sh", "-c", "mkdir -p build && echo obj > build/a.o && echo obj > build/b.o"])
        done = armor.exec("risky", ["sh", "-c", "cd build && cd .. && rm -rf build"])
        assert done.payload["exit_code"] == 0 and done.payload["files_touched"] == 2
        assert not (armor.worktree("risky") / "build").exists()
        armor.wait_idle()
        scored = [e.payload for e in armor.history(kind="checkpoint.risk.scored", task_id="risky")]
        assert [s["decision"] for s in scored] == ["none", "checkpoint"]
        cp = armor.checkpoints("risky")[-1]
        assert sorted(p for p in git(repo, "ls-tree", "-r", "--name-only", cp.commit).split() if p.startswith("build/")) == [
            "build/a.o", "build/b.o"]
        armor.rollback("risky", cp.id)
        assert (armor.worktree("risky") / "build" / "a.o").read_text() == "obj\n"
    git(repo, "fsck", "--strict")
