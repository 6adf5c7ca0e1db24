"""The monitor flags both tasks of a conflict, and unflags them when it is resolved."""

from dataclasses import replace

from armor_rx.model.events import TaskEvent
from armor_rx.monitor.state import MonitorState


def event(kind, task_id, payload, seq):
    return replace(TaskEvent.new(kind, task_id, payload), seq=seq, ts=1000.0)


def flags(state):
    return {row.task_id: f for row, f in state.table()}


def test_both_tasks_flagged_until_resolved():
    s = MonitorState(clock=lambda: 1000.0, stuck_after=600)
    seq = 0
    for name in ("a", "b", "c"):
        for kind in ("task.created", "task.started"):
            seq += 1
            s.apply(event(kind, name, {}, seq))
    s.apply(event("conflict.detected", "b", {"tasks": ["a", "b"], "paths": ["x"]}, 10))
    s.apply(event("conflict.detected", "c", {"tasks": ["a", "c"], "paths": ["y"]}, 11))
    assert flags(s) == {"a": ["conflicting"], "b": ["conflicting"], "c": ["conflicting"]}
    # Partly resolved (paths remain): still flagged.
    s.apply(event("conflict.resolved", "b", {"tasks": ["a", "b"], "paths": ["z"], "remaining": ["x"]}, 12))
    assert flags(s)["b"] == ["conflicting"]
    s.apply(event("conflict.resolved", "b", {"tasks": ["a", "b"], "paths": ["x"], "remaining": []}, 13))
    assert flags(s) == {"a": ["conflicting"], "b": [], "c": ["conflicting"]}  # a is still in conflict with c
    s.apply(event("conflict.resolved", "c", {"tasks": ["a", "c"], "paths": ["y"], "remaining": []}, 14))
    assert flags(s) == {"a": [], "b": [], "c": []}
