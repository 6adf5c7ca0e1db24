"""Sharing a worktree between the host user and the task's agent through one group.

The agent runs as its own uid (see :mod:`.identity`), so the files armor
writes into a worktree (the checkout, a restore) must be writable through the
shared group, and what the agent makes must stay readable and removable by
the host user. :func:`share_worktree` makes that so for what armor owns:

* every directory and file armor owns gets the shared group and group
  read/write (directories also the setgid bit, so new entries keep the group);
* every directory armor owns gets a default POSIX ACL ``u::rwx,g::rwx,o::r-x``,
  so what the agent creates in it is group-writable whatever its umask;
* setuid and setgid bits are cleared on regular files (a root armor clears
  them on the agent's files too): a worktree never carries a set-id program
  onto the host;
* a root armor given ``owner`` (the agent's uid) also gives every directory
  below the root to that uid, so git on the host distrusts a bare repository
  the agent plants in one (see :mod:`.adopt`, which does the same for a plain
  user from inside the container).

The walk is iterative, opens each directory with ``O_NOFOLLOW`` relative to its
parent's descriptor and changes entries through descriptors checked to be
what ``lstat`` said: a directory the agent swaps for a symlink meanwhile is
skipped, never followed out of the worktree. Files with more than one link
are left alone (their inode may have a name outside the worktree).
"""

from __future__ import annotations

import errno
import os
import stat as st
import struct
from dataclasses import dataclass, field
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_SETID = st.S_ISUID | st.S_ISGID

# A minimal default ACL in the kernel's xattr format (version 2; tag, perm, id):
# owner rwx, owning group rwx, others r-x. No named entries, so no mask.
_UNDEFINED_ID = 0xFFFFFFFF
DEFAULT_ACL = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, perm, _UNDEFINED_ID) for tag, perm in ((0x01, 7), (0x04, 7), (0x20, 5))
)
_ACL_XATTR = "system.posix_acl_default"


@dataclass
class ShareStats:
    """What one :func:`share_worktree` pass changed and what it could not."""

    changed: int = 0
    setid_cleared: int = 0
    skipped: int = 0  # entries that changed under the walk, or that we may not open
    acl: bool = True  # False when the filesystem refused default ACLs
    notes: list[str] = field(default_factory=list)

    def to_payload(self) -> dict[str, object]:
        return {"changed": self.changed, "setid_cleared": self.setid_cleared, "skipped": self.skipped,
                "acl": self.acl, "notes": list(self.notes)}


class _Dir:
    """An open directory descriptor shared by the children still waiting to be visited."""

    __slots__ = ("fd", "pending")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = 0

    def release(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            os.close(self.fd)


def share_worktree(root: Path, gid: int, *, skip: frozenset[str] = frozenset({".git"}),
                   owner: int | None = None) -> ShareStats:
    """Give ``root``'s tree to the shared group ``gid`` (see the module docstring).

    ``skip`` names top-level entries left as they are (the ``.git`` link is
    armor's, mounted read-only in the container). ``owner``: when this process
    is root, the uid every directory below ``root`` is given to. Raises
    OSError only when ``root`` itself cannot be opened.
    """
    stats = ShareStats()
    me = os.geteuid()
    owner = owner if me == 0 else None
    root_fd = os.open(root, _DIR_FLAGS)
    _share_dir(root_fd, gid, me, stats)
    top = _Dir(root_fd)
    stack: list[tuple[_Dir, str, bool]] = []
    top.pending = 1
    _push_children(top, stack, stats, top_level=True, skip=skip)
    top.release()
    while stack:
        parent, name, is_dir = stack.pop()
        try:
            if is_dir:
                child = _open_dir(parent.fd, name, stats)
                if child is not None:
                    _share_dir(child, gid, me, stats, owner)
                    node = _Dir(child)
                    node.pending = 1
                    _push_children(node, stack, stats, top_level=False, skip=skip)
                    node.release()
            else:
                _share_file(parent.fd, name, gid, me, stats)
        finally:
            parent.release()
    return stats


def _push_children(node: _Dir, stack: list[tuple[_Dir, str, bool]], stats: ShareStats, *, top_level: bool,
                   skip: frozenset[str]) -> None:
    try:
        entries = list(os.scandir(node.fd))
    except OSError:
        stats.skipped += 1
        return
    for entry in entries:
        if top_level and entry.name in skip:
            continue
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError:
            stats.skipped += 1
            continue
        if st.S_ISDIR(mode) or st.S_ISREG(mode):
            node.pending += 1
            stack.append((node, entry.name, st.S_ISDIR(mode)))


def _open_dir(parent: int, name: str, stats: ShareStats) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        # ELOOP/ENOTDIR: swapped for a symlink or a file since it was listed.
        # EMFILE: deeper than this process may hold directories open.
        stats.skipped += 1
        if exc.errno == errno.EMFILE and "too deep" not in " ".join(stats.notes):
            stats.notes.append("some directories are too deep to share (open file limit); they were left as they are")
        return None


def _share_dir(fd: int, gid: int, me: int, stats: ShareStats, owner: int | None = None) -> None:
    info = os.fstat(fd)
    if info.st_uid != me and me != 0:
        return  # the agent's own directory: not ours to change
    changed = False
    if info.st_gid != gid or (owner is not None and info.st_uid != owner):
        os.fchown(fd, -1 if owner is None else owner, gid)
        info = os.fstat(fd)  # a chown may clear set-id bits: compare the mode it left
        changed = True
    want = (st.S_IMODE(info.st_mode) | 0o2070) & ~st.S_ISUID
    if st.S_IMODE(info.st_mode) != want:
        os.fchmod(fd, want)
        changed = True
    if stats.acl:
        try:
            if _get_xattr(fd) != DEFAULT_ACL:
                os.setxattr(fd, _ACL_XATTR, DEFAULT_ACL)
                changed = True
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL):
                stats.acl = False
                stats.notes.append("the filesystem has no POSIX ACLs: what the agent creates follows its umask")
            else:
                stats.skipped += 1
    stats.changed += changed


def _get_xattr(fd: int) -> bytes | None:
    try:
        return os.getxattr(fd, _ACL_XATTR)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        raise


def _share_file(parent: int, name: str, gid: int, me: int, stats: ShareStats) -> None:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=parent)
    except OSError:
        stats.skipped += 1
        return
    try:
        info = os.fstat(fd)
        if not st.S_ISREG(info.st_mode) or info.st_nlink > 1:
            stats.skipped += info.st_nlink > 1
            return
        mode = st.S_IMODE(info.st_mode)
        if info.st_uid != me and me != 0:
            return
        want = mode & ~_SETID
        if info.st_uid == me:
            want |= 0o060 | (0o010 if mode & 0o100 else 0)
        if info.st_gid != gid and info.st_uid == me:
            os.fchown(fd, -1, gid)
            stats.changed += 1
        if want != mode:
            os.fchmod(fd, want)
            stats.changed += 1
            stats.setid_cleared += bool(mode & _SETID)
    finally:
        os.close(fd)
