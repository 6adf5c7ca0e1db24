"""The durable event log: format, seqs, policies, rotation, filters, follow, concurrency."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import zlib
from concurrent.futures import Future, as_completed, wait
from pathlib import Path

import orjson
import pytest

from armor_rx.errors import ConfigError, InvalidPayload, LogClosed, LogError
from armor_rx.model import TaskEvent
from armor_rx.sinks import EventLog, _segwriter

POLICIES = ("always", "batch", "none")


def ev(kind: str = "exec.output", task: str | None = "t1", **payload: object) -> TaskEvent:
    return TaskEvent.new(kind, task, payload)


def lines_of(directory: Path) -> list[bytes]:
    return [
        line
        for path in sorted(directory.glob("events-*.jsonl"))
        for line in path.read_bytes().splitlines(keepends=True)
    ]


@pytest.mark.parametrize("policy", POLICIES)
def test_round_trip_assigns_contiguous_seqs(tmp_path: Path, policy: str) -> None:
    events = [
        ev("task.created", "a", n=1),
        ev(text='héllo\n"quoted"', nested={"x": [1, 2.5, None]}),
        ev("hook.failed", None),
    ]
    with EventLog(tmp_path, fsync=policy) as log:  # type: ignore[arg-type]
        assert log.last_seq == 0
        numbered = [log.append(e) for e in events]
        assert [e.seq for e in numbered] == [1, 2, 3]
        assert log.last_seq == 3
        assert list(log.read()) == numbered
        assert log.stats.events == 3
        if policy == "none":
            assert log.stats.fsyncs == 0
        else:
            assert log.stats.fsyncs >= 3 if policy == "always" else log.stats.fsyncs >= 1
    # A fresh reader of the directory sees exactly what was acknowledged.
    reopened = EventLog(tmp_path, read_only=True)
    assert list(reopened.read()) == numbered
    assert [(e.id, e.payload) for e in reopened.read()] == [(e.id, e.payload) for e in events]


def test_every_line_is_json_with_a_trailing_fixed_width_crc(tmp_path: Path) -> None:
    with EventLog(tmp_path, segment_bytes=600) as log:
        log.append_many([ev(i=i, s="x" * i) for i in range(20)])
    lines = lines_of(tmp_path)
    assert len(lines) == 20
    for seq, line in enumerate(lines, start=1):
        record = orjson.loads(line)
        assert json.loads(line) == record
        assert list(record)[-1] == "crc" and record["seq"] == seq
        body = line[: -len(b',"crc":"00000000"}\n')] + b"}"
        assert record["crc"] == f"{zlib.crc32(body):08x}"
        assert orjson.loads(body) == {k: v for k, v in record.items() if k != "crc"}
    if shutil.which("jq"):
        out = subprocess.run(["jq", "-r", ".seq"], input=b"".join(lines), capture_output=True, check=True)
        assert out.stdout.split() == [str(i).encode() for i in range(1, 21)]


def test_rotation_names_segments_by_first_seq_and_reads_across_them(tmp_path: Path) -> None:
    with EventLog(tmp_path, segment_bytes=1000) as log:
        numbered = [log.append(ev(i=i)) for i in range(15)]
        numbered += log.append_many([ev(i=i) for i in range(15, 40)])
        numbered += [f.result() for f in [log.append_async(ev(i=i)) for i in range(40, 60)]]
        segments = log.segments()
    assert len(segments) > 3
    for path in segments:
        first_seq = int(path.name[len("events-") : -len(".jsonl")])
        assert path.name == f"events-{first_seq:012d}.jsonl"
        assert orjson.loads(path.read_bytes().splitlines()[0])["seq"] == first_seq
        assert path.stat().st_size < 1000 + 300  # rotated once past the limit
    reader = EventLog(tmp_path, read_only=True)
    assert [e.seq for e in reader.read()] == list(range(1, 61))
    assert list(reader.read(17, 44)) == numbered[16:44]
    assert reader.last_seq == 60


def test_read_skips_segments_below_start_seq(tmp_path: Path) -> None:
    with EventLog(tmp_path, segment_bytes=500) as log:
        log.append_many([ev(i=i) for i in range(30)])
    first = min(tmp_path.glob("events-*.jsonl"))
    # Damage a middle line of the first segment: a read that starts later
    # never opens it, a read from the start reports it.
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    first.write_bytes(bytes(raw))
    reader = EventLog(tmp_path, read_only=True)
    assert [e.seq for e in reader.read(25)] == list(range(25, 31))
    assert reader.damage == []
    seqs = [e.seq for e in reader.read()]
    (damage,) = reader.damage
    assert damage.segment == first and damage.missing is not None
    lost = list(range(damage.missing[0], damage.missing[1] + 1))
    # (a flipped newline joins two lines into one damaged one: then two events are lost)
    assert 1 <= len(lost) <= 2 and seqs == [s for s in range(1, 31) if s not in lost]


def test_filters_by_seq_range_task_and_kind_pattern(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append_many(
            [
                ev("task.created", "a"),
                ev("task.created", "b"),
                ev("task.start.requested", "a"),
                ev("exec.output", "a", line="a-task"),  # the other task's id appears in b's payload below
                ev("exec.output", "b", note='"task_id":"a"'),
                ev("hook.failed", None),
                ev("task.failed", "b"),
            ]
        )
        kinds = lambda **kw: [(e.seq, e.kind) for e in log.read(**kw)]
        assert kinds(task_id="a") == [(1, "task.created"), (3, "task.start.requested"), (4, "exec.output")]
        assert kinds(kind="task.*") == [
            (1, "task.created"),
            (2, "task.created"),
            (3, "task.start.requested"),
            (7, "task.failed"),
        ]
        assert kinds(kind="*.failed") == [(6, "hook.failed"), (7, "task.failed")]
        assert kinds(kind="exec.*,hook.*", start_seq=5) == [(5, "exec.output"), (6, "hook.failed")]
        assert kinds(start_seq=2, end_seq=4, task_id="b") == [(2, "task.created")]
        assert kinds(start_seq=8) == []
        assert kinds(start_seq=5, end_seq=4) == []
        with pytest.raises(ConfigError):
            log.read(kind="Bad Pattern!")


def test_follow_yields_history_then_new_events_until_stopped(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append_many([ev(i=i) for i in range(3)])
        stop = threading.Event()
        seen: list[int] = []
        reached = threading.Event()

        def consume() -> None:
            for event in log.follow(2, kind="exec.*", poll_interval=0.02, stop=stop):
                seen.append(event.seq or 0)
                if len(seen) == 7:
                    reached.set()

        follower = threading.Thread(target=consume)
        follower.start()
        for i in range(5):
            log.append(ev(i=i))
            log.append(ev("task.created", f"x{i}"))  # filtered out
        assert reached.wait(10)
        stop.set()
        follower.join(10)
        assert not follower.is_alive()
        assert seen == [2, 3, 4, 6, 8, 10, 12]


def test_read_only_follower_sees_another_writers_events(tmp_path: Path) -> None:
    with EventLog(tmp_path, segment_bytes=400) as writer:
        reader = EventLog(tmp_path, read_only=True).start()
        stop = threading.Event()
        seen: list[int] = []

        def consume() -> None:
            for event in reader.follow(poll_interval=0.01, stop=stop):
                seen.append(event.seq or 0)
                if len(seen) == 40:
                    stop.set()

        follower = threading.Thread(target=consume)
        follower.start()
        for i in range(40):
            writer.append(ev(i=i))
        follower.join(10)
        stop.set()
        assert seen == list(range(1, 41))
        assert reader.last_seq == 40
        with pytest.raises(LogError, match="read-only"):
            reader.append(ev())


def test_reader_treats_a_partial_last_line_as_not_yet_written(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append_many([ev(i=i) for i in range(3)])
    segment = max(tmp_path.glob("events-*.jsonl"))
    line = lines_of(tmp_path)[-1].replace(b'"seq":3', b'"seq":4')
    line = line[: line.index(b',"crc"')] + b"}"
    full = line[:-1] + b',"crc":"%08x"}\n' % zlib.crc32(line)
    with segment.open("ab") as f:
        f.write(full[:25])  # what a reader may see while the writer is mid-write
    reader = EventLog(tmp_path, read_only=True)
    assert [e.seq for e in reader.read()] == [1, 2, 3]
    with segment.open("ab") as f:
        f.write(full[25:])
    assert [e.seq for e in reader.read()] == [1, 2, 3, 4]


def test_append_outside_start_stop_raises_log_closed(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    with pytest.raises(LogClosed, match="not started"):
        log.append(ev())
    log.start()
    log.append(ev())
    log.stop()
    log.stop()  # idempotent
    for call in (lambda: log.append(ev()), lambda: log.append_async(ev()), lambda: log.append_many([ev()])):
        with pytest.raises(LogClosed):
            call()
    with pytest.raises(LogError, match="already started"):
        log.start()
    assert [e.seq for e in log.read()] == [1]


@pytest.mark.parametrize("policy", POLICIES)
def test_a_refusing_on_append_leaves_no_trace(tmp_path: Path, policy: str) -> None:
    seen: list[int | None] = []

    def refuse(numbered: TaskEvent) -> None:
        seen.append(numbered.seq)
        raise ValueError("not now")

    with EventLog(tmp_path, fsync=policy) as log:  # type: ignore[arg-type]
        log.append(ev())
        with pytest.raises(ValueError, match="not now"):
            log.append(ev(), on_append=refuse)
        with pytest.raises(ValueError, match="not now"):
            log.append_async(ev(), on_append=refuse)
        accepted = log.append(ev(), on_append=lambda numbered: seen.append(numbered.seq))
        assert seen == [2, 2, 2] and accepted.seq == 2
    assert [e.seq for e in EventLog(tmp_path, read_only=True).read()] == [1, 2]
    assert len(lines_of(tmp_path)) == 2


def test_on_append_sees_events_in_seq_order_under_concurrency(tmp_path: Path) -> None:
    order: list[int] = []
    with EventLog(tmp_path) as log:
        threads = [
            threading.Thread(
                target=lambda: [log.append(ev(), on_append=lambda e: order.append(e.seq or 0)) for _ in range(50)]
            )
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert order == list(range(1, 201))


def test_eight_concurrent_appenders_get_unique_contiguous_seqs(tmp_path: Path) -> None:
    results: list[list[TaskEvent]] = [[] for _ in range(8)]

    def produce(slot: int) -> None:
        for i in range(60):
            if i % 3 == 0:
                results[slot].append(log.append_async(ev(task=f"w{slot}", i=i)).result())
            elif i % 3 == 1:
                results[slot].append(log.append(ev(task=f"w{slot}", i=i)))
            else:
                results[slot].extend(log.append_many([ev(task=f"w{slot}", i=i)]))

    with EventLog(tmp_path, segment_bytes=4096) as log:
        threads = [threading.Thread(target=produce, args=(slot,)) for slot in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    seqs = sorted(e.seq or 0 for result in results for e in result)
    assert seqs == list(range(1, 481))
    on_disk = list(EventLog(tmp_path, read_only=True).read())
    assert [e.seq for e in on_disk] == seqs
    for slot, result in enumerate(results):
        # Each producer's own events keep its order in the log.
        assert [e.payload["i"] for e in on_disk if e.task_id == f"w{slot}"] == list(range(60))
        assert [e.seq for e in result] == sorted(e.seq or 0 for e in result)


def test_async_futures_behave_like_futures(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        futures = [log.append_async(ev(i=i)) for i in range(100)]
        done, not_done = wait(futures, timeout=10)
        assert len(done) == 100 and not not_done
        assert sorted(f.result().seq or 0 for f in as_completed(futures)) == list(range(1, 101))
        assert not futures[0].cancel()  # an accepted append cannot be cancelled
        called: list[int] = []
        futures[0].add_done_callback(lambda f: called.append(f.result().seq or 0))
        late = log.append_async(ev())
        late.add_done_callback(lambda f: called.append(f.result().seq or 0))
        assert late.result(timeout=10).seq == 101
        assert called == [1, 101]

        # append() from a future callback (the commit thread) would deadlock.
        errors: list[BaseException] = []

        def reentrant(_: object) -> None:
            try:
                log.append(ev())
            except LogError as exc:
                errors.append(exc)

        log.append_async(ev()).add_done_callback(reentrant)
        log.append(ev())
    assert errors and "commit thread" in str(errors[0])


def test_futures_raced_by_waiters_and_callbacks_all_resolve_once(tmp_path: Path) -> None:
    # Waiters, wait() and callbacks race the commit thread; none may be lost.
    called: list[int] = []
    lock = threading.Lock()

    def record(future: Future[TaskEvent]) -> None:
        with lock:
            called.append(future.result().seq or 0)

    def produce(slot: int) -> None:
        for i in range(150):
            future = log.append_async(ev(task=f"w{slot}", i=i))
            if i % 3 == 0:
                future.add_done_callback(record)
            elif i % 3 == 1:
                assert future.result(timeout=10).payload["i"] == i
            else:
                assert wait([future], timeout=10).done == {future}

    with EventLog(tmp_path, batch_delay=0.0005, batch_max=16) as log:
        threads = [threading.Thread(target=produce, args=(slot,)) for slot in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
    assert len(called) == 4 * 50 and len(set(called)) == 200
    assert EventLog(tmp_path).verify() == 600


@pytest.mark.parametrize("policy", POLICIES)
def test_a_failed_write_fails_the_append_and_the_log(
    tmp_path: Path, policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog(tmp_path, fsync=policy).start()  # type: ignore[arg-type]
    log.append(ev())

    def full_disk(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_segwriter.os, "write", full_disk)
    if policy == "batch":
        future = log.append_async(ev())
        with pytest.raises(LogError, match="No space left"):
            future.result(timeout=10)
    else:
        with pytest.raises(LogError, match="No space left"):
            log.append(ev())
    monkeypatch.undo()
    with pytest.raises(LogError, match="No space left"):
        log.append(ev())
    assert not log.is_open
    log.stop()
    with EventLog(tmp_path) as reopened:
        assert [e.seq for e in reopened.read()] == [1]
        assert reopened.append(ev()).seq == 2


def test_an_empty_trailing_segment_is_fine(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append_many([ev(), ev()])
    (tmp_path / "events-000000000003.jsonl").touch()
    with EventLog(tmp_path) as log:
        assert log.repairs == [] and log.last_seq == 2
        assert log.append(ev()).seq == 3
    assert (tmp_path / "events-000000000003.jsonl").stat().st_size > 0
    assert EventLog(tmp_path).verify() == 3


def test_an_unserialisable_event_is_refused_without_using_a_seq(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        with pytest.raises(InvalidPayload, match="cannot be logged"):
            log.append(ev(huge=2**70))
        assert log.append(ev()).seq == 1


def test_stop_before_start_is_harmless(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.stop()
    with log:
        assert log.append(ev()).seq == 1


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fsync policy"):
        EventLog(tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        EventLog(tmp_path, batch_max=0)


def test_batch_policy_groups_concurrent_appends(tmp_path: Path) -> None:
    with EventLog(tmp_path, batch_delay=0.005) as log:
        futures = [log.append_async(ev(i=i)) for i in range(500)]
        for future in futures:
            future.result(timeout=10)
        assert log.stats.events == 500
        assert log.stats.flushes < 500  # at least some appends shared a write and an fsync
        assert log.stats.fsyncs == log.stats.flushes
    # stop() ends the commit thread: no hidden thread outlives the log.
    assert not [t for t in threading.enumerate() if t.name == f"armor-eventlog-commit:{tmp_path}"]


def test_pages_continue_where_the_last_stopped_across_segments(tmp_path):
    from armor_rx.sinks.eventlog import EventLog

    with EventLog(tmp_path / "events", fsync="none", segment_bytes=4096) as log:
        for n in range(300):
            log.append(TaskEvent.new("note.added", "a" if n % 3 else "b", {"n": n}))
        page = log.pages(10, task_id="a")
        got = [e.seq for e in page(100)] + [e.seq for e in page(100)] + [e.seq for e in page(250)] + [e.seq for e in page(300)]
        assert got == [e.seq for e in log.read(10, 300, task_id="a")]
        assert len(list((tmp_path / "events").iterdir())) > 2  # the pages crossed segments
