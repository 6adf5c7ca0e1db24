"""Fixtures on the real Docker daemon named by DOCKER_HOST (scripts/dockerd.sh starts one).

No registry is reachable: the test image is ``docker import`` of a root
filesystem made from Debian's busybox-static, with a non-root user.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time

import pytest

TEST_IMAGE = "armor-rx-test/busybox:latest"
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
        pytest.skip(f"no Docker engine: {reason}")
    yield found
    found.close()


def busybox_rootfs() -> bytes:
    """A tar of a tiny root filesystem: busybox, applet symlinks, a non-root user."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_dir(name, mode=0o755):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name, data, mode=0o644):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "tmp", "workspace", "home", "proc", "sys", "dev"):
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        info = tarfile.TarInfo("home/agent")
        info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, 1000, 1000
        tar.addfile(info)
        with open(busybox, "rb") as f:
            add_file("bin/busybox", f.read(), 0o755)
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/home/agent:/bin/sh\n")
        add_file("etc/group", b"root:x:0:\nagent:x:1000:\n")
    return buf.getvalue()


@pytest.fixture(scope="session")
def test_image(engine):
    """The busybox test image's tag (imported once per test session)."""
    if not (shutil.which("busybox") or os.path.exists("/bin/busybox")):
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")

    engine.api.import_image_from_data(busybox_rootfs(), repository=TEST_IMAGE.split(":")[0], tag="latest")
    return TEST_IMAGE


@pytest.fixture
def sandbox(test_image):
    from armor_rx.sinks.docker import SandboxSpec

    return SandboxSpec(image=test_image, pids_limit=64, mem_limit=64 * 1024 * 1024, wall_clock=120)


@pytest.fixture
def cleanup_containers(engine):
    """Removes every armor-labelled container a test leaves behind."""
    yield
    for c in engine.client.containers.list(all=True, filters={"label": "armor.task"}):
        if c.labels.get("armor.host") == os.uname().nodename and c.labels.get("armor.pid") == str(os.getpid()):
            c.remove(force=True)


def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
