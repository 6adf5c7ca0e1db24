"""backpressure: a bounded queue and one drain thread between producer and consumer.

reactivex is push-based: a producer calls ``on_next`` as fast as it likes. This
operator puts a bounded queue between it and the consumer, and a policy says
what happens when the queue is full. Downstream is called only from the drain
thread, one notification at a time.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Literal, TypeVar, cast

from reactivex import Observable, abc
from reactivex.disposable import Disposable, SingleAssignmentDisposable

from armor_rx.errors import BackpressureOverflow, ConfigError
from armor_rx.operators._backpressure_stats import BackpressureStats, DropReport

_T = TypeVar("_T")

_NOTHING = object()  # items may be None, so "no item" needs its own marker

Policy = Literal["block", "drop_oldest", "drop_newest", "latest", "error"]
POLICIES: tuple[str, ...] = ("block", "drop_oldest", "drop_newest", "latest", "error")


def validate(max_items: int, policy: str, report_interval: float) -> None:
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
        raise ConfigError(f"backpressure max_items must be an integer >= 1, not {max_items!r}")
    if policy not in POLICIES:
        raise ConfigError(f"unknown backpressure policy {policy!r}; use one of: {', '.join(POLICIES)}")
    if not isinstance(report_interval, (int, float)) or report_interval < 0:
        raise ConfigError(f"backpressure report_interval must be >= 0 seconds, not {report_interval!r}")


class _Buffer(Generic[_T]):
    """One subscription's queue and drain thread. Producer methods never call downstream."""

    def __init__(
        self,
        observer: abc.ObserverBase[_T],
        max_items: int,
        policy: str,
        on_drop: Callable[[DropReport], None] | None,
        report_interval: float,
        stats: BackpressureStats,
        name: str,
    ) -> None:
        self._observer = observer
        self._max = max_items
        # A blocked producer is woken only once the queue is half empty, so a
        # full queue costs one thread switch per half-queue, not one per item.
        self._low_water = max_items // 2
        self._policy = policy
        self._on_drop = on_drop
        self._interval = report_interval
        self._stats = stats
        self._name = name
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._queue: deque[_T] = deque()
        self._high = 0
        self._consumer_waiting = False
        self._producers_waiting = 0
        self._terminal: tuple[Exception | None] | None = None  # (error or None), after the queue
        self._overflow = False  # policy "error" tripped: the error jumps the queue
        self._closed = False  # accepts nothing more; the drain thread stops
        self._unreported = 0
        self._total_dropped = 0
        self._last_report: float | None = None
        self.upstream = SingleAssignmentDisposable()
        self._thread = threading.Thread(target=self._drain, name=f"{name}-drain", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- producer side (upstream's thread) ----------------------------------

    def _drop(self, count: int) -> None:
        """Count ``count`` lost items; call with the lock held."""
        if count:
            self._unreported += count
            self._total_dropped += count
            self._stats.add(dropped=count)

    def on_next(self, item: _T) -> None:
        self._stats.add(received=1)
        # Explicit acquire/release in the per-item paths: a ``with`` block
        # allocates a bound ``__exit__`` on every entry.
        self._lock.acquire()
        try:
            self._offer(item)
        finally:
            self._lock.release()

    def _offer(self, item: _T) -> None:
        """Queue ``item`` or apply the policy; lock held."""
        queue = self._queue
        if self._closed or self._overflow or self._terminal is not None:
            self._drop(1)
            return
        if len(queue) >= self._max:
            policy = self._policy
            if policy == "block":
                self._producers_waiting += 1
                while len(queue) >= self._max and not self._closed:
                    self._not_full.wait()
                self._producers_waiting -= 1
                if self._closed:
                    self._drop(1)
                    return
            elif policy == "drop_oldest":
                queue.popleft()
                self._drop(1)
            elif policy == "drop_newest":
                self._drop(1)
                return
            elif policy == "latest":
                self._drop(len(queue))
                queue.clear()
            else:  # "error": what is queued is lost with the stream
                self._overflow = True
                self._drop(len(queue) + 1)
                queue.clear()
                self._not_empty.notify()
                return
        queue.append(item)
        if len(queue) > self._high:
            self._high = len(queue)
            self._stats.saw_queue_length(self._high)
        if self._consumer_waiting:
            self._not_empty.notify()

    def _finish(self, error: Exception | None) -> None:
        with self._lock:
            if self._closed or self._terminal is not None:
                return
            self._terminal = (error,)
            self._not_empty.notify()

    def on_error(self, error: Exception) -> None:
        self._finish(error)

    def on_completed(self) -> None:
        self._finish(None)

    def dispose(self) -> None:
        with self._lock:
            self._close()
        self.upstream.dispose()

    def _close(self) -> None:
        """Stop for good; call with the lock held. Unsent items count as dropped."""
        if not self._closed:
            self._closed = True
            self._drop(len(self._queue))
            self._queue.clear()
            self._not_empty.notify_all()
            self._not_full.notify_all()

    # -- consumer side (the drain thread) -----------------------------------

    def _due_report(self, final: bool) -> DropReport | None:
        """A drop report if one is due; call with the lock held."""
        if not self._unreported or self._on_drop is None:
            return None
        now = time.monotonic()
        if not final and self._last_report is not None and now - self._last_report < self._interval:
            return None
        report = DropReport(self._name, self._policy, self._unreported, self._total_dropped)
        self._unreported = 0
        self._last_report = now
        return report

    def _wait_for_work(self) -> None:
        """Sleep until there is an item, an end, or a drop report falls due; lock held."""
        queue = self._queue
        while not queue and self._terminal is None and not self._overflow and not self._closed:
            timeout = None
            if self._unreported and self._on_drop is not None and self._last_report is not None:
                timeout = self._interval - (time.monotonic() - self._last_report)
                if timeout <= 0:
                    return
            self._consumer_waiting = True
            self._not_empty.wait(timeout)
            self._consumer_waiting = False

    def _drain(self) -> None:
        observer = self._observer
        queue = self._queue
        try:
            while True:
                item: object = _NOTHING
                end: tuple[Exception | None] | None = None
                self._lock.acquire()  # not ``with``: see on_next
                try:
                    self._wait_for_work()
                    if self._closed:
                        return
                    if self._overflow:
                        end = (BackpressureOverflow(self._max),)
                    elif queue:
                        item = queue.popleft()
                        if self._producers_waiting and len(queue) <= self._low_water:
                            self._not_full.notify_all()
                    elif self._terminal is not None:
                        end = self._terminal
                    report = self._due_report(final=end is not None)
                    if end is not None:
                        self._close()
                finally:
                    self._lock.release()
                if report is not None:
                    assert self._on_drop is not None
                    self._on_drop(report)
                if end is not None:
                    self.upstream.dispose()  # after an overflow the producer must stop
                    error = end[0]
                    if error is None:
                        observer.on_completed()
                    else:
                        observer.on_error(error)
                    return
                if item is not _NOTHING:
                    self._stats.add(delivered=1)
                    observer.on_next(cast(_T, item))
        except Exception as exc:  # downstream or on_drop failed: the stream ends with it
            with self._lock:
                self._close()
            self.upstream.dispose()
            observer.on_error(exc)


def backpressure_(
    max_items: int,
    policy: Policy = "block",
    on_drop: Callable[[DropReport], None] | None = None,
    report_interval: float = 1.0,
    stats: BackpressureStats | None = None,
    name: str = "backpressure",
) -> Callable[[Observable[_T]], Observable[_T]]:
    validate(max_items, policy, report_interval)

    def _backpressure(source: Observable[_T]) -> Observable[_T]:
        def subscribe(observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            counters = stats if stats is not None else BackpressureStats()
            buffer = _Buffer(observer, max_items, policy, on_drop, report_interval, counters, name)
            # The drain must run before the upstream subscribes: a synchronous
            # producer under "block" would otherwise wait for ever on a full queue.
            buffer.start()
            buffer.upstream.disposable = source.subscribe(
                buffer.on_next, buffer.on_error, buffer.on_completed, scheduler=scheduler
            )
            return Disposable(buffer.dispose)

        return Observable(subscribe)

    return _backpressure
