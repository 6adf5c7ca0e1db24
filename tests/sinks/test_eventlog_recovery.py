"""Crash recovery: whatever a crash or a bad disk leaves behind, reopening gives back
exactly the acknowledged events (or a clear LogCorrupt), never a silent bad tail."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from armor_rx.errors import LogCorrupt, LogError
from armor_rx.model import TaskEvent
from armor_rx.sinks import EventLog
from armor_rx.sinks._logfile import encode_line

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KINDS = [
    "task.created",
    "task.start.requested",
    "exec.output",
    "checkpoint.created",
    "hook.failed",
    "conflict.detected",
]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
events_st = st.builds(
    TaskEvent.new,
    st.sampled_from(KINDS),
    st.sampled_from([None, "a", "fix-login", "task-42"]),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)


def position(data: st.DataObject, size: int, label: str) -> int:
    """A position in [0, size): drawn independently of ``size``, which varies with
    the ids and timestamps of freshly made events (hypothesis needs draws to replay)."""
    return data.draw(st.integers(0, 2**20), label=label) % size


@contextmanager
def fresh_dir() -> Iterator[Path]:
    # Hypothesis runs many examples per test; each needs its own directory.
    with tempfile.TemporaryDirectory(prefix="eventlog-") as tmp:
        yield Path(tmp)


def write_acked(directory: Path, events: list[TaskEvent], segment_bytes: int) -> list[TaskEvent]:
    """Append events the ways callers do; return them as acknowledged (numbered)."""
    acked: list[TaskEvent] = []
    with EventLog(directory, segment_bytes=segment_bytes) as log:
        third = len(events) // 3
        acked += [log.append(e) for e in events[:third]]
        acked += log.append_many(events[third : 2 * third])
        acked += [f.result() for f in [log.append_async(e) for e in events[2 * third :]]]
    return acked


def last_segment(directory: Path) -> Path:
    return max(directory.glob("events-*.jsonl"))


def snapshot_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def next_line(acked: list[TaskEvent]) -> bytes:
    following = TaskEvent.new("exec.output", "a", {"n": 1}).with_seq(len(acked) + 1)
    return encode_line(following.to_json())


@st.composite
def damaged_tails(draw: st.DrawFn, line: bytes) -> tuple[bytes, str]:
    """Bytes a crash or a bad disk may leave after the acknowledged events."""
    how = draw(st.sampled_from(["torn", "garbage", "bad-crc", "wrong-seq", "torn-then-valid"]))
    if how == "torn":
        return line[: 1 + draw(st.integers(0, 2**20)) % (len(line) - 1)], how
    if how == "garbage":
        return draw(st.binary(min_size=1, max_size=200)), how
    if how == "bad-crc":
        crc_at = len(line) - 11
        digit = line[crc_at : crc_at + 1]
        return line[:crc_at] + (b"0" if digit != b"0" else b"1") + line[crc_at + 1 :], how
    if how == "wrong-seq":
        seq = orjson.loads(line)["seq"]
        body = orjson.loads(line)
        del body["crc"]
        body["seq"] = seq + draw(st.sampled_from([-1, 1, 5]))
        return encode_line(orjson.dumps(body)), how
    # A torn line the writer later completed with a newline (never a whole line).
    return line[: 1 + draw(st.integers(0, 2**20)) % (len(line) - 2)] + b"\n" + line, how


def segment_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("events-*.jsonl"))}


def lines_of(directory: Path) -> dict[int, tuple[str, int, int]]:
    """Where each event's line is: seq -> (segment, offset, length)."""
    where = {}
    for name, raw in segment_bytes(directory).items():
        offset = 0
        for line in raw.splitlines(keepends=True):
            where[orjson.loads(line)["seq"]] = (name, offset, len(line))
            offset += len(line)
    return where


def check_quarantine(log: EventLog, before: dict[str, bytes]) -> None:
    """Every damaged stretch and every cut torn line has a byte-exact copy in quarantine."""
    for damage in log.damage:
        assert damage.quarantined is not None and damage.quarantined.parent == log.quarantine_dir
        original = before[damage.segment.name][damage.offset : damage.offset + damage.length]
        assert damage.quarantined.read_bytes() == original
    for repair in log.repairs:
        assert repair.quarantined is not None
        assert repair.quarantined.read_bytes() == before[repair.segment.name][repair.offset :]


