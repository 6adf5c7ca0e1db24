"""dedup: drop re-deliveries of an item seen recently."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from reactivex import Observable, abc

from armor_rx.errors import ConfigError

_T = TypeVar("_T")


def event_id(event: Any) -> Hashable:
    """The default key: an event's id, which is what makes a re-delivery recognisable."""
    return event.id  # type: ignore[no-any-return]


def dedup_(
    window: int = 10_000, key: Callable[[Any], Hashable] = event_id
) -> Callable[[Observable[_T]], Observable[_T]]:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(f"dedup window must be an integer >= 1 (how many distinct keys to remember), not {window!r}")

    def _dedup(source: Observable[_T]) -> Observable[_T]:
        def subscribe(observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            # Keys in order of last sighting; the oldest is forgotten first, so
            # memory is bounded by ``window`` however long the stream runs.
            recent: OrderedDict[Hashable, None] = OrderedDict()

            def on_next(item: _T) -> None:
                try:
                    k = key(item)
                    seen = k in recent
                except Exception as exc:  # a key function that fails, or an unhashable key
                    observer.on_error(exc)
                    return
                if seen:
                    recent.move_to_end(k)
                    return
                recent[k] = None
                if len(recent) > window:
                    recent.popitem(last=False)
                observer.on_next(item)

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return _dedup
