"""Docker daemon faults are not permanent (issue 14 item 3), on a daemon of the test's own that it stops and restarts.

Invariants: a lost connection is transient (retried, then dead-lettered and
re-drivable); a task whose container died is ``interrupted`` and resumable,
never failed with a raw tuple; a request whose git effect already merged ends
``completed`` even when its container cannot be removed.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest

from armor_rx import Armor
from tests.service.conftest import armor_cli, kill_service

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
IMAGE = "armor-rx-test/busybox:latest"


class Daemon:
    """A private dockerd (scripts/dockerd.sh) in its own directory, which the test may stop and start."""

    def __init__(self) -> None:
        self.dir = f"/tmp/armor-df-{secrets.token_hex(3)}"
        self.env = {**os.environ, "ARMOR_DOCKERD_DIR": self.dir}
        self.host = f"unix://{self.dir}/docker.sock"

    def _script(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(ROOT / "scripts" / "dockerd.sh"), *args], env=self.env, capture_output=True, text=True, timeout=180)

    def start(self) -> None:
        done = self._script("start")
        if done.returncode != 0:
            raise RuntimeError(f"could not start a private dockerd: {done.stderr.strip()[-500:]}")

    def stop(self) -> None:
        self._script("stop")

    def purge(self) -> None:
        self._script("purge")


@pytest.fixture
def daemon(engine, monkeypatch):
    """``engine`` first: without a usable Docker there is nothing to fault (skipped or failed as configured)."""
    if os.geteuid() != 0:
        pytest.skip("starting a private dockerd needs root")
    own = Daemon()
    try:
        own.start()
    except RuntimeError as exc:
        if os.environ.get("ARMOR_REQUIRE_DOCKER") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    monkeypatch.setenv("DOCKER_HOST", own.host)
    from armor_rx.sinks.docker import Engine
    from armor_rx.sinks.docker.rootfs import busybox_rootfs

    with Engine.connect(own.host, timeout=30) as fresh:
        fresh.api.import_image_from_data(busybox_rootfs(), repository=IMAGE.split(":")[0], tag="latest")
    try:
        yield own
    finally:
        own.purge()


def _kinds(armor, task):
    return [e.kind for e in armor.history(task_id=task)]


def test_losing_the_engine_during_complete_still_completes_what_git_merged(repo, daemon, git):
    with Armor(repo, docker=True) as armor:
        armor.create_task("merge-me")
        armor.start("merge-me", image=IMAGE)
        armor.exec("merge-me", ["sh", "-c", "echo work > result.txt"])
        daemon.stop()
        outcome = armor.complete("merge-me", message="the work", merge="ff")
        assert outcome.kind == "task.completed"
        assert armor.task("merge-me").state.value == "completed"
        failed = [e for e in armor.history(task_id="merge-me") if e.kind == "container.remove_failed"]
        assert failed and "lost the Docker engine" in failed[0].payload["error"]
    assert git(repo, "show", "HEAD:result.txt").strip() == "work"  # merged into the user's branch
    git(repo, "fsck", "--strict")


def test_an_engine_restart_during_a_command_interrupts_the_task_and_resume_goes_on(repo, daemon):
    with Armor(repo, docker=True) as armor:
        armor.create_task("long")
        armor.start("long", image=IMAGE)
        result: dict[str, object] = {}
        running = threading.Thread(target=lambda: result.update(outcome=armor.exec("long", ["sleep", "60"])))
        running.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "exec.requested" not in _kinds(armor, "long"):
                time.sleep(0.1)
            time.sleep(1.0)  # the command is running
            daemon.stop()
            running.join(120)
        finally:
            daemon.start()
        assert not running.is_alive()
        outcome = result["outcome"]
        assert outcome.payload["reason"] == "container_lost"  # type: ignore[attr-defined]
        record = armor.task("long")
        assert record.state.value == "interrupted"
        reason = [e for e in armor.history(task_id="long") if e.kind == "task.interrupted"][-1].payload["reason"]
        assert "('" not in reason and "resume" in reason  # a sentence, not a raw tuple
        armor.resume("long")
        after = armor.exec("long", ["sh", "-c", "echo back"])
        assert after.payload["exit_code"] == 0


def test_an_engine_restart_while_idle_leaves_the_task_resumable(repo, daemon):
    with Armor(repo, docker=True) as armor:
        armor.create_task("idle")
        armor.start("idle", image=IMAGE)
        daemon.stop()
        daemon.start()
        assert armor.task("idle").state.value == "running"
        armor.resume("idle")  # from running, with its container gone: recorded interrupted, then resumed
        assert armor.exec("idle", ["true"]).payload["exit_code"] == 0
        kinds = _kinds(armor, "idle")
        assert kinds.index("task.interrupted") < kinds.index("task.resumed")


def test_a_start_while_the_engine_is_down_is_dead_lettered_and_redriven_through_the_service(repo, daemon, monkeypatch):
    monkeypatch.setenv("ARMOR_RX_DOCKER", "1")
    monkeypatch.setenv("ARMOR_RX_IMAGE", IMAGE)
    try:
        assert armor_cli("serve", "--repo", repo).returncode == 0  # the service finds the engine up
        daemon.stop()
        refused = armor_cli("start", "--repo", repo, "waits")
        assert refused.returncode != 0
        assert "lost the Docker engine" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        letters = orjson.loads(armor_cli("dead-letters", "--repo", repo, "--json").stdout)
        assert len(letters) == 1 and letters[0]["task_id"] == "waits" and letters[0]["error_type"] == "EngineLost"
        daemon.start()
        redriven = armor_cli("redrive", "--repo", repo, letters[0]["id"])
        assert redriven.returncode == 0, redriven.stderr
        tasks = {t["task_id"]: t["state"] for t in orjson.loads(armor_cli("tasks", "--repo", repo, "--json").stdout)}
        assert tasks["waits"] == "running"
        ran = armor_cli("exec", "--repo", repo, "waits", "--", "sh", "-c", "echo redriven")
        assert ran.returncode == 0 and ran.stdout == "redriven\n", ran.stderr
    finally:
        kill_service(repo / ".armor", signal.SIGTERM)
