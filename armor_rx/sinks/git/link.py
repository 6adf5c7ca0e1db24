"""Checking a task worktree's ``.git`` link before armor does anything there on the host.

A linked worktree's ``.git`` is a one-line file naming its admin directory
(``<repo>/.git/worktrees/<name>``), which names the worktree back (``gitdir``)
and the repository (``commondir``). Whoever rewrites that file decides which
git directory, and so which config, hooks and ``core.fsmonitor`` command, the
next git on the host uses. The container mounts the file read-only, so the
agent cannot change it; :func:`verify_link` checks it anyway, and the admin
directory behind it, before every host-side operation (checkpoint, restore,
completion, resume), in case it was changed by other means.
"""

from __future__ import annotations

import os
import re
import stat as st
from pathlib import Path

from armor_rx.errors import WorktreeLinkChanged

_LINK = re.compile(r"gitdir: (/[^\n]+)\n?")
_MAX_LINK_BYTES = 4096


def _read_small_file(path: Path) -> str:
    """The text of a regular file that is not a symlink and has one link; ValueError otherwise."""
    info = os.lstat(path)
    if not st.S_ISREG(info.st_mode):
        raise ValueError(f"{path.name} is not a regular file")
    if info.st_nlink != 1:
        raise ValueError(f"{path.name} has {info.st_nlink} hard links")
    if info.st_size > _MAX_LINK_BYTES:
        raise ValueError(f"{path.name} is {info.st_size} bytes long")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return os.read(fd, _MAX_LINK_BYTES + 1).decode("utf-8")
    finally:
        os.close(fd)


def _same(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def verify_link(task_id: str, worktree: Path, common_dir: Path) -> Path:
    """The admin directory of ``worktree`` if its link is intact; :class:`WorktreeLinkChanged` if not.

    Intact means: ``<worktree>/.git`` is a regular file owned by this process's
    user, with one link, reading ``gitdir: <common_dir>/worktrees/<name>``; that
    admin directory is a real directory (no symlink) directly under
    ``<common_dir>/worktrees``; its ``gitdir`` names ``<worktree>/.git`` and its
    ``commondir`` leads back to ``common_dir``.
    """
    link = worktree / ".git"

    def changed(why: str) -> WorktreeLinkChanged:
        return WorktreeLinkChanged(task_id, str(worktree), why)

    try:
        if not st.S_ISDIR(os.lstat(worktree).st_mode):
            raise changed("the worktree is not a directory")
        info = os.lstat(link)
        text = _read_small_file(link)
    except FileNotFoundError:
        raise changed(".git is missing") from None
    except (OSError, ValueError) as exc:
        raise changed(f".git cannot be read as armor wrote it: {exc}") from None
    if info.st_uid != os.geteuid():
        raise changed(f".git is owned by uid {info.st_uid}, not by armor's uid {os.geteuid()}")
    match = _LINK.fullmatch(text)
    if match is None:
        raise changed(f".git does not read 'gitdir: <path>' (it reads {text[:80]!r})")
    admin = Path(match.group(1))
    worktrees_dir = common_dir / "worktrees"
    if admin.parent != worktrees_dir or admin.name in ("", ".", ".."):
        raise changed(f".git points at {admin}, not at an admin directory under {worktrees_dir}")
    try:
        if not st.S_ISDIR(os.lstat(admin).st_mode):
            raise changed(f"its admin directory {admin} is not a directory (a symlink?)")
        back = _read_small_file(admin / "gitdir").strip()
        common = _read_small_file(admin / "commondir").strip()
    except FileNotFoundError as exc:
        raise changed(f"its admin directory {admin} lacks {Path(exc.filename or '?').name}") from None
    except (OSError, ValueError) as exc:
        raise changed(f"its admin directory {admin} cannot be read as git wrote it: {exc}") from None
    if not _same(back if os.path.isabs(back) else admin / back, link):
        raise changed(f"its admin directory {admin} names another worktree ({back})")
    if not _same(common if os.path.isabs(common) else admin / common, common_dir):
        raise changed(f"its admin directory {admin} names another repository ({common})")
    return admin
