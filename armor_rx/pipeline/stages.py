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
from armor_rx.operators._hook_events import failed, vetoed
from armor_rx.pipeline.hooks import ErrorPolicy, HookSet, Stage


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
                try:
                    if hooks.version != version or not head:
                        rebuild()
                    head[0].on_next(event)
                except Exception as exc:  # a hook that raised outside its own guard
                    head.clear()  # rebuild for the next event
                    _contain(observer, event, "hook-stage", exc, "fail_closed" if stage == "before" else "fail_open")

            upstream = source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)
            return CompositeDisposable(upstream, chain)

        return Observable(subscribe)

    return operator


def isolated(
    operator: Callable[[Observable[TaskEvent]], Observable[TaskEvent]],
    *,
    name: str,
    on_error: ErrorPolicy,
) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    """Run a user's operator so that its error cannot end the stage.

    An error from ``operator`` while it handles an event becomes, under
    ``fail_open``, a ``hook.failed`` report followed by the event itself, and
    under ``fail_closed`` a veto of the event; then the operator is subscribed
    afresh for the next event. Without this, one raising ``ops.map`` would
    silence the bus for good.

    Under ``fail_closed`` (the before-stage, where each request has a caller
    waiting for its outcome) the operator must also answer every request
    before returning: pass it on (changed or not, same id) or veto it. One it
    swallows (an ``ops.filter``, or an asynchronous operator) is vetoed in its
    name, so the caller gets :class:`~armor_rx.errors.Vetoed` instead of
    waiting forever; a ``hook.*`` report it swallows is passed on regardless.
    """

    def wrapped(source: Observable[TaskEvent]) -> Observable[TaskEvent]:
        def subscribe(observer: abc.ObserverBase[TaskEvent], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            inner = SerialDisposable()
            head: list[abc.ObserverBase[TaskEvent]] = []
            errors: list[Exception] = []

            def build() -> None:
                heads: list[abc.ObserverBase[TaskEvent]] = []

                def entry(obs: abc.ObserverBase[TaskEvent], _: abc.SchedulerBase | None = None) -> abc.DisposableBase:
                    heads.append(obs)
                    return Disposable()

                chain = operator(Observable(entry))
                inner.disposable = chain.subscribe(forward, errors.append, lambda: head.clear(), scheduler=scheduler)
                head[:] = heads

            # The event being handled, and whether it was answered (passed on or vetoed).
            current: list[str | None] = [None]
            answered = [False]

            def forward(out: TaskEvent) -> None:
                if out.id == current[0] or (out.kind == "hook.vetoed" and out.payload.get("vetoed_id") == current[0]):
                    answered[0] = True
                observer.on_next(out)

            def on_next(event: TaskEvent) -> None:
                current[0], answered[0] = event.id, False
                try:
                    if not head:
                        build()
                    head[0].on_next(event)
                except Exception as exc:  # raised rather than sent as on_error
                    errors.append(exc)
                finally:
                    current[0] = None
                if not errors:
                    if on_error == "fail_closed" and not answered[0]:
                        if event.kind.startswith("hook."):
                            observer.on_next(event)
                        else:
                            observer.on_next(vetoed(event, name, (
                                f"hook {name!r} dropped the {event.kind} request; a before-hook must pass each "
                                "request on (changed or not) or veto it, synchronously"
                            )))
                    return
                error = errors.pop()
                errors.clear()
                head.clear()  # subscribe afresh for the next event
                _contain(observer, event, name, error, on_error)

            upstream = source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)
            return CompositeDisposable(upstream, inner)

        return Observable(subscribe)

    return wrapped


def _contain(observer: abc.ObserverBase[TaskEvent], event: TaskEvent, name: str, error: Exception, policy: ErrorPolicy) -> None:
    """Turn a hook's error into events: the event and a report, or a veto."""
    if event.kind.startswith("hook.") or policy == "fail_open":
        observer.on_next(event)
        if not event.kind.startswith("hook."):
            observer.on_next(failed(event, name, error, "fail_open"))
    else:
        observer.on_next(vetoed(event, name, f"hook {name!r} failed closed: {type(error).__name__}: {error}", error))
