"""The pipeline end to end through a real session on a real state directory."""

import random
import threading
import time

import pytest

from armor_rx import (
    Armor,
    EffectFailed,
    IllegalTransition,
    RetryPolicy,
    State,
    TransientError,
    Vetoed,
)
from armor_rx.model.events import TaskEvent
from armor_rx.testing import capture_events, crash


class RecordingEffect:
    name = "recording"
    kinds = "task.*.requested"

    def __init__(self, fail_times=0, error=TransientError, delay=0.0):
        self.calls = []
        self.fail_times = fail_times
        self.error = error
        self.delay = delay
        self.lock = threading.Lock()

    def apply(self, ctx):
        with self.lock:
            self.calls.append((ctx.request.task_id, ctx.request.kind, ctx.attempt))
        if self.delay:
            time.sleep(random.uniform(0, self.delay))
        if len(self.calls) <= self.fail_times:
            raise self.error(f"flaky attempt {ctx.attempt}")
        ctx.emit("recording.applied", {"attempt": ctx.attempt})
        return {"applied_by": self.name}


def test_intent_is_logged_before_the_effect(state_dir):
    seen_in_log = []

    class Checking(RecordingEffect):
        def apply(self, ctx):
            # Write-ahead: the request is already durable when the effect starts.
            logged = [e.id for e in armor.log.read(kind="task.start.requested")]
            seen_in_log.append(ctx.request.id in logged)
            return super().apply(ctx)

    with Armor(state_dir=state_dir, effects=[Checking()]) as armor:
        armor.create_task("t1")
        outcome = armor.start("t1")
    assert seen_in_log == [True]
    assert outcome.kind == "task.started" and outcome.payload["applied_by"] == "recording"


def test_full_history_in_order(state_dir):
    effect = RecordingEffect()
    with Armor(state_dir=state_dir, effects=[effect]) as armor, capture_events(armor) as events:
        armor.create_task("t1")
        armor.start("t1")
        armor.complete("t1")
        logged = list(armor.history(task_id="t1"))
    assert [e.kind for e in logged] == [
        "task.created",
        "task.start.requested",
        "recording.applied",
        "task.started",
        "task.complete.requested",
        "recording.applied",
        "task.completed",
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert [e.id for e in events if e.task_id == "t1"] == [e.id for e in logged]
    assert logged[3].causation_id == logged[1].id


def test_illegal_request_is_refused_and_nothing_logged(armor):
    armor.create_task("t1")
    before = armor.log.last_seq
    with pytest.raises(IllegalTransition):
        armor.complete("t1")
    assert armor.log.last_seq == before
    assert armor.task("t1").state is State.PENDING


def test_veto_fails_the_task_with_the_reason(armor):
    @armor.hook("before_start", name="no-friday-deploys")
    def refuse(event):
        return "not on a friday"

    armor.create_task("t1")
    with pytest.raises(Vetoed) as info:
        armor.start("t1")
    assert info.value.reason == "not on a friday" and info.value.hook == "no-friday-deploys"
    record = armor.task("t1")
    assert record.state is State.FAILED
    assert "not on a friday" in record.reason
    kinds = [e.kind for e in armor.history(task_id="t1")]
    assert kinds == ["task.created", "task.start.requested", "hook.vetoed", "task.fail.requested", "task.failed"]


def test_guard_that_raises_fails_closed_and_observer_fails_open(armor):
    def broken_guard(event):
        raise RuntimeError("policy server down")

    armor.hook("before_start", broken_guard)
    armor.create_task("t1")
    with pytest.raises(Vetoed, match="failed closed"):
        armor.start("t1")
    assert armor.task("t1").state is State.FAILED

    armor.hooks.remove(armor.hooks.list(point="before_start")[0])
    seen = []

    def broken_observer(event):
        raise RuntimeError("dashboard down")

    armor.hook("after_start", broken_observer)
    armor.hook("after_start", lambda e: seen.append(e.task_id), name="second")
    armor.create_task("t2")
    armor.create_task("t3")
    armor.start("t2")
    armor.start("t3")
    armor.wait_idle()
    assert armor.task("t2").state is State.RUNNING and armor.task("t3").state is State.RUNNING
    assert seen == ["t2", "t3"]
    failures = [e for e in armor.history(kind="hook.failed")]
    assert {e.task_id for e in failures} == {"t2", "t3"}
    assert all(e.payload["policy"] == "fail_open" for e in failures)


def test_observer_failing_closed_fails_the_task(armor):
    def strict(event):
        raise RuntimeError("audit log unavailable")

    armor.hook("after_start", strict, on_error="fail_closed")
    armor.create_task("t1")
    armor.start("t1")
    deadline = time.time() + 10
    while armor.task("t1").state is not State.FAILED and time.time() < deadline:
        time.sleep(0.01)
    assert armor.task("t1").state is State.FAILED
    assert "audit log unavailable" in armor.task("t1").reason


def test_hooks_run_in_priority_order(armor):
    order = []
    armor.hook("before_start", lambda e: order.append("low"), priority=1, name="low")
    armor.hook("before_start", lambda e: order.append("high"), priority=10, name="high")
    armor.hook("before_start", lambda e: order.append("mid"), priority=5, name="mid")
    armor.create_task("t1")
    armor.start("t1")
    assert order == ["high", "mid", "low"]


def test_transient_effect_errors_are_retried(state_dir):
    effect = RecordingEffect(fail_times=2)
    policy = RetryPolicy(initial_delay=0.001, max_delay=0.01)
    with Armor(state_dir=state_dir, effects=[effect], retry=policy) as armor:
        armor.create_task("t1")
        armor.start("t1")
        assert armor.task("t1").state is State.RUNNING
    assert [c[2] for c in effect.calls] == [1, 2, 3]


def test_exhausted_retries_dead_letter_and_redrive(state_dir):
    effect = RecordingEffect(fail_times=3)
    policy = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.01)
    with Armor(state_dir=state_dir, effects=[effect], retry=policy) as armor:
        armor.create_task("t1")
        with pytest.raises(EffectFailed) as info:
            armor.start("t1")
        assert info.value.attempts == 3
        letters = armor.dead_letters()
        assert len(letters) == 1 and letters[0].event.kind == "task.start.requested"
        assert armor.task("t1").state is State.STARTING  # waits for a re-drive
        outcome = armor.redrive(letters[0].id)
        assert outcome.kind == "task.started"
        assert armor.task("t1").state is State.RUNNING
        assert armor.dead_letters() == []
        assert [e.kind for e in armor.history(kind="effect.*")] == ["effect.dead_lettered"]


