"""The bus: durable events fanned out to subscribers, with seamless replay.

Recent events are kept in memory (the last ``memory_events``); older ones are
read from the durable log through ``read_history``. A subscription first
replays what it asked for, then goes live; events are numbered by the log, so
the seam between history and live is found by ``seq``, never by time, and no
event is delivered twice or skipped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import reactivex
import structlog
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from armor_rx.errors import ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.model.patterns import kind_matcher

ReadHistory = Callable[[int, int], Iterable[TaskEvent]]
"""``read_history(first_seq, last_seq)`` yields logged events in that inclusive range."""

_log = structlog.get_logger("armor_rx.bus")


@dataclass
class _Subscriber:
    matches: Callable[[TaskEvent], bool]
    observer: abc.ObserverBase[TaskEvent]
    # Live events that arrive while the subscriber is still replaying history.
    pending: deque[TaskEvent] | None
    last_seq: int = 0
    closed: bool = False


class EventBus:
    """Publish logged events in seq order; subscribe by kind pattern with replay."""

    def __init__(
        self, read_history: ReadHistory, *, memory_events: int = 10_000, memory_bytes: int = 32 * 1024 * 1024, last_seq: int = 0
    ) -> None:
        if memory_events < 1:
            raise ConfigError(f"memory_events must be at least 1, not {memory_events}")
        if memory_bytes < 1:
            raise ConfigError(f"memory_bytes must be at least 1, not {memory_bytes}")
        self._read_history = read_history
        # The replay window is bounded by count and by size: a burst of large
        # exec.output events must not pin hundreds of MB (older ones are on disk).
        self._recent: deque[TaskEvent] = deque()
        self._sizes: deque[int] = deque()
        self._recent_bytes = 0
        self._memory_events = memory_events
        self._memory_bytes = memory_bytes
        self._subscribers: list[_Subscriber] = []
        self._lock = threading.RLock()
        self._published_seq = last_seq
        self._closed = False

    @property
    def published_seq(self) -> int:
        return self._published_seq

    def publish(self, event: TaskEvent) -> None:
        """Deliver one logged event; callers publish in increasing ``seq`` order."""
        if event.seq is None:
            raise ConfigError(f"only logged events can be published; {event.kind} {event.id} has no seq")
        with self._lock:
            if event.seq <= self._published_seq:
                return  # already published (a re-delivery); the seam check keeps it out
            self._published_seq = event.seq
            size = len(event.to_json())
            self._recent.append(event)
            self._sizes.append(size)
            self._recent_bytes += size
            while len(self._recent) > 1 and (len(self._recent) > self._memory_events or self._recent_bytes > self._memory_bytes):
                self._recent.popleft()
                self._recent_bytes -= self._sizes.popleft()
            subscribers = list(self._subscribers)
        for sub in subscribers:
            if sub.pending is not None:
                with self._lock:
                    if sub.pending is not None:
                        sub.pending.append(event)
                        continue
            self._deliver(sub, event)

    def close(self) -> None:
        """Complete every subscription (the session is stopping)."""
        with self._lock:
            self._closed = True
            subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            sub.closed = True
            sub.observer.on_completed()

    def _deliver(self, sub: _Subscriber, event: TaskEvent) -> None:
        assert event.seq is not None
        if sub.closed or event.seq <= sub.last_seq:
            return
        sub.last_seq = event.seq
        if not sub.matches(event):
            return
        try:
            sub.observer.on_next(event)
        except Exception as exc:  # a subscriber's bug must not stop the bus for everyone
            _log.warning("subscriber raised; it is unsubscribed", error=repr(exc), kind=event.kind)
            self._drop(sub)

    def _drop(self, sub: _Subscriber) -> None:
        sub.closed = True
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def subscribe(
        self,
        pattern: str = "*",
        *,
        task_id: str | None = None,
        last: int | None = None,
        since: float | None = None,
        from_seq: int | None = None,
    ) -> Observable[TaskEvent]:
        """Events whose kind matches ``pattern`` (and task, if given), replay first.

        Replay, at most one of: ``last=N`` (the last N matching events),
        ``since=S`` (those of the last S seconds), ``from_seq=Q`` (everything
        from seq Q). Without them the subscription is live only.

        >>> bus = EventBus(lambda a, b: [])
        >>> seen = []
        >>> _ = bus.subscribe("task.*").subscribe(seen.append)
        >>> bus.publish(TaskEvent.new("task.created", "t1").with_seq(1))
        >>> [e.kind for e in seen]
        ['task.created']
        """
        if sum(x is not None for x in (last, since, from_seq)) > 1:
            raise ConfigError("give at most one of last=, since=, from_seq=")
        if last is not None and last < 0:
            raise ConfigError(f"last must be >= 0, not {last}")
        kind_ok = kind_matcher(pattern)

        def matches(event: TaskEvent) -> bool:
            return kind_ok(event.kind) and (task_id is None or event.task_id == task_id)

        def on_subscribe(observer: abc.ObserverBase[TaskEvent], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            replaying = last is not None or since is not None or from_seq is not None
            sub = _Subscriber(matches, observer, deque() if replaying else None)
            with self._lock:
                if self._closed:
                    observer.on_completed()
                    return Disposable()
                sub.last_seq = self._published_seq if not replaying else 0
                upto = self._published_seq
                recent = list(self._recent)
                self._subscribers.append(sub)
            if replaying:
                try:
                    for event in self._history(matches, recent, upto, last, since, from_seq):
                        if sub.closed:
                            break
                        self._deliver(sub, event)
                finally:
                    # Drain live events that queued up during replay, then go live.
                    while True:
                        with self._lock:
                            if not sub.pending:
                                sub.pending = None
                                break
                            batch = list(sub.pending)
                            sub.pending.clear()
                        for event in batch:
                            self._deliver(sub, event)
            return Disposable(lambda: self._drop(sub))

        return reactivex.create(on_subscribe)

    def _history(
        self,
        matches: Callable[[TaskEvent], bool],
        recent: list[TaskEvent],
        upto: int,
        last: int | None,
        since: float | None,
        from_seq: int | None,
    ) -> Iterable[TaskEvent]:
        oldest_in_memory = recent[0].seq if recent else upto + 1
        assert oldest_in_memory is not None
        if from_seq is not None:
            if from_seq < oldest_in_memory:
                yield from self._read_history(max(1, from_seq), oldest_in_memory - 1)
            yield from (e for e in recent if e.seq is not None and e.seq >= from_seq)
            return
        if since is not None:
            cutoff = time.time() - since
            if not recent or recent[0].ts >= cutoff:
                yield from (e for e in self._read_history(1, oldest_in_memory - 1) if e.ts >= cutoff)
            yield from (e for e in recent if e.ts >= cutoff)
            return
        assert last is not None
        if last == 0:
            return
        tail = [e for e in recent if matches(e)][-last:]
        if len(tail) < last and oldest_in_memory > 1:
            # Not enough in memory: the rest comes from the durable log.
            older: deque[TaskEvent] = deque(maxlen=last - len(tail))
            for event in self._read_history(1, oldest_in_memory - 1):
                if matches(event):
                    older.append(event)
            yield from older
        yield from tail