@SETTINGS
@given(events=st.lists(events_st, min_size=0, max_size=25), data=st.data(), small_segments=st.booleans())
def test_only_a_torn_final_line_is_cut_and_a_copy_is_kept(
    events: list[TaskEvent], data: st.DataObject, small_segments: bool
) -> None:
    """Invariant: what follows the acknowledged events is cut only when it is one torn final line (no newline),
    and then its copy is in quarantine; any other bad tail stays in place, is skipped, reported and copied."""
    with fresh_dir() as directory:
        acked = write_acked(directory, events, 700 if small_segments else 1 << 20)
        segment = last_segment(directory)
        good_size = segment.stat().st_size
        tail, how = data.draw(damaged_tails(next_line(acked)), label="tail")
        with segment.open("ab") as f:
            f.write(tail)
        before = segment_bytes(directory)

        with capture_logs() as logs, EventLog(directory) as log:
            read = list(log.read())
            assert read[: len(acked)] == acked
            check_quarantine(log, before)
            kept = tail.rfind(b"\n") + 1  # whole lines stay; only a torn last piece is cut
            if kept < len(tail):
                cut = (segment, good_size + kept, len(tail) - kept)
                assert [(r.segment, r.offset, r.dropped_bytes) for r in log.repairs] == [cut], how
            else:
                assert log.repairs == [], how
            assert segment.read_bytes() == before[segment.name][: good_size + kept], how
            if kept:
                assert log.damage and log.damage[0].offset == good_size, how
            else:
                assert log.damage == [] and read == acked, how
            if how == "torn-then-valid":  # the completed line after the torn piece is intact: it is kept
                assert len(read) == len(acked) + 1
            last = log.last_seq
            assert last >= read[-1].seq if read else last >= 0
            new = log.append(TaskEvent.new("exec.output", "a"))
            assert new.seq == last + 1
        assert all(entry["log_level"] == "warning" for entry in logs) and logs
        reader = EventLog(directory)
        assert reader.verify() == len(read) + 1 and [e.seq for e in reader.read()] == [e.seq for e in read] + [new.seq]


