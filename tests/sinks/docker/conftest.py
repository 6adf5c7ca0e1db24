"""Fixtures on the real Docker daemon named by DOCKER_HOST (scripts/dockerd.sh starts one).

No registry is reachable: the test image is ``docker import`` of a root
filesystem made from Debian's busybox-static, with a non-root user.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from armor_rx.sinks.docker.rootfs import ROOTFS_LAYOUT

# Tagged by the root filesystem's layout: test runs of other versions on a shared daemon keep their own image.
TEST_IMAGE = f"armor-rx-test/busybox:{ROOTFS_LAYOUT}"
APPLETS = ("sh", "ls", "cat", "echo", "true", "false", "sleep", "dd", "head", "yes", "wc", "nc", "wget", "id", "touch",
           "mkdir", "rm", "seq", "env", "kill", "pwd", "test", "printf", "tr", "grep")


def _engine_or_reason():
    from armor_rx.errors import DockerUnavailable
    from armor_rx.sinks.docker import Engine

    if not os.environ.get("DOCKER_HOST"):
        return None, "DOCKER_HOST is not set; run the tests through scripts/test.sh (it starts a private dockerd)"
    try:
        return Engine.connect(timeout=30), None
    except DockerUnavailable as exc:
        return None, str(exc)


@pytest.fixture(scope="session")
def engine():
    found, reason = _engine_or_reason()
    if found is None:
        if os.environ.get("ARMOR_REQUIRE_DOCKER") == "1":
            # scripts/test.sh started a daemon: an engine we cannot use is a failure, not a skip
            # (docker 7.0.0 with requests 2.32 once skipped every docker test this way).
            pytest.fail(f"ARMOR_REQUIRE_DOCKER=1 but no usable Docker engine: {reason}")
        pytest.skip(f"no Docker engine: {reason}")
    yield found
    found.close()


def busybox_rootfs() -> bytes:
    from armor_rx.sinks.docker.rootfs import busybox_rootfs as build

    return build()


@pytest.fixture(scope="session")
def test_image(engine):
    """The busybox test image's tag (imported once per test session)."""
    if not (shutil.which("busybox") or os.path.exists("/bin/busybox")):
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")

    from armor_rx.sinks.docker.rootfs import import_rootfs

    import_rootfs(engine, busybox_rootfs(), TEST_IMAGE)  # tagged as asked on Podman too
    return TEST_IMAGE


GIT_IMAGE = f"armor-rx-test/git:{ROOTFS_LAYOUT}"


@pytest.fixture(scope="session")
def git_image(engine):
    """The busybox image with the host's git and its libraries copied in (imported once per test session)."""
    if not (shutil.which("busybox") or os.path.exists("/bin/busybox")) or not shutil.which("git"):
        pytest.skip("busybox-static and git are needed to build the git test image")
    from armor_rx.sinks.docker.rootfs import busybox_rootfs as build
    from armor_rx.sinks.docker.rootfs import import_rootfs

    import_rootfs(engine, build(git=True), GIT_IMAGE)
    return GIT_IMAGE


@pytest.fixture
def sandbox(test_image):
    from armor_rx.sinks.docker import SandboxSpec

    return SandboxSpec(image=test_image, pids_limit=64, mem_limit=64 * 1024 * 1024, wall_clock=120)


@pytest.fixture
def cleanup_containers(engine):
    """Removes every armor-labelled container a test leaves behind."""
    import docker.errors

    yield
    # Sparse: a full list inspects every container, and other sessions on a shared daemon remove theirs meanwhile.
    for c in engine.client.containers.list(all=True, sparse=True, filters={"label": "armor.task"}):
        labels = c.attrs.get("Labels") or {}
        if labels.get("armor.host") == os.uname().nodename and labels.get("armor.pid") == str(os.getpid()):
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass


def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
