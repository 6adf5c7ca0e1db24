"""One monitor assembled: its state, its feed, its command engine and (optionally) its screen.

:class:`Monitor` is what ``armor-rx monitor`` runs and what tests drive: it
wires the parts for one state directory and owns their threads, which end
with :meth:`Monitor.close`.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from prompt_toolkit.history import History
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output

from armor_rx.monitor.app import MonitorApp, shell_runner
from armor_rx.monitor.engine import CommandEngine
from armor_rx.monitor.feed import Feed
from armor_rx.monitor.state import MonitorState
from armor_rx.sinks.statedir import StateDir


class Monitor:
    """A monitor of the service of ``repo`` / ``state_dir`` (resolved like every verb's ``--repo`` / ``--state-dir``)."""

    def __init__(self, repo: str | Path | None = None, *, state_dir: str | Path | None = None, stuck_after: float = 120.0,
                 history: int = 5000, max_items: int = 2000, policy: Literal["drop_oldest", "latest"] = "drop_oldest",
                 max_fps: float = 10.0, retry: float = 0.5) -> None:
        self.repo = repo
        self.state_dir = StateDir.resolve(state_dir, repo)
        self.state = MonitorState(history=history, stuck_after=stuck_after)
        self.feed = Feed(self._attach, self.state, history=history, max_items=max_items, policy=policy, retry=retry)
        self.engine = CommandEngine(self.state, self._connect)
        self.max_fps = max_fps
        self.started = time.monotonic()
        self._cpu_start = os.times()
        self._closing = threading.Event()
        self._metrics_thread: threading.Thread | None = None

    def _attach(self) -> Any:
        from armor_rx.client.sync import RemoteArmor

        # Never starts a service: watching must not be what brings one up (and reconciles tasks).
        return RemoteArmor(self.repo, state_dir=self.state_dir, autostart=False)

    def _connect(self) -> Any:
        from armor_rx.client.sync import connect

        return connect(self.repo, state_dir=self.state_dir)

    def start(self) -> Monitor:
        self.feed.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._metrics_thread is not None:
            self._metrics_thread.join(5)
        self.feed.stop()
        self.engine.close()

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def app(self, *, input: Input | None = None, output: Output | None = None, history: History | None = None) -> MonitorApp:
        """The screen over this monitor (prompt_toolkit's pipe input and a dummy output in tests)."""
        return MonitorApp(self.state, self.engine, where=str(self.state_dir), max_fps=self.max_fps, history=history, input=input, output=output,
                          shell=shell_runner(self.state_dir))

    def metrics(self) -> dict[str, Any]:
        """What the benchmark reads: frames, event-to-screen latency, counts and this process's CPU time."""
        now = os.times()
        elapsed = time.monotonic() - self.started
        latencies = sorted(self.state.latencies)

        def pct(p: float) -> float | None:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None

        return {**self.state.snapshot_counts(), "pid": os.getpid(), "elapsed": elapsed, "cpu": (now.user + now.system) - (self._cpu_start.user + self._cpu_start.system),
                "fps": self.state.frames / elapsed if elapsed else 0.0, "latency_p50": pct(0.5), "latency_p99": pct(0.99),
                "latency_mean": statistics.fmean(latencies) if latencies else None, "latency_samples": len(latencies),
                "buffer": {"received": self.feed.stats.received, "delivered": self.feed.stats.delivered, "dropped": self.feed.stats.dropped,
                           "high_water": self.feed.stats.high_water}}

    def write_metrics(self, path: Path) -> None:
        """Write :meth:`metrics` to ``path`` atomically (a reader never sees half a file)."""
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(self.metrics(), indent=1))
        partial.replace(path)

    def write_metrics_every(self, path: Path, interval: float = 0.5) -> None:
        """Keep ``path`` up to date until :meth:`close` (the benchmark samples it during a flood)."""
        def loop() -> None:
            while not self._closing.wait(interval):
                self.write_metrics(path)

        self._metrics_thread = threading.Thread(target=loop, name="armor-monitor-metrics", daemon=True)
        self._metrics_thread.start()
