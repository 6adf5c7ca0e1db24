"""The hook stage: a long-lived chain of hook operators that follows edits.

Hooks can be added while tasks run (from the REPL monitor, say). Rebuilding a
chain per event would cost far more than the hooks themselves, so each lane
keeps one chain and rebuilds it only when the hook set's version changes.
"""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable

from armor_rx.model.events import TaskEvent
from armor_rx.pipeline.hooks import HookSet, Stage


def hook_stage(hooks: HookSet, stage: Stage) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    """An operator that runs every event through ``stage``'s hooks, in priority order."""

    def operator(source: Observable[TaskEvent]) -> Observable[TaskEvent]:
        def subscribe(observer: abc.ObserverBase[TaskEvent], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            chain = SerialDisposable()
            version = -1
            # The head of the current chain: events are handed straight to it,
            # with no Subject (and its lock) in between.
            head: list[abc.ObserverBase[TaskEvent]] = []

            def rebuild() -> None:
                nonlocal version
                new_version, operators = hooks.operators(stage)
                heads: list[abc.ObserverBase[TaskEvent]] = []

                def entry(obs: abc.ObserverBase[TaskEvent], _: abc.SchedulerBase | None = None) -> abc.DisposableBase:
                    heads.append(obs)
                    return Disposable()

                pipeline: Observable[TaskEvent] = Observable(entry)
                for op in operators:
                    pipeline = op(pipeline)
                chain.disposable = pipeline.subscribe(observer.on_next, observer.on_error, scheduler=scheduler)
                head[:] = heads
                version = new_version

            def on_next(event: TaskEvent) -> None:
                # Reading the version without the lock is safe: a stale read only
                # delays the rebuild to the next event.
                if hooks.version != version or not head:
                    rebuild()
                head[0].on_next(event)

            upstream = source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)
            return CompositeDisposable(upstream, chain)

        return Observable(subscribe)

    return operator
