"""How much of a task's command output the event log records.

A command can print without end; every byte it prints would otherwise become
an ``exec.output`` event on disk (2 GB printed grew the log by 2.1 GB). Each
task has a budget of recorded output bytes. Past it, the log gets one
``exec.output.truncated`` event (with the byte counts) and, in the command's
``exec.exited``, the tail of what it printed; the output itself still reaches
whoever is attached to the command (``exec`` with ``on_output``, the
service's exec and run streams), live, unrecorded.

The count survives a restart: it is kept per task under the state
directory, so a runaway task cannot get a fresh budget by crashing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import orjson

from armor_rx.sinks._atomic import write_atomic

DEFAULT_OUTPUT_QUOTA = 32 * 1024 * 1024
# What one exec.output event costs the log beyond its data (ids, kind, seq, timestamps, checksum).
# Each recorded chunk is charged it: output written a byte per frame is one event per byte, and
# counting only the data let the log grow ~200 times the quota.
EVENT_OVERHEAD = 256


class OutputQuota:
    """Recorded-output budgets per task. ``limit=None`` records everything. Thread-safe."""

    def __init__(self, limit: int | None = DEFAULT_OUTPUT_QUOTA, *, state_dir: Path | None = None) -> None:
        if limit is not None and limit < 0:
            from armor_rx.errors import ConfigError

            raise ConfigError(f"output_quota must be bytes >= 0 or None (no limit), not {limit!r}")
        self.limit = limit
        self._dir = state_dir / "docker" / "output" if state_dir is not None else None
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    def _path(self, task_id: str) -> Path | None:
        return self._dir / f"{task_id}.json" if self._dir is not None else None

    def used(self, task_id: str) -> int:
        """Bytes of the task's output recorded so far."""
        with self._lock:
            return self._load(task_id)

    def _load(self, task_id: str) -> int:
        if task_id not in self._used:
            path = self._path(task_id)
            try:
                data = orjson.loads(path.read_bytes()) if path is not None else {}
                recorded = data.get("recorded", 0) if isinstance(data, dict) else 0
                # Damage of any shape (null, a list, a negative count) must neither raise inside
                # the output consumer nor hand out more than the quota.
                self._used[task_id] = max(0, int(recorded)) if isinstance(recorded, (int, float)) else 0
            except (OSError, ValueError, OverflowError, orjson.JSONDecodeError):
                self._used[task_id] = 0  # none yet, or damaged: the budget starts again rather than refusing the task
        return self._used[task_id]

    def take(self, task_id: str, size: int) -> bool:
        """Record ``size`` more bytes? True while the budget lasts (the chunk that crosses it is still recorded whole)."""
        with self._lock:
            used = self._load(task_id)
            if self.limit is not None and used >= self.limit:
                return False
            self._used[task_id] = used + size
            return True

    def save(self, task_id: str) -> None:
        """Persist the task's count (after each command)."""
        path = self._path(task_id)
        if path is None:
            return
        with self._lock:
            used = self._load(task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not fsynced: a count a crash loses costs at most one command's output of budget.
        write_atomic(path, orjson.dumps({"recorded": used}), durable=False)