def test_permanent_effect_error_fails_the_task(state_dir):
    effect = RecordingEffect(fail_times=1, error=ValueError)
    with Armor(state_dir=state_dir, effects=[effect]) as armor:
        armor.create_task("t1")
        with pytest.raises(EffectFailed):
            armor.start("t1")
        assert armor.task("t1").state is State.FAILED
        assert armor.dead_letters() == []
        # Not retried; the follow-up fail request runs its own effects once.
        assert [c[1] for c in effect.calls] == ["task.start.requested", "task.fail.requested"]


def test_per_task_order_with_concurrency_across_tasks(state_dir):
    effect = RecordingEffect(delay=0.003)
    with Armor(state_dir=state_dir, effects=[effect], max_workers=8) as armor:
        tasks = [f"t{i}" for i in range(16)]
        for t in tasks:
            armor.create_task(t)

        def drive(task):
            armor.start(task)
            for i in range(5):
                armor.emit(task, "note.added", {"i": i})
            armor.complete(task)

        threads = [threading.Thread(target=drive, args=(t,)) for t in tasks]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        armor.wait_idle()
        for t in tasks:
            kinds = [e.kind for e in armor.history(task_id=t) if not e.kind.startswith("recording")]
            assert kinds == ["task.created", "task.start.requested", "task.started"] + ["note.added"] * 5 + [
                "task.complete.requested",
                "task.completed",
            ]
            notes = [e.payload["i"] for e in armor.history(task_id=t, kind="note.added")]
            assert notes == list(range(5))
        seqs = [e.seq for e in armor.history()]
        assert seqs == list(range(1, len(seqs) + 1))


