"""Re-opening costs the tail, not the log (issue 12 item 9).

What must hold while opening reads less: requests in flight before and after
the snapshot still mark their tasks interrupted after a crash; a snapshot
from before the requests were kept still works; damage in a segment that
changed is still found; reads that seek past verified lines return exactly
what a full read returns. Speed itself is measured in benchmarks/bench_reopen.py;
here only *how much is read* is counted (lines checked, events parsed).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from armor_rx import Armor
from armor_rx.cli import main
from armor_rx.model import Registry, State, TaskEvent
from armor_rx.model.requests import OpenRequests
from armor_rx.sinks import _cursor
from armor_rx.sinks._verified import INDEX, RACY_NS
from armor_rx.sinks.eventlog import EventLog
from armor_rx.sinks.snapshot import REBUILD, SNAPSHOT_PLUS_TAIL, SnapshotStore
from armor_rx.testing import crash


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the log lines whose checksum is checked (every reader checks each line it reads)."""
    calls: list[int] = []
    real = _cursor.check_line

    def counting(raw: bytes, *, strict: bool = False) -> int | str:
        calls.append(1)
        return real(raw, strict=strict)

    monkeypatch.setattr(_cursor, "check_line", counting)
    yield calls


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The seqs of the log lines turned into events."""
    seqs: list[int] = []
    real = TaskEvent.from_logged

    def recording(data: dict[str, object]) -> TaskEvent:
        event = real(data)
        seqs.append(event.seq or 0)
        return event

    monkeypatch.setattr(TaskEvent, "from_logged", staticmethod(recording))
    yield seqs


def past_racy() -> None:
    """Wait until a stat taken now can vouch for files written before (see _verified.RACY_NS)."""
    time.sleep(RACY_NS / 1e9 + 0.05)


def in_flight(armor: Armor, kind: str, task_id: str) -> TaskEvent:
    """A request whose intent is logged and whose effect a crash cuts off (nothing else is)."""
    return armor.log.append(TaskEvent.new(kind, task_id), on_append=armor.pipeline._apply)


def test_requests_in_flight_before_and_after_the_snapshot_are_interrupted_reading_only_the_tail(
        tmp_path: Path, parsed: list[int]) -> None:
    state = tmp_path / ".armor"
    armor = Armor(state_dir=state).open()
    for task in ("t1", "t2", "t3"):
        armor.create_task(task)
        armor.start(task)
    for i in range(200):
        armor.emit("t3", "note.added", {"i": i})
    early = in_flight(armor, "task.complete.requested", "t1")
    snapshot_seq = armor.snapshot()
    late = in_flight(armor, "task.complete.requested", "t2")
    crash(armor)
    parsed.clear()

    with Armor(state_dir=state) as again:
        assert again.recovery is not None and again.recovery.chosen == SNAPSHOT_PLUS_TAIL, again.recovery
        assert again.task("t1").state is State.INTERRUPTED and again.task("t2").state is State.INTERRUPTED
        assert again.task("t3").state is State.RUNNING
        opened = list(parsed)
        interrupted = {e.payload["request_id"]: e.task_id for e in again.history(kind="task.interrupted")}
    assert interrupted == {early.id: "t1", late.id: "t2"}
    # Opening parsed nothing before the snapshot: the request in flight came from it, not from the log.
    assert opened and min(opened) > snapshot_seq, opened

    with Armor(state_dir=state) as third:  # settled by their interruption: not interrupted twice
        assert len(list(third.history(kind="task.interrupted"))) == 2
        third.resume("t1")
        assert third.task("t1").state is State.RUNNING


def test_a_snapshot_from_before_requests_were_kept_is_rebuilt_once(tmp_path: Path) -> None:
    state = tmp_path / ".armor"
    armor = Armor(state_dir=state).open()
    armor.create_task("t1")
    armor.start("t1")
    in_flight(armor, "task.complete.requested", "t1")
    with armor.pipeline._registry_lock:
        tasks = armor.pipeline.registry.to_list()
        seq = armor.pipeline.registry.seq
    crash(armor)
    # What armor_rx wrote before the requests in flight were kept (schema 1).
    body = orjson.dumps({"schema": 1, "seq": seq, "tasks": tasks}, option=orjson.OPT_SORT_KEYS)
    (state / "snapshot.json").write_bytes(body[:-1] + b',"sha256":"%s"}' % hashlib.sha256(body).hexdigest().encode())

    # A reader that lists tasks uses it as it is.
    assert main(["tasks", "--json", "--state-dir", str(state)]) == 0
    with Armor(state_dir=state) as again:
        assert again.recovery is not None and again.recovery.chosen == REBUILD
        assert "schema 1" in again.recovery.reason
        assert again.task("t1").state is State.INTERRUPTED
    assert orjson.loads((state / "snapshot.json").read_bytes())["schema"] == 2
    with Armor(state_dir=state) as third:
        assert third.recovery is not None and third.recovery.chosen == SNAPSHOT_PLUS_TAIL


def _small_segments(state: Path, events: int = 300) -> list[Path]:
    with Armor(state_dir=state, segment_bytes=8 * 1024) as armor:
        armor.create_task("t1")
        for i in range(events):
            armor.emit("t1", "note.added", {"i": i, "text": "x" * 40})
    segments = sorted((state / "events").glob("events-*.jsonl"))
    assert len(segments) >= 3
    return segments


def _flip(segment: Path, keep_times: bool) -> None:
    st = segment.stat()
    raw = bytearray(segment.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    segment.write_bytes(bytes(raw))
    if keep_times:  # mtime put back: the ctime still moves, which no one can set
        os.utime(segment, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_unchanged_log_is_not_read_when_it_opens(tmp_path: Path, checked: list[int]) -> None:
    state = tmp_path / ".armor"
    _small_segments(state)
    past_racy()
    with Armor(state_dir=state, segment_bytes=8 * 1024):
        pass  # checks the CRCs once and records the files as they are now
    checked.clear()
    with Armor(state_dir=state, segment_bytes=8 * 1024) as armor:
        assert armor.log.last_seq > 300
    assert len(checked) == 0, f"{len(checked)} lines checked on opening an unchanged log"
    assert main(["tasks", "--state-dir", str(state)]) == 0
    assert len(checked) == 0, "'armor-rx tasks' checked lines of an unchanged log"


@pytest.mark.parametrize("keep_times", [False, True])
@pytest.mark.parametrize("which", ["first", "middle"])
def test_damage_in_an_old_sealed_segment_is_found_on_the_next_open(tmp_path: Path, keep_times: bool, which: str) -> None:
    state = tmp_path / ".armor"
    segments = _small_segments(state)
    past_racy()
    with Armor(state_dir=state, segment_bytes=8 * 1024):
        pass  # now the index vouches for every segment by its stat alone
    victim = segments[0] if which == "first" else segments[len(segments) // 2]
    _flip(victim, keep_times)

    with Armor(state_dir=state, segment_bytes=8 * 1024) as armor:
        reports = list(armor.history(kind="log.corruption.quarantined"))
        assert [r.payload["segment"] for r in reports] == [victim.name]
    # Known damage stays known to every reader, though the segment is vouched for again now.
    with Armor(state_dir=state, segment_bytes=8 * 1024) as armor:
        assert [d.segment.name for d in armor.log.damage] == [victim.name]
        assert len(list(armor.history(kind="log.corruption.quarantined"))) == 1
    assert main(["tasks", "--state-dir", str(state)]) == 3  # still damage nobody acknowledged


def test_after_a_crash_only_what_was_appended_since_the_last_record_is_read(tmp_path: Path, checked: list[int]) -> None:
    state = tmp_path / ".armor"
    with Armor(state_dir=state) as armor:
        armor.create_task("t1")
        for i in range(300):
            armor.emit("t1", "note.added", {"i": i})
    armor = Armor(state_dir=state).open()  # records the log as verified when it opens
    for i in range(20):
        armor.emit("t1", "note.added", {"i": i})
    last = armor.log.last_seq
    crash(armor)
    checked.clear()
    with Armor(state_dir=state) as again:
        opening = len(checked)
        assert again.log.last_seq >= last
        assert [e.payload["i"] for e in again.history(kind="note.added")][-20:] == list(range(20))
    # The 20 appended lines (checked, then read as the tail after the snapshot), not the 300 before them.
    assert 20 <= opening < 60, opening


def test_damage_before_a_crash_tail_is_still_found(tmp_path: Path) -> None:
    state = tmp_path / ".armor"
    with Armor(state_dir=state) as armor:
        armor.create_task("t1")
        for i in range(50):
            armor.emit("t1", "note.added", {"i": i})
    armor = Armor(state_dir=state).open()
    armor.emit("t1", "note.added", {"i": 50})
    crash(armor)
    (segment,) = sorted((state / "events").glob("events-*.jsonl"))
    _flip(segment, keep_times=True)  # in the bytes the index vouched for, under a grown file
    with Armor(state_dir=state) as again:
        assert len(list(again.history(kind="log.corruption.quarantined"))) == 1


def test_a_damaged_or_foreign_index_is_ignored_and_everything_checked(tmp_path: Path, checked: list[int]) -> None:
    state = tmp_path / ".armor"
    _small_segments(state, events=100)
    index = state / "events" / INDEX
    raw = index.read_bytes()
    index.write_bytes(raw.replace(b'"size":', b'"size":1', 1))  # the checksum no longer matches
    checked.clear()
    with Armor(state_dir=state, segment_bytes=8 * 1024) as armor:
        assert armor.log.last_seq > 100
        assert not armor.log.unexpected  # the index is armor_rx's own file, not a stray one
    assert len(checked) > 100


def test_reads_that_seek_past_verified_lines_return_what_a_full_read_returns(tmp_path: Path, checked: list[int]) -> None:
    directory = tmp_path / "events"
    with EventLog(directory, segment_bytes=300 * 1024) as log:
        log.append_many([TaskEvent.new("note.added", f"t{i % 3}", {"i": i, "pad": "p" * (i % 700)}) for i in range(2000)])
    past_racy()
    EventLog(directory, segment_bytes=300 * 1024).start().stop()
    for read_only in (False, True):
        log = EventLog(directory, read_only=read_only).start()
        try:
            last = log.last_seq
            for start in [1, 2, 3, 17, 255, 256, 999, 1000, 1001, 1500, 1999, 2000, 2001, 5000]:
                assert [e.seq for e in log.read(start)] == list(range(start, last + 1)), start
                assert [e.payload["i"] for e in log.read(start, task_id="t1")] == [
                    s - 1 for s in range(start, last + 1) if (s - 1) % 3 == 1]
            checked.clear()
            assert [e.seq for e in log.read(1990)] == list(range(1990, 2001))
            assert len(checked) < 200, f"{len(checked)} lines checked to read the last 11"
        finally:
            log.stop()


def test_open_requests_fold() -> None:
    start = TaskEvent.new("task.start.requested", "t1")
    progress = start.caused("git.branch.requested", {"name": "task/t1"})
    requests = OpenRequests().apply_all([start, progress])
    assert requests.pending() == [start]  # progress is not a request of its own
    dead = start.caused("effect.dead_lettered")
    requests.apply(dead)
    assert requests.pending() == [] and list(requests.dead) == [start.id]
    requests.apply(start.caused("deadletter.redriven"))
    assert requests.pending() == [start]
    requests.apply(start.caused("task.started"))
    assert requests.pending() == [] and not requests.dead
    cut = TaskEvent.new("task.complete.requested", "t1")
    requests.apply(cut)
    requests.apply(cut.caused("task.interrupted"))  # reconciliation settled it
    assert requests.pending() == []
    vetoed = TaskEvent.new("task.fail.requested", "t1", {"reason": "x"})
    follow = vetoed.caused("task.fail.requested", {"reason": "after the veto"})
    requests.apply_all([vetoed, vetoed.caused("effect.failed")])
    requests.apply(follow)  # a request caused by a settled one is a request of its own
    assert requests.pending() == [follow]


def test_the_registry_carries_requests_through_copies_and_snapshots(tmp_path: Path) -> None:
    registry = Registry()
    created = TaskEvent.new("task.created", "t1").with_seq(1)
    start = TaskEvent.new("task.start.requested", "t1").with_seq(2)
    registry.apply_all([created, start])
    copy = registry.copy()
    registry.apply(start.caused("task.started").with_seq(3))
    assert registry.requests.pending() == [] and copy.requests.pending() == [start]
    store = SnapshotStore(tmp_path / "snapshot.json")
    store.save(copy)
    loaded = store.load()
    assert [r.id for r in loaded.requests.pending()] == [start.id] and loaded.requests.pending()[0].seq == 2
