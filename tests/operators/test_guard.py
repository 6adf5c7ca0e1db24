"""guard: a before-hook that lets events pass or replaces them with hook.vetoed."""

from __future__ import annotations

import time

import pytest
import reactivex
from hypothesis import given
from hypothesis import strategies as st
from reactivex import operators as ops

from armor_rx.errors import ConfigError, HookTimeout, Vetoed
from armor_rx.model import TaskEvent
from armor_rx.operators import guard


def run(events, *operators):
    """The events a pipeline emits, in order (it must complete without error)."""
    return reactivex.from_iterable(events).pipe(*operators, ops.to_list()).run()


def start(task="t1", **payload):
    return TaskEvent.new("task.start.requested", task, payload)


def allow_all(event):
    return None


def test_none_and_true_let_the_event_pass_unchanged():
    events = [start("a"), start("b")]
    assert run(events, guard(allow_all)) == events
    assert run(events, guard(lambda e: True)) == events


def test_false_vetoes_with_a_refusal_naming_the_guard():
    def no_way(event):
        return False

    event = start("a")
    [out] = run([event], guard(no_way))
    assert out.kind == "hook.vetoed"
    assert out.task_id == "a"
    assert out.causation_id == event.id
    assert dict(out.payload) == {
        "hook": no_way.__qualname__,
        "reason": f"refused by {no_way.__qualname__}",
        "vetoed_kind": "task.start.requested",
        "vetoed_id": event.id,
    }


def test_a_string_vetoes_with_that_reason_and_the_given_name():
    [out] = run([start()], guard(lambda e: "disk full", name="quota"))
    assert (out.kind, out.payload["hook"], out.payload["reason"]) == ("hook.vetoed", "quota", "disk full")


def test_raising_vetoed_vetoes_with_its_reason():
    def strict(event):
        raise Vetoed("branch is protected")

    [out] = run([start()], guard(strict))
    assert out.kind == "hook.vetoed"
    assert out.payload["reason"] == "branch is protected"
    assert "error_type" not in out.payload


def test_only_the_vetoed_event_is_replaced():
    events = [start("a", ok=True), start("b", ok=False), start("c", ok=True)]
    out = run(events, guard(lambda e: None if e.payload["ok"] else "not ok"))
    assert [(e.kind, e.task_id) for e in out] == [
        ("task.start.requested", "a"),
        ("hook.vetoed", "b"),
        ("task.start.requested", "c"),
    ]


def test_events_of_other_kinds_pass_untouched_and_are_not_checked():
    seen = []

    def refuse(event):
        seen.append(event.kind)
        return False

    other = TaskEvent.new("exec.output", "t1", {"line": "hi"})
    out = run([other, start()], guard(refuse, kinds="task.*"))
    assert out[0] is other
    assert out[1].kind == "hook.vetoed"
    assert seen == ["task.start.requested"]


def test_hook_events_are_never_checked_even_when_kinds_match_them():
    seen = []
    report = TaskEvent.new("hook.failed", "t1", {"hook": "x"})
    out = run([report], guard(lambda e: seen.append(e) or False, kinds="*"))
    assert out == [report]
    assert seen == []


def test_a_raising_check_fails_closed_by_default():
    def broken(event):
        raise RuntimeError("db gone")

    event = start()
    [out] = run([event], guard(broken, name="policy"))
    assert out.kind == "hook.vetoed"
    assert out.payload["reason"] == "guard 'policy' failed closed: RuntimeError: db gone"
    assert out.payload["error_type"] == "RuntimeError"
    assert out.payload["vetoed_id"] == event.id


def test_a_raising_check_fails_open_when_asked():
    def broken(event):
        raise RuntimeError("db gone")

    event = start()
    failed, passed = run([event], guard(broken, name="policy", on_error="fail_open"))
    assert passed is event
    assert failed.kind == "hook.failed"
    assert failed.causation_id == event.id
    assert dict(failed.payload) == {
        "hook": "policy",
        "error": "db gone",
        "error_type": "RuntimeError",
        "policy": "fail_open",
        "fatal": False,
        "event_kind": "task.start.requested",
        "event_id": event.id,
    }


def test_a_return_value_that_is_not_a_verdict_counts_as_a_failure():
    [out] = run([start()], guard(lambda e: 42, name="odd"))
    assert out.kind == "hook.vetoed"
    assert out.payload["error_type"] == "TypeError"
    assert "returned 42" in out.payload["reason"]


def test_a_check_that_overruns_its_timeout_fails_closed():
    def slow(event):
        time.sleep(2)

    [out] = run([start()], guard(slow, timeout=0.05))
    assert out.kind == "hook.vetoed"
    assert out.payload["error_type"] == "HookTimeout"
    assert out.payload["reason"].startswith(f"guard {slow.__qualname__!r} failed closed: HookTimeout:")


def test_a_timeout_fails_open_when_asked_and_the_stream_goes_on():
    def slow_for_a(event):
        if event.task_id == "a":
            time.sleep(2)

    out = run([start("a"), start("b")], guard(slow_for_a, timeout=0.05, on_error="fail_open"))
    assert [(e.kind, e.task_id) for e in out] == [
        ("hook.failed", "a"),
        ("task.start.requested", "a"),
        ("task.start.requested", "b"),
    ]
    assert out[0].payload["error_type"] == HookTimeout.__name__


def test_a_check_within_its_timeout_decides_as_usual():
    out = run([start("a"), start("b")], guard(lambda e: "no a" if e.task_id == "a" else None, timeout=5))
    assert [(e.kind, e.task_id) for e in out] == [("hook.vetoed", "a"), ("task.start.requested", "b")]


def test_upstream_errors_and_completion_pass_through():
    failure = ValueError("upstream")
    source = reactivex.concat(reactivex.of(start()), reactivex.throw(failure))
    got = []
    source.pipe(guard(allow_all)).subscribe(got.append, got.append)
    assert got[1] is failure


@pytest.mark.parametrize(
    "options",
    [{"on_error": "ignore"}, {"kinds": "Task.*"}, {"timeout": 0}, {"timeout": -1}],
)
def test_bad_options_are_config_errors_when_the_guard_is_made(options):
    with pytest.raises(ConfigError):
        guard(allow_all, **options)


@given(st.lists(st.sampled_from([None, True, False, "reason", "raise", "crash"]), max_size=20))
def test_every_event_comes_out_once_as_itself_or_as_its_veto(verdicts):
    events = [start(f"t{i}", verdict=i) for i in range(len(verdicts))]

    def check(event):
        verdict = verdicts[event.payload["verdict"]]
        if verdict == "raise":
            raise Vetoed("no")
        if verdict == "crash":
            raise RuntimeError("boom")
        return verdict

    out = run(events, guard(check))
    assert len(out) == len(events)
    for event, result, verdict in zip(events, out, verdicts):
        if verdict in (None, True):
            assert result is event
        else:
            assert result.kind == "hook.vetoed"
            assert result.payload["vetoed_id"] == event.id == result.causation_id
