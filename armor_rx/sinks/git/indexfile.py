"""A worktree's index, written by armor from what it checked out or committed.

The index lives in the worktree's admin directory under the user's ``.git``
and is found from there, never through the worktree's own ``.git`` file:
that file is the agent's to rewrite, and following it would let the agent
choose where armor writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dulwich.index import Index, IndexEntry
from dulwich.objects import ObjectID

from armor_rx.sinks.git.statcache import CacheEntry
from armor_rx.sinks.git.recovery import recover_stale_lock

__all__ = ["index_entry", "write_index"]


def index_entry(mode: int, sha: bytes, stat: CacheEntry | None) -> IndexEntry:
    """The index entry for a file with ``stat`` (a stat-cache entry); zeros without one, which git re-reads."""
    if stat is None:
        return IndexEntry((0, 0), (0, 0), 0, 0, mode, 0, 0, 0, ObjectID(sha))
    mtime_ns, ctime_ns, size, ino, dev, uid, gid = (int(v) for v in stat[:7])  # type: ignore[call-overload]
    return IndexEntry(
        (ctime_ns // 10**9, ctime_ns % 10**9),
        (mtime_ns // 10**9, mtime_ns % 10**9),
        dev & 0xFFFFFFFF,
        ino & 0xFFFFFFFF,
        mode,
        uid,
        gid,
        size & 0xFFFFFFFF,
        ObjectID(sha),
    )


def write_index(admin: Path, files: Mapping[str, tuple[int, bytes]], stats: Mapping[str, CacheEntry]) -> None:
    """Write ``<admin>/index`` listing ``files`` (``{path: (mode, hex sha)}``).

    ``stats`` gives the stat entry of each file as it is on disk (so plain
    ``git status`` is clean without re-reading it); a path without one
    (gitlinks, files armor did not write) gets zeros, which git re-reads.
    A lock left by a writer that died is removed first (see
    :func:`~.recovery.recover_stale_lock`); one a live process holds makes
    dulwich raise ``FileLocked``.
    """
    recover_stale_lock(admin / "index")
    index = Index(str(admin / "index"), read=False)
    for path, (mode, sha) in files.items():
        # Names are bytes in git; a name that is not UTF-8 was kept as surrogates.
        index[os.fsencode(path)] = index_entry(mode, sha, stats.get(path))
    index.write()