def test_lanes_really_run_concurrently(state_dir):
    gate = threading.Event()

    class Blocking:
        name = "blocking"
        kinds = "task.start.requested"

        def apply(self, ctx):
            if ctx.request.task_id == "a":
                assert gate.wait(10), "task b never ran while a was busy"
            else:
                gate.set()
            return None

    with Armor(state_dir=state_dir, effects=[Blocking()]) as armor:
        armor.create_task("a")
        armor.create_task("b")
        fa = armor.request("a", "task.start.requested")
        fb = armor.request("b", "task.start.requested")
        assert fb.result(10).kind == "task.started"
        assert fa.result(10).kind == "task.started"


def test_crash_leaves_interrupted_task_that_can_resume(state_dir):
    armor = Armor(state_dir=state_dir).open()
    armor.create_task("t1")
    armor.start("t1")
    # Simulate a crash between intent and outcome: the intent is durable, nothing else.
    armor.log.append(TaskEvent.new("task.complete.requested", "t1"), on_append=armor.pipeline._apply)
    crash(armor)

    with Armor(state_dir=state_dir) as again:
        record = again.task("t1")
        assert record.state is State.INTERRUPTED
        interrupted = list(again.history(kind="task.interrupted"))
        assert interrupted and "task.complete.requested" in interrupted[-1].payload["reason"]
        again.resume("t1")
        assert again.task("t1").state is State.RUNNING
        again.complete("t1")
        assert again.task("t1").state is State.COMPLETED


def test_operator_hook_sees_the_same_history_as_classic(state_dir):
    from reactivex import operators as ops

    seen_op, seen_classic = [], []
    with Armor(state_dir=state_dir) as armor:
        armor.use(ops.do_action(lambda e: seen_op.append(e.kind)), stage="after", name="op-watch")
        armor.hook("after_start", lambda e: seen_classic.append(e.kind))
        armor.create_task("t1")
        armor.start("t1")
        armor.wait_idle()
        registered = [e.payload["api"] for e in armor.history(kind="hook.registered")]
    assert registered == ["operator", "classic"]
    assert "task.started" in seen_op and seen_classic == ["task.started"]


def test_state_survives_restart_via_snapshot_and_log(state_dir):
    with Armor(state_dir=state_dir, snapshot_every=3) as armor:
        for i in range(5):
            armor.create_task(f"t{i}")
            armor.start(f"t{i}")
        expected = {t.task_id: t.state for t in armor.tasks()}
    with Armor(state_dir=state_dir) as armor:
        assert {t.task_id: t.state for t in armor.tasks()} == expected
        assert armor.recovery is not None and armor.recovery.chosen


def test_two_sessions_do_not_see_each_other(tmp_path):
    with Armor(state_dir=tmp_path / "a") as a, Armor(state_dir=tmp_path / "b") as b:
        a.create_task("t1")
        assert [t.task_id for t in a.tasks()] == ["t1"]
        assert b.tasks() == []


def test_second_session_on_same_state_dir_is_refused(state_dir):
    from armor_rx import StateDirLocked

    with Armor(state_dir=state_dir):
        with pytest.raises(StateDirLocked):
            Armor(state_dir=state_dir).open()


def test_ingest_block_loses_nothing(armor):
    import reactivex

    armor.create_task("t1")
    source = reactivex.from_iterable(TaskEvent.new("exec.output", "t1", {"n": i}) for i in range(3000))
    armor.ingest(source, max_items=16, policy="block")
    deadline = time.time() + 30
    while armor.log.last_seq < 3001 and time.time() < deadline:
        time.sleep(0.01)
    armor.wait_idle()
    assert [e.payload["n"] for e in armor.history(kind="exec.output")] == list(range(3000))


def test_ingest_drops_are_reported_as_events(armor):
    from reactivex.subject import Subject

    armor.create_task("t1")
    gate = threading.Event()
    original_record = armor.pipeline.record

    def slow_record(event):
        if event.kind == "exec.output":
            gate.wait(10)
        return original_record(event)

    armor.pipeline.record = slow_record  # a slow consumer: the first delivery waits
    subject = Subject()
    sub = armor.ingest(subject, max_items=4, policy="drop_newest", name="flood")
    for i in range(100):
        subject.on_next(TaskEvent.new("exec.output", "t1", {"n": i}))
    gate.set()
    subject.on_completed()
    deadline = time.time() + 10
    while not list(armor.history(kind="backpressure.dropped")) and time.time() < deadline:
        time.sleep(0.01)
    armor.wait_idle()
    sub.dispose()
    drops = list(armor.history(kind="backpressure.dropped"))
    delivered = len(list(armor.history(kind="exec.output")))
    assert drops and drops[-1].payload["name"] == "flood" and drops[-1].payload["policy"] == "drop_newest"
    assert delivered + drops[-1].payload["total_dropped"] == 100
    assert delivered <= 4 + 1


