import pytest

from armor_rx.errors import (
    ConcurrencyConflict,
    IllegalTransition,
    TaskExists,
    TaskNotFound,
)
from armor_rx.model import TaskEvent
from armor_rx.model.lifecycle import (
    ACTIVE,
    KIND_TO_STATE,
    TERMINAL,
    TRANSITIONS,
    State,
    check_transition,
    mermaid,
)
from armor_rx.model.registry import Registry


def test_table_matches_the_design():
    s = State
    assert TRANSITIONS[s.PENDING] >= {s.STARTING}
    for state in (s.STARTING, s.RUNNING, s.COMPLETING):
        assert s.FAILING in TRANSITIONS[state]
    for state in ACTIVE:
        assert s.INTERRUPTED in TRANSITIONS[state]
        assert s.CANCELLED in TRANSITIONS[state]
    assert TRANSITIONS[s.INTERRUPTED] >= {s.RESUMING}
    assert s.RUNNING in TRANSITIONS[s.RESUMING]
    assert TERMINAL == {s.COMPLETED, s.FAILED, s.CANCELLED}


def test_illegal_transition_is_typed_and_explains():
    with pytest.raises(IllegalTransition) as info:
        check_transition("t1", State.COMPLETED, State.RUNNING)
    assert "'completed'" in str(info.value) and "final" in str(info.value)


def test_mermaid_is_drawn_from_the_table():
    text = mermaid()
    edges = sum(len(v) for v in TRANSITIONS.values())
    assert text.count("-->") == edges + 1 + len(TERMINAL)


def _events(*kinds, task="t1"):
    return [TaskEvent.new(k, task, {"reason": "why"} if "fail" in k else None).with_seq(i + 1) for i, k in enumerate(kinds)]


def test_registry_folds_the_happy_path():
    reg = Registry().apply_all(_events("task.created", "task.start.requested", "task.started", "task.complete.requested", "task.completed"))
    rec = reg.get("t1")
    assert rec.state is State.COMPLETED and rec.version == 5 and reg.seq == 5


def test_registry_refuses_illegal_steps_and_leaves_state():
    reg = Registry().apply_all(_events("task.created"))
    with pytest.raises(IllegalTransition):
        reg.apply(TaskEvent.new("task.completed", "t1").with_seq(2))
    assert reg.get("t1").state is State.PENDING
    with pytest.raises(TaskExists):
        reg.apply(TaskEvent.new("task.created", "t1").with_seq(3))
    with pytest.raises(TaskNotFound):
        reg.apply(TaskEvent.new("task.started", "nope").with_seq(4))


def test_optimistic_update_checks_version():
    reg = Registry().apply_all(_events("task.created"))
    reg.apply(TaskEvent.new("task.updated", "t1", {"expected_version": 1, "metadata": {"a": 1}}).with_seq(2))
    assert reg.get("t1").metadata["a"] == 1 and reg.get("t1").version == 2
    with pytest.raises(ConcurrencyConflict) as info:
        reg.apply(TaskEvent.new("task.updated", "t1", {"expected_version": 1, "metadata": {"a": 2}}).with_seq(3))
    assert info.value.actual == 2
    assert reg.get("t1").metadata["a"] == 1


def test_every_state_kind_is_in_the_table():
    assert set(KIND_TO_STATE.values()) <= set(TRANSITIONS)
