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


def unexpected_files(directory: Path, ignore: Path | None = None) -> list[Path]:
    """Entries of a log directory that are not segments (and not ``ignore``): never read, only reported."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [
        directory / name
        for name in names
        if _SEGMENT.fullmatch(name) is None and (ignore is None or directory / name != ignore)
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


@dataclass(frozen=True)
class Damage:
    """Bytes of a segment that are not intact lines in seq order; readers skip them.

    ``missing`` is the inclusive seq range no reader can get back because of
    them (None when no event is known to be lost, e.g. a duplicated line, or
    while nothing readable follows them yet). ``broken`` is False when every
    line in it is intact but out of order (content that does not chain).
    """

    segment: Path
    offset: int
    length: int
    reason: str
    lines: int
    broken: bool
    missing: tuple[int, int] | None = None
    quarantined: Path | None = None

    def describe(self) -> dict[str, object]:
        """The damage as a JSON-safe payload (for a ``log.corruption.quarantined`` event)."""
        return {
            "segment": self.segment.name,
            "offset": self.offset,
            "length": self.length,
            "lines": self.lines,
            "reason": self.reason,
            "missing_from": self.missing[0] if self.missing else None,
            "missing_to": self.missing[1] if self.missing else None,
            "quarantined": str(self.quarantined) if self.quarantined else None,
        }


class _Region:
    """Damage being read: where it starts, why, and whether it holds broken bytes."""

    __slots__ = ("broken", "broken_lines", "length", "lines", "offset", "reason", "top")

    def __init__(self, offset: int, reason: str) -> None:
        self.offset, self.reason = offset, reason
        self.length = self.lines = self.broken_lines = self.top = 0
        self.broken = False

    def add(self, raw: bytes, broken: bool) -> None:
        self.length += len(raw)
        self.lines += 1
        if broken:
            self.broken = True
            self.broken_lines += 1
            # The seq is near the start of a line; a damaged line often still shows it.
            if raw.startswith(_FAST_PREFIX):
                digits = raw[len(_FAST_PREFIX) : raw.find(b",", len(_FAST_PREFIX))]
                if digits.isdigit() and len(digits) < 19:
                    self.top = max(self.top, int(digits))

    def may_hold(self, expected: int) -> int:
        """How many seqs from ``expected`` on these bytes may have carried (0 when none were broken).

        At least one per broken line; more when a line still shows a higher seq
        (a damaged newline joins lines), as long as that seq is plausible.
        """
        if not self.broken:
            return 0
        held = self.broken_lines
        if expected <= self.top < expected + 4 * self.broken_lines:
            held = max(held, self.top - expected + 1)
        return held

    def extend(self, length: int) -> None:
        """Add a torn last line of ``length`` bytes."""
        self.length += length
        self.lines += 1
        self.broken_lines += 1
        self.broken = True

    def damage(self, segment: Path, missing: tuple[int, int] | None) -> Damage:
        return Damage(segment, self.offset, self.length, self.reason, self.lines, self.broken, missing)


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


OnDamage = Callable[[Damage], None]


class Cursor:
    """Reads intact lines in seq order across segments and remembers where it stopped.

    ``lines()`` can be called again later to continue (that is how ``follow``
    tails a growing log). Damaged bytes (a line that is not intact, or an
    intact one out of order) are skipped in every segment and handed to
    ``on_damage``; the first intact line after them carries on, even past
    the seqs they held. A torn line at the very end of the last segment ends
    the read quietly (it is being written, or the writer will cut it);
    :attr:`torn_at` says where it starts. Events missing with no damaged
    bytes to explain them (a lost segment) raise :class:`LogCorrupt`.
    """

    def __init__(self, directory: Path, start_seq: int, on_damage: OnDamage | None = None) -> None:
        self.directory = directory
        self.want = max(1, start_seq)
        self.expected: int | None = None  # the seq the next line must carry
        self.torn_at: int | None = None  # where a torn final line starts, when the last read ended on one
        # Seqs that damaged bytes at the very end may have carried: a writer
        # goes on after them, so that no seq is ever used twice.
        self.tail_gap = 0
        self._on_damage = on_damage
        self._segment: Segment | None = None
        self._offset = 0
        self._region: _Region | None = None  # damage at the end of what was read, not yet followed by a line

    @property
    def position(self) -> int:
        """The seq the next line read will carry (``want`` before anything is read)."""
        return self.want if self.expected is None else max(self.want, self.expected)

    @property
    def segment(self) -> Path | None:
        """The segment the cursor is in (None before the first read)."""
        return None if self._segment is None else self._segment[1]

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
            if not later:
                return
            if status == "partial":
                # The writer finishes a line before it starts a new segment, so
                # read it once more before calling it damaged.
                if not retried:
                    retried = True
                    continue
                # A torn line in a sealed segment is damage like any other (to its end).
                torn_at = self.torn_at if self.torn_at is not None else self._offset
                torn = self._region or _Region(torn_at, TORN)
                torn.extend(os.stat(path).st_size - torn_at)
                self._region = torn
            retried = False
            assert self.expected is not None
            end: _Region | None = self._region
            self._region = None
            next_first = later[0][0]
            if next_first < self.expected or (next_first > self.expected and (end is None or not end.broken)):
                ended = self.expected - 1
                raise corrupt(path, self._offset, f"it ends at seq {ended} but the next segment starts at seq {next_first}")
            if end is not None:
                missing = (self.expected, next_first - 1) if next_first > self.expected else None
                self._report(end.damage(path, missing))
            self._segment, self._offset = later[0], 0
            self.expected = next_first
            self.torn_at = None
            self.tail_gap = 0

    def _report(self, damage: Damage) -> None:
        if self._on_damage is not None:
            self._on_damage(damage)

    def _read_segment(self, limit_seq: int | None) -> Generator[tuple[int, bytes], None, _Status]:
        assert self._segment is not None and self.expected is not None
        if limit_seq is not None and self.position > limit_seq:
            return "limit"
        try:
            f = open(self._segment[1], "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return "eof"
        path = self._segment[1]
        with f:
            # Damage seen at the end of an earlier read is read again: what
            # follows it decides what was lost.
            region = self._region
            pos = self._offset if region is None else region.offset
            if region is not None:
                region = self._region = None
            f.seek(pos)
            self.torn_at = None
            for raw in f:
                result = check_line(raw)
                if isinstance(result, int) and (
                    result == self.expected or (result > self.expected and region is not None and region.broken)
                ):
                    if region is not None:
                        missing = (self.expected, result - 1) if result > self.expected else None
                        self._report(region.damage(path, missing))
                        region = None
                    pos += len(raw)
                    self._offset = pos
                    self.expected = result + 1
                    if result >= self.want:
                        yield result, raw
                    if limit_seq is not None and result >= limit_seq:
                        return "limit"
                    continue
                if result == TORN:
                    self._region = region
                    self.torn_at = pos
                    self.tail_gap = 0
                    if region is not None:  # damage, then a torn last line: the damage is reported now
                        self.tail_gap = region.may_hold(self.expected)
                        missing = (self.expected, self.expected + self.tail_gap - 1) if self.tail_gap else None
                        self._report(region.damage(path, missing))
                    return "partial"
                if isinstance(result, int):
                    reason = f"seq {result} where {self.expected} was expected"
                else:
                    reason = result
                if region is None:
                    region = _Region(pos, reason)
                region.add(raw, broken=isinstance(result, str))
                pos += len(raw)
        self.tail_gap = 0
        if region is not None:
            self._region = region
            # Whole bad lines at the end: not a line being written (a reader
            # only ever sees a torn one), so damage, reported now.
            self.tail_gap = region.may_hold(self.expected)
            missing = (self.expected, self.expected + self.tail_gap - 1) if self.tail_gap else None
            self._report(region.damage(path, missing))
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
