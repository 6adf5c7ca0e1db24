"""The writer's side of the per-task indexes of sealed segments (``events-N.idx``).

Finding one task's events in a sealed 64 MB segment means searching all of
it; an index of where each task's lines start lets a reader read only those
lines (:mod:`armor_rx._eventview` for the CLI, :meth:`EventLog.read` with a
task). A segment never changes once sealed, so its index is built once, from
the file, off the append path: by a background thread after a seal, and at
start for sealed segments that have none (logs written before indexes
existed). Each index is keyed to the size and CRC-32 of the bytes it
describes, so it can never be applied to other bytes, and each of its parts
is checksummed, so readers ignore a damaged one. It is written to a
temporary file, fsynced (off the append path) and renamed, so a crash leaves
it whole or absent (and a temporary file, removed at the next start); a
missing or damaged one is built again when a writer starts.
"""

from __future__ import annotations

import os
import threading
from array import array
import uuid
import zlib
from pathlib import Path

from armor_rx._eventview import encode_index, index_name, index_offsets, is_index, valid_task_id

__all__ = ["IndexBuilder", "build", "index_sealed", "offsets", "path_of"]


def path_of(segment: Path) -> Path:
    return segment.with_name(index_name(segment.name))


def build(segment: Path) -> bool:
    """Index ``segment`` as it is now; False (and no index) if it holds anything but whole lines.

    Read a megabyte at a time, with each task's offsets in a flat array: a
    writer under a flood seals a 64 MB segment every few seconds, and reading
    it whole (with a tuple per line) grew the service by about 90 MB per seal.
    """
    tasks: dict[str, array[int]] = {}
    key = b',"task_id":'
    crc = base = 0
    carry = b""
    try:
        with open(segment, "rb") as f:
            while chunk := f.read(1 << 20):
                crc = zlib.crc32(chunk, crc)
                data = carry + chunk
                whole = data.rfind(b"\n") + 1
                find, at = data.find, 0
                while at < whole:
                    end = find(b"\n", at) + 1
                    # The first task_id key of a line is the event's own: before it come only seq, id and kind,
                    # strings with their quotes escaped, so a payload's task_id can never come first.
                    hit = find(key, at, end)
                    if hit >= 0 and data[hit + len(key) : hit + len(key) + 1] == b'"':
                        start = hit + len(key) + 1
                        stop = find(b'"', start, end)
                        task = data[start:stop].decode("utf-8", "replace") if stop > 0 else ""
                        if valid_task_id(task):  # only such ids are ever looked up, and they cannot break the format
                            tasks.setdefault(task, array("q")).extend((base + at, end - at))
                    at = end
                carry = data[whole:]
                base += whole
    except OSError:
        return False
    if carry:
        return False  # torn: not a sealed segment after all
    size = base
    encoded = encode_index(size, crc, {task: zip(flat[0::2], flat[1::2]) for task, flat in tasks.items()})
    target = path_of(segment)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(encoded)
            os.fsync(f.fileno())  # whole or absent after a crash, so a writer's start needs to check only its header
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)  # only speed is lost
        return False
    return True


def offsets(segment: Path, size: int, crc: int, task_id: str) -> list[tuple[int, int]] | None:
    """``(offset, length)`` of ``task_id``'s lines in ``segment``, if its index describes exactly ``size`` bytes of CRC ``crc``."""
    if not valid_task_id(task_id):
        return None
    return index_offsets(str(path_of(segment)), size, crc, task_id)


def current(segment: Path, size: int, crc: int) -> bool:
    """``segment`` has an index for exactly these bytes, every part of it intact."""
    if index_offsets(str(path_of(segment)), size, crc, "-") is None:  # the header and directory check out
        return False
    try:
        data = path_of(segment).read_bytes()
        header, _, rest = data.partition(b"\n")
        length = int(header.split()[6])
        listing, records = rest[:length], rest[length:]
        end = 0
        for line in listing.splitlines():
            _task, start, count, check = line.split(b" ")
            record = records[int(start) : int(start) + int(count)]
            if len(record) != int(count) or zlib.crc32(record) != int(check, 16):
                return False
            end = max(end, int(start) + int(count))
        return end == len(records)
    except (OSError, ValueError, IndexError):
        return False


def clean_temporaries(directory: Path) -> None:
    """Remove the temporary files of index writes a crash cut short."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(".") and name.endswith(".tmp") and is_index(name):
            try:
                os.unlink(directory / name)
            except OSError:
                pass


def index_sealed(directory: Path) -> int:
    """Index every sealed segment of the log in ``directory`` the writer verified clean and that has no
    current index, now (a writer does it in the background at start); returns how many were built."""
    from armor_rx.sinks import _verified
    from armor_rx.sinks._logfile import list_segments

    known = _verified.load(directory)
    built = 0
    for _, segment in list_segments(directory)[:-1]:
        entry = known.get(segment.name)
        if entry is not None and entry.clean and not current(segment, entry.size, entry.crc):
            built += build(segment)
    return built


class IndexBuilder:
    """Builds the indexes of sealed segments one after another in a daemon thread, off the append path."""

    def __init__(self) -> None:
        self._queue: list[tuple[Path, int, int]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, segments: list[tuple[Path, int, int]]) -> None:
        """Index these ``(segment, size, crc)`` unless one whose header and directory describe exactly those
        bytes is there already (checked here, cheaply: an index is fsynced before it is renamed into place,
        so one that was ever whole stays whole)."""
        segments = [item for item in segments if index_offsets(str(path_of(item[0])), item[1], item[2], "-") is None]
        if not segments:
            return
        with self._lock:
            if self._closed:
                return
            self._queue.extend(segments)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="armor-eventlog-index", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = None
                    return
                segment, _size, _crc = self._queue.pop(0)
            build(segment)

    def close(self) -> None:
        """Index what is queued, then stop: a segment sealed in this run (or found unindexed at its start)
        costs one read of it, and a log is left with every sealed segment indexed."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join()
