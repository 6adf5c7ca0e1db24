"""The on-disk form of the event log: segment files of checksummed JSON lines.

A line is the event's JSON with a fixed-width checksum as its last key::

    {"v":1,"seq":7,...,"payload":{...},"crc":"0a1b2c3d"}\\n

where ``crc`` is the CRC-32 of the event's JSON without the ``crc`` field.
Because the suffix has a fixed width, a line is verified by slicing, without
parsing or re-serialising it, and ``jq`` still reads every line as JSON.

This module only knows files and bytes; :mod:`armor_rx.sinks.eventlog` owns
the locking, the policies and the events.
"""

from __future__ import annotations

import bisect
import os
import re
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, fields
from itertools import pairwise
from pathlib import Path
from typing import Literal

import orjson

from armor_rx.errors import InvalidPayload, LogCorrupt
from armor_rx.model import TaskEvent

_SEGMENT = re.compile(r"events-(\d{12,})\.jsonl")
_CRC_KEY = b',"crc":"'
SUFFIX_LEN = len(_CRC_KEY) + 8 + 3  # ,"crc":"xxxxxxxx"}\n
_FAST_PREFIX = b'{"v":1,"seq":'
TORN = "torn line (no trailing newline)"

Segment = tuple[int, Path]
_Status = Literal["eof", "partial", "bad", "limit"]


def segment_name(first_seq: int) -> str:
    return f"events-{first_seq:012d}.jsonl"


def list_segments(directory: Path) -> list[Segment]:
    """``(first_seq, path)`` of every segment file, in seq order ([] if no directory)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _SEGMENT.fullmatch(name)
        if match is not None:
            found.append((int(match.group(1)), directory / name))
    found.sort()
    return found


def encode_line(body: bytes) -> bytes:
    """One log line from an event's JSON object (``b"{...}"``)."""
    return b'%s,"crc":"%08x"}\n' % (body[:-1], zlib.crc32(body))


_FIELD_ORDER = ("id", "kind", "task_id", "ts", "payload", "causation_id", "seq", "schema")
if tuple(f.name for f in fields(TaskEvent)) == _FIELD_ORDER:

    def number_event(event: TaskEvent, seq: int) -> TaskEvent:
        # Positional construction is twice as fast as dataclasses.replace on the
        # hot path; the field check above keeps it honest if TaskEvent changes.
        return TaskEvent(
            event.id, event.kind, event.task_id, event.ts, event.payload, event.causation_id, seq, event.schema
        )

else:  # pragma: no cover - only if the model grows a field

    def number_event(event: TaskEvent, seq: int) -> TaskEvent:
        return event.with_seq(seq)


def event_line(event: TaskEvent) -> bytes:
    """The log line of a numbered event; raises InvalidPayload if JSON cannot carry it."""
    try:
        return encode_line(event.to_json())
    except orjson.JSONEncodeError as exc:  # e.g. an int beyond 64 bits, which JSON readers would mangle
        raise InvalidPayload(f"event {event.kind} for task {event.task_id!r} cannot be logged: {exc}") from None


def check_line(raw: bytes, *, strict: bool = False) -> int | str:
    """The seq of an intact line, or a short reason why the line is bad.

    ``strict`` also parses the whole line as JSON (recovery does; readers parse
    the lines they keep anyway).
    """
    n = len(raw)
    if not raw.endswith(b"\n"):
        return TORN
    if n < SUFFIX_LEN + 2 or raw[n - SUFFIX_LEN : n - 11] != _CRC_KEY or raw[n - 3 :] != b'"}\n':
        return "line has no checksum field"
    # The checksummed body is the line without the crc field: its prefix plus "}".
    crc = zlib.crc32(b"}", zlib.crc32(memoryview(raw)[: n - SUFFIX_LEN]))
    if b"%08x" % crc != raw[n - 11 : n - 3]:
        return "checksum mismatch"
    if not strict and raw.startswith(_FAST_PREFIX):
        digits = raw[len(_FAST_PREFIX) : raw.find(b",", len(_FAST_PREFIX))]
        if digits.isdigit():
            return int(digits)
    try:
        seq = orjson.loads(raw).get("seq")
    except (orjson.JSONDecodeError, AttributeError):
        return "unparsable line"
    if not isinstance(seq, int) or isinstance(seq, bool):
        return "line has no integer seq"
    return seq


@dataclass(frozen=True)
class TailRepair:
    """What recovery cut off the end of the last segment, and why."""

    segment: Path
    offset: int
    dropped_bytes: int
    dropped_lines: int
    reason: str


@dataclass
class TailScan:
    """What a scan of the last segment found: where the intact prefix ends and why."""

    last_seq: int  # first_seq - 1 when the segment holds no intact line
    good_bytes: int
    size: int
    reason: str | None  # None when the whole file is intact


def scan_segment(path: Path, first_seq: int) -> TailScan:
    """Verify every line of ``path``; stop at the first one that is torn, bad or out of order."""
    expected = first_seq
    good = 0
    reason: str | None = None
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for raw in f:
            result = check_line(raw, strict=True)
            if isinstance(result, str):
                reason = result
                break
            if result != expected:
                reason = f"seq {result} where {expected} was expected"
                break
            good += len(raw)
            expected += 1
    return TailScan(expected - 1, good, size, reason)


