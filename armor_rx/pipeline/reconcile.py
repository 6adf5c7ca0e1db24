"""After a crash: requests whose effect may or may not have happened.

An intent is durable before its effect starts, so a request in the log with no
event caused by it (no outcome, veto, failure or dead letter) is one whose
effect was cut off. Its task is marked ``interrupted`` so the user (or a
supervisor) can resume it; effects that can look at the real world say what
they found through an optional ``reconcile(request)`` method.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import ACTIVE, State
from armor_rx.model.registry import TaskRecord
from armor_rx.model.requests import SETTLING as SETTLING, OpenRequests
from armor_rx.pipeline.effects import Effect, Reconciling


def unanswered_requests(history: Iterable[TaskEvent]) -> list[TaskEvent]:
    """Task requests in ``history`` that nothing settled (a re-drive reopens one).

    The fold is :class:`~armor_rx.model.requests.OpenRequests`, which the
    registry (and so the snapshot) keeps current; a list of open requests is
    its own answer, so ``interruptions(registry.requests.pending(), ...)``
    needs no log at all.
    """
    return OpenRequests().apply_all(history).pending()


def interruptions(history: Iterable[TaskEvent], task: Callable[[str], TaskRecord], effects: Sequence[Effect]) -> Iterator[TaskEvent]:
    """The ``task.interrupted`` events to record for the requests a crash cut off."""
    for request in unanswered_requests(history):
        assert request.task_id is not None
        if task(request.task_id).state not in ACTIVE:
            continue
        findings: dict[str, Any] = {}
        for effect in effects:
            if isinstance(effect, Reconciling):
                findings[effect.name] = effect.reconcile(request)
        yield request.caused(
            "task.interrupted",
            {
                "reason": f"armor_rx stopped while {request.kind} was in flight; resume the task to continue",
                "cause": "crash",
                "request_id": request.id,
                "request_kind": request.kind,
                "findings": findings,
            },
        )


def stranded(tasks: Iterable[TaskRecord], skip: Collection[str], effects: Sequence[Effect]) -> list[TaskEvent]:
    """The ``task.interrupted`` events for running tasks whose container belonged to a session that died.

    No request of theirs was cut off (those are :func:`interruptions`), but
    whatever drove them (an agent's client, an attached run) died with the
    session, and a command may still be running in the dead session's
    container: the task is interrupted, and resuming it gives it a new
    container on the same worktree. A task with no container (a session
    without Docker) lost nothing and stays as it is; tasks in ``skip``
    already have their interruption.
    """
    out = []
    for record in tasks:
        if record.state is not State.RUNNING or record.task_id in skip or not record.metadata.get("container"):
            continue
        findings: dict[str, Any] = {}
        probe = TaskEvent.new("task.running", record.task_id, {})  # what reconcile() looks at: the task's id
        for effect in effects:
            if isinstance(effect, Reconciling):
                findings[effect.name] = effect.reconcile(probe)
        out.append(TaskEvent.new("task.interrupted", record.task_id, {
            "reason": "armor_rx stopped while the task was running (no request was in flight); resume the task to continue",
            "cause": "crash",
            "request_id": None,
            "request_kind": None,
            "findings": findings,
        }))
    return out
