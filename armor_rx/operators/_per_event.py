"""per_event: the subscribe closure that guard, observe, hook_timeout and the checkpoint policy share.

Each of them answers one incoming item with a few outgoing ones (the item,
a report, a veto, a checkpoint request, a mapped value). Writing the
``subscribe`` closure once keeps the rules they must all follow in one
place: only the deciding function runs inside the ``try`` (an exception
from downstream belongs to downstream and must not be taken for the hook's
own), a failure goes down as ``on_error`` and nothing raises out of the
subscription, and once it has failed the function is not called again for
that subscription (the stream has ended; a hook must not keep acting on
events nobody will see).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from reactivex import Observable, abc

_T = TypeVar("_T")
_U = TypeVar("_U")


def per_event(decide: Callable[[_T], Sequence[_U]]) -> Callable[[Observable[_T]], Observable[_U]]:
    """An operator that passes on, in order, what ``decide`` returns for each item.

    An exception from ``decide`` ends the stream as ``on_error`` (it is not
    called again for that subscription); what downstream raises while
    receiving an item propagates to the source, as it would without this
    operator. Completion and upstream errors pass through unchanged.

    ``decide`` returns a sequence (a list or tuple, not a generator), so that
    all of its work, and any failure, happens before the first item goes on.

    >>> import reactivex
    >>> from reactivex import operators as ops
    >>> reactivex.of(1, 2).pipe(per_event(lambda x: [x] * x), ops.to_list()).run()
    [1, 2, 2]
    """

    def operator(source: Observable[_T]) -> Observable[_U]:
        def subscribe(observer: abc.ObserverBase[_U], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            stopped = False

            def on_next(value: _T) -> None:
                nonlocal stopped
                if stopped:
                    return
                try:
                    out = decide(value)
                except Exception as exc:
                    stopped = True
                    observer.on_error(exc)
                    return
                for item in out:
                    observer.on_next(item)

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator
