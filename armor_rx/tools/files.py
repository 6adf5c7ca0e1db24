"""Reading and changing files of a task's worktree from the host, never outside it.

The agent's container writes the same worktree, so anything in it may be
hostile: a command can plant a symlink to ``/etc`` or swap a directory for one
between two calls. Every path is therefore checked as text and resolved with
the project's own rules (:func:`armor_rx.sinks.git.paths.resolve_inside`:
no ``..``, no absolute paths, nothing in ``.git``, no symlink that lands
outside), and every change is then made through directory descriptors
opened one component at a time without following symlinks
(:class:`armor_rx.sinks.git.beneath.Beneath`), so a symlink swapped in after
the check makes the call fail rather than write outside. Writes go to a
temporary file renamed into place: a hard link planted by a command keeps
its old content.

Files made here get the worktree's owner when this process runs as root (as
the docker sink hands a root-owned worktree to the container's user), so
the container can keep editing what the agent wrote.
"""

from __future__ import annotations

import os
import stat as st
from dataclasses import dataclass
from pathlib import Path

from armor_rx.errors import ArmorError, PathEscape
from armor_rx.sinks.git.beneath import TEMP_PREFIX, Beneath
from armor_rx.sinks.git.paths import check_relative_path, resolve_inside

#: Largest file ``read`` loads (a bigger one is refused, with its size).
MAX_READ_BYTES = 8 * 1024 * 1024
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class ToolInputError(ArmorError, ValueError):
    """A tool was asked for something that is not there or not unique (a missing file, an ambiguous edit)."""


@dataclass(frozen=True)
class Entry:
    """One listed path: ``kind`` is ``file``, ``dir``, ``symlink`` or ``other``."""

    path: str
    kind: str
    size: int


def _existing(beneath: Beneath, parent: str, path: str) -> int | None:
    """A descriptor for ``path``'s existing parent directory, or None when that is missing or not a directory."""
    try:
        return beneath.existing_directory(parent, path)
    except PathEscape:
        raise PathEscape(f"refused {path!r}: a directory on its way was swapped for a symlink meanwhile") from None
    except ArmorError:
        return None  # a file where a directory would be: there is no such path


def _tree_order(entries: list[Entry]) -> list[Entry]:
    """Each directory followed by what is in it (read breadth-first, so a cut listing keeps the shallow entries)."""
    return sorted(entries, key=lambda e: e.path.split("/"))


class WorktreeFiles:
    """File operations beneath one worktree ``root``; every method raises :class:`PathEscape` for a path outside it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise ToolInputError(f"the task's worktree {self.root} is not a directory (was the task started?)")

    # -- resolving --------------------------------------------------------------
    def relative(self, path: str) -> str:
        """``path`` resolved inside the worktree (symlinks followed, checked), as a relative path ('' is the root)."""
        if path in ("", "."):
            return ""
        real = resolve_inside(self.root, path)
        return real.relative_to(self.root).as_posix() if real != self.root else ""

    def _parent_and_name(self, path: str) -> tuple[str, str]:
        """The resolved parent directory of ``path`` and its last component, which is not followed."""
        parts = check_relative_path(path)
        if not parts:
            raise PathEscape(f"refused path {path!r}: it names the worktree itself, not a file in it")
        parent = self.relative("/".join(parts[:-1])) if len(parts) > 1 else ""
        return parent, parts[-1]

    # -- reading ----------------------------------------------------------------
    def read(self, path: str) -> bytes:
        """The bytes of the regular file at ``path`` (symlinks inside the worktree followed)."""
        rel = self.relative(path)
        parent, _, name = rel.rpartition("/")
        with Beneath(self.root, {}) as beneath:
            pfd = _existing(beneath, parent, path) if name else None
            if pfd is None:
                raise ToolInputError(f"no file {path!r} in the task's worktree (file_list shows what is there)")
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=pfd)
            except FileNotFoundError:
                raise ToolInputError(
                    f"no file {path!r} in the task's worktree (file_list shows what is there)"
                ) from None
            except OSError as exc:
                raise PathEscape(
                    f"refused to read {path!r}: {exc.strerror} (a symlink swapped in while reading?)"
                ) from None
            try:
                info = os.fstat(fd)
                if st.S_ISDIR(info.st_mode):
                    raise ToolInputError(f"{path!r} is a directory; file_list lists it")
                if not st.S_ISREG(info.st_mode):
                    raise ToolInputError(f"{path!r} is not a regular file")
                if info.st_size > MAX_READ_BYTES:
                    raise ToolInputError(
                        f"{path!r} is {info.st_size} bytes, more than file_read loads ({MAX_READ_BYTES}); "
                        "read a part of it with a command (head, sed -n) instead"
                    )
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                os.close(fd)

    def list(self, path: str = "", *, recursive: bool = False, limit: int = 1000) -> tuple[list[Entry], bool]:
        """Entries under directory ``path`` (``.git`` and armor's temp files left out); and whether ``limit`` cut them.

        Directories are read through descriptors opened without following
        symlinks, so one swapped in meanwhile is skipped, never listed through.
        """
        rel = self.relative(path)
        out: list[Entry] = []
        todo = [rel]
        with Beneath(self.root, {}) as beneath:
            while todo:
                current = todo.pop(0)
                try:
                    fd = beneath.existing_directory(current, path)
                    if fd is None:
                        raise FileNotFoundError(current)
                    with os.scandir(fd) as found:
                        entries = sorted(((e.name, e.stat(follow_symlinks=False)) for e in found), key=lambda e: e[0])
                except (OSError, ArmorError):
                    if current == rel:
                        raise ToolInputError(f"no directory {path!r} in the task's worktree") from None
                    continue  # removed, made unreadable or swapped for a symlink by a command meanwhile
                for name, info in entries:
                    if name == ".git" or name.startswith(TEMP_PREFIX):
                        continue
                    kind = (
                        "dir"
                        if st.S_ISDIR(info.st_mode)
                        else "file"
                        if st.S_ISREG(info.st_mode)
                        else "symlink"
                        if st.S_ISLNK(info.st_mode)
                        else "other"
                    )
                    if len(out) >= limit:
                        return _tree_order(out), True
                    child = f"{current}/{name}" if current else name
                    out.append(Entry(child, kind, info.st_size if kind == "file" else 0))
                    if recursive and kind == "dir":
                        todo.append(child)
        return _tree_order(out), False

    # -- changing ---------------------------------------------------------------
    def write(self, path: str, data: bytes) -> bool:
        """Write ``data`` to ``path`` (parents made); True if the file was new. Its mode is kept when it existed."""
        # A symlink to a file inside the worktree writes that file, as an editor does.
        target = self.relative(path)
        if not target:
            raise PathEscape(f"refused path {path!r}: it names the worktree itself, not a file in it")
        parent, _, name = target.rpartition("/")
        owner = self._owner()
        with Beneath(self.root, {}) as beneath:
            pfd = self._make_parents(beneath, parent, path, owner)
            try:
                info: os.stat_result | None = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                info = None
            if info is not None and st.S_ISDIR(info.st_mode):
                raise ToolInputError(f"{path!r} is a directory; give a file's path")
            if info is not None and not st.S_ISREG(info.st_mode):
                raise PathEscape(f"refused to write {path!r}: it became a symlink or special file while writing")
            perms = st.S_IMODE(info.st_mode) if info is not None else 0o644
            try:
                beneath.write_file(pfd, parent, name, iter((data,)), perms)
            except (PathEscape, ArmorError) as exc:
                raise PathEscape(f"refused to write {path!r}: {exc}") from None
            if owner is not None:
                os.chown(name, *owner, dir_fd=pfd, follow_symlinks=False)
        return info is None

    def delete(self, path: str) -> str:
        """Delete the file, symlink or empty directory at ``path``; returns which it was.

        A symlink is removed itself, never what it points at.
        """
        parent, name = self._parent_and_name(path)
        with Beneath(self.root, {}) as beneath:
            pfd = _existing(beneath, parent, path)
            if pfd is None:
                raise ToolInputError(f"no file {path!r} in the task's worktree")
            try:
                info = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                raise ToolInputError(f"no file {path!r} in the task's worktree") from None
            if st.S_ISDIR(info.st_mode):
                try:
                    os.rmdir(name, dir_fd=pfd)
                except OSError:
                    raise ToolInputError(
                        f"directory {path!r} is not empty; delete its files first (or run_command 'rm -r {path}')"
                    ) from None
                return "dir"
            os.unlink(name, dir_fd=pfd)
            return "symlink" if st.S_ISLNK(info.st_mode) else "file"

    def _owner(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        info = self.root.stat()
        return None if info.st_uid == 0 else (info.st_uid, info.st_gid)

    def _make_parents(self, beneath: Beneath, parent: str, path: str, owner: tuple[int, int] | None) -> int:
        """A descriptor for directory ``parent``, made (with ``owner``) where missing."""
        made = []
        try:
            probe = parent
            while probe and beneath.existing_directory(probe, path) is None:
                made.append(probe)
                probe = probe.rpartition("/")[0]
            fd = beneath.directory(parent, path)
            if owner is not None:
                for rel in made:
                    up, _, name = rel.rpartition("/")
                    os.chown(name, *owner, dir_fd=beneath.directory(up, path), follow_symlinks=False)
        except ArmorError:
            raise ToolInputError(
                f"cannot write {path!r}: a component of its directory is a file, or a symlink a "
                "command swapped in meanwhile; file_list shows what is there"
            ) from None
        return fd
