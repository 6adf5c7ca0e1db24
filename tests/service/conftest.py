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


def wait_for(predicate, timeout=60.0, what="condition"):
    """The predicate's first truthy value; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_ended(pid, what, timeout=10.0):
    """Wait until process ``pid`` has ended (a zombie counts: its starter may not have reaped it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except FileNotFoundError:
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} (pid {pid}) is still running")


class _Blocking:
    """Drives an async session from synchronous test code, so one suite covers sync and async."""

    def __init__(self, session):
        import asyncio
        import threading

        self._session = session
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._run(session.__aenter__())

    def _run(self, coroutine):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(120)

    def __getattr__(self, name):
        method = getattr(self._session, name)
        return lambda *args, **kwargs: self._run(method(*args, **kwargs))

    def events(self, *args, **kwargs):
        import asyncio

        blocking = self

        class _Subscribable:
            def subscribe(self, on_next):
                async def consume():
                    async for event in blocking._session.events(*args, **kwargs):
                        on_next(event)

                task = asyncio.run_coroutine_threadsafe(consume(), blocking._loop)

                class _Disposable:
                    def dispose(self):
                        task.cancel()

                return _Disposable()

        return _Subscribable()

    def close(self):
        self._run(self._session.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(params=["in-process", "service", "in-process-async", "service-async"])
def api(request, repo, no_docker):
    """The same API: in this process or through the repository's service, blocking or awaited."""
    kind = request.param
    if kind == "in-process":
        from armor_rx import Armor

        with Armor(repo) as armor:
            yield armor
    elif kind == "in-process-async":
        from armor_rx import AsyncArmor

        session = _Blocking(AsyncArmor(repo))
        try:
            yield session
        finally:
            session.close()
    elif kind == "service":
        from armor_rx import connect

        with connect(repo) as remote:
            yield remote
    else:
        from armor_rx import connect_async

        session = _Blocking(connect_async(repo))
        try:
            yield session
        finally:
            session.close()
    if kind.startswith("service"):
        kill_service(repo / ".armor", signal.SIGTERM)


# The real-daemon fixtures (a session-wide engine and the imported busybox image).
from tests.sinks.docker.conftest import engine, test_image  # noqa: E402,F401
