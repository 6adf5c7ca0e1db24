"""What of the event log was already verified, so that opening it reads only what changed.

Opening a log used to check every line of every segment; at a million events
that is seconds, every time. The writer now records, in ``verified.json`` in
the log directory, for each segment: how many bytes of it were verified, the
CRC-32 of those bytes, the seq the next line must carry, the damage found in
them, and the file's size, inode, mtime and ctime when it was recorded. The
file is checksummed as a whole (SHA-256 of its body); one that does not verify
is ignored, and then everything is checked as before.

A segment is *vouched for* when its recorded bytes are unchanged:

* its size, inode, mtime and ctime are what was recorded (no read at all).
  A stat taken within :data:`RACY_NS` of the file's last change proves
  nothing (a write in the same clock tick leaves the times as they were), so
  such an entry is checked as below, like git's "racily clean" index entries;
* otherwise the CRC-32 of its first ``size`` bytes is what was recorded (one
  sequential read at memory speed, no parsing), e.g. after a crash appended
  more, or after a backup restored the files with new inodes.

Whatever is not vouched for is read line by line as before, so damage in a
segment that changed in any way (a flipped byte changes its times, and its
CRC) is still found on the next open. What this does not defend against is
someone who rewrites a segment and puts its size, inode and times back: the
checksums guard against damage, not forgery (see docs/security.md).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from armor_rx.sinks._cursor import Damage

INDEX = "verified.json"
FORMAT = 1
# A file's times move in clock ticks (a jiffy, at most 10 ms on Linux): a stat taken
# within this of the last change can miss a change made in the same tick after it.
RACY_NS = 20_000_000


@dataclass(frozen=True)
class Verified:
    """One segment's verified prefix; ``stat`` is None when only its CRC may vouch for it."""

    name: str
    first: int
    size: int
    crc: int
    end: int  # the seq the line after these bytes carries (past any seqs damaged bytes at their end may have held)
    damage: tuple[Damage, ...]
    stat: tuple[int, int, int, int] | None  # (size, inode, mtime_ns, ctime_ns)

    @property
    def clean(self) -> bool:
        """No damage in the verified bytes: their lines carry consecutive seqs from ``first`` to ``end - 1``."""
        return not self.damage

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "first": self.first, "size": self.size, "crc": self.crc, "end": self.end,
                "stat": list(self.stat) if self.stat else None,
                "damage": [_damage_dict(d) for d in self.damage]}


def _damage_dict(d: Damage) -> dict[str, Any]:
    return {"offset": d.offset, "length": d.length, "reason": d.reason, "lines": d.lines, "broken": d.broken,
            "missing": list(d.missing) if d.missing else None,
            "quarantined": str(d.quarantined) if d.quarantined else None}


def _verified(directory: Path, data: Mapping[str, Any]) -> Verified:
    name = str(data["name"])
    stat = data["stat"]
    damage = tuple(
        Damage(directory / name, int(d["offset"]), int(d["length"]), str(d["reason"]), int(d["lines"]), bool(d["broken"]),
               (int(d["missing"][0]), int(d["missing"][1])) if d["missing"] else None,
               Path(d["quarantined"]) if d["quarantined"] else None)
        for d in data["damage"]
    )
    return Verified(name, int(data["first"]), int(data["size"]), int(data["crc"]), int(data["end"]), damage,
                    (int(stat[0]), int(stat[1]), int(stat[2]), int(stat[3])) if stat else None)


def stat_of(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def load(directory: Path) -> dict[str, Verified]:
    """The entries of ``directory``'s index by segment name ({} when it is missing or does not verify)."""
    try:
        raw = (directory / INDEX).read_bytes()
        data = orjson.loads(raw)
        body, digest = raw[: raw.rindex(b',"sha256":"')] + b"}", data["sha256"]
        if data["format"] != FORMAT or hashlib.sha256(body).hexdigest() != digest:
            return {}
        entries = [_verified(directory, entry) for entry in data["segments"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError, orjson.JSONDecodeError):
        return {}
    return {entry.name: entry for entry in entries}


def save(directory: Path, entries: Iterable[Verified]) -> None:
    """Replace the index atomically. Not fsynced: a lost or torn index only means checking everything once."""
    body = orjson.dumps({"format": FORMAT, "segments": [e.to_dict() for e in entries]})
    data = body[:-1] + b',"sha256":"%s"}' % hashlib.sha256(body).hexdigest().encode()
    tmp = directory / f".{INDEX}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, directory / INDEX)
    except OSError:
        tmp.unlink(missing_ok=True)  # only speed is lost


def crc_of(path: Path, size: int, start: int = 0, crc: int = 0) -> int | None:
    """CRC-32 of the first ``size`` bytes of ``path`` (None when it is shorter or unreadable).

    ``crc`` is the CRC of the bytes before ``start``, when they are known already.
    """
    try:
        with open(path, "rb") as f:
            f.seek(start)
            left = size - start
            while left:
                chunk = f.read(min(left, 1 << 22))
                if not chunk:
                    return None
                crc = zlib.crc32(chunk, crc)
                left -= len(chunk)
    except OSError:
        return None
    return crc


def vouched(path: Path, first: int, entry: Verified | None, st: os.stat_result) -> Verified | None:
    """``entry`` if the bytes it covers are unchanged in ``path`` (see the module docs), else None."""
    if entry is None or entry.first != first or st.st_size < entry.size:
        return None
    if entry.stat is not None and entry.stat == stat_of(st):
        return entry
    return entry if crc_of(path, entry.size) == entry.crc else None


def recorded(entry: Verified, st: os.stat_result) -> Verified:
    """``entry`` with the file's stat, if that stat can vouch for it later (not racy, and the size is its own)."""
    if st.st_size != entry.size or max(st.st_mtime_ns, st.st_ctime_ns) >= time.time_ns() - RACY_NS:
        return replace(entry, stat=None)
    return replace(entry, stat=stat_of(st))
