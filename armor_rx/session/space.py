"""Refusing work before the disk is full, rather than failing in the middle of it.

The event log must always be able to record how a task ends. So a session
keeps a reserve of free space on the state directory's filesystem, and
optionally a cap on the size of its own bookkeeping (log, snapshots, dead
letters, docker results; not the worktrees, which are the agents' work):
below the reserve or over the cap, new work is refused with
:class:`armor_rx.errors.StateDirFull` and a sentence saying what to free —
while the requests that wind tasks down (fail, cancel, interrupt) still go
through. Per-task output has its own bound (sinks/docker/quota.py).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from armor_rx.errors import StateDirFull

DEFAULT_RESERVE = 64 * 1024 * 1024
# Requests that end or pause work: they write a few events, and refusing them
# would leave tasks running that a person is trying to stop.
WIND_DOWN = frozenset({"task.fail.requested", "task.cancel.requested", "task.interrupted"})
# armor's own bookkeeping under the state directory (the worktrees are not counted).
_OWN = ("events", "deadletter", "snapshot.json", "docker", "quarantine", "images")
_MEASURE_EVERY = 2.0


def _size(path: Path) -> int:
    total = 0
    stack = [path]
    while stack:  # iterative: a state directory's shape is not the agent's to choose, but a walk must not recurse
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except NotADirectoryError:
            try:
                total += current.stat().st_size
            except OSError:
                pass
        except OSError:
            continue
    return total


class SpaceGuard:
    """Checks free space (every request) and the state directory's own size (at most every 2 s)."""

    def __init__(self, state_dir: Path, *, reserve: int = DEFAULT_RESERVE, cap: int | None = None) -> None:
        self.state_dir = state_dir
        self.reserve = reserve
        self.cap = cap
        self._lock = threading.Lock()
        self._measured_at = 0.0
        self._used = 0

    def used(self) -> int:
        """Bytes of armor's own files in the state directory (measured at most every 2 s)."""
        with self._lock:
            if time.monotonic() - self._measured_at >= _MEASURE_EVERY:
                self._used = sum(_size(self.state_dir / name) for name in _OWN)
                self._measured_at = time.monotonic()
            return self._used

    def check(self, kind: str) -> None:
        """Raise StateDirFull if ``kind`` is new work and there is no room for it."""
        if kind in WIND_DOWN:
            return
        try:
            free = shutil.disk_usage(self.state_dir).free
        except OSError:
            return  # the directory is being made or is gone: the write itself will say so
        if free < self.reserve:
            raise StateDirFull(
                f"refused {kind}: the disk holding {self.state_dir} has {free / 2**20:.1f} MiB free, under the "
                f"{self.reserve / 2**20:.0f} MiB armor keeps so the log can always record how tasks end; free some "
                "space (tasks can still be failed, cancelled or interrupted)")
        if self.cap is not None and self.used() > self.cap:
            raise StateDirFull(
                f"refused {kind}: {self.state_dir} holds {self.used() / 2**20:.1f} MiB of armor's own records, over its "
                f"cap of {self.cap / 2**20:.1f} MiB (SessionConfig.state_cap); remove finished tasks' records or raise the cap "
                "(tasks can still be failed, cancelled or interrupted)")
