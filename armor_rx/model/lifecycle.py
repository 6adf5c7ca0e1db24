"""The task lifecycle: one transition table, as data.

The docs' state diagram is generated from :data:`TRANSITIONS`
(``python -m armor_rx.model.lifecycle`` prints it as Mermaid).
"""

from __future__ import annotations

from enum import Enum
from types import MappingProxyType
from typing import Mapping

from armor_rx.errors import IllegalTransition


class State(str, Enum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETING = "completing"
    COMPLETED = "completed"
    FAILING = "failing"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    RESUMING = "resuming"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


S = State

TRANSITIONS: Mapping[State, frozenset[State]] = MappingProxyType(
    {
        S.PENDING: frozenset({S.STARTING, S.CANCELLED}),
        S.STARTING: frozenset({S.RUNNING, S.FAILING, S.INTERRUPTED, S.CANCELLED}),
        S.RUNNING: frozenset({S.COMPLETING, S.FAILING, S.INTERRUPTED, S.CANCELLED}),
        S.COMPLETING: frozenset({S.COMPLETED, S.FAILING, S.INTERRUPTED, S.CANCELLED}),
        S.FAILING: frozenset({S.FAILED, S.INTERRUPTED, S.CANCELLED}),
        S.INTERRUPTED: frozenset({S.RESUMING, S.FAILING, S.CANCELLED}),
        S.RESUMING: frozenset({S.RUNNING, S.FAILING, S.INTERRUPTED, S.CANCELLED}),
        S.COMPLETED: frozenset(),
        S.FAILED: frozenset(),
        S.CANCELLED: frozenset(),
    }
)

TERMINAL: frozenset[State] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
ACTIVE: frozenset[State] = frozenset({S.STARTING, S.RUNNING, S.COMPLETING, S.FAILING, S.RESUMING})

# Which event kind moves a task into which state. Kinds not listed here do not
# change the state (exec.output, checkpoint.created, hook.failed, ...).
KIND_TO_STATE: Mapping[str, State] = MappingProxyType(
    {
        "task.created": S.PENDING,
        "task.start.requested": S.STARTING,
        "task.started": S.RUNNING,
        "task.complete.requested": S.COMPLETING,
        "task.completed": S.COMPLETED,
        "task.fail.requested": S.FAILING,
        "task.failed": S.FAILED,
        "task.interrupted": S.INTERRUPTED,
        "task.resume.requested": S.RESUMING,
        "task.resumed": S.RUNNING,
        "task.cancelled": S.CANCELLED,
    }
)

# A request kind and the outcome kind its effect produces when it succeeds.
REQUEST_OUTCOME: Mapping[str, str] = MappingProxyType(
    {
        "task.start.requested": "task.started",
        "task.complete.requested": "task.completed",
        "task.fail.requested": "task.failed",
        "task.resume.requested": "task.resumed",
        "task.cancel.requested": "task.cancelled",
    }
)

# The six classic hook points, as (event kind, stage).
HOOK_POINTS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "before_start": ("task.start.requested", "before"),
        "after_start": ("task.started", "after"),
        "before_complete": ("task.complete.requested", "before"),
        "after_complete": ("task.completed", "after"),
        "before_fail": ("task.fail.requested", "before"),
        "after_fail": ("task.failed", "after"),
    }
)


def check_transition(task_id: str, current: State, target: State) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> target`` is in the table."""
    allowed = TRANSITIONS[current]
    if target not in allowed:
        raise IllegalTransition(task_id, current.value, target.value, frozenset(s.value for s in allowed))


def mermaid() -> str:
    """The state diagram in Mermaid syntax, drawn from :data:`TRANSITIONS`."""
    lines = ["stateDiagram-v2", "    [*] --> pending"]
    for state, targets in TRANSITIONS.items():
        for target in sorted(targets, key=lambda s: s.value):
            lines.append(f"    {state.value} --> {target.value}")
        if not targets:
            lines.append(f"    {state.value} --> [*]")
    return "\n".join(lines)


if __name__ == "__main__":
    print(mermaid())
