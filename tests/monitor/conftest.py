"""Fixtures for the monitor: a real service (no containers) on a real repository, and a screen on pipes.

``screen`` runs the monitor's prompt_toolkit application on prompt_toolkit's
pipe input and a dummy output, in a thread of its own, so a test types keys
and reads the monitor's state as the screen would show it.
"""

from __future__ import annotations

import asyncio
import signal
import threading

import pytest

from tests.service.conftest import kill_service, no_docker, wait_for  # noqa: F401 - no_docker is a fixture


@pytest.fixture
def served(repo, no_docker, monkeypatch, tmp_path):
    """The repository, with its service running (no Docker) and a client of it."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    from armor_rx import connect

    with connect(repo) as client:
        yield repo, client
    try:
        kill_service(repo / ".armor", signal.SIGTERM)
    except AssertionError:
        pass  # the test stopped it itself


@pytest.fixture
def monitor(served):
    from armor_rx.monitor import Monitor

    repo, _client = served
    with Monitor(repo, stuck_after=3600, retry=0.1) as mon:
        wait_for(lambda: mon.state.connected, 30, "the monitor to attach")
        yield mon


class Screen:
    """A running monitor application; ``keys`` types into it, ``wait`` polls the monitor's state."""

    def __init__(self, mon, history=None, record=False):
        import io

        from prompt_toolkit.data_structures import Size
        from prompt_toolkit.input import create_pipe_input
        from prompt_toolkit.output import DummyOutput
        from prompt_toolkit.output.vt100 import Vt100_Output

        self.monitor = mon
        self.state = mon.state
        self._input_cm = create_pipe_input()
        self.input = self._input_cm.__enter__()
        # record=True: the frames go, as a terminal would get them, into a string the test can read.
        self.written = io.StringIO()
        output = Vt100_Output(self.written, lambda: Size(rows=40, columns=160), term="xterm") if record else DummyOutput()
        self.app = mon.app(input=self.input, output=output, history=history)
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.app.app.is_running, 30, "the application to run")

    def _run(self):
        try:
            asyncio.run(self.app.run_async())
        except BaseException as exc:  # reported by the test
            self.error = exc

    def keys(self, text):
        self.input.send_text(text)

    def wait(self, predicate, what, timeout=30):
        return wait_for(predicate, timeout, what)

    def said(self, fragment, timeout=30):
        return self.wait(lambda: fragment in self.state.message, f"the status line to say {fragment!r} (it says {self.state.message!r})", timeout)

    def drawn(self):
        """Everything drawn so far, escape sequences removed (record=True)."""
        import re

        return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b[()][0-9A-Za-z]|\x1b[=>]", "", self.written.getvalue())

    def detail_text(self):
        with self.state.lock:
            return "\n".join(text for _style, text in self.state.detail)

    def close(self):
        if self.app.app.is_running:
            self.app.app.loop.call_soon_threadsafe(self.app.app.exit)
        self.thread.join(10)
        self._input_cm.__exit__(None, None, None)


@pytest.fixture
def screen(monitor):
    s = Screen(monitor)
    yield s
    s.close()
    assert s.error is None, s.error


# The real-daemon fixtures (a session-wide engine and the imported busybox image), for the docker-marked tests.
from tests.sinks.docker.conftest import engine, test_image  # noqa: E402,F401
