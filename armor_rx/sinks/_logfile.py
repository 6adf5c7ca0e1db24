"""The on-disk form of the event log: segment files of checksummed JSON lines.

A line is the event's JSON with a fixed-width checksum as its last key::

    {"v":1,"seq":7,...,"payload":{...},"crc":"0a1b2c3d"}\\n

where ``crc`` is the CRC-32 of the event's JSON without the ``crc`` field.
Because the suffix has a fixed width, a line is verified by slicing, without
parsing or re-serialising it, and ``jq`` still reads every line as JSON.

This module only knows files and bytes; :mod:`armor_rx.sinks._cursor` reads
them, :mod:`armor_rx.sinks.eventlog` owns the locking, the policies and the
events.
"""

from __future__ import annotations

import mmap
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from itertools import pairwise
from pathlib import Path

import orjson

from armor_rx._eventview import is_index
from armor_rx.errors import InvalidPayload, LogCorrupt
from armor_rx.model import TaskEvent

_SEGMENT = re.compile(r"events-(\d{12,})\.jsonl")
_CRC_KEY = b',"crc":"'
SUFFIX_LEN = len(_CRC_KEY) + 8 + 3  # ,"crc":"xxxxxxxx"}\n
_FAST_PREFIX = b'{"v":1,"seq":'
TORN = "torn line (no trailing newline)"
# What armor_rx writes next to the segments: the index of verified bytes (see _verified.py) and its temporary
# file, and the sealed segments' task indexes and theirs (see _taskindex.py, named by armor_rx._eventview.is_index).
_OURS = frozenset({"verified.json"})
_OURS_TMP = re.compile(r"\.verified\.json\.[0-9a-f]{32}\.tmp")

Segment = tuple[int, Path]


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


def unexpected_files(directory: Path, ignore: Path | None = None) -> list[Path]:
    """Entries of a log directory that are not segments (and not ``ignore``): never read, only reported."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [
        directory / name
        for name in names
        if _SEGMENT.fullmatch(name) is None and name not in _OURS and not _OURS_TMP.fullmatch(name) and not is_index(name)
        and (ignore is None or directory / name != ignore)
    ]


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
    """A torn final line cut off the end of the last segment (a copy is kept in ``quarantined``)."""

    segment: Path
    offset: int
    dropped_bytes: int
    dropped_lines: int
    reason: str
    quarantined: Path | None = None

    def describe(self) -> dict[str, object]:
        """The repair as a JSON-safe payload (for a ``log.tail.repaired`` event)."""
        return {"segment": self.segment.name, "offset": self.offset, "dropped_bytes": self.dropped_bytes,
                "reason": self.reason, "quarantined": str(self.quarantined) if self.quarantined else None}


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


def _seq_of(raw: bytes) -> int | None:
    """The seq of a line known to be intact (from its fixed prefix when it has one)."""
    if raw.startswith(_FAST_PREFIX):
        digits = raw[len(_FAST_PREFIX) : raw.find(b",", len(_FAST_PREFIX))]
        if digits.isdigit():
            return int(digits)
    result = check_line(raw)
    return result if isinstance(result, int) else None


def find_line(path: Path, size: int, want: int) -> int | None:
    """The offset of the line of seq ``want`` within the first ``size`` bytes of ``path``, by bisection.

    Only for bytes already verified to be intact lines with consecutive seqs
    (see :mod:`armor_rx.sinks._verified`); None if they turn out not to be.
    """
    lo, hi = 0, size  # the line wanted starts in [lo, hi]; lo is a line start
    try:
        with open(path, "rb") as f:
            while hi - lo > 1 << 16:
                mid = (lo + hi) // 2
                f.seek(mid)
                start = mid + len(f.readline())  # the first line that starts after mid
                if start >= hi:
                    hi = mid
                    continue
                seq = _seq_of(f.readline())
                if seq is None:
                    return None
                if seq == want:
                    return start
                if seq < want:
                    lo = start
                else:
                    hi = mid
            f.seek(lo)
            pos = lo
            while pos < size:
                raw = f.readline()
                seq = _seq_of(raw)
                if seq is None or seq > want:
                    return None
                if seq == want:
                    return pos
                pos += len(raw)
    except OSError:
        return None
    return None


def corrupt(path: Path, offset: int, reason: str) -> LogCorrupt:
    return LogCorrupt(
        f"event log segment {path} does not chain at byte {offset} ({reason}): events are missing that no "
        "damaged bytes explain, so armor_rx did not write it this way; restore the missing segment from a "
        "backup, or move this segment and every later one out of the directory to keep the events before it"
    )


def check_sealed(segments: list[Segment]) -> None:
    """Cheap structural check of every segment but the last; raises LogCorrupt.

    A sealed segment whose last line is intact must end one seq before the
    next segment starts (a gap there is a lost segment, an overlap one that
    armor_rx did not write). A damaged last line is left to the readers, who
    skip it and report it.
    """
    for (first, path), (next_first, _) in pairwise(segments):
        found = _last_line(path)
        if found is None:
            last_seq, offset = first - 1, 0
        else:
            line, offset = found
            result = check_line(line, strict=True)
            if isinstance(result, str):
                continue
            last_seq = result
        if last_seq != next_first - 1:
            raise corrupt(path, offset, f"it ends at seq {last_seq} but the next segment starts at seq {next_first}")


def grep_lines(path: Path, start: int, size: int, needle: bytes) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of every line holding ``needle`` between ``start`` and ``size``, both line starts.

    The search runs over the mapped file in C; a line is only cut out where
    the needle is, so a reader that wants a few lines of verified bytes never
    touches the others one by one.
    """
    if size <= start:
        return
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as view:
        hit = view.find(needle, start, size)
        while hit >= 0:
            newline = view.rfind(b"\n", start, hit)
            begin = newline + 1 if newline >= 0 else start
            end = view.find(b"\n", hit, size) + 1 or size
            yield begin, view[begin:end]
            hit = view.find(needle, end, size)
