"""The one small interface between the pipeline and the sinks that act on the world."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from armor_rx.model.events import TaskEvent
from armor_rx.model.registry import TaskRecord


@dataclass(frozen=True)
class EffectContext:
    """What an effect may use while it applies one request.

    ``emit(kind, payload)`` records a progress event for the request's task
    (its causation id is the request's id); ``task`` is the task's record as
    of the request (``None`` for events with no task).
    """

    request: TaskEvent
    task: TaskRecord | None
    emit: Callable[[str, Mapping[str, Any]], TaskEvent]
    attempt: int = 1


@runtime_checkable
class Effect(Protocol):
    """A side effect the pipeline runs for requests whose kind matches ``kinds``.

    ``apply`` must be idempotent, keyed by ``ctx.request.id``: after a crash the
    same request may be applied again and must not repeat its side effect. It
    returns extra payload for the outcome event (or ``None``); it raises
    :class:`armor_rx.errors.TransientError` (or another transient error) to ask
    for a retry with backoff, anything else to fail the request.
    """

    name: str
    kinds: str

    def apply(self, ctx: EffectContext) -> Mapping[str, Any] | None: ...


@runtime_checkable
class Lifecycle(Protocol):
    """A sink that holds something open (a file, a repository, a connection, a thread).

    The session's assembly starts its sinks in order and stops them in reverse,
    so a sink may rely on every sink started before it. ``start`` raises to
    refuse to open (the ones already started are stopped again); ``stop``
    must be safe to call on a sink whose ``start`` failed, and leave no thread
    running.
    """

    def start(self) -> object: ...

    def stop(self) -> None: ...


@runtime_checkable
class Reconciling(Protocol):
    """An effect that can look at the real world after a crash.

    ``reconcile(request)`` says what it finds for a request whose outcome was
    never logged (does the branch exist? is the container running?); the
    findings go into the ``task.interrupted`` event (see
    :mod:`armor_rx.pipeline.reconcile`).
    """

    def reconcile(self, request: TaskEvent) -> Mapping[str, Any]: ...


@runtime_checkable
class BatchReconciling(Reconciling, Protocol):
    """A :class:`Reconciling` effect that can look for many tasks at once.

    After a crash with a hundred tasks in flight, one query of the real world
    (one container listing) instead of one per task is what keeps re-opening
    fast; ``reconcile_many(requests)`` returns the findings in the same order.
    """

    def reconcile_many(self, requests: Sequence[TaskEvent]) -> list[Mapping[str, Any]]: ...
