"""Group commit: one thread gathers pending appends and flushes them together.

This is the ``batch`` fsync policy. Appenders queue entries under the log's
lock (so queue order is seq order); the commit thread takes them in batches of
at most ``batch_max`` and hands each batch to ``flush``, which writes it with
one write and one fsync and resolves the appenders.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from armor_rx.model import TaskEvent

# One queued event: its seq, its line, the numbered event, and the future to
# resolve (None when the appender waits for the durable seq itself).
Entry = tuple[int, bytes, TaskEvent, "Future[Any] | None"]


class GroupCommit:
    """The commit thread and its queue. ``push`` must be called holding ``lock``."""

    def __init__(
        self,
        lock: threading.Lock,
        flush: Callable[[list[Entry]], None],
        *,
        batch_delay: float,
        batch_max: int,
        name: str,
    ) -> None:
        self._wakeup = threading.Condition(lock)
        self._flush = flush
        self._batch_delay = batch_delay
        self._batch_max = batch_max
        self._pending: list[Entry] = []
        self._since = 0.0  # when the oldest pending entry arrived
        self._last_batch = 0
        self._open = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._open = True
        self._thread.start()

    def push(self, entry: Entry) -> None:
        pending = self._pending
        pending.append(entry)
        count = len(pending)
        # Wake the thread only when it has something new to decide.
        if count == 1:
            self._since = time.monotonic()
            self._wakeup.notify()
        elif count == self._batch_max:
            self._wakeup.notify()

    def close(self) -> None:
        """Flush everything queued, then end the thread. Call it without holding the lock."""
        with self._wakeup:
            self._open = False
            self._wakeup.notify_all()
        if self._thread.ident is not None and not self.on_thread():
            self._thread.join()

    def on_thread(self) -> bool:
        """True when called from the commit thread (from a future callback)."""
        return threading.current_thread() is self._thread

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._pending and self._open:
                    self._wakeup.wait()
                if not self._pending:
                    return
                # Wait for company only when there is concurrency to gather: a
                # lone sequential appender should not pay batch_delay each time.
                if self._batch_delay > 0 and self._open and (self._last_batch > 1 or len(self._pending) > 1):
                    deadline = self._since + self._batch_delay
                    while len(self._pending) < self._batch_max and self._open:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._wakeup.wait(remaining)
                # Leftovers (more than batch_max were waiting) keep the old
                # arrival time, so they go out next without further waiting.
                batch = self._pending[: self._batch_max]
                del self._pending[: self._batch_max]
                self._last_batch = len(batch)
            self._flush(batch)
