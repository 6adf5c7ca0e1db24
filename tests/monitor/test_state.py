"""The monitor's state model, with no terminal and no service: the fold, the flags, the filters."""

from __future__ import annotations

import pytest

from armor_rx.errors import ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import State
from armor_rx.model.registry import TaskRecord
from armor_rx.monitor.state import MonitorState, ago


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now





def _seq(event, seq, ts):
    from dataclasses import replace

    return replace(event, seq=seq, ts=ts)


def feed(state, *events):
    for e in events:
        state.apply(e)


def test_a_task_is_folded_from_its_events():
    s = MonitorState(clock=Clock())
    feed(s, _seq(TaskEvent.new("task.created", "t1", {}), 1, 990),
         _seq(TaskEvent.new("task.start.requested", "t1", {}), 2, 991),
         _seq(TaskEvent.new("task.started", "t1", {"branch": "task/t1"}), 3, 992),
         _seq(TaskEvent.new("container.started", "t1", {"container": "abc", "name": "armor-t1"}), 4, 993),
         _seq(TaskEvent.new("exec.output", "t1", {"data": "hello\nworld\n", "stream": "stdout"}), 5, 994),
         _seq(TaskEvent.new("exec.exited", "t1", {"exit_code": 3}), 6, 995),
         _seq(TaskEvent.new("checkpoint.created", "t1", {"checkpoint": "cp-1"}), 7, 996),
         _seq(TaskEvent.new("checkpoint.created", "t1", {"checkpoint": "cp-2"}), 8, 997),
         _seq(TaskEvent.new("checkpoint.pruned", "t1", {"checkpoints": ["cp-1"], "kept": "cp-2"}), 9, 998))
    row = s.rows["t1"]
    assert (row.state, row.branch, row.container, row.exit_code, row.checkpoints) == (State.RUNNING, "task/t1", "armor-t1", 3, {"cp-2"})
    assert list(row.output) == ["hello", "world"]
    assert row.last_ts == 998 and s.last_seq == 9 and s.selected == "t1"


def test_flags_need_a_person():
    clock = Clock(1000.0)
    s = MonitorState(clock=clock, stuck_after=60)
    feed(s, _seq(TaskEvent.new("task.created", "idle", {}), 1, 1000),
         _seq(TaskEvent.new("task.created", "run", {}), 2, 1000), _seq(TaskEvent.new("task.started", "run", {}), 3, 1000),
         _seq(TaskEvent.new("task.created", "v", {}), 4, 1000),
         _seq(TaskEvent.new("hook.vetoed", "v", {"reason": "no"}), 5, 1000),
         _seq(TaskEvent.new("effect.dead_lettered", "v", {}), 6, 1000))
    flags = {row.task_id: f for row, f in s.table()}
    assert flags == {"idle": ["waiting"], "run": [], "v": ["waiting", "vetoed", "dead-lettered"]}
    clock.now = 1061  # a running task silent for longer than stuck_after
    assert dict((r.task_id, f) for r, f in s.table())["run"] == ["stuck"]
    s.apply(_seq(TaskEvent.new("exec.output", "run", {"data": "x"}), 7, 1061))
    assert dict((r.task_id, f) for r, f in s.table())["run"] == []
    # A state change clears a veto; a redrive clears a dead letter.
    feed(s, _seq(TaskEvent.new("task.start.requested", "v", {}), 8, 1061),
         _seq(TaskEvent.new("deadletter.redriven", "v", {}), 9, 1061))
    assert dict((r.task_id, f) for r, f in s.table())["v"] == []
    feed(s, _seq(TaskEvent.new("task.failed", "v", {"reason": "boom"}), 10, 1061),
         _seq(TaskEvent.new("git.merge.conflict", "run", {}), 11, 1061))
    table = dict((r.task_id, f) for r, f in s.table())
    assert table["v"] == ["failed"] and table["run"] == ["conflicting"]


def test_stalled_and_unhealthy_flags_follow_their_events():
    clock = Clock(1000.0)
    s = MonitorState(clock=clock, stuck_after=600)
    feed(s, _seq(TaskEvent.new("task.created", "t", {}), 1, 1000), _seq(TaskEvent.new("task.started", "t", {}), 2, 1000),
         _seq(TaskEvent.new("task.stalled", "t", {"quiet_for": 30}), 3, 1030))
    row = s.rows["t"]
    assert dict((r.task_id, f) for r, f in s.table())["t"] == ["stalled"]
    assert row.last_ts == 1000  # the flag is not activity
    feed(s, _seq(TaskEvent.new("task.unstalled", "t", {}), 4, 1031),
         _seq(TaskEvent.new("service.health.changed", "t", {"service": "web", "from": "healthy", "to": "unhealthy"}), 5, 1031))
    assert dict((r.task_id, f) for r, f in s.table())["t"] == ["unhealthy"]
    feed(s, _seq(TaskEvent.new("service.health.changed", "t", {"service": "web", "from": "unhealthy", "to": "healthy"}), 6, 1032))
    assert dict((r.task_id, f) for r, f in s.table())["t"] == []
    feed(s, _seq(TaskEvent.new("task.stalled", "t", {}), 7, 1100), _seq(TaskEvent.new("task.interrupted", "t", {}), 8, 1101))
    assert dict((r.task_id, f) for r, f in s.table())["t"] == ["waiting"]  # a state change clears the flag


def test_an_older_event_never_moves_a_task_back():
    s = MonitorState()
    record = TaskRecord("t1", State.CANCELLED, 4, 1, 10, 1.0, 2.0, "stop", {"branch": "task/t1"})
    s.apply_records([record])
    s.apply(_seq(TaskEvent.new("task.started", "t1", {}), 5, 1.5))  # replayed history, older than the record
    assert s.rows["t1"].state is State.CANCELLED and s.rows["t1"].branch == "task/t1"
    s.apply(_seq(TaskEvent.new("task.cancelled", "t1", {}), 11, 3.0))
    assert s.rows["t1"].state_seq == 11


def test_the_event_pane_filters_pauses_and_scrolls():
    s = MonitorState()
    kinds = ["task.created", "exec.output", "task.failed", "hook.failed", "exec.output"]
    for i, kind in enumerate(kinds, 1):
        s.apply(_seq(TaskEvent.new(kind, "a" if i % 2 else "b", {}), i, float(i)))
    assert [e.seq for e in s.visible_events(10)] == [1, 2, 3, 4, 5]
    s.set_kind_filter("*.failed")
    assert [e.kind for e in s.visible_events(10)] == ["task.failed", "hook.failed"]
    s.set_task_filter("a")
    assert [e.seq for e in s.visible_events(10)] == [3]
    with pytest.raises(ConfigError):
        s.set_kind_filter("Bad Pattern")
    assert s.kind_filter == "*.failed"  # a bad pattern changes nothing
    s.set_kind_filter(None)
    s.set_task_filter(None)
    s.pause()
    s.apply(_seq(TaskEvent.new("task.created", "c", {}), 6, 6.0))
    assert [e.seq for e in s.visible_events(10)][-1] == 5 and s.newer_than_pause() == 1
    s.scroll_events(2)
    assert [e.seq for e in s.visible_events(2)] == [2, 3]
    s.follow()
    assert [e.seq for e in s.visible_events(2)] == [5, 6]


def test_ages_read_like_a_person_would_say_them():
    assert ago(0, 100) == "-"
    assert ago(97, 100) == "3 s ago"
    assert ago(100 - 125, 100) == "2 min ago"
    assert ago(100 - 7300, 100) == "2 h ago"
