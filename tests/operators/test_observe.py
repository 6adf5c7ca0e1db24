"""observe: an after-hook whose failures are reported, never fatal to the stream."""

from __future__ import annotations

import time

import pytest
import reactivex
from reactivex import operators as ops

from armor_rx.errors import ConfigError
from armor_rx.model import TaskEvent
from armor_rx.operators import observe


def run(events, *operators):
    return reactivex.from_iterable(events).pipe(*operators, ops.to_list()).run()


def started(task):
    return TaskEvent.new("task.started", task)


def test_fn_sees_matching_events_and_every_event_passes():
    seen = []
    events = [started("a"), TaskEvent.new("exec.output", "a"), started("b")]
    out = run(events, observe(lambda e: seen.append(e.task_id) or "ignored", kinds="task.*"))
    assert out == events
    assert seen == ["a", "b"]


def test_hook_events_are_not_shown_to_the_observer():
    seen = []
    report = TaskEvent.new("hook.vetoed", "a", {"hook": "g"})
    assert run([report], observe(seen.append)) == [report]
    assert seen == []


def test_a_raising_observer_is_reported_after_the_event_and_the_stream_goes_on():
    calls = []

    def monitor(event):
        calls.append(event.task_id)
        if event.task_id == "b":
            raise ConnectionError("dashboard down")

    events = [started("a"), started("b"), started("c")]
    out = run(events, observe(monitor, name="dashboard"))
    assert calls == ["a", "b", "c"]
    assert [(e.kind, e.task_id) for e in out] == [
        ("task.started", "a"),
        ("task.started", "b"),
        ("hook.failed", "b"),
        ("task.started", "c"),
    ]
    report = out[2]
    assert report.causation_id == events[1].id
    assert dict(report.payload) == {
        "hook": "dashboard",
        "error": "dashboard down",
        "error_type": "ConnectionError",
        "policy": "fail_open",
        "fatal": False,
        "event_kind": "task.started",
        "event_id": events[1].id,
    }


def test_fail_closed_marks_the_report_fatal_but_still_does_not_break_the_stream():
    def broken(event):
        raise RuntimeError("bad")

    events = [started("a"), started("b")]
    out = run(events, observe(broken, on_error="fail_closed"))
    assert [e.kind for e in out] == ["task.started", "hook.failed", "task.started", "hook.failed"]
    assert out[1].payload["fatal"] is True
    assert out[1].payload["policy"] == "fail_closed"
    assert out[1].payload["hook"] == broken.__qualname__


def test_an_observer_that_overruns_its_timeout_is_reported():
    def slow_for_a(event):
        if event.task_id == "a":
            time.sleep(2)

    out = run([started("a"), started("b")], observe(slow_for_a, name="slow", timeout=0.05))
    assert [(e.kind, e.task_id) for e in out] == [
        ("task.started", "a"),
        ("hook.failed", "a"),
        ("task.started", "b"),
    ]
    assert out[1].payload["error_type"] == "HookTimeout"
    assert out[1].payload["error"] == "hook 'slow' did not finish within 0.05s"


@pytest.mark.parametrize("options", [{"on_error": "retry"}, {"kinds": ""}, {"timeout": "1"}])
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        observe(print, **options)
