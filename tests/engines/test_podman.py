"""A second real engine: Podman's Docker-compatible API (`podman system service`), started by scripts/test.sh.

What Podman does differently is detected and reported in ``container.started``
(``settings.degraded``), never crashed on: it needs an explicit nproc limit,
and Debian's podman has no init binary unless catatonit is installed. The
hardening itself must hold there too. scripts/test.sh also runs the generic
session, output-quota and secrets tests against it (ARMOR_PODMAN_HOST).
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.service.conftest import armor_cli, kill_service

pytestmark = [pytest.mark.docker]

PODMAN = os.environ.get("ARMOR_PODMAN_HOST")
IMAGE = "armor-rx-test/busybox:latest"


@pytest.fixture(scope="module")
def podman():
    if not PODMAN:
        if os.environ.get("ARMOR_REQUIRE_PODMAN") == "1":
            pytest.fail("ARMOR_REQUIRE_PODMAN=1 but ARMOR_PODMAN_HOST is not set")
        pytest.skip("no Podman service (scripts/test.sh starts one: ARMOR_PODMAN_HOST)")
    from armor_rx.sinks.docker import Engine
    from armor_rx.sinks.docker.rootfs import busybox_rootfs

    engine = Engine.connect(PODMAN, timeout=30)
    engine.api.import_image_from_data(busybox_rootfs(), repository=IMAGE.split(":")[0], tag="latest")
    yield engine
    engine.close()


@pytest.fixture
def on_podman(podman, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", PODMAN)
    return podman


def test_podman_is_detected(podman):
    assert podman.info.flavour == "Podman"
    assert podman.info.supported["no_new_privileges"] and podman.info.supported["read_only"]


def test_a_task_on_podman_is_hardened_and_says_what_podman_needed(repo, on_podman, git):
    from armor_rx import Armor

    with Armor(repo, docker=True) as armor:
        armor.create_task("pod")
        armor.start("pod", image=IMAGE)
        started = [e for e in armor.history(task_id="pod") if e.kind == "container.started"][-1]
        settings = started.payload["settings"]
        degraded = " ".join(settings["degraded"])
        assert "nproc" in degraded
        assert settings["init"] is True or "catatonit" in degraded  # with or without an init, it says which
        out: list[str] = []

        def run(*command: str) -> int:
            out.clear()
            result = armor.exec("pod", list(command), on_output=lambda e: out.append(str(e.payload["data"])))
            return int(result.payload["exit_code"])

        assert run("sh", "-c", "id -u") == 0 and "".join(out).strip() != "0"  # not root
        assert run("sh", "-c", "touch /etc/x") != 0  # read-only root filesystem
        assert run("sh", "-c", "grep CapEff /proc/self/status") == 0 and "".join(out).split()[-1] == "0000000000000000"
        assert run("sh", "-c", "ls /sys/class/net") == 0 and "".join(out).split() == ["lo"]  # no network
        assert run("sh", "-c", "echo from-podman > made.txt && exit 3") == 3
        timed = armor.exec("pod", ["sleep", "30"], timeout=1)
        assert timed.payload["reason"] == "timeout"
        container = armor.container("pod")["id"]
        armor.complete("pod", message="on podman", merge="ff")
    assert git(repo, "show", "HEAD:made.txt").strip() == "from-podman"
    assert not on_podman.client.containers.list(all=True, filters={"id": container})  # removed at the end


def test_the_cli_runs_a_task_on_podman_through_the_service(repo, on_podman, monkeypatch):
    monkeypatch.setenv("ARMOR_RX_DOCKER", "1")
    monkeypatch.setenv("ARMOR_RX_IMAGE", IMAGE)
    try:
        done = armor_cli("run", "--repo", repo, "--task", "pod-cli", "--", "sh", "-c", "echo on podman; exit 4")
        assert done.returncode == 4 and done.stdout == "on podman\n", done.stderr
    finally:
        kill_service(repo / ".armor", signal.SIGTERM)


def test_atomic_checkpoint_and_rollback_on_podman(repo, on_podman):
    """A writable-root task on Podman: its checkpoint commits the container, a rollback undoes changes outside."""
    from armor_rx import Armor
    from armor_rx.sinks.docker import SandboxSpec

    spec = SandboxSpec(image=IMAGE, read_only=False, allow_root=True, wall_clock=120)
    with Armor(repo, docker=True, sandbox=spec, sweep_interval=None) as armor:
        armor.create_task("pod-cp")
        armor.start("pod-cp")
        cp = armor.checkpoint("pod-cp").payload
        assert list(cp["holds"]) == ["worktree", "image"]
        changed = armor.exec("pod-cp", ["sh", "-c", "echo x > /etc/added && rm /bin/wc"], user="root")
        assert changed.payload["exit_code"] == 0
        armor.rollback("pod-cp", cp["checkpoint"])
        check = armor.exec("pod-cp", ["sh", "-c", "test ! -e /etc/added && test -e /bin/wc"])
        assert check.payload["exit_code"] == 0
        armor.cancel("pod-cp")
        assert on_podman.client.images.list(filters={"label": ["armor.snapshot", "armor.task=pod-cp"]}) == []
