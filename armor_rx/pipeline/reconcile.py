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
from armor_rx.pipeline.effects import BatchReconciling, Effect, Reconciling


def unanswered_requests(history: Iterable[TaskEvent]) -> list[TaskEvent]:
    """Task requests in ``history`` that nothing settled (a re-drive reopens one).

    The fold is :class:`~armor_rx.model.requests.OpenRequests`, which the
    registry (and so the snapshot) keeps current; a list of open requests is
    its own answer, so ``interruptions(registry.requests.pending(), ...)``
    needs no log at all.
    """
    return OpenRequests().apply_all(history).pending()


def _findings(probes: Sequence[TaskEvent], effects: Sequence[Effect]) -> list[dict[str, Any]]:
    """What each reconciling effect finds for each probe, asking a batch-capable effect once for all of them."""
    out: list[dict[str, Any]] = [{} for _ in probes]
    if not probes:
        return out
    for effect in effects:
        if isinstance(effect, BatchReconciling):
            results = list(effect.reconcile_many(probes))
        elif isinstance(effect, Reconciling):
            results = [effect.reconcile(probe) for probe in probes]
        else:
            continue
        for found, result in zip(out, results):
            found[effect.name] = result
    return out


def interruptions(history: Iterable[TaskEvent], task: Callable[[str], TaskRecord], effects: Sequence[Effect]) -> list[TaskEvent]:
    """The ``task.interrupted`` events to record for the requests a crash cut off."""
    cut = []
    for request in unanswered_requests(history):
        assert request.task_id is not None
        if task(request.task_id).state in ACTIVE:
            cut.append(request)
    return [
        request.caused(
            "task.interrupted",
            {
                "reason": f"armor_rx stopped while {request.kind} was in flight; resume the task to continue",
                "cause": "crash",
                "request_id": request.id,
                "request_kind": request.kind,
                "findings": findings,
            },
        )
        for request, findings in zip(cut, _findings(cut, effects))
    ]


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
    # What reconcile() looks at is the task's id: a probe event per task stands in for a request.
    probes = [
        TaskEvent.new("task.running", record.task_id, {})
        for record in tasks
        if record.state is State.RUNNING and record.task_id not in skip and record.metadata.get("container")
    ]
    return [
        TaskEvent.new("task.interrupted", probe.task_id, {
            "reason": "armor_rx stopped while the task was running (no request was in flight); resume the task to continue",
            "cause": "crash",
            "request_id": None,
            "request_kind": None,
            "findings": findings,
        })
        for probe, findings in zip(probes, _findings(probes, effects))
    ]
