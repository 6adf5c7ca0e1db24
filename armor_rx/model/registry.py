"""The task registry as a pure fold over events (no I/O).

The durable copy lives in :mod:`armor_rx.sinks.snapshot`; this module only
says what a sequence of events means for the tasks, and which requests are
still in flight (:class:`~armor_rx.model.requests.OpenRequests`, folded along,
so a snapshot holds what reconciliation after a crash needs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from armor_rx.errors import ConcurrencyConflict, TaskExists, TaskNotFound
from armor_rx.model.events import TaskEvent, to_plain
from armor_rx.model.lifecycle import KIND_TO_STATE, State, check_transition
from armor_rx.model.requests import OpenRequests


_REASONED = frozenset({State.FAILING, State.FAILED, State.INTERRUPTED, State.CANCELLED})


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """What is known of one task at a log position."""

    task_id: str
    state: State
    version: int
    created_seq: int
    updated_seq: int
    created_ts: float
    updated_ts: float
    reason: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "state": self.state.value,
            "version": self.version,
            "created_seq": self.created_seq,
            "updated_seq": self.updated_seq,
            "created_ts": self.created_ts,
            "updated_ts": self.updated_ts,
            "reason": self.reason,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRecord:
        return cls(
            task_id=data["task_id"],
            state=State(data["state"]),
            version=int(data["version"]),
            created_seq=int(data["created_seq"]),
            updated_seq=int(data["updated_seq"]),
            created_ts=float(data["created_ts"]),
            updated_ts=float(data["updated_ts"]),
            reason=data.get("reason"),
            metadata=dict(data.get("metadata") or {}),
        )


class Registry:
    """Tasks by id, folded from events in seq order. Not thread-safe by itself."""

    def __init__(self, tasks: Mapping[str, TaskRecord] | None = None, seq: int = 0,
                 requests: OpenRequests | None = None) -> None:
        self.tasks: dict[str, TaskRecord] = dict(tasks or {})
        self.seq = seq
        self.requests = requests if requests is not None else OpenRequests()

    def copy(self) -> Registry:
        return Registry(self.tasks, self.seq, self.requests.copy())

    def get(self, task_id: str) -> TaskRecord:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise TaskNotFound(task_id) from None

    def check(self, event: TaskEvent) -> None:
        """Raise if applying ``event`` would break the lifecycle (nothing changes)."""
        target = KIND_TO_STATE.get(event.kind)
        if target is None or event.task_id is None:
            if event.kind == "task.updated" and event.task_id is not None:
                self._check_version(event)
            return
        if event.kind == "task.created":
            if event.task_id in self.tasks:
                raise TaskExists(event.task_id)
            return
        record = self.get(event.task_id)
        check_transition(event.task_id, record.state, target)

    def _check_version(self, event: TaskEvent) -> None:
        assert event.task_id is not None
        record = self.get(event.task_id)
        expected = event.payload.get("expected_version")
        if isinstance(expected, int) and expected != record.version:
            raise ConcurrencyConflict(event.task_id, expected, record.version)

    def apply(self, event: TaskEvent, *, strict: bool = True) -> None:
        """Fold one logged event in; raises on a lifecycle violation (and then changes nothing, its seq included).

        ``strict=False`` is for replaying a log with damaged lines, whose lost
        events may leave the ones after them out of step: the event is folded
        in without the lifecycle check (a task whose creation was lost is
        adopted in the state the event names), since what the log says happened,
        happened.
        """
        repeated = False  # a second task.created, only possible when not strict
        if event.task_id is not None:
            if strict:
                self.check(event)
            elif event.kind == "task.created":
                repeated = event.task_id in self.tasks
            elif event.task_id not in self.tasks:
                self._adopt(event)
        if event.seq is not None:
            self.seq = max(self.seq, event.seq)
        self.requests.apply(event)
        if event.task_id is None or repeated:
            return
        seq = event.seq or self.seq
        if event.kind == "task.created":
            self.tasks[event.task_id] = TaskRecord(
                task_id=event.task_id,
                state=State.PENDING,
                version=1,
                created_seq=seq,
                updated_seq=seq,
                created_ts=event.ts,
                updated_ts=event.ts,
                metadata=to_plain(event.payload.get("metadata") or {}),
            )
            return
        target = KIND_TO_STATE.get(event.kind)
        if target is not None:
            record = self.tasks[event.task_id]
            reason = event.payload.get("reason")
            metadata = record.metadata
            if isinstance(event.payload.get("metadata"), Mapping):  # an effect's facts (branch, worktree ...)
                metadata = {**record.metadata, **to_plain(event.payload["metadata"])}
            self.tasks[event.task_id] = replace(
                record,
                state=target,
                version=record.version + 1,
                updated_seq=seq,
                updated_ts=event.ts,
                # Only the ways out of the happy path carry a reason worth keeping.
                reason=str(reason) if reason is not None and target in _REASONED else record.reason,
                metadata=metadata,
            )
        elif event.kind == "task.updated":
            record = self.tasks[event.task_id]
            merged = dict(record.metadata)
            merged.update(to_plain(event.payload.get("metadata") or {}))
            self.tasks[event.task_id] = replace(
                record, version=record.version + 1, updated_seq=seq, updated_ts=event.ts, metadata=merged
            )

    def _adopt(self, event: TaskEvent) -> None:
        assert event.task_id is not None
        seq = event.seq or self.seq
        self.tasks[event.task_id] = TaskRecord(
            task_id=event.task_id,
            state=State.PENDING,
            version=0,
            created_seq=seq,
            updated_seq=seq,
            created_ts=event.ts,
            updated_ts=event.ts,
            reason="its creation was lost to a damaged log line",
        )

    def apply_all(self, events: Iterable[TaskEvent]) -> Registry:
        for event in events:
            self.apply(event)
        return self

    def to_list(self) -> list[dict[str, Any]]:
        return [self.tasks[k].to_dict() for k in sorted(self.tasks)]
