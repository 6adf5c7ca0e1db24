"""checkpoint_policy as a pure operator: what it emits, in which order, for which triggers."""

from __future__ import annotations

import time

import pytest
import reactivex
from reactivex import operators as ops

from armor_rx.errors import ConfigError
from armor_rx.model import TaskEvent
from armor_rx.operators import CheckpointTriggers, checkpoint_policy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(policy, events):
    return reactivex.from_iterable(events).pipe(policy, ops.to_list()).run()


def start(task="t", **payload):
    return TaskEvent.new("task.start.requested", task, payload)


def exe(command, task="t"):
    return TaskEvent.new("exec.requested", task, {"command": command})


def kinds(out):
    return [e.kind for e in out]


def test_nothing_happens_without_triggers():
    steps = [start(), exe(["rm", "-rf", "x"]), TaskEvent.new("task.complete.requested", "t")]
    assert run(checkpoint_policy(), steps) == steps


def test_a_risky_exec_gets_a_checkpoint_before_it_and_a_scored_event():
    policy = checkpoint_policy(risk_threshold=40)
    risky = exe(["sh", "-c", "make && git reset --hard"])
    out = run(policy, [start(), exe(["make"]), risky])
    assert kinds(out) == ["task.start.requested", "checkpoint.risk.scored", "exec.requested",
                          "checkpoint.risk.scored", "checkpoint.requested", "exec.requested"]
    scored, checkpoint = out[3], out[4]
    assert scored.payload["score"] == 60 and scored.payload["decision"] == "checkpoint"
    assert scored.payload["reasons"][0]["detail"] == "git reset --hard"
    assert scored.payload["command"] == "sh -c 'make && git reset --hard'"
    assert scored.causation_id == risky.id and checkpoint.causation_id == risky.id
    assert checkpoint.payload["policy"]["when"] == "before" and "after" not in checkpoint.payload
    assert "risk" in checkpoint.payload["message"]
    calm = out[1]
    assert calm.payload["score"] == 0 and calm.payload["decision"] == "none"


def test_a_risky_first_command_after_a_checkpoint_needs_no_second_one():
    policy = checkpoint_policy(risk_threshold=40)
    out = run(policy, [start(), TaskEvent.new("checkpoint.requested", "t", {}), exe(["rm", "-rf", "x"])])
    assert "checkpoint.requested" not in kinds(out[2:])
    assert out[2].payload["decision"] == "none" and "already holds" in out[2].payload["note"]


def test_every_n_execs_and_every_t_seconds():
    clock = Clock()
    policy = checkpoint_policy(every_execs=3, clock=clock)
    out = run(policy, [start()] + [exe(["make"]) for _ in range(7)])
    # before the 4th and the 7th exec: three execs since the last one each time
    assert [i for i, e in enumerate(out) if e.kind == "checkpoint.requested"] == [4, 8]

    timed = checkpoint_policy(every_seconds=60, clock=clock)
    steps = [start(), exe(["a"]), exe(["b"])]
    assert "checkpoint.requested" not in kinds(run(timed, steps))
    clock.now += 61
    out = run(timed, [exe(["c"])])
    assert kinds(out) == ["checkpoint.requested", "exec.requested"]
    assert "every_seconds" in out[0].payload["policy"]["because"][0]


def test_hook_points_before_and_after():
    policy = checkpoint_policy(at=("after_start", "after_exec", "before_complete"))
    s, e, c = start(), exe(["make"]), TaskEvent.new("task.complete.requested", "t")
    out = run(policy, [s, e, c])
    assert kinds(out) == ["task.start.requested", "checkpoint.requested", "exec.requested", "checkpoint.requested",
                          "checkpoint.requested", "task.complete.requested"]
    assert out[1].payload["after"] == s.id and out[3].payload["after"] == e.id
    assert "after" not in out[4].payload and out[4].causation_id == c.id


def test_a_task_started_with_its_own_policy_uses_it_and_others_the_default():
    policy = checkpoint_policy(every_execs=100)
    out = run(policy, [start("a", checkpoint_policy="risk=30"), start("b"),
                       exe(["pip", "install", "x"], "a"), exe(["pip", "install", "x"], "b")])
    assert [(e.kind, e.task_id) for e in out if e.kind.startswith("checkpoint")] == [
        ("checkpoint.risk.scored", "a"), ("checkpoint.requested", "a")]
    assert policy.triggers_for("a").risk_threshold == 30 and policy.triggers_for("b").every_execs == 100


def test_the_after_half_feeds_the_previous_step_into_the_score():
    policy = checkpoint_policy(CheckpointTriggers(risk_threshold=20, long_step=100))
    first = exe(["make"])
    run(policy, [start(), first])
    done = first.caused("exec.done", {"exit_code": 0, "duration": 250.0, "files_touched": 3})
    reactivex.of(done).pipe(policy.after).run()
    out = run(policy, [exe(["ls"])])
    assert out[0].payload["decision"] == "checkpoint"
    assert out[0].payload["reasons"][0]["rule"] == "long_previous_step"


def test_the_wait_for_a_lost_outcome_is_bounded():
    policy = checkpoint_policy(risk_threshold=40, outcome_wait=0.2)
    run(policy, [start(), exe(["make"])])  # its outcome never reaches the after half
    began = time.monotonic()
    out = run(policy, [exe(["ls"])])
    assert time.monotonic() - began < 5 and out[0].payload["decision"] == "none"


def test_requests_the_policy_made_and_events_without_a_task_pass_untouched():
    policy = checkpoint_policy(risk_threshold=1, at=("before_exec",))
    mine = TaskEvent.new("checkpoint.requested", "t", {"policy": {"because": ["x"]}})
    fact = TaskEvent.new("note.added", None, {})
    assert run(policy, [mine, fact]) == [mine, fact]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("adaptive", CheckpointTriggers(risk_threshold=40, at=("before_complete",))),
        ("risk=50,every=10,interval=600,at=after_start+before_fail",
         CheckpointTriggers(risk_threshold=50, every_execs=10, every_seconds=600.0, at=("after_start", "before_fail"))),
        ("adaptive,every=5", CheckpointTriggers(risk_threshold=40, at=("before_complete",), every_execs=5)),
        ("off", CheckpointTriggers()),
        ("long_step=60,many_files=10,risk=40", CheckpointTriggers(risk_threshold=40, long_step=60.0, many_files=10)),
    ],
)
def test_spec_strings(spec, expected):
    parsed = CheckpointTriggers.parse(spec)
    assert parsed == expected
    assert CheckpointTriggers.from_payload(parsed.to_payload()) == parsed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("risk=high", "not key=value with a number"),
        ("every=0", "at least 1"),
        ("at=sometimes", "unknown checkpoint point 'sometimes'"),
        ("colour=blue", "unknown checkpoint policy key 'colour'"),
        ("interval=-5", "positive number of seconds"),
    ],
)
def test_bad_specs_are_one_line_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message) as caught:
        CheckpointTriggers.parse(spec)
    assert "\n" not in str(caught.value)


def test_bad_keywords_fail_when_the_operator_is_made():
    with pytest.raises(ConfigError):
        checkpoint_policy(every_execs=0)
    with pytest.raises(ConfigError, match="unknown checkpoint policy field"):
        CheckpointTriggers.from_payload({"risk": 3})


def test_docstring_examples():
    import doctest

    import armor_rx.operators._checkpoint_policy as module

    result = doctest.testmod(module)
    assert result.attempted >= 2 and result.failed == 0