def repair_tail(path: Path, first_seq: int) -> tuple[TailScan, TailRepair | None]:
    """Scan the last segment and truncate it after its intact prefix, if it has a bad tail.

    Bytes after a bad line would be invisible to every reader and would
    corrupt the next append, so they go (the caller reports the repair).
    """
    scan = scan_segment(path, first_seq)
    if scan.reason is None:
        return scan, None
    repair = TailRepair(
        path, scan.good_bytes, scan.size - scan.good_bytes, count_lines(path, scan.good_bytes), scan.reason
    )
    with open(path, "r+b") as f:
        f.truncate(scan.good_bytes)
        os.fsync(f.fileno())
    return scan, repair


def count_lines(path: Path, offset: int) -> int:
    """Lines (a torn last one included) from ``offset`` to the end, read in chunks."""
    count = 0
    last = b"\n"
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


def _last_line(path: Path) -> tuple[bytes, int] | None:
    """The last line of ``path`` and its offset (None when empty), reading backwards."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return None
        tail = b""
        pos = size
        while True:
            step = min(pos, 1 << 16)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            cut = tail.rfind(b"\n", 0, len(tail) - 1)
            if cut >= 0:
                return tail[cut + 1 :], pos + cut + 1
            if pos == 0:
                return tail, 0


def corrupt(path: Path, offset: int, reason: str) -> LogCorrupt:
    return LogCorrupt(
        f"event log segment {path} is damaged at byte {offset} ({reason}) and it is not the "
        "last segment, so it cannot be repaired by truncation; restore the file from a backup, "
        "or move it and every later segment out of the directory to keep the events before it"
    )


def check_sealed(segments: list[Segment]) -> None:
    """Cheap structural check of every segment but the last; raises LogCorrupt.

    A sealed segment must end with an intact line whose seq is one less than the
    next segment's first seq (an empty one is only allowed where that holds).
    Lines in between are verified when they are read.
    """
    for (first, path), (next_first, _) in pairwise(segments):
        found = _last_line(path)
        if found is None:
            last_seq, offset = first - 1, 0
        else:
            line, offset = found
            result = check_line(line, strict=True)
            if isinstance(result, str):
                raise corrupt(path, offset, result)
            last_seq = result
        if last_seq != next_first - 1:
            raise corrupt(path, offset, f"it ends at seq {last_seq} but the next segment starts at seq {next_first}")


class Cursor:
    """Reads intact lines in seq order across segments and remembers where it stopped.

    ``lines()`` can be called again later to continue (that is how ``follow``
    tails a growing log). A bad line in the last segment ends the read quietly
    (it is a tail still being written, or one the writer will repair); a bad
    line or a gap anywhere else raises :class:`LogCorrupt`.
    """

    def __init__(self, directory: Path, start_seq: int) -> None:
        self.directory = directory
        self.want = max(1, start_seq)
        self.expected: int | None = None  # the seq the next line must carry
        self._segment: Segment | None = None
        self._offset = 0
        self._bad: tuple[int, str] = (0, "")

    @property
    def position(self) -> int:
        """The seq the next line read will carry (``want`` before anything is read)."""
        return self.want if self.expected is None else max(self.want, self.expected)

    def lines(self, limit_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Yield ``(seq, line)`` for lines with ``want <= seq <= limit_seq`` from where it stopped."""
        if self._segment is None:
            segments = list_segments(self.directory)
            if not segments:
                return
            firsts = [first for first, _ in segments]
            self._segment = segments[max(0, bisect.bisect_right(firsts, self.want) - 1)]
            self.expected = self._segment[0]
            self._offset = 0
        retried = False
        while True:
            status = yield from self._read_segment(limit_seq)
            if status == "limit":
                return
            first, path = self._segment
            later = [seg for seg in list_segments(self.directory) if seg[0] > first]
            if status == "bad":
                if later:
                    raise corrupt(path, *self._bad)
                return
            if not later:
                return
            if status == "partial":
                # The writer finishes a line before it starts a new segment, so
                # read it once more before calling it damaged.
                if not retried:
                    retried = True
                    continue
                raise corrupt(path, self._offset, TORN)
            retried = False
            if later[0][0] != self.expected:
                ended = (self.expected or 1) - 1
                raise corrupt(
                    path, self._offset, f"it ends at seq {ended} but the next segment starts at seq {later[0][0]}"
                )
            self._segment, self._offset = later[0], 0

    def _read_segment(self, limit_seq: int | None) -> Generator[tuple[int, bytes], None, _Status]:
        assert self._segment is not None and self.expected is not None
        if limit_seq is not None and self.position > limit_seq:
            return "limit"
        try:
            f = open(self._segment[1], "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return "eof"
        with f:
            f.seek(self._offset)
            for raw in f:
                result = check_line(raw)
                if isinstance(result, str):
                    if result == TORN:
                        return "partial"
                    self._bad = (self._offset, result)
                    return "bad"
                if result != self.expected:
                    self._bad = (self._offset, f"seq {result} where {self.expected} was expected")
                    return "bad"
                self._offset += len(raw)
                self.expected = result + 1
                if result >= self.want:
                    yield result, raw
                if limit_seq is not None and result >= limit_seq:
                    return "limit"
        return "eof"


def matching(
    cursor: Cursor, limit: int | None, task_id: str | None, match: Callable[[str], bool] | None
) -> Iterator[TaskEvent]:
    """The events behind the cursor's lines (up to ``limit``) for ``task_id`` whose kind matches."""
    # A substring test skips most lines of other tasks without parsing them;
    # the exact test after parsing decides.
    needle = b'"task_id":"%s"' % task_id.encode() if task_id is not None else None
    for _, raw in cursor.lines(limit):
        if needle is not None and needle not in raw:
            continue
        data = orjson.loads(raw)
        if task_id is not None and data.get("task_id") != task_id:
            continue
        if match is not None and not match(data.get("kind", "")):
            continue
        yield TaskEvent.from_dict(data)