def flip_cases(directory: Path, step: int) -> Iterator[tuple[str, int]]:
    for name, raw in segment_bytes(directory).items():
        for offset in range(step // 2 % max(1, len(raw)), len(raw), step):
            yield name, offset


def test_a_flipped_byte_anywhere_loses_only_its_own_line(tmp_path: Path) -> None:
    """Invariant (one flipped byte at offsets spread over every segment, sealed and last): every event whose line
    does not hold the byte is still read, in order, after a writable open; no byte is cut from any segment (a last
    line whose newline was hit is whole, not torn: it is ended); every skipped stretch is reported with a
    byte-exact copy in quarantine; the next append gets seq 41 (no seq is used twice) and reads back."""
    original = tmp_path / "original"
    with EventLog(original, segment_bytes=900) as log:
        acked = log.append_many(
            [TaskEvent.new("exec.output", "t1", {"i": i, "text": "x" * (i % 7)}) for i in range(40)]
        )
    where = lines_of(original)
    assert len(segment_bytes(original)) >= 5
    cases = 0
    for name, offset in flip_cases(original, 23):
        case = tmp_path / f"case-{cases}"
        shutil.copytree(original, case)
        raw = bytearray((case / name).read_bytes())
        newline = raw[offset] == 0x0A
        raw[offset] ^= 0x20
        (case / name).write_bytes(bytes(raw))
        before = segment_bytes(case)
        # The line that holds the byte, and (a newline joins two lines) the next one.
        hit = [seq for seq, (seg, start, length) in where.items() if seg == name and start <= offset < start + length]
        may_lose = set(hit) | ({hit[0] + 1} if newline else set())
        last_name = max(before)
        final_newline = newline and name == last_name and offset == len(raw) - 1

        with EventLog(case) as log:
            seqs = [e.seq for e in log.read()]
            assert set(range(1, 41)) - set(seqs) <= may_lose, (name, offset)
            assert seqs == sorted(seqs) and [e for e in acked if e.seq in seqs] == list(log.read())
            check_quarantine(log, before)
            # A last line whose newline is damaged is whole, not torn: it is ended, never cut.
            ended = {last_name: before[last_name] + b"\n"} if final_newline else {}
            assert log.repairs == [] and segment_bytes(case) == {**before, **ended}, (name, offset)
            assert log.damage and all(d.quarantined is not None for d in log.damage), (name, offset)
            # No seq is used twice: the damaged line's seq is never handed out again.
            new = log.append(TaskEvent.new("exec.output", "t1"))
            assert new.seq == 41
        assert [e.seq for e in EventLog(case, read_only=True).read()][-1] == new.seq
        shutil.rmtree(case)
        cases += 1
    assert cases >= 200, cases  # the number of cases tried


@SETTINGS
@given(events=st.lists(events_st, min_size=0, max_size=15), data=st.data())
def test_read_only_open_on_a_damaged_tail_changes_nothing(events: list[TaskEvent], data: st.DataObject) -> None:
    with fresh_dir() as directory:
        acked = write_acked(directory, events, 1 << 20)
        tail, _ = data.draw(damaged_tails(next_line(acked)), label="tail")
        with last_segment(directory).open("ab") as f:
            f.write(tail)
        before = snapshot_files(directory)

        with EventLog(directory, read_only=True) as reader:
            assert list(reader.read())[: len(acked)] == acked
            assert reader.last_seq >= len(acked)
            assert reader.repairs == []
            assert all(d.quarantined is None for d in reader.damage)
            with pytest.raises(LogError):
                reader.append(TaskEvent.new("exec.output", "a"))
        assert snapshot_files(directory) == before


def test_a_seq_gap_between_segments_is_log_corrupt(tmp_path: Path) -> None:
    with EventLog(tmp_path, segment_bytes=300) as log:
        log.append_many([TaskEvent.new("exec.output", "a", {"i": i}) for i in range(12)])
    segments = sorted(tmp_path.glob("events-*.jsonl"))
    assert len(segments) >= 3
    segments[1].unlink()  # a lost middle segment
    with pytest.raises(LogCorrupt, match="next segment starts at seq"):
        EventLog(tmp_path).start()


_WRITER = """
import sys
from armor_rx.model import TaskEvent
from armor_rx.sinks import EventLog
with EventLog(sys.argv[1], fsync=sys.argv[2], segment_bytes=2000) as log:
    print(log.last_seq, flush=True)
    i = 0
    while True:
        if i % 3 == 0:
            acked = log.append_many([TaskEvent.new("exec.output", "t1", {"i": i, "j": j}) for j in range(5)])[-1]
        else:
            acked = log.append(TaskEvent.new("exec.output", "t1", {"i": i, "pad": "y" * (i % 50)}))
        print(acked.seq, flush=True)
        i += 1
"""


@pytest.mark.slow
def test_a_kill_mid_write_loses_nothing_acknowledged_and_never_reads_as_damage(tmp_path: Path) -> None:
    """Invariant (12 kill -9 at varying moments, into one growing log, fsync 'always' and 'batch'): after each
    kill every acknowledged event is read back, nothing is ever reported as damage (a crash leaves at most a torn
    final line, which is cut with a copy kept), and the next writer goes on with the next seq."""
    import random
    import signal
    import subprocess
    import sys
    import time

    directory = tmp_path / "events"
    rng = random.Random(14)
    kills = 0
    for round_ in range(12):
        policy = "always" if round_ % 2 else "batch"
        child = subprocess.Popen([sys.executable, "-c", _WRITER, str(directory), policy],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        start = int(child.stdout.readline())
        time.sleep(rng.uniform(0.05, 0.4))
        child.send_signal(signal.SIGKILL)
        acked = [int(line) for line in child.stdout.read().split()]
        child.wait()
        kills += 1
        with EventLog(directory) as log:
            seqs = [e.seq for e in log.read()]
            assert log.damage == [], round_
            assert seqs == list(range(1, len(seqs) + 1))
            assert max([start, *acked]) <= len(seqs), round_
            for repair in log.repairs:
                assert repair.quarantined is not None and repair.quarantined.exists()
            assert log.append(TaskEvent.new("exec.output", "t1")).seq == len(seqs) + 1
    assert kills == 12  # the number of cases tried
