"""The tasks view: ``armor-rx tasks`` answered from one small file while the log has not moved.

Listing tasks means folding the log into a registry, and even from a current
snapshot that costs the package's imports and the snapshot's parse, several
times Python's own start-up. The session's owner already knows the answer
whenever it writes a snapshot, so it also writes ``tasks.view``: the rendered
table and JSON, and the exact end of the event log they describe (last
segment, size, mtime, inode). The CLI's fast path (:mod:`armor_rx._quick`)
prints the view only if the log's end is still exactly that and the log
directory holds nothing a full read would warn about (damage in quarantine,
foreign files); anything else, including a damaged or stale view, sends the
verb down the full path, which is always right. The view is a cache, never a
source of truth, so it is written without fsync: a torn one fails its CRC.

Standard library only on the read side: importing the package's floors would
cost more than the whole answer.
"""

from __future__ import annotations

import os
import zlib

TYPE_CHECKING = False  # typing itself is not imported: see armor_rx/__init__.py
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

NAME = "tasks.view"
_MAGIC = b"armor-rx tasks view 1"
# What a log directory may hold for the view to stand (the rest is read only by the full path,
# which warns about it): its own index of verified bytes, and that index's temporary file
# (and the task indexes, see _is_index).
_LOG_FILES = frozenset({"verified.json"})

#: (segment name, size, mtime_ns, inode): where the log ended when the view was made.
Position = tuple[str, int, int, int]


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


def _log_end(events: str) -> Position | None:
    """Where the log in ``events`` ends, or None if a full read could have anything to say about it."""
    try:
        names = os.listdir(events)
    except OSError:
        return None
    last = None
    for name in names:
        if _is_segment(name):
            if last is None or int(name[7:-6]) > int(last[7:-6]):
                last = name
        elif name not in _LOG_FILES and not (name.startswith(".verified.json.") and name.endswith(".tmp")) and not _is_index(name):
            return None  # quarantine, a foreign file ...: the full path reports it
    if last is None:
        return None
    try:
        st = os.stat(os.path.join(events, last))
    except OSError:
        return None
    return (last, st.st_size, st.st_mtime_ns, st.st_ino)


def encode(rows: Sequence[dict[str, Any]], seq: int, position: Position, json: bytes) -> bytes:
    """The view's bytes: a header naming the log's end, then the table text, then the JSON line."""
    table = render_table(rows).encode()
    body = table + json
    name, size, mtime_ns, inode = position
    header = b"%s %d %s %d %d %d %08x %d\n" % (_MAGIC, seq, name.encode(), size, mtime_ns, inode, zlib.crc32(body), len(table))
    return header + body


def write(state_dir: str | os.PathLike[str], data: bytes) -> None:
    """Replace the view with ``data`` (from :func:`encode`); a cache, so no fsync (a torn one fails its CRC)."""
    path = os.path.join(state_dir, NAME)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
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
    try:
        with open(os.path.join(state_dir, NAME), "rb") as f:
            data = f.read()
    except OSError:
        return None
    header, _, body = data.partition(b"\n")
    fields = header.split(b" ")
    if len(fields) != 11 or b" ".join(fields[:4]) != _MAGIC:
        return None
    try:
        size, mtime_ns, inode, crc, cut = int(fields[6]), int(fields[7]), int(fields[8]), int(fields[9], 16), int(fields[10])
        name = fields[5].decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if zlib.crc32(body) != crc or not 0 <= cut <= len(body):
        return None
    if _log_end(os.path.join(state_dir, "events")) != (name, size, mtime_ns, inode):
        return None
    return body[:cut], body[cut:]
