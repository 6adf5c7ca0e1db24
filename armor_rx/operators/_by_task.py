"""by_task: run items through an operator one at a time per key, keys concurrently.

Each key that has work gets a *lane*: a queue of its pending items and a
private copy of the inner pipeline (a Subject piped through ``inner``). Up to
``max_workers`` worker jobs take ready lanes from a shared queue; a lane is in
that queue or in one worker's hands, never both, so a key's items go through
``inner`` one by one, in order, while other keys' lanes run on other workers.
Workers stay on while lanes are ready, so a busy stream does not pay a thread
wake-up per lane. A lane whose queue runs dry completes its inner pipeline
and is forgotten, so memory follows the number of *busy* keys, not the number
of keys ever seen.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar, cast

from reactivex import Observable, abc
from reactivex.disposable import Disposable, SingleAssignmentDisposable
from reactivex.subject import Subject

from armor_rx.errors import ConfigError

_T = TypeVar("_T")
_U = TypeVar("_U")

# A busy lane hands its thread back after this many items so that one chatty
# key cannot starve the others when there are more busy keys than threads.
_BATCH = 32
_NOTHING = object()


def task_id_of(event: Any) -> Hashable:
    """The default key: the event's task id."""
    return event.task_id  # type: ignore[no-any-return]


class _Lane(Generic[_T]):
    __slots__ = ("key", "pending", "subject", "subscription")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.pending: deque[_T] = deque()
        self.subject: Subject[_T] | None = None  # touched only by the job draining the lane
        self.subscription: abc.DisposableBase | None = None


