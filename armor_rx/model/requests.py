"""Requests in flight: the logged requests nothing has settled yet, as a pure fold (no I/O).

An intent is durable before its effect starts, so after a crash the requests
still open here are the ones whose effect was cut off
(:mod:`armor_rx.pipeline.reconcile` marks their tasks ``interrupted``). The
registry folds this next to the tasks, so a snapshot carries it and opening a
session needs only the log after the snapshot, never the whole log.

A request is settled by its outcome (see :func:`outcome_kind`), a veto, a
final effect failure, a dead letter, or the ``task.interrupted`` that
reconciliation records for it. A dead-lettered request is kept aside: a
``deadletter.redriven`` caused by it opens it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from armor_rx.model.events import TaskEvent, to_plain
from armor_rx.model.lifecycle import REQUEST_OUTCOME

# Events that settle a request besides its outcome. Progress events
# (git.branch.requested, exec.output ...) are caused by a request too, but
# say nothing about whether it finished.
SETTLING = frozenset({"hook.vetoed", "effect.failed", "effect.dead_lettered", "task.interrupted"})
DEAD_LETTERED = "effect.dead_lettered"
REDRIVEN = "deadletter.redriven"


def outcome_kind(request_kind: str) -> str:
    """``task.start.requested`` -> ``task.started``; other ``x.requested`` -> ``x.done``."""
    if request_kind in REQUEST_OUTCOME:
        return REQUEST_OUTCOME[request_kind]
    if request_kind.endswith(".requested"):
        return request_kind[: -len(".requested")] + ".done"
    return request_kind + ".done"


class OpenRequests:
    """Task requests with no settling event yet (``open``) and dead-lettered ones a re-drive may reopen (``dead``).

    Both map a request's event id to the request, in the order logged.
    """

    __slots__ = ("dead", "open")

    def __init__(self, open_requests: Mapping[str, TaskEvent] | None = None,
                 dead: Mapping[str, TaskEvent] | None = None) -> None:
        self.open: dict[str, TaskEvent] = dict(open_requests or {})
        self.dead: dict[str, TaskEvent] = dict(dead or {})

    def copy(self) -> OpenRequests:
        return OpenRequests(self.open, self.dead)

    def apply(self, event: TaskEvent) -> None:
        """Fold one logged event in."""
        cause = event.causation_id
        if cause is not None:
            request = self.open.get(cause)
            if request is not None:
                if event.kind in SETTLING or event.kind == outcome_kind(request.kind):
                    del self.open[cause]
                    if event.kind == DEAD_LETTERED:
                        self.dead[cause] = request
            elif event.kind == REDRIVEN and cause in self.dead:
                self.open[cause] = self.dead.pop(cause)
        # A ".requested" event caused by an open request is that request's
        # progress (git.branch.requested), not a request of its own.
        if event.kind.endswith(".requested") and event.task_id is not None and (cause is None or cause not in self.open):
            self.open[event.id] = event

    def apply_all(self, events: Iterable[TaskEvent]) -> OpenRequests:
        for event in events:
            self.apply(event)
        return self

    def pending(self) -> list[TaskEvent]:
        """The open requests, oldest first."""
        return list(self.open.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form (for the snapshot)."""
        return {"open": [_plain(e) for e in self.open.values()], "dead": [_plain(e) for e in self.dead.values()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpenRequests:
        """Raises KeyError, TypeError or ValueError (InvalidPayload) when ``data`` is not what :meth:`to_dict` wrote."""
        open_requests = [TaskEvent.from_dict(e) for e in data["open"]]
        dead = [TaskEvent.from_dict(e) for e in data["dead"]]
        return cls({e.id: e for e in open_requests}, {e.id: e for e in dead})


def _plain(event: TaskEvent) -> dict[str, Any]:
    plain: dict[str, Any] = to_plain(event.to_dict())
    return plain
