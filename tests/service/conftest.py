"""Fixtures for the service: real processes on a real unix socket.

``api`` is the one API test suite's subject: the in-process ``Armor`` and the
service's client ``connect()`` behind the same calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import run_git


def armor_cli(*args, env=None, timeout=120, **kwargs):
    return subprocess.run([sys.executable, "-m", "armor_rx", *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kwargs)


def service_info(state):
    from armor_rx.client.autostart import probe
    from armor_rx.service.paths import ServicePaths

    return probe(ServicePaths.of(state), timeout=2.0)


def kill_service(state, sig=signal.SIGKILL, wait=10.0):
    found = service_info(state)
    assert found is not None, f"no service runs for {state}"
    os.kill(int(found["pid"]), sig)
    deadline = time.monotonic() + wait
    while service_info(state) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(found["pid"])


@pytest.fixture
def no_docker(monkeypatch):
    """Services started by this test run without containers (as the in-process Armor here does)."""
    monkeypatch.setenv("ARMOR_RX_DOCKER", "0")


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("hello\n")
    run_git(path, "add", "-A")
    run_git(path, "commit", "-qm", "initial")
    return path


@pytest.fixture(params=["in-process", "service"])
def api(request, repo, no_docker):
    """The same API, in this process or through the repository's service."""
    if request.param == "in-process":
        from armor_rx import Armor

        with Armor(repo) as armor:
            yield armor
    else:
        from armor_rx import connect

        with connect(repo) as remote:
            yield remote
        from tests.service.conftest import kill_service as _kill

        _kill(repo / ".armor", signal.SIGTERM)


# The real-daemon fixtures (a session-wide engine and the imported busybox image).
from tests.sinks.docker.conftest import engine, test_image  # noqa: E402,F401
