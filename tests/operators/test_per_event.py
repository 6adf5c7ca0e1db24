"""per_event: the subscribe closure the hook operators share."""

from __future__ import annotations

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.subject import Subject

from armor_rx.model.events import TaskEvent
from armor_rx.operators import checkpoint_policy
from armor_rx.operators._per_event import per_event
from armor_rx.pipeline.stages import isolated


def test_each_item_becomes_what_decide_returns_in_order():
    assert reactivex.of(0, 1, 2).pipe(per_event(lambda x: ["a"] * x), ops.to_list()).run() == ["a", "a", "a"]


def test_a_failing_decide_ends_the_stream_and_is_not_called_again():
    calls: list[int] = []

    def decide(x: int) -> list[int]:
        calls.append(x)
        if x == 2:
            raise ValueError("bad item 2")
        return [x]

    subject: Subject[int] = Subject()
    got: list[object] = []
    subject.pipe(per_event(decide)).subscribe(got.append, lambda e: got.append(repr(e)))
    for x in (1, 2, 3):
        subject.on_next(x)
    assert got == [1, "ValueError('bad item 2')"]
    assert calls == [1, 2]  # 3 arrived after the error: not decided


def test_an_error_from_downstream_is_not_taken_for_the_deciders():
    errors: list[Exception] = []

    def downstream(_: int) -> None:
        raise RuntimeError("downstream broke")

    subject: Subject[int] = Subject()
    subject.pipe(per_event(lambda x: [x])).subscribe(downstream, errors.append)
    with pytest.raises(RuntimeError, match="downstream broke"):
        subject.on_next(1)
    assert errors == []


def test_a_failing_after_half_passes_the_event_once_and_is_reported(monkeypatch):
    policy = checkpoint_policy(risk_threshold=40)

    def broken(event: TaskEvent) -> None:
        raise RuntimeError("cannot learn")

    monkeypatch.setattr(policy, "learn", broken)
    event = TaskEvent.new("exec.done", "t", {"exit_code": 0})
    out = reactivex.of(event).pipe(isolated(policy.after, name="policy", on_error="fail_open"), ops.to_list()).run()
    assert [e.kind for e in out] == ["exec.done", "hook.failed"]
    assert out[1].payload["error"] == "cannot learn"
