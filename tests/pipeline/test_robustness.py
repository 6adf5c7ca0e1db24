"""Regressions for ways a busy session could hang, lose a request or lie about state."""

import subprocess
import sys
import threading
import time

import pytest

from armor_rx import Armor, ArmorError, RetryPolicy, State, TransientError
from armor_rx.model.events import TaskEvent
from armor_rx.model.registry import Registry
from armor_rx.testing import crash


def test_subscriber_that_records_cannot_deadlock_the_publisher(state_dir):
    with Armor(state_dir=state_dir, max_pending=8) as armor:
        armor.create_task("t1")

        def echo(event):
            if event.payload.get("n", 1) % 3 == 0:
                armor.emit("t1", "note.added", {"echo": event.payload["n"]})

        armor.events("exec.*").subscribe(echo)
        threads = [threading.Thread(target=lambda k=k: [armor.emit("t1", "exec.output", {"n": k * 100 + i}) for i in range(100)]) for k in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert not any(th.is_alive() for th in threads), "producers are stuck"
        assert armor.wait_idle(30)
        assert len(list(armor.history(kind="exec.output"))) == 400
        assert len(list(armor.history(kind="note.added"))) == len([n for n in range(400) if n % 3 == 0])


@pytest.mark.parametrize("stage", ["before", "after"])
def test_operator_that_raises_when_applied_does_not_break_the_pipeline(armor, stage):
    def broken(source):
        raise RuntimeError("bad operator")

    armor.use(broken, stage=stage, name="broken")
    armor.create_task("a")
    if stage == "before":
        with pytest.raises(ArmorError):
            armor.start("a")
        assert armor.task("a").state is State.FAILED
    else:
        armor.start("a")
    armor.remove_hook(armor.hooks.list(stage=stage)[0])
    armor.create_task("b")
    armor.start("b", timeout=10)
    assert armor.task("b").state is State.RUNNING
    assert armor.wait_idle(10)


def test_outcome_futures_cannot_be_cancelled_once_logged(state_dir):
    gate = threading.Event()

    class Slow:
        name = "slow"
        kinds = "task.start.requested"

        def apply(self, ctx):
            gate.wait(10)

    with Armor(state_dir=state_dir, effects=[Slow()]) as armor:
        armor.create_task("t1")
        future = armor.request("t1", "task.start.requested")
        assert future.cancel() is False  # the intent is durable: it will run
        gate.set()
        assert future.result(10).kind == "task.started"
        assert armor.task("t1").state is State.RUNNING


def test_progress_events_do_not_count_as_an_answer_after_a_crash(state_dir):
    armor = Armor(state_dir=state_dir).open()
    armor.create_task("t1")
    request = armor.log.append(TaskEvent.new("task.start.requested", "t1"), on_append=armor.pipeline._apply)
    armor.log.append(request.caused("git.branch.requested", {"name": "task/t1"}))  # the effect had begun
    crash(armor)
    with Armor(state_dir=state_dir) as again:
        assert again.task("t1").state is State.INTERRUPTED
        again.resume("t1")
        assert again.task("t1").state is State.RUNNING


def test_a_stale_snapshot_is_replaced_and_never_trusted_later(state_dir):
    with Armor(state_dir=state_dir) as armor:
        for name in ("a", "b", "c"):
            armor.create_task(name)
    events_dir = state_dir / "events"
    segment = sorted(events_dir.glob("*.jsonl"))[-1]
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(b"".join(lines[:-2]))  # the disk lost the last two events: the snapshot is ahead
    with Armor(state_dir=state_dir) as armor:
        assert armor.recovery.chosen == "rebuild from log"
        armor.create_task("d")
        armor.create_task("e")
        armor.create_task("f")
        # crash: no close, no final snapshot
        crash(armor)
    with Armor(state_dir=state_dir) as armor:
        expected = Registry().apply_all(armor.log.read())
        assert sorted(t.task_id for t in armor.tasks()) == sorted(expected.tasks)


def test_snapshot_never_runs_ahead_of_the_durable_log(state_dir):
    from armor_rx.sinks.snapshot import SnapshotStore

    with Armor(state_dir=state_dir) as armor:
        armor.create_task("t1")
        stop = threading.Event()
        writer = threading.Thread(target=lambda: [armor.pipeline.record(TaskEvent.new("note.added", "t1")) for _ in range(2000) if not stop.is_set()])
        writer.start()
        for _ in range(20):
            seq = armor.snapshot()
            assert seq <= armor.log.last_seq
            assert SnapshotStore(state_dir / "snapshot.json").load().seq <= armor.log.last_seq
        stop.set()
        writer.join()


def test_same_letter_cannot_be_redriven_twice(state_dir):
    class Flaky:
        name = "flaky"
        kinds = "task.start.requested"
        calls = 0

        def apply(self, ctx):
            Flaky.calls += 1
            if Flaky.calls <= 2:
                raise TransientError("not yet")

    with Armor(state_dir=state_dir, effects=[Flaky()], retry=RetryPolicy(max_attempts=2, initial_delay=0.001)) as armor:
        armor.create_task("t1")
        with pytest.raises(ArmorError):
            armor.start("t1")
        letter = armor.dead_letters()[0]
        assert armor.redrive(letter.id).kind == "task.started"
        with pytest.raises(ArmorError, match="already re-driven"):
            armor.redrive(letter.id)


def test_wait_idle_covers_requests_started_by_hooks(armor):
    def strict(event):
        raise RuntimeError("audit down")

    armor.hook("after_start", strict, on_error="fail_closed")
    armor.create_task("t1")
    armor.start("t1")
    assert armor.wait_idle(10)
    assert armor.task("t1").state is State.FAILED


def test_done_callback_may_wait_on_the_same_task(armor):
    armor.create_task("t1")
    finished = threading.Event()
    outcome = {}

    def then_complete(_):
        outcome["kind"] = armor.complete("t1", timeout=10).kind
        finished.set()

    armor.request("t1", "task.start.requested").add_done_callback(then_complete)
    assert finished.wait(15), "the callback deadlocked on its own task's lane"
    assert outcome["kind"] == "task.completed"


def test_ingest_reports_a_bad_event_and_goes_on(armor):
    import reactivex

    armor.create_task("t1")
    events = [TaskEvent.new("exec.output", "t1", {"n": 0}), TaskEvent.new("task.completed", "t1"), TaskEvent.new("exec.output", "t1", {"n": 1})]
    armor.ingest(reactivex.from_iterable(events))
    deadline = time.time() + 10
    while len(list(armor.history(kind="exec.output"))) < 2 and time.time() < deadline:
        time.sleep(0.01)
    armor.wait_idle()
    assert [e.payload["n"] for e in armor.history(kind="exec.output")] == [0, 1]
    rejected = list(armor.history(kind="ingest.rejected"))
    assert len(rejected) == 1 and rejected[0].payload["kind"] == "task.completed"


def test_cli_state_dir_that_is_a_file_is_one_line(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    for args in (["events", "--follow"], ["events"], ["tasks"]):
        proc = subprocess.run([sys.executable, "-m", "armor_rx", *args, "--state-dir", str(path)], capture_output=True, text=True, timeout=30)
        assert proc.returncode in (1, 2) and "is not a directory" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 1


def test_progress_events_named_requested_are_not_requests():
    from armor_rx.pipeline.reconcile import unanswered_requests

    start = TaskEvent.new("task.start.requested", "t1")
    progress = start.caused("git.branch.requested", {"name": "task/t1"})
    done = start.caused("task.started")
    assert unanswered_requests([start, progress, done]) == []
    assert unanswered_requests([start, progress]) == [start]


def test_no_thread_outlives_the_session(tmp_path):
    """Every thread a session starts (lanes, publisher, callbacks, log writers) ends with close()."""
    import threading

    from armor_rx import Armor

    before = set(threading.enumerate())
    with Armor(state_dir=tmp_path / ".armor") as armor:
        armor.create_task("t1")
        done = []
        started = armor.request("t1", "task.start.requested")
        started.add_done_callback(done.append)
        started.result()
        armor.complete("t1")
        armor.wait_idle()
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leftover, [t.name for t in leftover]
    assert done


def test_a_refused_request_leaves_no_trace_but_its_error(tmp_path):
    """Refused requests (a task that exists, an illegal transition, an unknown task) log nothing and do not
    move the registry's seq, so snapshots stay in step with the log and close() writes a usable one."""
    from armor_rx import Armor
    from armor_rx.errors import IllegalTransition, TaskExists, TaskNotFound

    state = tmp_path / ".armor"
    with Armor(state_dir=state) as armor:
        armor.create_task("t1")
        before = [e.seq for e in armor.history()]
        for _ in range(3):
            with pytest.raises(TaskExists):
                armor.create_task("t1")
            with pytest.raises(IllegalTransition):
                armor.complete("t1")
            with pytest.raises(TaskNotFound):
                armor.request("nosuch", "checkpoint.restore.requested", {"checkpoint": "cp-1"})
        assert [e.seq for e in armor.history()] == before
        assert armor.snapshot(timeout=2.0) == before[-1]  # would time out if the registry ran ahead of the log
    with Armor(state_dir=state) as reopened:
        assert reopened.recovery is not None and reopened.recovery.chosen == "snapshot + log tail", reopened.recovery
