"""After a crash: requests whose effect may or may not have happened.

An intent is durable before its effect starts, so a request in the log with no
event caused by it (no outcome, veto, failure or dead letter) is one whose
effect was cut off. Its task is marked ``interrupted`` so the user (or a
supervisor) can resume it; effects that can look at the real world say what
they found through an optional ``reconcile(request)`` method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import ACTIVE
from armor_rx.model.registry import TaskRecord
from armor_rx.pipeline.effects import Effect


def unanswered_requests(history: Iterable[TaskEvent]) -> list[TaskEvent]:
    """Task requests in ``history`` that no later event names as its cause."""
    answered: set[str] = set()
    requests: dict[str, TaskEvent] = {}
    for event in history:
        if event.causation_id is not None:
            answered.add(event.causation_id)
        if event.kind.endswith(".requested") and event.task_id is not None:
            requests[event.id] = event
    return [r for rid, r in requests.items() if rid not in answered]


def interruptions(history: Iterable[TaskEvent], task: Callable[[str], TaskRecord], effects: Sequence[Effect]) -> Iterator[TaskEvent]:
    """The ``task.interrupted`` events to record for the requests a crash cut off."""
    for request in unanswered_requests(history):
        assert request.task_id is not None
        if task(request.task_id).state not in ACTIVE:
            continue
        findings: dict[str, Any] = {}
        for effect in effects:
            reconcile = getattr(effect, "reconcile", None)
            if callable(reconcile):
                findings[effect.name] = reconcile(request)
        yield request.caused(
            "task.interrupted",
            {
                "reason": f"armor_rx stopped while {request.kind} was in flight; resume the task to continue",
                "request_id": request.id,
                "request_kind": request.kind,
                "findings": findings,
            },
        )
