"""The tasks view: ``armor-rx tasks`` answered from one small file while the log has not moved.

Listing tasks means folding the log into a registry, and even from a current
snapshot that costs the package's imports and the snapshot's parse, several
times Python's own start-up. The session's owner already knows the answer
whenever it writes a snapshot, so it also writes ``tasks.view``: the rendered
table and JSON, and the exact state of the event log they describe (every
segment's name, size, inode, mtime and ctime: a full read re-checks any segment
that changed, so damage to an older one must make the view stale too, and a
rewrite that puts the mtime back cannot put the ctime back). The CLI's fast
path (:mod:`armor_rx._quick`) prints the view only if the log is still exactly
that and its directory holds nothing a full read would warn about (damage in
quarantine, foreign files); anything else, including a damaged or stale view,
sends the verb down the full path, which is always right. The view is a cache, never a
source of truth, so it is written without fsync: a torn one fails its CRC.

Standard library only on the read side: importing the package's floors would
cost more than the whole answer.
"""

from __future__ import annotations

import os
import stat  # loaded by os already
import zlib

TYPE_CHECKING = False  # typing itself is not imported: see armor_rx/__init__.py
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

NAME = "tasks.view"
_MAGIC = b"armor-rx tasks view 2"
_HEADER_MAX = 1 << 22  # the header names every segment (~90 bytes each); one longer than this is not ours
# What a log directory may hold for the view to stand (the rest is read only by the full path,
# which warns about it): its own index of verified bytes, and that index's temporary file
# and the sealed segments' task indexes (exactly the names armor_rx.sinks._logfile.unexpected_files does not report).
_LOG_FILES = frozenset({"verified.json"})
_VERIFIED_TMP = (".verified.json.", ".tmp", 32)  # prefix, suffix, length of the lowercase hex between

#: ``name:size:inode:mtime_ns:ctime_ns`` of every segment, in order, joined by ``,``: the log when the view was made.
Key = str
#: The key, and ``name:crc`` of a segment whose stat was taken in the clock tick of its last change (else ``-``).
#: A write in that same tick leaves the times as they were, so such a segment is vouched for by its CRC-32, like
#: the event log's "racily clean" entries (armor_rx/sinks/_verified.py).
Position = tuple[Key, str]


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """The text ``armor-rx tasks`` prints for ``rows`` (:meth:`Registry.to_list` dicts)."""
    if not rows:
        return "no tasks\n"
    lines = [f"{'TASK':<28} {'STATE':<12} {'VERSION':>7}  REASON"]
    lines += [f"{row['task_id']:<28} {row['state']:<12} {row['version']:>7}  {row['reason'] or ''}" for row in rows]
    return "\n".join(lines) + "\n"


def _is_segment(name: str) -> bool:
    digits = name[len("events-"):-len(".jsonl")]
    return (name.startswith("events-") and name.endswith(".jsonl") and len(digits) >= 12
            and digits.isascii() and digits.isdigit())


def _is_index(name: str) -> bool:
    """A sealed segment's task index or its temporary file (armor_rx._eventview.is_index, not imported: see above)."""
    if name.startswith(".") and name.endswith(".tmp"):
        name = name[1:].rpartition(".idx.")[0] + ".idx"
    return name.endswith(".idx") and _is_segment(name[: -len(".idx")] + ".jsonl")


def _is_verified_tmp(name: str) -> bool:
    prefix, suffix, width = _VERIFIED_TMP
    middle = name[len(prefix):-len(suffix)]
    return (name.startswith(prefix) and name.endswith(suffix) and len(middle) == width
            and all(c in "0123456789abcdef" for c in middle))


def log_end(events: str | os.PathLike[str]) -> Key | None:
    """The state of the log in ``events`` (see :data:`Key`), or None if a full read could have anything to say about it.

    The owner (:meth:`EventLog.end_position <armor_rx.sinks.eventlog.EventLog.end_position>`)
    and the reader both ask this function, so they cannot disagree about what counts.
    """
    try:
        names = os.listdir(events)
    except OSError:
        return None
    segments = []
    for name in names:
        if _is_segment(name):
            segments.append((int(name[7:-6]), name))
        elif name not in _LOG_FILES and not _is_verified_tmp(name) and not _is_index(name):
            return None  # quarantine, a foreign file ...: the full path reports it
    if not segments:
        return None
    parts = []
    for _, name in sorted(segments):
        try:
            st = os.stat(os.path.join(events, name))
        except OSError:
            return None
        parts.append(f"{name}:{st.st_size}:{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}")
    return ",".join(parts)


def changed_since(key: Key, since_ns: int) -> list[str]:
    """The segments in ``key`` whose mtime or ctime is at or after ``since_ns``."""
    names = []
    for part in key.split(","):
        name, _size, _inode, mtime, ctime = part.split(":")
        if max(int(mtime), int(ctime)) >= since_ns:
            names.append(name)
    return names


def _crc_of(path: str) -> int | None:
    crc = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                crc = zlib.crc32(chunk, crc)
    except OSError:
        return None
    return crc


def encode(rows: Sequence[dict[str, Any]], seq: int, position: Position, json: bytes) -> bytes:
    """The view's bytes: a header naming the log's state, then the table text, then the JSON line."""
    table = render_table(rows).encode()
    body = table + json
    key, check = position
    header = b"%s %d %08x %d %d %s %s\n" % (_MAGIC, seq, zlib.crc32(body), len(table), len(body), check.encode(), key.encode())
    return header + body


def write(state_dir: str | os.PathLike[str], data: bytes) -> None:
    """Replace the view with ``data`` (from :func:`encode`); a cache, so no fsync (a torn one fails its CRC).

    One writer at a time (the state directory's owner, which serializes its calls). The temporary
    name is fixed, so an owner killed mid-write leaves one file the next write replaces, not one per pid.
    """
    path = os.path.join(state_dir, NAME)
    tmp = f"{path}.tmp"
    try:
        os.unlink(tmp)  # a leftover, whatever it is (a FIFO would block the open, a symlink redirect the write)
    except FileNotFoundError:
        pass
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644), "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def discard(state_dir: str | os.PathLike[str]) -> None:
    """Remove the view (the log is in a state a read must warn about)."""
    try:
        os.unlink(os.path.join(state_dir, NAME))
    except FileNotFoundError:
        pass


def read(state_dir: str) -> tuple[bytes, bytes] | None:
    """``(table text, JSON line)`` if the view describes the log as it is now, else None."""
    # Only a regular file of exactly the size its header states is read: a damaged view may be
    # gigabytes, a FIFO or /dev/zero, and a cache that is wrong must cost nothing.
    try:
        fd = os.open(os.path.join(state_dir, NAME), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            header = f.readline(_HEADER_MAX).rstrip(b"\n")
            fields = header.split(b" ")
            if len(fields) != 10 or b" ".join(fields[:4]) != _MAGIC:
                return None
            crc, cut, length = int(fields[5], 16), int(fields[6]), int(fields[7])
            check, key = fields[8].decode(), fields[9].decode()
            racy_name, _, racy_crc = check.partition(":")
            racy = None if check == "-" else (racy_name, int(racy_crc, 16))
            if st.st_size != len(header) + 1 + length:
                return None
            body = f.read(length)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if zlib.crc32(body) != crc or not 0 <= cut <= len(body):
        return None
    events = os.path.join(state_dir, "events")
    if log_end(events) != key:
        return None
    if racy is not None:
        name, racy_crc32 = racy
        if not _is_segment(name) or f"{name}:" not in key or _crc_of(os.path.join(events, name)) != racy_crc32:
            return None
    return body[:cut], body[cut:]
