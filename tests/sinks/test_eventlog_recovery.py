"""Crash recovery: whatever a crash or a bad disk leaves behind, reopening gives back
exactly the acknowledged events (or a clear LogCorrupt), never a silent bad tail."""

from __future__ import annotations

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


@SETTINGS
@given(events=st.lists(events_st, min_size=0, max_size=25), data=st.data(), small_segments=st.booleans())
def test_a_damaged_tail_is_cut_back_to_exactly_the_acknowledged_events(
    events: list[TaskEvent], data: st.DataObject, small_segments: bool
) -> None:
    with fresh_dir() as directory:
        acked = write_acked(directory, events, 700 if small_segments else 1 << 20)
        segment = last_segment(directory)
        good_size = segment.stat().st_size
        tail, how = data.draw(damaged_tails(next_line(acked)), label="tail")
        with segment.open("ab") as f:
            f.write(tail)

        with capture_logs() as logs, EventLog(directory) as log:
            assert list(log.read()) == acked
            assert log.last_seq == len(acked)
            assert len(log.repairs) == 1, how
            repair = log.repairs[0]
            assert (repair.segment, repair.offset, repair.dropped_bytes) == (segment, good_size, len(tail))
            assert repair.dropped_lines == tail.count(b"\n") + (0 if tail.endswith(b"\n") else 1)
            assert log.append(TaskEvent.new("exec.output", "a")).seq == len(acked) + 1
        assert [entry["log_level"] for entry in logs] == ["warning"]
        assert logs[0]["segment"] == str(segment) and logs[0]["reason"] == repair.reason
        assert EventLog(directory).verify() == len(acked) + 1


@SETTINGS
@given(events=st.lists(events_st, min_size=1, max_size=25), data=st.data(), small_segments=st.booleans())
def test_a_damaged_byte_in_the_last_segment_keeps_the_intact_prefix(
    events: list[TaskEvent], data: st.DataObject, small_segments: bool
) -> None:
    with fresh_dir() as directory:
        acked = write_acked(directory, events, 700 if small_segments else 1 << 20)
        segment = last_segment(directory)
        raw = bytearray(segment.read_bytes())
        if not raw:
            return  # the acked events all sit in sealed segments
        at = position(data, len(raw), "offset")
        raw[at] ^= data.draw(st.integers(1, 255), label="xor")
        segment.write_bytes(bytes(raw))
        first_in_segment = int(segment.name[7:-6])
        # The damaged line is the one holding the byte; lines before it are intact.
        line_start = bytes(raw).rfind(b"\n", 0, at) + 1
        intact_in_segment = bytes(raw[:line_start]).count(b"\n")
        expected = acked[: first_in_segment - 1 + intact_in_segment]

        with EventLog(directory) as log:
            assert list(log.read()) == expected
            assert [r.offset for r in log.repairs] == [line_start]
            assert log.append(TaskEvent.new("exec.output", "a")).seq == len(expected) + 1


@SETTINGS
@given(events=st.lists(events_st, min_size=12, max_size=30), data=st.data())
def test_damage_in_a_sealed_segment_is_log_corrupt(events: list[TaskEvent], data: st.DataObject) -> None:
    with fresh_dir() as directory:
        write_acked(directory, events, 600)
        sealed = sorted(directory.glob("events-*.jsonl"))[:-1]
        if not sealed:
            return
        victim = sealed[position(data, len(sealed), "segment")]
        raw = bytearray(victim.read_bytes())
        at = position(data, len(raw), "offset")
        raw[at] ^= data.draw(st.integers(1, 255), label="xor")
        victim.write_bytes(bytes(raw))
        before = snapshot_files(directory)

        with pytest.raises(LogCorrupt) as caught, EventLog(directory) as log:
            list(log.read())
        message = str(caught.value)
        assert victim.name in message and "byte" in message and "backup" in message
        assert snapshot_files(directory) == before  # a sealed segment is never "repaired"


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
            assert list(reader.read()) == acked
            assert reader.last_seq == len(acked)
            assert reader.repairs == []
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
