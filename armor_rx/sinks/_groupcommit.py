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
from typing import Any, NamedTuple

from armor_rx.model import TaskEvent


class Batch(NamedTuple):
    """One group commit: events with consecutive seqs from ``first_seq`` on.

    ``futures[i]`` resolves to ``events[i]``; it is None when the appender
    waits for the durable seq itself. Parallel lists rather than a tuple per
    event: an object per append that lives until its flush is work for the
    garbage collector in a burst of thousands.
    """

    first_seq: int
    lines: list[bytes]
    events: list[TaskEvent]
    futures: list[Future[Any] | None]


class GroupCommit:
    """The commit thread and its queue. ``push`` must be called holding ``lock``."""

    def __init__(
        self,
        lock: threading.Lock,
        flush: Callable[[Batch], None],
        *,
        batch_delay: float,
        batch_max: int,
        name: str,
    ) -> None:
        self._wakeup = threading.Condition(lock)
        self._flush = flush
        self._batch_delay = batch_delay
        self._batch_max = batch_max
        self._first_seq = 0  # the seq of the oldest pending event
        self._lines: list[bytes] = []
        self._events: list[TaskEvent] = []
        self._futures: list[Future[Any] | None] = []
        self._since = 0.0  # when the oldest pending entry arrived
        self._last_batch = 0
        self._open = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._open = True
        self._thread.start()

    def push(self, seq: int, line: bytes, event: TaskEvent, future: Future[Any] | None) -> None:
        """Queue the next event (``seq`` is one more than the last pushed, or the first)."""
        lines = self._lines
        lines.append(line)
        self._events.append(event)
        self._futures.append(future)
        count = len(lines)
        # Wake the thread only when it has something new to decide.
        if count == 1:
            self._first_seq = seq
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
                while not self._lines and self._open:
                    self._wakeup.wait()
                if not self._lines:
                    return
                # Wait for company only when there is concurrency to gather: a
                # lone sequential appender should not pay batch_delay each time.
                if self._batch_delay > 0 and self._open and (self._last_batch > 1 or len(self._lines) > 1):
                    deadline = self._since + self._batch_delay
                    while len(self._lines) < self._batch_max and self._open:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._wakeup.wait(remaining)
                # Leftovers (more than batch_max were waiting) keep the old
                # arrival time, so they go out next without further waiting.
                batch = self._take(self._batch_max)
                self._last_batch = len(batch.lines)
            self._flush(batch)

    def _take(self, most: int) -> Batch:
        lines, events, futures = self._lines, self._events, self._futures
        if len(lines) <= most:  # the usual case: take the lists themselves, no copies
            batch = Batch(self._first_seq, lines, events, futures)
            self._lines, self._events, self._futures = [], [], []
            return batch
        batch = Batch(self._first_seq, lines[:most], events[:most], futures[:most])
        del lines[:most], events[:most], futures[:most]
        self._first_seq += most
        return batch
