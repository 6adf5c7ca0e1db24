"""Setting damaged bytes of the event log aside, as a copy in the quarantine directory.

A damaged line is never a reason to delete the valid lines after it, and
bytes armor_rx cannot prove are a torn write are never deleted at all: they
stay where they are (readers skip them) and a copy goes here, so a person can
look at them, and a backup tool can keep them, whatever happens to the log.
Only a torn final line is cut from the log, and its copy is kept here too.

A copy is named after where the bytes were: ``<segment>.<offset>.damaged``
(still in the log, skipped by readers) or ``<segment>.<offset>.torn`` (cut
from the end of the log). Copying is idempotent: a copy that is already
there is not written again.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Literal

import orjson

from armor_rx.sinks._atomic import write_atomic
from armor_rx.sinks._cursor import Damage
from armor_rx.sinks._logfile import TORN, TailRepair, check_line, count_lines
from armor_rx.sinks._log import LazyLogger

Why = Literal["damaged", "torn"]
_logger = LazyLogger("armor_rx.eventlog")


def quarantine_path(directory: Path, segment: Path, offset: int, why: Why) -> Path:
    return directory / f"{segment.name}.{offset}.{why}"


def quarantine_copy(directory: Path, segment: Path, offset: int, length: int, why: Why) -> tuple[Path, bool]:
    """Copy ``length`` bytes of ``segment`` from ``offset`` into ``directory``, durably.

    Returns the copy's path and whether it was written now (False when it was
    already there). Raises ``OSError``.
    """
    target = quarantine_path(directory, segment, offset, why)
    try:
        if target.stat().st_size == length:
            return target, False
    except FileNotFoundError:
        pass
    with open(segment, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data, mode=0o600)
    return target, True


ACKNOWLEDGED = "acknowledged.json"


def damage_key(segment: Path | str, offset: int) -> str:
    """How a damaged stretch is named in the acknowledgements: ``<segment>.<offset>``, as its copy is."""
    return f"{Path(segment).name}.{offset}"


def acknowledged(directory: Path) -> set[str]:
    """The damaged stretches a person has acknowledged (``armor-rx damage --acknowledge``)."""
    try:
        keys = orjson.loads((directory / ACKNOWLEDGED).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return set()
    return {k for k in keys if isinstance(k, str)} if isinstance(keys, list) else set()


def acknowledge(directory: Path, keys: set[str]) -> None:
    """Record ``keys`` as acknowledged: read verbs stop failing (exit 3) for them, and still name them."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / ACKNOWLEDGED, orjson.dumps(sorted(acknowledged(directory) | keys)))


def damaged_copies(directory: Path, *, include_acknowledged: bool = False) -> list[Path]:
    """The copies of damage that is still in the log (readers skip it), oldest segment first."""
    try:
        found = sorted(p for p in directory.iterdir() if p.name.endswith(".damaged"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    if include_acknowledged:
        return found
    done = acknowledged(directory)
    return [p for p in found if p.name.removesuffix(".damaged") not in done]


class DamageLedger:
    """The damage one :class:`~armor_rx.sinks.EventLog` has seen, each stretch reported once.

    ``saw`` is the callback every cursor of the log reports to (from any
    thread). With a ``quarantine`` directory (the writer) each new stretch is
    copied there first; a read-only log (``None``) changes nothing on disk.
    """

    def __init__(self, quarantine: Path | None) -> None:
        self.quarantine = quarantine
        self._seen: dict[tuple[str, int], Damage] = {}
        self._new: list[Damage] = []
        self._lock = threading.Lock()

    @property
    def damage(self) -> list[Damage]:
        with self._lock:
            return list(self._seen.values())

    def take_new(self) -> list[Damage]:
        """Stretches copied to quarantine for the first time since the last call."""
        with self._lock:
            new, self._new = self._new, []
            return new

    def saw(self, damage: Damage) -> None:
        key = (damage.segment.name, damage.offset)
        with self._lock:
            known = self._seen.get(key)
            if known is not None:
                # Seen again once more was read: the seqs it cost (or its extent) are known now.
                if known.length != damage.length and self.quarantine is not None and known.quarantined is not None:
                    try:
                        quarantine_copy(self.quarantine, damage.segment, damage.offset, damage.length, "damaged")
                    except OSError:
                        pass  # the first copy stays; the bytes are still in the log
                if (known.missing, known.length) != (damage.missing, damage.length) and damage.missing is not None:
                    self._seen[key] = replace(known, missing=damage.missing, length=damage.length, lines=damage.lines)
                return
            new = False
            if self.quarantine is not None:
                try:
                    copy, new = quarantine_copy(
                        self.quarantine, damage.segment, damage.offset, damage.length, "damaged"
                    )
                    damage = replace(damage, quarantined=copy)
                except OSError as exc:  # the bytes stay in the log all the same
                    _logger.error("could not copy damaged log bytes to quarantine", segment=str(damage.segment),
                                  offset=damage.offset, error=str(exc))
            self._seen[key] = damage
            if new:
                self._new.append(damage)
        _logger.warning(
            "event log damage skipped: readers go on with the next intact line",
            segment=str(damage.segment),
            offset=damage.offset,
            length=damage.length,
            lines=damage.lines,
            reason=damage.reason,
            missing=damage.missing,
            quarantined=str(damage.quarantined) if damage.quarantined else None,
        )


def whole_line(path: Path, offset: int, expected: int) -> bool:
    """Whether the unterminated last line from ``offset`` is the line of seq ``expected`` with its newline damaged."""
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read()
    return check_line(raw[:-1] + b"\n") == expected


def cut_torn(quarantine: Path, path: Path, offset: int, size: int) -> TailRepair:
    """Cut a torn final line (a write a crash cut short) from ``offset``, keeping a copy in quarantine first."""
    copy, _ = quarantine_copy(quarantine, path, offset, size - offset, "torn")
    repair = TailRepair(path, offset, size - offset, count_lines(path, offset), TORN, copy)
    with open(path, "r+b") as f:
        f.truncate(offset)
        os.fsync(f.fileno())
    _logger.warning(
        "event log tail repaired: cut a torn final line (a copy is in quarantine)",
        segment=str(path),
        offset=offset,
        dropped_bytes=repair.dropped_bytes,
        dropped_lines=repair.dropped_lines,
        reason=repair.reason,
        quarantined=str(copy),
    )
    return repair
