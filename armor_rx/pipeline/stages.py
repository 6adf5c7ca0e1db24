"""The hook stage: a long-lived chain of hook operators that follows edits.

Hooks can be added while tasks run (from the REPL monitor, say). Rebuilding a
chain per event would cost far more than the hooks themselves, so each lane
keeps one chain and rebuilds it only when the hook set's version changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable

from armor_rx.errors import HookTimeout
from armor_rx.model.events import TaskEvent
from armor_rx.operators._deadline import Deadline, check_timeout
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
    timeout: float | None = None,
) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    """Run a user's operator so that its error, or its hanging, cannot end the stage.

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

    With a ``timeout`` (seconds), the operator handles each event on a pooled
    thread while the lane waits at most that long; what it emits meanwhile is
    passed on from the lane once it returns, so the steps after it (the
    effects) are never counted against its time. An overrun counts as an
    error (:class:`~armor_rx.errors.HookTimeout`): the stuck call is abandoned
    (whatever it emits later is dropped), the operator is subscribed afresh,
    and until the stuck call returns each event gets the same answer at once.
    """
    check_timeout(timeout, f"hook {name!r}")

    def wrapped(source: Observable[TaskEvent]) -> Observable[TaskEvent]:
        def subscribe(observer: abc.ObserverBase[TaskEvent], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            inner = SerialDisposable()
            head: list[abc.ObserverBase[TaskEvent]] = []
            errors: list[Exception] = []
            # Outputs of the chain in place (generation) while a call is being
            # waited for are collected (box) and passed on by the lane after it;
            # a chain abandoned by a timeout has an old generation: dropped.
            lock = threading.Lock()
            generation = [0]
            box: list[list[TaskEvent] | None] = [None]

            def build() -> None:
                heads: list[abc.ObserverBase[TaskEvent]] = []
                with lock:
                    generation[0] += 1
                    mine = generation[0]

                def entry(obs: abc.ObserverBase[TaskEvent], _: abc.SchedulerBase | None = None) -> abc.DisposableBase:
                    heads.append(obs)
                    return Disposable()

                def out(item: TaskEvent) -> None:
                    with lock:
                        if mine != generation[0]:
                            return
                        collecting = box[0]
                        if collecting is not None:
                            collecting.append(item)
                            return
                    forward(item)  # emitted later, on its own (an asynchronous operator)

                def error(exc: Exception) -> None:
                    with lock:
                        if mine == generation[0]:
                            errors.append(exc)

                def completed() -> None:
                    with lock:
                        if mine == generation[0]:
                            head.clear()

                chain = operator(Observable(entry))
                inner.disposable = chain.subscribe(out, error, completed, scheduler=scheduler)
                head[:] = heads

            def push(call: tuple[abc.ObserverBase[TaskEvent], TaskEvent]) -> None:
                call[0].on_next(call[1])

            deadline = Deadline(push, timeout, name)

            # The event being handled, and whether it was answered (passed on or vetoed).
            current: list[str | None] = [None]
            answered = [False]

            def forward(out: TaskEvent) -> None:
                if out.id == current[0] or (out.kind == "hook.vetoed" and out.payload.get("vetoed_id") == current[0]):
                    answered[0] = True
                observer.on_next(out)

            def on_next(event: TaskEvent) -> None:
                current[0], answered[0] = event.id, False
                collected: list[TaskEvent] = []
                try:
                    if not head:
                        build()
                    with lock:
                        box[0] = collected
                    deadline((head[0], event))
                except HookTimeout as exc:
                    with lock:
                        generation[0] += 1  # abandon the stuck chain and anything it emits
                        errors.append(exc)
                    collected.clear()
                except Exception as exc:  # raised rather than sent as on_error
                    with lock:
                        errors.append(exc)
                finally:
                    with lock:
                        box[0] = None
                try:
                    for item in collected:
                        forward(item)
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
