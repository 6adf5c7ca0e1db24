"""Undoing what a writer killed mid-way left behind: stale locks, a cut-short checkout.

Git and dulwich hold a lock file open from its creation until they rename it
into place, so a lock that no process has open was left by a writer that died
(a ``kill -9`` during worktree creation, a checkpoint or a completion). Left
there, it makes every later write of that file fail — a resumed task could
not complete. These functions find such leftovers for one task and clear them.
"""

from __future__ import annotations

import os
import stat as st
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dulwich.repo import Repo

from armor_rx.sinks.git import worktrees
from armor_rx.sinks.git.reserved import Reserved

__all__ = ["STALE_LOCK_AGE", "recover_stale_lock", "recover_task"]

Emit = Callable[[str, "str | None", Mapping[str, Any]], object]


def recover_stale_lock(target: Path) -> bool:
    """Remove ``<target>.lock`` if no live process holds it open; return whether one was removed.

    Git and dulwich keep a lock file open from its creation until they
    rename it into place, so one that no process has open was left by a
    writer that died (a kill during worktree creation, completion or a
    checkpoint). Where open files cannot be listed (no ``/proc``) only a lock
    older than :data:`STALE_LOCK_AGE` counts as stale.
    """
    lock = Path(f"{target}.lock")
    try:
        info = lock.lstat()
    except FileNotFoundError:
        return False
    if not st.S_ISREG(info.st_mode):
        return False
    held = _held_open(lock, info)
    if held is None:
        held = time.time() - info.st_mtime < STALE_LOCK_AGE
    if held:
        return False
    try:
        lock.unlink()
    except FileNotFoundError:
        return False
    return True


#: Where open files cannot be listed, a lock is taken as stale only after this many seconds.
STALE_LOCK_AGE = 600.0


def _held_open(lock: Path, info: os.stat_result) -> bool | None:
    """Whether any process has ``lock`` open (None if that cannot be known here)."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    want = (info.st_dev, info.st_ino)
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        fd_dir = proc / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            try:
                target = os.stat(fd_dir / fd)
            except OSError:
                continue
            if (target.st_dev, target.st_ino) == want:
                return True
    return False


def recover_task(
    repo: Repo, task_id: str, branch: str, ref: str, worktree: Path, admin: Path | None, reserved: Reserved,
    emit: Emit, *, finish_checkout: bool = False,
) -> list[str]:
    """Clear the leftovers of one task; return the lock files removed.

    Locks no live process holds on the task's branch ref, on ``ref`` (its
    checkpoint ref) and on its worktree's index (in ``admin``, its admin
    directory) are removed, each reported as ``git.lock.recovered``. With
    ``finish_checkout``, a worktree without an index (its checkout was cut
    short, so the agent never had it) is checked out again
    (``git.worktree.recovered``). The caller holds the task's lock, so no
    other armor process is writing these files.
    """
    common = Path(repo.commondir())
    targets = [common / "refs" / "heads" / branch, common / ref]
    if admin is not None:
        targets.append(admin / "index")
    removed = []
    for target in targets:
        if recover_stale_lock(target):
            removed.append(f"{target}.lock")
            emit("git.lock.recovered", task_id, {"path": f"{target}.lock", "reason": "no live holder"})
    if finish_checkout and admin is not None and not (admin / "index").exists():
        files = worktrees.checkout(repo, worktree, admin, reserved)
        emit("git.worktree.recovered", task_id,
             {"path": str(worktree), "files": files, "reason": "its checkout was cut short"})
    return removed
