"""What a backpressure buffer tells the outside world: live counters and drop reports."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class BackpressureStats:
    """Live counters of a :func:`~armor_rx.operators.backpressure` buffer.

    Safe to read at any time from any thread; one instance may be shared by
    several buffers to total them. Once a stream has completed,
    ``received == delivered + dropped``.
    """

    received: int = 0
    delivered: int = 0
    dropped: int = 0
    high_water: int = 0  # the longest the queue has been
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    # Called once or twice per item: explicit acquire/release, because a
    # ``with`` block allocates a bound ``__exit__`` each time it is entered.

    def add(self, *, received: int = 0, delivered: int = 0, dropped: int = 0) -> None:
        self._lock.acquire()
        try:
            self.received += received
            self.delivered += delivered
            self.dropped += dropped
        finally:
            self._lock.release()

    def saw_queue_length(self, length: int) -> None:
        self._lock.acquire()
        try:
            if length > self.high_water:
                self.high_water = length
        finally:
            self._lock.release()


@dataclass(frozen=True)
class DropReport:
    """Items a buffer dropped: ``dropped`` since the last report, ``total_dropped`` so far."""

    name: str
    policy: str
    dropped: int
    total_dropped: int
