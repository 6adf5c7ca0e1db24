"""The Docker engine stopped and started again under a running task (issue 12 item 1), on a dockerd the test owns.

Through the service, with real processes: the task is ``interrupted`` (cause ``engine gone``) whether a command
was running or it was idle, ``resume`` gives it a new container on the same worktree, and after ``gc`` no
container of it is left but the one it runs in.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import orjson
import pytest

from armor_rx.model.lifecycle import State
from tests.resilience.conftest import OWN_DAEMON_IMAGE
from tests.service.conftest import armor_cli, kill_service, service_info, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _containers(daemon, task):
    from armor_rx.sinks.docker import Engine

    with Engine.connect(daemon.host, timeout=30) as engine:
        return [(c.id, c.status) for c in engine.client.containers.list(all=True, filters={"label": f"armor.task={task}"})]


def _report(remote, task):
    return [e for e in remote.history(task_id=task) if e.kind == "task.interrupted"][-1].payload


def test_an_engine_restart_mid_task_interrupts_it_resumably_and_leaves_no_orphan(repo, daemon, monkeypatch):
    import armor_rx

    monkeypatch.setenv("ARMOR_RX_DOCKER", "1")
    monkeypatch.setenv("ARMOR_RX_IMAGE", OWN_DAEMON_IMAGE)
    try:
        assert armor_cli("start", "busy", "--repo", repo).returncode == 0
        assert armor_cli("start", "idle", "--repo", repo).returncode == 0
        assert armor_cli("exec", "idle", "--repo", repo, "--", "sh", "-c", "echo idle > i.txt").returncode == 0
        proc = subprocess.Popen([sys.executable, "-m", "armor_rx", "exec", "busy", "--repo", str(repo), "--", "sh", "-c",
                                 "echo started; echo half > h.txt; sleep 120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "started\n"
        daemon.stop()
        proc.communicate(timeout=120)
        daemon.start()
        with armor_rx.connect(repo) as remote:
            assert remote.task("busy").state is State.INTERRUPTED  # seen by its command
            assert _report(remote, "busy")["cause"] == "engine gone"
            # The idle task's container died too: the service's watch notices once the engine answers.
            wait_for(lambda: remote.task("idle").state is State.INTERRUPTED, timeout=60, what="the idle task to be interrupted")
            assert _report(remote, "idle")["cause"] == "engine gone"
            for task, path, text in (("busy", "h.txt", "half\n"), ("idle", "i.txt", "idle\n")):
                remote.resume(task)
                lines = []
                assert remote.exec(task, ["cat", path], on_output=lines.append).payload["exit_code"] == 0
                assert "".join(e.payload["data"] for e in lines) == text
        swept = armor_cli("gc", "--repo", repo, "--now", "--json")
        assert swept.returncode == 0, swept.stderr
        for task in ("busy", "idle"):
            assert [row["action"] for row in orjson.loads(swept.stdout) if row["task"] == task] == ["kept"]
            assert [status for _, status in _containers(daemon, task)] == ["running"]  # no orphan: only the one it runs in
            assert armor_cli("cancel", task, "--repo", repo).returncode == 0
            assert _containers(daemon, task) == []
    finally:
        if service_info(repo / ".armor") is not None:
            kill_service(repo / ".armor", signal.SIGTERM)
