"""hook_timeout: map with a deadline per call."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from reactivex import Observable, abc

from armor_rx.errors import ConfigError
from armor_rx.operators._deadline import call_with_timeout, check_timeout
from armor_rx.operators._hook_events import hook_name

_T = TypeVar("_T")
_U = TypeVar("_U")


def hook_timeout_(
    fn: Callable[[_T], _U], seconds: float, name: str | None = None
) -> Callable[[Observable[_T]], Observable[_U]]:
    hook = hook_name(fn, name)
    if seconds is None:  # the helper would read None as "no deadline"
        raise ConfigError(f"hook_timeout for {hook!r} needs a positive number of seconds, not None")
    check_timeout(seconds, f"hook {hook!r}")

    def _hook_timeout(source: Observable[_T]) -> Observable[_U]:
        def subscribe(observer: abc.ObserverBase[_U], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            stopped = False

            def on_next(value: _T) -> None:
                nonlocal stopped
                if stopped:  # no more calls once one has failed or overrun
                    return
                try:
                    result = call_with_timeout(fn, value, seconds, hook)
                except Exception as exc:
                    stopped = True
                    observer.on_error(exc)
                else:
                    observer.on_next(result)

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return _hook_timeout
