"""The hook stage: a long-lived chain of hook operators that follows edits.

Hooks can be added while tasks run (from the REPL monitor, say). Rebuilding a
chain per event would cost far more than the hooks themselves, so each lane
keeps one chain and rebuilds it only when the hook set's version changes.
"""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable
from reactivex.subject import Subject

from armor_rx.model.events import TaskEvent
from armor_rx.pipeline.hooks import HookSet, Stage


def hook_stage(hooks: HookSet, stage: Stage) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    """An operator that runs every event through ``stage``'s hooks, in priority order."""

    def operator(source: Observable[TaskEvent]) -> Observable[TaskEvent]:
        def subscribe(observer: abc.ObserverBase[TaskEvent], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            chain = SerialDisposable()
            state: dict[str, object] = {"version": -1, "subject": None}

            def current() -> Subject[TaskEvent]:
                subject = state["subject"]
                # Reading the version without the lock is safe: a stale read only
                # delays the rebuild to the next event.
                if hooks.version != state["version"] or subject is None:
                    version, operators = hooks.operators(stage)
                    subject = Subject()
                    pipeline: Observable[TaskEvent] = subject
                    for op in operators:
                        pipeline = op(pipeline)
                    chain.disposable = pipeline.subscribe(observer.on_next, observer.on_error, scheduler=scheduler)
                    state["version"], state["subject"] = version, subject
                assert isinstance(subject, Subject)
                return subject

            def on_next(event: TaskEvent) -> None:
                current().on_next(event)

            upstream = source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)
            return CompositeDisposable(upstream, chain)

        return Observable(subscribe)

    return operator
