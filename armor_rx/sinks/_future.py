"""A cheaper :class:`concurrent.futures.Future` for the event log's async appends.

A stock Future builds a ``threading.Condition`` (a lock, a deque and five
bound methods) up front, and resolving it takes that lock and notifies. In a
burst of appends that is most of the work per event, and the garbage
collector pays again for every object. Most append futures are resolved before
anyone waits on them, so :class:`AppendFuture` builds its condition only when
someone needs one; resolving and reading a finished future take no lock.

It is a real ``Future`` (``result``, ``exception``, ``add_done_callback``,
``concurrent.futures.wait`` and ``as_completed`` all work) that starts in the
RUNNING state: an append that was accepted cannot be cancelled.

It leans on the private layout of ``concurrent.futures.Future``, which has not
changed since Python 3.2; :func:`new_future` checks that layout once and falls
back to a stock Future if it ever differs (or if the GIL is off, since the
lock-free handoff below relies on it).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, _base
from typing import Any, TypeVar, cast

T = TypeVar("T")

_FINISHED = _base.FINISHED
_RUNNING = _base.RUNNING


class AppendFuture(Future[T]):
    """A Future whose condition is created on first use (see the module docs)."""

    def __init__(self) -> None:  # no super().__init__(): that is the cost we avoid
        self._state = _RUNNING
        self._result: T | None = None
        self._exception: BaseException | None = None

    # The condition and both lists appear on first use. Whoever touches the
    # lists holds the condition, so they exist only once a condition does.
    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        return cast(threading.Condition, self._lazy("_lazy_condition", threading.Condition))

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        return cast("list[Any]", self._lazy("_lazy_waiters", list))

    @property
    def _done_callbacks(self) -> list[Callable[[Future[T]], object]]:
        return cast("list[Callable[[Future[T]], object]]", self._lazy("_lazy_callbacks", list))

    def _lazy(self, name: str, make: Callable[[], object]) -> object:
        slots = self.__dict__
        value = slots.get(name)
        if value is None:
            # setdefault is atomic: two threads racing here share one value.
            value = slots.setdefault(name, make())
        return value

    def set_result(self, result: T) -> None:
        self._result = result
        self._finish()

    def set_exception(self, exception: BaseException | None) -> None:
        self._exception = exception
        self._finish()

    def _finish(self) -> None:
        # State first, then look for a condition: a waiter either made its
        # condition before this check (and is notified under it) or makes it
        # after, and then sees FINISHED before it would wait.
        self._state = _FINISHED
        slots = self.__dict__
        condition = slots.get("_lazy_condition")
        if condition is not None:
            with condition:
                for waiter in slots.get("_lazy_waiters") or ():
                    if self._exception is None:
                        waiter.add_result(self)
                    else:
                        waiter.add_exception(self)
                condition.notify_all()
        if slots.get("_lazy_callbacks"):
            self._invoke_callbacks()  # type: ignore[attr-defined]

    def result(self, timeout: float | None = None) -> T:
        if self._state == _FINISHED and self._exception is None:
            return self._result  # type: ignore[return-value]
        return super().result(timeout)


def _layout_matches() -> bool:
    stock = Future()  # type: ignore[var-annotated]
    expected = {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return gil and set(vars(stock)) == expected and hasattr(stock, "_invoke_callbacks")


_LIGHT = _layout_matches()


def _stock_future() -> Future[Any]:
    future: Future[Any] = Future()
    future.set_running_or_notify_cancel()
    return future


# A future in the RUNNING state: an AppendFuture when the layout allows, else a stock one.
new_future: Callable[[], Future[Any]] = AppendFuture if _LIGHT else _stock_future
