"""hook_timeout: map with a deadline per call."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from reactivex import Observable

from armor_rx.errors import ConfigError
from armor_rx.operators._deadline import call_with_timeout, check_timeout
from armor_rx.operators._hook_events import hook_name
from armor_rx.operators._per_event import per_event

_T = TypeVar("_T")
_U = TypeVar("_U")


def hook_timeout_(
    fn: Callable[[_T], _U], seconds: float, name: str | None = None
) -> Callable[[Observable[_T]], Observable[_U]]:
    hook = hook_name(fn, name)
    if seconds is None:  # the helper would read None as "no deadline"
        raise ConfigError(f"hook_timeout for {hook!r} needs a positive number of seconds, not None")
    check_timeout(seconds, f"hook {hook!r}")

    # per_event stops calling fn once a call has failed or overrun.
    return per_event(lambda value: (call_with_timeout(fn, value, seconds, hook),))
