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
import uuid
from pathlib import Path
from typing import Literal

Why = Literal["damaged", "torn"]


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
    tmp = directory / f".{target.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target, True


def damaged_copies(directory: Path) -> list[Path]:
    """The copies of damage that is still in the log (readers skip it), oldest segment first."""
    try:
        return sorted(p for p in directory.iterdir() if p.name.endswith(".damaged"))
    except (FileNotFoundError, NotADirectoryError):
        return []
