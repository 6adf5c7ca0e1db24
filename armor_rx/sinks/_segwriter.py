"""The write side of the event log: the open segment, rotation and fsync.

Used by one thread at a time (the group-commit thread, or an appender holding
the log's lock), so it has no lock of its own. It keeps the CRC-32 of the open
segment as written, so the log can record it as verified without reading it
again (see :mod:`armor_rx.sinks._verified`).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from armor_rx.sinks._logfile import segment_name


class SegmentWriter:
    """Appends byte lines to the current segment, starting a new one past ``segment_bytes``.

    ``fsync`` is False for the ``none`` policy: then nothing here calls fsync.
    Any ``OSError`` propagates; the caller decides what it means for the log.
    ``crc`` is the CRC-32 of the open segment's bytes (None once unknown, after
    a failed write); ``on_seal(path, size, crc, next_first)`` is called when a
    segment is full, before the next one is made.
    """

    def __init__(self, directory: Path, segment_bytes: int, fsync: bool) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.path = directory
        self.size = 0
        self.fsyncs = 0
        self.bytes = 0
        self.crc: int | None = 0
        self.on_seal: Callable[[Path, int, int | None, int], None] | None = None
        self._fd = -1

    def open(self, path: Path, size: int, crc: int | None = None) -> None:
        """Continue appending to an existing, already verified segment of ``size`` bytes whose CRC-32 is ``crc``."""
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.path, self.size, self.crc = path, size, crc

    def create(self, first_seq: int) -> None:
        """Start a new segment for events from ``first_seq`` on."""
        path = self.directory / segment_name(first_seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self.path, self.size = path, os.fstat(self._fd).st_size
        self.crc = 0 if self.size == 0 else None
        if self.fsync:
            # The new name must survive a crash as surely as the lines in it.
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def write(self, seqs: Sequence[int], lines: Sequence[bytes]) -> None:
        """Write ``lines`` (``seqs[i]`` is the seq of ``lines[i]``) and fsync once.

        A new segment starts before the first line that would begin at or past
        ``segment_bytes``; the old one is fsynced first.
        """
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        path, size = self.path, self.size
        try:
            if self.size + len(data) - len(lines[-1]) < self.segment_bytes:
                self._write_all(data)  # every group starts below the limit: no rotation
            else:
                self._write_rotating(seqs, lines)
            if self.fsync:
                os.fsync(self._fd)
                self.fsyncs += 1
        except OSError:
            if self.path == path:
                # Best effort: unacknowledged bytes should not come back after
                # a restart; if this fails too, recovery cuts the torn tail.
                self.crc = None  # what is on disk now is not known for sure
                try:
                    os.ftruncate(self._fd, size)
                    self.size = size
                except OSError:
                    pass
            raise

    def _write_rotating(self, seqs: Sequence[int], lines: Sequence[bytes]) -> None:
        chunk: list[bytes] = []
        chunk_bytes = 0
        for first, line in zip(seqs, lines):
            if self.size + chunk_bytes >= self.segment_bytes:
                if chunk:
                    self._write_all(b"".join(chunk))
                    chunk, chunk_bytes = [], 0
                self._rotate(first)
            chunk.append(line)
            chunk_bytes += len(line)
        self._write_all(b"".join(chunk))

    def close(self, *, sync: bool = True) -> None:
        if self._fd >= 0:
            try:
                if self.fsync and sync:
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.crc is not None:
            self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self.bytes += len(data)

    def _rotate(self, first_seq: int) -> None:
        # The old segment is durable before the new one exists, so a crash can
        # leave a torn tail only in the last segment.
        if self.fsync:
            os.fsync(self._fd)
            self.fsyncs += 1
        os.close(self._fd)
        self._fd = -1
        if self.on_seal is not None:
            self.on_seal(self.path, self.size, self.crc, first_seq)
        self.create(first_seq)