class _Lanes(Generic[_T, _U]):
    """One subscription's lanes, pool and serialised view of downstream."""

    def __init__(
        self,
        observer: abc.ObserverBase[_U],
        inner: Callable[[Observable[_T]], Observable[_U]],
        key: Callable[[_T], Hashable],
        scheduler: abc.SchedulerBase | None,
        max_workers: int,
        subscribe_scheduler: abc.SchedulerBase | None,
    ) -> None:
        self._observer = observer
        self._inner = inner
        self._key = key
        self._subscribe_scheduler = subscribe_scheduler
        self._lock = threading.Lock()  # lanes and counters
        self._emit_lock = threading.RLock()  # downstream, one call at a time
        self._lanes: dict[Hashable, _Lane[_T]] = {}
        self._ready: deque[_Lane[_T]] = deque()  # lanes with work and no worker on them
        self._workers = 0  # worker jobs started and not yet finished
        self._max_workers = max_workers
        self._open_inners = 0
        self._source_done = False
        self._stopped = False  # a terminal was sent or the subscription was disposed
        self.upstream = SingleAssignmentDisposable()
        self._executor: ThreadPoolExecutor | None = None
        if scheduler is None:
            # Per subscription, so no pool thread outlives the stream.
            self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="armor-rx-by-task")
        self._scheduler = scheduler

    # -- upstream -----------------------------------------------------------

    def on_next(self, item: _T) -> None:
        try:
            k = self._key(item)
            hash(k)
        except Exception as exc:
            self._fail(exc)
            return
        with self._lock:
            if self._stopped:
                return
            lane = self._lanes.get(k)
            if lane is None:  # a lane in the table is always ready or being drained
                lane = self._lanes[k] = _Lane(k)
                self._ready.append(lane)
                start = self._workers < self._max_workers
                self._workers += start
            else:
                start = False
            lane.pending.append(item)
        if start:
            self._start_worker()

    def on_error(self, error: Exception) -> None:
        self._fail(error)

    def on_completed(self) -> None:
        with self._lock:
            self._source_done = True
            done = self._check_done()
        if done:
            self._complete()

    # -- lanes --------------------------------------------------------------

    def _start_worker(self) -> None:
        try:
            if self._executor is not None:
                self._executor.submit(self._work)
            else:
                assert self._scheduler is not None
                self._scheduler.schedule(lambda _s, _st: self._work())
        except RuntimeError:  # the pool was shut down by a concurrent end
            if not self._stopped:
                raise

    def _work(self) -> None:
        """Drain ready lanes until none is left (one worker job; at most max_workers run)."""
        try:
            while True:
                with self._lock:
                    if self._stopped or not self._ready:
                        self._workers -= 1
                        return
                    lane = self._ready.popleft()
                if self._drain(lane):
                    with self._lock:
                        self._ready.append(lane)  # more to do: behind the other lanes
        except Exception as exc:  # inner or downstream raised on this thread
            with self._lock:
                self._workers -= 1
            self._fail(exc)

    def _drain(self, lane: _Lane[_T]) -> bool:
        """Feed up to a batch of the lane's items to its inner pipeline; True if more remain."""
        done = False
        for _ in range(_BATCH):
            item: object = _NOTHING
            with self._lock:
                if self._stopped:
                    return False
                if lane.pending:
                    item = lane.pending.popleft()
                elif lane.subject is None:
                    del self._lanes[lane.key]
                    done = self._check_done()
                    break
            if item is not _NOTHING:
                if lane.subject is None:
                    self._connect(lane)
                assert lane.subject is not None
                lane.subject.on_next(cast(_T, item))
            else:
                # Idle: end this lane's inner pipeline. Items that arrive
                # meanwhile wait in ``pending`` for a fresh one, so a key's
                # order holds across the restart.
                subject, lane.subject = lane.subject, None
                assert subject is not None
                subject.on_completed()
        else:
            return True
        if done:
            self._complete()
        return False

    def _connect(self, lane: _Lane[_T]) -> None:
        with self._lock:
            self._open_inners += 1
        lane.subject = Subject()
        lane.subscription = self._inner(lane.subject).subscribe(
            self._emit, self._fail, self._inner_done, scheduler=self._subscribe_scheduler
        )

    def _inner_done(self) -> None:
        with self._lock:
            self._open_inners -= 1
            done = self._check_done()
        if done:
            self._complete()

    def _check_done(self) -> bool:
        """Whether the output is complete now (and claim the right to say so); lock held."""
        if self._stopped or not self._source_done or self._lanes or self._open_inners:
            return False
        self._stopped = True
        return True

    # -- downstream ---------------------------------------------------------

    def _emit(self, value: _U) -> None:
        with self._emit_lock:
            if not self._stopped:
                self._observer.on_next(value)

    def _complete(self) -> None:
        with self._emit_lock:
            self._observer.on_completed()
        self._shutdown()

    def _fail(self, error: Exception) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._release()
        with self._emit_lock:
            self._observer.on_error(error)

    def dispose(self) -> None:
        with self._lock:
            self._stopped = True
        self._release()

    def _release(self) -> None:
        self.upstream.dispose()
        with self._lock:
            lanes = list(self._lanes.values())
            self._lanes.clear()
            self._ready.clear()
        for lane in lanes:
            lane.pending.clear()
            if lane.subscription is not None:
                lane.subscription.dispose()
        self._shutdown()

    def _shutdown(self) -> None:
        if self._executor is not None:
            # Not waiting: this may run on a pool thread, which cannot join itself.
            self._executor.shutdown(wait=False, cancel_futures=True)


def by_task_(
    inner: Callable[[Observable[Any]], Observable[_U]],
    key: Callable[[Any], Hashable] = task_id_of,
    scheduler: abc.SchedulerBase | None = None,
    max_workers: int = 8,
) -> Callable[[Observable[_T]], Observable[_U]]:
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ConfigError(f"by_task max_workers must be an integer >= 1, not {max_workers!r}")

    def _by_task(source: Observable[_T]) -> Observable[_U]:
        def subscribe(
            observer: abc.ObserverBase[_U], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            lanes: _Lanes[_T, _U] = _Lanes(observer, inner, key, scheduler, max_workers, scheduler_)
            lanes.upstream.disposable = source.subscribe(
                lanes.on_next, lanes.on_error, lanes.on_completed, scheduler=scheduler_
            )
            return Disposable(lanes.dispose)

        return Observable(subscribe)

    return _by_task
