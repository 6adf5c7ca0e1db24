"""Reading the event log: intact lines in seq order across segments, skipping damage.

A :class:`Cursor` is what every reader of the log uses (``read``, ``follow``,
``pages``, ``verify``, and the writer's own scan when it opens). Damaged bytes
are skipped in every segment and reported as :class:`Damage`; the first
intact line after them carries on. See :mod:`armor_rx.sinks._logfile` for the
line format and :mod:`armor_rx.sinks._quarantine` for what the writer does
with what is reported.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from armor_rx.model import TaskEvent
from armor_rx.sinks._logfile import _FAST_PREFIX, TORN, Segment, check_line, corrupt, list_segments

_Status = Literal["eof", "partial", "bad", "limit"]


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


OnDamage = Callable[[Damage], None]
# Where to start reading a segment for a seq: (offset, seq of the line there), or None for its start.
Seek = Callable[[Segment, int], "tuple[int, int] | None"]


def placed(at: tuple[int, int] | None) -> Seek:
    """A :data:`Seek` that starts at ``at`` (offset, seq of the line there) whatever is wanted."""
    return lambda _segment, _want: at


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

    ``seek`` may place the first read past lines already verified (see
    :mod:`armor_rx.sinks._verified`); ``stop_before`` ends the read where a
    segment starting at or after that seq would begin (after the boundary
    between them was checked).
    """

    def __init__(self, directory: Path, start_seq: int, on_damage: OnDamage | None = None, *,
                 seek: Seek | None = None, stop_before: int | None = None) -> None:
        self.directory = directory
        self.want = max(1, start_seq)
        self._seek = seek
        self._stop_before = stop_before
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
            found = self._seek(self._segment, self.want) if self._seek is not None else None
            if found is not None:
                self._offset, self.expected = found
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
                why = f"it ends at seq {ended} but the next segment starts at seq {next_first}"
                raise corrupt(path, self._offset, why)
            if end is not None:
                missing = (self.expected, next_first - 1) if next_first > self.expected else None
                self._report(end.damage(path, missing))
            self._segment, self._offset = later[0], 0
            self.expected = next_first
            self.torn_at = None
            self.tail_gap = 0
            if self._stop_before is not None and next_first >= self._stop_before:
                return

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
        # The line's checksum verified: armor_rx wrote it, redacted when the event was made.
        yield TaskEvent.from_logged(data)
