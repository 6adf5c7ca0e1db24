"""What guard and observe share: which events a hook sees and the events it reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from armor_rx.errors import ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.model.patterns import kind_matcher

Policy = Literal["fail_closed", "fail_open"]
_POLICIES = ("fail_closed", "fail_open")


def hook_name(fn: Callable[..., object], name: str | None) -> str:
    return name if name is not None else getattr(fn, "__qualname__", None) or repr(fn)


def check_policy(on_error: str, hook: str) -> None:
    if on_error not in _POLICIES:
        raise ConfigError(f"hook {hook!r}: on_error must be 'fail_closed' or 'fail_open', not {on_error!r}")


def hook_filter(kinds: str) -> Callable[[TaskEvent], bool]:
    """Whether a hook sees an event: its kind matches and it is not itself a hook report.

    Hook reports (``hook.*``) are never shown to hooks, so a hook cannot veto
    or fail on another hook's report and no report can cause a loop.
    """
    matches = kind_matcher(kinds)  # raises ConfigError now, not on the first event
    # Hooks sit on the hot path and kinds are few: remember each kind's answer
    # (bounded, in case a producer invents kinds without end).
    seen: dict[str, bool] = {}

    def applies(event: TaskEvent) -> bool:
        kind = event.kind
        answer = seen.get(kind)
        if answer is None:
            answer = matches(kind) and not kind.startswith("hook.")
            if len(seen) < 4096:
                seen[kind] = answer
        return answer

    return applies


def vetoed(event: TaskEvent, hook: str, reason: str, error: BaseException | None = None) -> TaskEvent:
    payload: dict[str, object] = {
        "hook": hook,
        "reason": reason,
        "vetoed_kind": event.kind,
        "vetoed_id": event.id,
    }
    if error is not None:
        payload["error_type"] = type(error).__name__
    return event.caused("hook.vetoed", payload)


def failed(event: TaskEvent, hook: str, error: BaseException, policy: Policy) -> TaskEvent:
    return event.caused(
        "hook.failed",
        {
            "hook": hook,
            "error": str(error),
            "error_type": type(error).__name__,
            "policy": policy,
            "fatal": policy == "fail_closed",
            "event_kind": event.kind,
            "event_id": event.id,
        },
    )
