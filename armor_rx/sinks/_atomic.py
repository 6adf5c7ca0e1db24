"""Replacing a small file whole: a reader, or a crash, sees the old file or the new one, never part of either.

Snapshots, quarantine copies, plan files, request results, quotas, the
conflicts file and the other small state files are all written the same
way: the bytes go to a new temporary file beside the target (created with
``O_EXCL``, so two writers never share one), optionally fsynced, renamed over
the target, and the directory fsynced so the rename itself survives a power
cut. Writing that once keeps the order of those steps, and the clean-up of
the temporary file when one fails, the same everywhere.

It lives in ``sinks/`` because every caller does: writing files is a sink's
job (operators do no I/O, and the plan-file hook writes through
:mod:`armor_rx.sinks.plans`). The event log's own files (``eventlog.py``,
``_verified.py``, ``_logfile.py``) and git's object and worktree writes
(``git/blobs.py``, ``git/beneath.py``) keep their own code: they stream,
link or restore, which is not replacing a small file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace the file at ``path`` with ``data``, whole; its directory must exist.

    ``mode`` is the new file's permission bits, less the umask (as for
    ``open(2)``); it is the new file's mode whatever the old one had.
    ``durable`` fsyncs the data before the rename and the directory after it,
    so once this returns the new contents survive a crash or power cut;
    without it a crash may leave the old file (never a torn one on the
    filesystems Linux ships, which order a rename after the data it names).

    Raises ``OSError``. When it does, the old file (or its absence) is as it
    was, unless only the final directory fsync failed (the new file is then in
    place but may not survive a crash), and no temporary file is left. A
    process killed in the middle leaves the old file whole and, at most, a
    ``.<name>.<hex>.tmp`` beside it that no reader takes for the file.
    """
    target = Path(path)
    dir_fd = os.open(target.parent, _DIR_FLAGS)
    try:
        write_atomic_in(dir_fd, target.name, data, mode=mode, durable=durable)
    finally:
        os.close(dir_fd)


def write_atomic_in(
    dir_fd: int,
    name: str,
    data: bytes,
    *,
    mode: int = 0o644,
    durable: bool = True,
    temp_prefix: str = ".",
) -> None:
    """:func:`write_atomic` for ``name`` in the directory open as ``dir_fd``.

    For a directory reached without following symlinks (a task's worktree,
    which belongs to the agent): the temporary file is created without
    following a symlink, and the rename replaces whatever stands at ``name``
    (a symlink too) without writing through it. ``temp_prefix`` starts the
    temporary file's name (the worktree scan skips armor's own prefix). A
    directory standing at ``name`` raises ``IsADirectoryError``.
    """
    tmp = f"{temp_prefix}{name}.{uuid.uuid4().hex}.tmp"
    # 128 random bits: a name taken already (FileExistsError) means something planted it; it is left alone.
    fd = os.open(tmp, _NEW_FILE, mode, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    if durable:
        # The rename is durable only once the directory entry is.
        os.fsync(dir_fd)