def test_update_task_uses_optimistic_concurrency(armor):
    from armor_rx import ConcurrencyConflict

    record = armor.create_task("t1")
    updated = armor.update_task("t1", record.version, {"owner": "ana"})
    assert updated.metadata["owner"] == "ana" and updated.version == record.version + 1
    before = armor.log.last_seq
    with pytest.raises(ConcurrencyConflict) as info:
        armor.update_task("t1", record.version, {"owner": "bob"})  # stale version
    assert info.value.actual == updated.version
    assert armor.task("t1").metadata["owner"] == "ana"
    assert armor.log.last_seq == before  # the refused update left no trace


def test_concurrent_updates_one_wins_per_version(armor):
    from armor_rx import ConcurrencyConflict

    record = armor.create_task("t1")
    results = []

    def writer(name):
        try:
            armor.update_task("t1", record.version, {"owner": name})
            results.append(("ok", name))
        except ConcurrencyConflict:
            results.append(("conflict", name))

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    winners = [n for status, n in results if status == "ok"]
    assert len(winners) == 1 and len(results) == 8
    assert armor.task("t1").metadata["owner"] == winners[0]


def test_raising_operator_hooks_are_isolated(armor):
    from reactivex import operators as ops

    def explode_on_t1(event):
        if event.task_id == "t1" and event.kind == "task.started":
            raise RuntimeError("after-hook bug")
        return event

    def refuse_by_crashing(event):
        if event.task_id == "t2" and event.kind == "task.start.requested":
            raise RuntimeError("before-hook bug")
        return event

    armor.use(ops.map(explode_on_t1), stage="after", name="buggy-after")
    armor.use(ops.map(refuse_by_crashing), stage="before", name="buggy-before")
    seen = []
    armor.events("task.*").subscribe(seen.append)
    armor.create_task("t1")
    armor.start("t1")
    armor.create_task("t2")
    with pytest.raises(Vetoed, match="failed closed"):
        armor.start("t2")
    armor.create_task("t3")
    armor.start("t3")  # the hooks were subscribed afresh and still work
    armor.wait_idle()
    assert armor.task("t1").state is State.RUNNING
    assert armor.task("t2").state is State.FAILED
    assert armor.task("t3").state is State.RUNNING
    reports = list(armor.history(kind="hook.failed"))
    assert [(e.task_id, e.payload["hook"]) for e in reports] == [("t1", "buggy-after")]
    assert ("t3", "task.started") in [(e.task_id, e.kind) for e in seen]
    assert ("t1", "task.started") in [(e.task_id, e.kind) for e in seen]


def test_a_before_operator_that_drops_a_request_vetoes_it_instead_of_hanging(armor):
    from reactivex import operators as ops

    armor.use(ops.filter(lambda e: e.task_id != "t2"), stage="before", name="drops-t2")
    armor.use(ops.filter(lambda e: not e.kind.startswith("hook.")), stage="before", priority=-1, name="drops-reports")
    armor.create_task("t1")
    armor.start("t1", timeout=10)
    armor.create_task("t2")
    with pytest.raises(Vetoed, match="dropped the task.start.requested request") as info:
        armor.start("t2", timeout=10)
    assert info.value.hook == "drops-t2"
    assert armor.wait_idle(timeout=10)
    # The veto itself went through the later hook that drops hook.* events: reports cannot be swallowed.
    vetoes = list(armor.history(kind="hook.vetoed"))
    assert [(e.payload["vetoed_kind"], e.payload["hook"]) for e in vetoes] == [
        ("task.start.requested", "drops-t2"),
        ("task.fail.requested", "drops-t2"),  # failing a task cannot be vetoed: ignored, as for guards
    ]
    assert armor.task("t2").state is State.FAILED
    assert armor.task("t1").state is State.RUNNING
