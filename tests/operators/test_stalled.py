"""stalled: a quiet active task is flagged once, un-flagged by its next event; the session records both."""

from __future__ import annotations

import threading

import time

import pytest
from reactivex.scheduler import HistoricalScheduler
from reactivex.subject import Subject

from armor_rx import Armor, State
from armor_rx.errors import ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.operators import stalled


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)
    return predicate()


def watch(quiet: float = 10.0, seed=None):
    clock = HistoricalScheduler()
    feed: Subject[TaskEvent] = Subject()
    seen: list[TaskEvent] = []
    flags = stalled(quiet, scheduler=clock, seed=seed, clock=lambda: clock.now.timestamp())
    sub = feed.pipe(flags).subscribe(seen.append)
    return clock, feed, seen, sub


def test_quiet_active_task_is_flagged_once_and_unflagged_by_its_next_event():
    clock, feed, seen, _ = watch(10)
    feed.on_next(TaskEvent.new("task.started", "t1").with_seq(5))
    clock.advance_by(9.0)
    assert seen == []
    clock.advance_by(30.0)  # long after: still one flag, not one per period
    assert [(e.kind, e.task_id) for e in seen] == [("task.stalled", "t1")]
    assert seen[0].payload["last_kind"] == "task.started" and seen[0].payload["last_seq"] == 5
    assert seen[0].payload["state"] == "running" and seen[0].payload["quiet_after"] == 10
    mover = TaskEvent.new("exec.output", "t1").with_seq(6)
    feed.on_next(mover)
    assert [e.kind for e in seen] == ["task.stalled", "task.unstalled"]
    assert seen[1].causation_id == mover.id and seen[1].payload["moved_by"] == "exec.output"
    assert seen[1].payload["quiet_for"] == 39.0
    clock.advance_by(10.5)  # quiet again: flagged again
    assert [e.kind for e in seen] == ["task.stalled", "task.unstalled", "task.stalled"]


def test_events_keep_a_task_unflagged_and_other_tasks_are_timed_apart():
    clock, feed, seen, _ = watch(10)
    feed.on_next(TaskEvent.new("task.started", "busy"))
    feed.on_next(TaskEvent.new("task.started", "idle"))
    for _ in range(5):
        clock.advance_by(6.0)
        feed.on_next(TaskEvent.new("exec.output", "busy"))
    assert [(e.kind, e.task_id) for e in seen] == [("task.stalled", "idle")]


def test_waiting_and_finished_tasks_are_never_flagged_and_flags_are_not_movement():
    clock, feed, seen, _ = watch(10)
    feed.on_next(TaskEvent.new("task.created", "new"))  # pending: waits for a person
    feed.on_next(TaskEvent.new("task.started", "done"))
    feed.on_next(TaskEvent.new("task.completed", "done"))
    feed.on_next(TaskEvent.new("task.started", "cut"))
    feed.on_next(TaskEvent.new("task.interrupted", "cut"))
    clock.advance_by(60.0)
    assert seen == []
    feed.on_next(TaskEvent.new("task.started", "t"))
    clock.advance_by(11.0)
    feed.on_next(seen[-1])  # the flag, fed back (as the bus does once it is logged), does not clear itself
    assert [e.kind for e in seen] == ["task.stalled"]


def test_seeded_tasks_are_timed_from_the_subscription_and_dispose_cancels_timers():
    clock, feed, seen, sub = watch(10, seed={"old": State.RUNNING, "waiting": State.INTERRUPTED})
    clock.advance_by(11.0)
    assert [(e.kind, e.task_id) for e in seen] == [("task.stalled", "old")]
    feed.on_next(TaskEvent.new("task.started", "t2"))
    sub.dispose()
    clock.advance_by(60.0)
    assert len(seen) == 1


@pytest.mark.parametrize("quiet", [0, -1, True, "5"])
def test_a_bad_quiet_time_is_refused_when_the_operator_is_made(quiet):
    with pytest.raises(ConfigError, match="positive quiet time"):
        stalled(quiet)


def test_the_session_records_stalled_and_unstalled_and_its_watch_thread_ends_with_it(tmp_path):
    with Armor(state_dir=tmp_path / "state", stall_after=0.3) as armor:
        armor.create_task("quiet")
        armor.start("quiet")
        assert wait_for(lambda: any(armor.history(task_id="quiet", kind="task.stalled")), timeout=30)
        armor.emit("quiet", "note.added", {"text": "moving again"})
        assert wait_for(lambda: any(armor.history(task_id="quiet", kind="task.unstalled")), timeout=30)
        flags = [e.kind for e in armor.history(task_id="quiet") if e.kind in ("task.stalled", "task.unstalled")]
        assert flags[:2] == ["task.stalled", "task.unstalled"]
        assert armor.task("quiet").state is State.RUNNING  # a flag, not a state change
        armor.complete("quiet")
        assert any(t.name == "armor-stall-watch" for t in threading.enumerate())
    assert not any(t.name == "armor-stall-watch" for t in threading.enumerate())
    # Reopened, a task that is still active is timed again from the open.
    with Armor(state_dir=tmp_path / "state", stall_after=0.3) as armor:
        armor.create_task("later")
        armor.start("later")
    with Armor(state_dir=tmp_path / "state", stall_after=0.3) as armor:
        before = len(list(armor.history(task_id="later", kind="task.stalled")))
        assert wait_for(lambda: len(list(armor.history(task_id="later", kind="task.stalled"))) > before, timeout=30)


def test_stall_after_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="stall_after"):
        Armor(state_dir=tmp_path / "state", stall_after=0)
