"""guard: a before-hook that can veto an event."""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable, abc

from armor_rx.errors import Vetoed
from armor_rx.model.events import TaskEvent
from armor_rx.operators._deadline import Deadline, check_timeout
from armor_rx.operators._hook_events import Policy, check_policy, failed, hook_filter, hook_name, vetoed

Check = Callable[[TaskEvent], "bool | str | None"]


def _verdict(result: object, hook: str) -> str | None:
    """The veto reason a check's return value stands for, or None to allow."""
    if result is None or result is True:
        return None
    if result is False:
        return f"refused by {hook}"
    if isinstance(result, str):
        return result or f"refused by {hook}"
    # Treated like a crash of the check, so the on_error policy decides.
    raise TypeError(
        f"guard {hook!r} returned {result!r}; return None or True to allow, "
        "False or a reason string (or raise Vetoed) to veto"
    )


def guard_(
    check: Check,
    kinds: str = "*",
    name: str | None = None,
    on_error: Policy = "fail_closed",
    timeout: float | None = None,
) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    hook = hook_name(check, name)
    check_policy(on_error, hook)
    check_timeout(timeout, f"guard {hook!r}")
    applies = hook_filter(kinds)
    call = Deadline(check, timeout, hook)

    def _guard(source: Observable[TaskEvent]) -> Observable[TaskEvent]:
        def subscribe(
            observer: abc.ObserverBase[TaskEvent], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def on_next(event: TaskEvent) -> None:
                if not applies(event):
                    observer.on_next(event)
                    return
                # Only the check is inside the try: an exception from downstream
                # belongs to downstream and must not be mistaken for a veto.
                error: Exception | None = None
                result: object
                try:
                    result = call(event)
                except Exception as exc:  # Vetoed included; sorted out below
                    result = exc
                if result is None or result is True:  # the common case, kept short
                    observer.on_next(event)
                    return
                try:
                    if isinstance(result, Exception):
                        raise result
                    reason = _verdict(result, hook)
                except Vetoed as exc:
                    reason = exc.reason
                except Exception as exc:  # a broken check is governed by on_error
                    error = exc
                    reason = None
                try:
                    if error is None:
                        out = [event] if reason is None else [vetoed(event, hook, reason)]
                    elif on_error == "fail_closed":
                        why = f"guard {hook!r} failed closed: {type(error).__name__}: {error}"
                        out = [vetoed(event, hook, why, error)]
                    else:
                        out = [failed(event, hook, error, on_error), event]
                except Exception as exc:  # e.g. a report event that cannot be built
                    observer.on_error(exc)
                    return
                for item in out:
                    observer.on_next(item)

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return _guard
