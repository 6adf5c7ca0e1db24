"""StallWatch: records ``task.stalled`` / ``task.unstalled`` for a session's tasks.

The rule is the :func:`armor_rx.operators.stalled` operator over the session's
bus; this is only its wiring: the operator's timers run on one thread this
watch owns (ended and joined by :meth:`stop`), and its flags are recorded in
the log like any fact, so the monitor, ``armor-rx events`` and hooks see them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import reactivex
import structlog
from reactivex.scheduler import EventLoopScheduler

from armor_rx.errors import ArmorError
from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import ACTIVE
from armor_rx.operators import stalled
from armor_rx.pipeline.core import Pipeline

_log = structlog.get_logger("armor_rx.stalls")


class StallWatch:
    """Flags tasks of ``pipeline`` that stay quiet for ``quiet`` seconds. Start/stop like a sink."""

    def __init__(self, pipeline: Pipeline, quiet: float) -> None:
        self.pipeline = pipeline
        self.quiet = quiet
        self._scheduler: EventLoopScheduler | None = None
        self._thread: threading.Thread | None = None
        self._subscription: reactivex.abc.DisposableBase | None = None

    def _make_thread(self, target: Callable[[], None]) -> threading.Thread:
        self._thread = threading.Thread(target=target, name="armor-stall-watch", daemon=True)
        return self._thread

    def start(self) -> StallWatch:
        if self._subscription is not None:
            return self
        self._scheduler = EventLoopScheduler(thread_factory=self._make_thread)
        with self.pipeline._registry_lock:
            seed = {task_id: record.state for task_id, record in self.pipeline.registry.tasks.items()
                    if record.state in ACTIVE}
        flags = self.pipeline.bus.subscribe("*").pipe(stalled(self.quiet, scheduler=self._scheduler, seed=seed))
        self._subscription = flags.subscribe(self._record)
        return self

    def _record(self, event: TaskEvent) -> None:
        try:
            self.pipeline.record(event)
        except ArmorError as exc:  # the session is closing: the flag is moot
            _log.info("stall flag not recorded", task_id=event.task_id, kind=event.kind, error=str(exc))

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.dispose()
            self._subscription = None
        if self._scheduler is not None:
            self._scheduler.dispose()
            self._scheduler = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> StallWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
