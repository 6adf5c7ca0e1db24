"""What a request is to the pipeline: its outcome future and outcome kind, and the
small protocols the pipeline needs of the event log and the dead-letter log."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, Protocol

from armor_rx.model.events import TaskEvent
from armor_rx.model.requests import outcome_kind as outcome_kind  # its home is the model floor now

# A fail or cancel must always be able to finish: guards may object, effects may
# fail, but the task still leaves its active state.
UNSTOPPABLE = frozenset({"task.fail.requested", "task.cancel.requested"})


class Outcome(Future[TaskEvent]):
    """The future of a request's outcome.

    It cannot be cancelled (once its intent is logged, a request runs), and a
    caller's done-callbacks run on the session's callback threads, never on
    the task's lane: a callback that waits on the same task would otherwise
    block that lane. Once the session has stopped (no lane left to block),
    they run at once.
    """

    def __init__(self, callbacks: Executor | None = None) -> None:
        super().__init__()
        self._callbacks = callbacks

    def add_done_callback(self, fn: Callable[[Future[TaskEvent]], object]) -> None:
        executor = self._callbacks

        def hand_off(future: Future[TaskEvent]) -> None:
            if executor is not None:
                try:
                    executor.submit(fn, future)
                    return
                except RuntimeError:
                    pass  # the session's threads are gone
            fn(future)

        super().add_done_callback(hand_off)

    def _add_internal_callback(self, fn: Callable[[Future[TaskEvent]], object]) -> None:
        super().add_done_callback(fn)


def running_future(callbacks: Executor | None = None) -> Outcome:
    """A new, already running (so uncancellable) :class:`Outcome` whose callbacks run on ``callbacks``."""
    future = Outcome(callbacks)
    future.set_running_or_notify_cancel()
    return future


class Log(Protocol):
    """What the pipeline needs of the durable event log."""

    @property
    def last_seq(self) -> int: ...

    def append_async(self, event: TaskEvent, *, on_append: Callable[[TaskEvent], None] | None = None) -> Future[TaskEvent]: ...

    def read(self, start_seq: int = 1, end_seq: int | None = None, *, task_id: str | None = None, kind: str | None = None) -> Any: ...


class DeadLetters(Protocol):
    def add(self, event: TaskEvent, error: BaseException, attempts: int) -> Any: ...
