"""Graceful interruption (issue 12 item 1): every way a task is stopped takes a final checkpoint, removes its
container and records ``task.interrupted`` with the cause, within the stop bound; ``resume`` brings it back.

Real processes on the real Docker daemon; the timings are generous bounds, never the measure of speed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest

from armor_rx import Armor
from armor_rx.model.lifecycle import State
from armor_rx.sinks.docker import SandboxSpec
from tests.service.conftest import armor_cli, service_info, wait_ended, wait_for

pytestmark = [pytest.mark.docker]


def _labelled(engine, task, repo):
    found = engine.client.containers.list(all=True, filters={"label": f"armor.task={task}"})
    return [c for c in found if c.labels.get("armor.state") == str(repo / ".armor")]


def _report(history, task):
    return [e for e in history(task_id=task) if e.kind == "task.interrupted"][-1].payload


def test_closing_the_session_stops_its_tasks_with_a_final_checkpoint(repo, engine, test_image, git):
    spec = SandboxSpec(image=test_image, wall_clock=300)
    armor = Armor(repo, docker=True, sandbox=spec, sweep_interval=None, stop_timeout=20).open()
    armor.create_task("busy")
    armor.start("busy")
    result = {}
    running = threading.Thread(target=lambda: result.update(outcome=armor.exec("busy", ["sh", "-c", "echo work > w.txt; sleep 300"])))
    running.start()
    wait_for(lambda: (armor.worktree("busy") / "w.txt").exists(), what="the command to write its file")
    began = time.monotonic()
    armor.close()
    assert time.monotonic() - began < 20 + 10
    running.join(30)
    assert result["outcome"].payload["reason"] == "interrupted"
    assert not _labelled(engine, "busy", repo)
    with Armor(repo, docker=True, sandbox=spec, sweep_interval=None) as again:
        kinds = [e.kind for e in again.history(task_id="busy")]
        # The command ended, then the checkpoint, then the container went, then the task was interrupted.
        assert kinds[-4:] == ["checkpoint.created", "checkpoint.done", "container.removed", "task.interrupted"], kinds
        report = _report(again.history, "busy")
        assert report["cause"] == "session closed" and report["checkpoint"] == "cp-1"
        assert git(repo, "show", f"{again.checkpoints('busy')[-1].commit}:w.txt") == "work\n"
        assert again.task("busy").state is State.INTERRUPTED
        again.resume("busy")
        assert again.exec("busy", ["cat", "w.txt"]).payload["exit_code"] == 0
        again.cancel("busy")


def test_a_git_only_session_leaves_its_tasks_running_when_it_closes(repo):
    with Armor(repo) as armor:
        armor.create_task("plain")
        armor.start("plain")
    with Armor(repo) as armor:
        assert armor.task("plain").state is State.RUNNING  # nothing of it stopped: no container, no interruption
        armor.complete("plain")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_the_service_gracefully_within_its_bound(repo, image, engine, git, monkeypatch, sig):
    monkeypatch.setenv("ARMOR_RX_STOP_TIMEOUT", "20")
    assert armor_cli("start", "t1", "--repo", repo).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "armor_rx", "exec", "t1", "--repo", str(repo), "--", "sh", "-c",
                             "echo started; echo partial > p.txt; sleep 300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "started\n"
        pid = int(service_info(repo / ".armor")["pid"])
        began = time.monotonic()
        os.kill(pid, sig)
        wait_ended(pid, "the service", timeout=20 + 15)
        took = time.monotonic() - began
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert took < 20 + 15, took
    events = [orjson.loads(line) for line in armor_cli("events", "--repo", repo, "--task", "t1", "--json").stdout.splitlines()]
    report = [e for e in events if e["kind"] == "task.interrupted"][-1]["payload"]
    assert report["cause"] == sig.name and report["checkpoint"] == "cp-1", report
    assert [e["kind"] for e in events].index("checkpoint.created") < [e["kind"] for e in events].index("task.interrupted")
    checkpoints = orjson.loads(armor_cli("checkpoints", "t1", "--repo", repo, "--json").stdout)
    assert git(repo, "show", f"{checkpoints[-1]['commit']}:p.txt") == "partial\n"
    assert not _labelled(engine, "t1", repo)
    resumed = armor_cli("resume", "t1", "--repo", repo)
    assert resumed.returncode == 0 and "running" in resumed.stdout, resumed.stderr
    again = armor_cli("exec", "t1", "--repo", repo, "--", "cat", "p.txt")
    assert (again.returncode, again.stdout) == (0, "partial\n"), again.stderr
    armor_cli("cancel", "t1", "--repo", repo)


def test_an_idle_task_is_interrupted_and_resumes(repo, engine, test_image):
    spec = SandboxSpec(image=test_image, wall_clock=300)
    with Armor(repo, docker=True, sandbox=spec, sweep_interval=None, task_idle_timeout=2) as armor:
        armor.create_task("idle")
        armor.start("idle")
        assert armor.exec("idle", ["sh", "-c", "echo one > one.txt"]).payload["exit_code"] == 0
        # The registry runs a little ahead of the log: wait for the event itself, which history reads.
        wait_for(lambda: any(e.kind == "task.interrupted" for e in armor.history(task_id="idle")), timeout=60,
                 what="the idle timeout")
        report = _report(armor.history, "idle")
        assert report["cause"] == "idle timeout" and report["checkpoint"] == "cp-1"
        assert not _labelled(engine, "idle", repo)
        armor.resume("idle")
        assert armor.exec("idle", ["cat", "one.txt"]).payload["exit_code"] == 0
        # A command that runs longer than the idle timeout is not idleness.
        assert armor.exec("idle", ["sleep", "4"]).payload["exit_code"] == 0
        assert armor.task("idle").state is State.RUNNING
        armor.cancel("idle")


def test_the_wall_clock_interrupts_the_task_and_resume_gives_a_fresh_one(repo, engine, test_image):
    spec = SandboxSpec(image=test_image, wall_clock=6)
    with Armor(repo, docker=True, sandbox=spec, sweep_interval=None) as armor:
        armor.create_task("clock")
        armor.start("clock")
        outcome = armor.exec("clock", ["sh", "-c", "echo before > b.txt; sleep 60"])
        # The command sees its clock run out, or the session's watch interrupts the task first: either
        # way it is stopped, and the task is interrupted for the wall clock, not failed.
        assert outcome.payload["reason"] in ("wall_clock", "interrupted"), outcome.payload
        if outcome.payload["reason"] == "wall_clock":
            assert "resume" in outcome.payload["message"]
        wait_for(lambda: any(e.kind == "task.interrupted" for e in armor.history(task_id="clock")), timeout=60,
                 what="the wall-clock interruption")
        report = _report(armor.history, "clock")
        assert report["cause"] == "wall clock" and report["checkpoint"] == "cp-1"
        armor.resume("clock")
        assert armor.exec("clock", ["cat", "b.txt"]).payload["exit_code"] == 0  # a new container, a new clock
        armor.cancel("clock")


def test_resume_at_a_checkpoint_from_the_cli(repo, image):
    assert armor_cli("start", "t1", "--repo", repo).returncode == 0
    assert armor_cli("exec", "t1", "--repo", repo, "--", "sh", "-c", "echo v1 > v.txt").returncode == 0
    cp = orjson.loads(armor_cli("checkpoint", "t1", "-m", "v1", "--json", "--repo", repo).stdout)["id"]
    assert armor_cli("exec", "t1", "--repo", repo, "--", "sh", "-c", "echo v2 > v.txt").returncode == 0
    assert armor_cli("interrupt", "t1", "--repo", repo).returncode == 0
    resumed = armor_cli("resume", "t1", "--checkpoint", cp, "--repo", repo)
    assert resumed.returncode == 0 and "running" in resumed.stdout, resumed.stderr
    back = armor_cli("exec", "t1", "--repo", repo, "--", "cat", "v.txt")
    assert (back.returncode, back.stdout) == (0, "v1\n"), back.stderr
    bad = armor_cli("resume", "t1", "--checkpoint", "cp-99", "--repo", repo)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    armor_cli("cancel", "t1", "--repo", repo)


def test_the_task_of_a_run_whose_client_is_killed_is_interrupted_with_a_final_checkpoint(repo, image, engine):
    proc = subprocess.Popen([sys.executable, "-m", "armor_rx", "run", "--repo", str(repo), "--task", "gone", "--", "sh", "-c",
                             "echo started; echo mine > m.txt; sleep 300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    proc.kill()  # the client is gone without a word
    proc.communicate(timeout=30)
    import armor_rx

    with armor_rx.connect(repo) as remote:
        wait_for(lambda: remote.task("gone").state is State.INTERRUPTED, what="the run's task to be interrupted")
        report = _report(remote.history, "gone")
        assert report["cause"] == "client gone" and report["checkpoint"] == "cp-1", report
        assert not _labelled(engine, "gone", repo)
        remote.resume("gone")
        assert remote.exec("gone", ["cat", "m.txt"]).payload["exit_code"] == 0
        remote.cancel("gone")
