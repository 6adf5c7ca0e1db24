"""stalled: flag an active task that has had no event for ``quiet`` seconds, and un-flag it when it moves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable
from reactivex.scheduler import TimeoutScheduler

from armor_rx.errors import ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import ACTIVE, KIND_TO_STATE, State

# The operator's own output is not movement: counted as such, a flag would clear itself.
STALL_KINDS = frozenset({"task.stalled", "task.unstalled"})


def stalled_(
    quiet: float,
    *,
    scheduler: abc.SchedulerBase | None = None,
    seed: Mapping[str, State] | None = None,
    clock: Callable[[], float] | None = None,
) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    if isinstance(quiet, bool) or not isinstance(quiet, (int, float)) or not quiet > 0:
        raise ConfigError(f"stalled needs a positive quiet time in seconds, not {quiet!r}")

    def _stalled(source: Observable[TaskEvent]) -> Observable[TaskEvent]:
        def subscribe(observer: abc.ObserverBase[TaskEvent],
                      sched: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            timers_on = scheduler or sched or TimeoutScheduler.singleton()
            now = clock or time.monotonic
            lock = threading.RLock()  # timers fire on the scheduler's thread, events arrive on the source's
            states: dict[str, State] = dict(seed or {})
            last: dict[str, tuple[float, str | None, int | None]] = {}  # task -> (when, kind, seq) of its latest event
            flagged: set[str] = set()
            timers: dict[str, SerialDisposable] = {}
            done = [False]

            def fire(task_id: str) -> None:
                with lock:
                    if done[0] or task_id in flagged or states.get(task_id) not in ACTIVE:
                        return
                    when, kind, seq = last.get(task_id, (now(), None, None))
                    flagged.add(task_id)
                    event = TaskEvent.new("task.stalled", task_id, {
                        "quiet_for": round(now() - when, 3), "quiet_after": quiet, "state": states[task_id].value,
                        "last_kind": kind, "last_seq": seq})
                    observer.on_next(event)

            def arm(task_id: str) -> None:
                timer = timers.get(task_id)
                if timer is None:
                    timer = timers[task_id] = SerialDisposable()
                timer.disposable = timers_on.schedule_relative(timedelta(seconds=quiet),
                                                               lambda _s, _x: fire(task_id))

            def forget(task_id: str) -> None:
                timer = timers.pop(task_id, None)
                if timer is not None:
                    timer.dispose()
                last.pop(task_id, None)
                states.pop(task_id, None)

            def on_next(event: TaskEvent) -> None:
                task_id = event.task_id
                if task_id is None or event.kind in STALL_KINDS:
                    return
                with lock:
                    if done[0]:
                        return
                    previous = last.get(task_id)
                    last[task_id] = (now(), event.kind, event.seq)
                    if event.kind in KIND_TO_STATE:
                        states[task_id] = KIND_TO_STATE[event.kind]
                    if task_id in flagged:
                        flagged.discard(task_id)
                        since = previous[0] if previous is not None else now()
                        observer.on_next(event.caused("task.unstalled", {
                            "quiet_for": round(now() - since, 3), "moved_by": event.kind, "seq": event.seq}))
                    if states.get(task_id) in ACTIVE:
                        arm(task_id)
                    elif states.get(task_id) is not None:
                        forget(task_id)  # over, or waiting for a person (pending, interrupted): not stalled

            def on_completed() -> None:
                close()
                observer.on_completed()

            def on_error(error: Exception) -> None:
                close()
                observer.on_error(error)

            def close() -> None:
                with lock:
                    done[0] = True
                    for timer in timers.values():
                        timer.dispose()
                    timers.clear()

            with lock:  # tasks already active when the watch begins are timed from now
                for task_id, state in list(states.items()):
                    if state in ACTIVE:
                        last[task_id] = (now(), None, None)
                        arm(task_id)
            subscription = source.subscribe(on_next, on_error, on_completed, scheduler=sched)
            return CompositeDisposable(subscription, Disposable(close))

        return Observable(subscribe)

    return _stalled

