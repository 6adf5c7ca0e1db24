"""observe: an after-hook that watches events and cannot break the stream."""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable, abc

from armor_rx.model.events import TaskEvent
from armor_rx.operators._deadline import Deadline, check_timeout
from armor_rx.operators._hook_events import Policy, check_policy, failed, hook_filter, hook_name


def observe_(
    fn: Callable[[TaskEvent], object],
    kinds: str = "*",
    name: str | None = None,
    on_error: Policy = "fail_open",
    timeout: float | None = None,
) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    hook = hook_name(fn, name)
    check_policy(on_error, hook)
    check_timeout(timeout, f"observer {hook!r}")
    applies = hook_filter(kinds)
    call = Deadline(fn, timeout, hook)

    def _observe(source: Observable[TaskEvent]) -> Observable[TaskEvent]:
        def subscribe(
            observer: abc.ObserverBase[TaskEvent], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def on_next(event: TaskEvent) -> None:
                if not applies(event):
                    observer.on_next(event)
                    return
                try:
                    call(event)
                except Exception as exc:  # isolated: reported, never fatal to the stream
                    try:
                        report = failed(event, hook, exc, on_error)
                    except Exception as build_error:
                        observer.on_error(build_error)
                        return
                    # The event already happened; the report follows it.
                    observer.on_next(event)
                    observer.on_next(report)
                    return
                observer.on_next(event)

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return _observe
