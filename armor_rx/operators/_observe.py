"""observe: an after-hook that watches events and cannot break the stream."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from reactivex import Observable

from armor_rx.model.events import TaskEvent
from armor_rx.operators._deadline import Deadline, check_timeout
from armor_rx.operators._hook_events import Policy, check_policy, failed, hook_filter, hook_name
from armor_rx.operators._per_event import per_event


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

    def decide(event: TaskEvent) -> Sequence[TaskEvent]:
        if not applies(event):
            return (event,)
        try:
            call(event)
        except Exception as exc:  # isolated: reported, never fatal to the stream
            # The event already happened; the report follows it. A report that
            # cannot be built (raised from here) ends the stream through per_event.
            return (event, failed(event, hook, exc, on_error))
        return (event,)

    return per_event(decide)
