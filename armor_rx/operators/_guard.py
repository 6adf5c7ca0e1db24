"""guard: a before-hook that can veto an event."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from reactivex import Observable

from armor_rx.errors import Vetoed
from armor_rx.model.events import TaskEvent
from armor_rx.operators._deadline import Deadline, check_timeout
from armor_rx.operators._hook_events import Policy, check_policy, failed, hook_filter, hook_name, vetoed
from armor_rx.operators._per_event import per_event

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

    def decide(event: TaskEvent) -> Sequence[TaskEvent]:
        if not applies(event):
            return (event,)
        # Only the check is inside the try; building a report event that fails
        # (raised from here) ends the stream through per_event.
        error: Exception | None = None
        result: object
        try:
            result = call(event)
        except Exception as exc:  # Vetoed included; sorted out below
            result = exc
        if result is None or result is True:  # the common case, kept short
            return (event,)
        try:
            if isinstance(result, Exception):
                raise result
            reason = _verdict(result, hook)
        except Vetoed as exc:
            reason = exc.reason
        except Exception as exc:  # a broken check is governed by on_error
            error = exc
            reason = None
        if error is None:
            return (event,) if reason is None else (vetoed(event, hook, reason),)
        if on_error == "fail_closed":
            why = f"guard {hook!r} failed closed: {type(error).__name__}: {error}"
            return (vetoed(event, hook, why, error),)
        return (failed(event, hook, error, on_error), event)

    return per_event(decide)
