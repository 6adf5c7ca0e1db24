"""Changing files beneath a worktree root without ever following a symlink out of it.

The worktree belongs to a task whose processes may still run while armor_rx
rewrites it, so every change is made through directory file descriptors
opened one component at a time with ``O_NOFOLLOW``. A directory swapped for
a symlink in the middle makes the operation fail; it never makes it write,
chmod or delete anything outside the worktree.
"""

from __future__ import annotations

import os
import stat as st
from collections.abc import Iterator
from pathlib import Path

from armor_rx.errors import GitError, PathEscape
from armor_rx.sinks.git.paths import means_dot_git
from armor_rx.sinks.git.trees import Files

GITLINK = 0o160000
#: Temp files are made under this prefix and renamed into place; the scan
#: leaves any that a crash left behind out of checkpoints.
TEMP_PREFIX = ".armor-tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Open directory descriptors kept at once; the rest are reopened on demand
#: (paths come sorted, so the ones in use are the recent ones).
_MAX_OPEN_DIRS = 128


def refused_name(name: str) -> bool:
    """Whether ``name`` cannot be written: empty, ``.``, ``..`` or a spelling of ``.git``."""
    if name in ("", ".", ".."):
        return True
    if name.isascii() and "git" not in name.lower():
        return False  # the common case, and no such name can mean '.git' anywhere
    return means_dot_git(name)


def check_name(name: str, path: str) -> None:
    if refused_name(name):
        raise PathEscape(
            f"refused to restore {path!r}: its component {name!r} is empty, '.', '..' or means '.git'; "
            "such a tree was not made by a scan of a worktree, so restore a different checkpoint"
        )


def chmod_regular_file(pfd: int, name: str, perms: int) -> bool:
    """Set the permissions of ``name`` in ``pfd`` if it is a regular file we can open; else False.

    The mode is set on a descriptor opened without following symlinks (Linux
    has no chmod that refuses to follow one), after checking what it is. A
    file with other hard links is left for the caller to rewrite: the mode
    belongs to the inode, which may have a name outside the worktree too.
    """
    try:
        if not st.S_ISREG(os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode):
            return False
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=pfd)
    except OSError:
        return False  # gone, unreadable or swapped: rewriting it does the job
    try:
        info = os.fstat(fd)
        if not st.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return False
        os.fchmod(fd, perms)
    finally:
        os.close(fd)
    return True


#: Directory descriptors a walk holds along its path; deeper ones are closed and reopened when needed.
_WALK_WINDOW = 64


class _Level:
    __slots__ = ("rel", "name", "fd", "ident", "dirs", "files")

    def __init__(self, rel: str, name: str, fd: int, dirs: list[str], files: list[str]) -> None:
        self.rel, self.name, self.fd = rel, name, fd
        info = os.fstat(fd)
        self.ident = (info.st_dev, info.st_ino)
        self.dirs, self.files = dirs, files


def _listing(fd: int) -> tuple[list[str], list[str]]:
    dirs: list[str] = []
    files: list[str] = []
    with os.scandir(fd) as entries:
        for entry in entries:
            (dirs if entry.is_dir(follow_symlinks=False) else files).append(entry.name)
    return dirs, files


def walk_beneath(root: str | os.PathLike[str]) -> Iterator[tuple[str, list[str], list[str]]]:
    """Like ``os.walk(root)`` top-down: ``(relative dir, dirnames, filenames)``, ``""`` for ``root``.

    Never follows a symlink, never recurses (any depth is walked), holds at
    most a few dozen descriptors whatever the depth, and never builds a path
    longer than one name (so ``PATH_MAX`` does not limit it). The caller may
    prune ``dirnames`` in place. A directory that vanishes meanwhile is
    skipped; one replaced by another while the walk was below it raises
    :class:`GitError`.
    """
    fd = os.open(root, _DIR_FLAGS)
    stack: list[_Level] = []
    try:
        dirs, files = _listing(fd)
        stack.append(_Level("", "", fd, dirs, files))
        yield "", dirs, files
        while stack:
            top = stack[-1]
            if not top.dirs:
                stack.pop()
                if top.fd >= 0:
                    os.close(top.fd)
                continue
            name = top.dirs.pop(0)
            parent_fd = _reopen_level(stack, root)
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            except (FileNotFoundError, NotADirectoryError, OSError):
                continue  # gone, or swapped for something else meanwhile: nothing to walk
            rel = f"{top.rel}/{name}" if top.rel else name
            dirs, files = _listing(child)
            stack.append(_Level(rel, name, child, dirs, files))
            far = len(stack) - 1 - _WALK_WINDOW
            if far > 0 and stack[far].fd >= 0:
                os.close(stack[far].fd)
                stack[far].fd = -1
            yield rel, dirs, files
    finally:
        for level in stack:
            if level.fd >= 0:
                os.close(level.fd)


def _reopen_level(stack: list[_Level], root: str | os.PathLike[str]) -> int:
    """The top level's descriptor, reopened (and checked to be the same directory) if it was closed.

    The last :data:`_WALK_WINDOW` levels reopened stay open, so climbing back
    up a deep chain costs O(depth) opens per window, not per level.
    """
    top = len(stack) - 1
    if stack[top].fd >= 0:
        return stack[top].fd
    start = top
    while start >= 0 and stack[start].fd < 0:
        start -= 1
    keep_from = top - _WALK_WINDOW + 1
    for i in range(start + 1, top + 1):
        level = stack[i]
        parent_fd = stack[i - 1].fd
        try:
            fd = os.open(level.name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError:
            fd = -1
        if i - 1 > start and i - 1 < keep_from:
            os.close(parent_fd)
            stack[i - 1].fd = -1
        if fd >= 0:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != level.ident:
                os.close(fd)
                fd = -1
        if fd < 0:
            raise GitError(
                f"{root}/{level.rel} was moved or replaced while it was walked; "
                "stop whatever is rewriting the worktree and retry"
            )
        level.fd = fd
    return stack[top].fd


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Delete ``path`` and everything under it, never following a symlink, at any depth.

    ``shutil.rmtree`` recurses once per level (and fails on a tree a few
    thousand levels deep); this empties directories deepest first, holding a
    bounded number of descriptors. A symlink or file at ``path`` is unlinked.
    """
    parent, name = os.path.split(os.path.abspath(path))
    pfd = os.open(parent, _DIR_FLAGS)
    try:
        _remove_tree(pfd, name)
    except NotADirectoryError:
        os.unlink(name, dir_fd=pfd)
    finally:
        os.close(pfd)


def _remove_tree(pfd: int, name: str) -> None:
    """Delete directory ``name`` in ``pfd`` and all it holds, never following a symlink."""
    # Each level: (descriptor, name in its parent, identity). Directories are
    # emptied as they are met; a directory is removed once it is empty.
    first = os.open(name, _DIR_FLAGS, dir_fd=pfd)
    stack: list[_Level] = [_Level(name, name, first, [], [])]
    listed: list[bool] = [False]
    try:
        while stack:
            top = stack[-1]
            fd = _reopen_removal(stack, pfd)
            if not listed[-1]:
                # Files go at once; subdirectories are remembered and emptied one by one.
                dirs, files = _listing(fd)
                for child in files:
                    os.unlink(child, dir_fd=fd)
                top.dirs = dirs
                listed[-1] = True
            if top.dirs:
                sub = top.dirs.pop()
                try:
                    child_fd = os.open(sub, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                stack.append(_Level(f"{top.rel}/{sub}", sub, child_fd, [], []))
                listed.append(False)
                far = len(stack) - 1 - _WALK_WINDOW
                if far > 0 and stack[far].fd >= 0:
                    os.close(stack[far].fd)
                    stack[far].fd = -1
                continue
            stack.pop()
            listed.pop()
            os.close(fd)
            top.fd = -1
            parent_fd = _reopen_removal(stack, pfd) if stack else pfd
            os.rmdir(top.name, dir_fd=parent_fd)
    finally:
        for level in stack:
            if level.fd >= 0:
                os.close(level.fd)


def _reopen_removal(stack: list[_Level], pfd: int) -> int:
    """Like :func:`_reopen_level`, for a removal: the first level's parent is ``pfd``."""
    top = len(stack) - 1
    if stack[top].fd >= 0:
        return stack[top].fd
    start = top
    while start >= 0 and stack[start].fd < 0:
        start -= 1
    keep_from = top - _WALK_WINDOW + 1
    for i in range(start + 1, top + 1):
        parent_fd = stack[i - 1].fd if i > 0 else pfd
        new = os.open(stack[i].name, _DIR_FLAGS, dir_fd=parent_fd)
        if 0 <= i - 1 and i - 1 > start and i - 1 < keep_from:
            os.close(parent_fd)
            stack[i - 1].fd = -1
        info = os.fstat(new)
        if (info.st_dev, info.st_ino) != stack[i].ident:
            os.close(new)
            raise GitError(f"{stack[i].rel} was replaced while it was being removed; stop its writers and retry")
        stack[i].fd = new
    return stack[top].fd


class Beneath:
    """The directories of one worktree, opened beneath its root without following symlinks.

    Descriptors are cached by relative directory (``""`` is the root) for
    the length of one restore and closed by :meth:`close`.
    """

    def __init__(self, root: Path, current: Files) -> None:
        self.root = root
        self.current = current
        try:
            self.fds: dict[str, int] = {"": os.open(root, _DIR_FLAGS)}
        except OSError as e:
            raise GitError(
                f"cannot open the worktree {root} to restore it ({e.strerror}); it must be a directory, "
                "not a symlink: check the task's worktree path"
            ) from None
        self.token = os.urandom(6).hex()
        self.temps = 0

    def __enter__(self) -> Beneath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def directory(self, rel: str, path: str) -> int:
        """A descriptor for directory ``rel``, made if missing; ``path`` names the file it is for in errors.

        A file or symlink in the way is replaced by a directory when
        ``current`` holds it (so it is saved); otherwise this raises.
        """
        fd = self.fds.get(rel)
        if fd is not None:
            return fd
        missing = self._missing_levels(rel, path)  # checked before anything is made: a refused path changes nothing
        for level in missing:
            parent, _, name = level.rpartition("/")
            fd = self._make_level(self.fds[parent], level, name, path)
        assert fd is not None
        return fd

    def _missing_levels(self, rel: str, path: str) -> list[str]:
        """The directories from the nearest open ancestor of ``rel`` down to ``rel``, names checked."""
        missing: list[str] = []
        current = rel
        while current not in self.fds:
            check_name(current.rpartition("/")[2], path)
            missing.append(current)
            current = current.rpartition("/")[0]
        missing.reverse()
        return missing

    def _make_level(self, pfd: int, rel: str, name: str, path: str) -> int:
        for _ in range(3):
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
            except FileNotFoundError:
                try:
                    os.mkdir(name, 0o777, dir_fd=pfd)
                except FileExistsError:
                    pass  # made by someone else meanwhile: open what is there
                except FileNotFoundError:
                    break  # the parent itself was deleted meanwhile
                continue
            except NotADirectoryError:
                if rel in self.current and self.current[rel][0] != GITLINK:
                    os.unlink(name, dir_fd=pfd)  # removes the entry itself, never what a symlink points at
                    continue
                raise self._not_a_directory(pfd, rel, path) from None
            return self._keep(rel, fd)
        raise GitError(
            f"cannot restore {path!r}: directory {rel!r} in {self.root} kept changing while the restore "
            "made it (something in the worktree is racing the restore); stop the task's processes and restore again"
        )

    def existing_directory(self, rel: str, path: str) -> int | None:
        """A descriptor for directory ``rel`` if it exists (None if not); raises if it is not a directory."""
        fd = self.fds.get(rel)
        if fd is not None:
            return fd
        for level in self._missing_levels(rel, path):
            parent, _, name = level.rpartition("/")
            pfd = self.fds[parent]
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
            except FileNotFoundError:
                return None
            except NotADirectoryError:
                raise self._not_a_directory(pfd, level, path) from None
            self._keep(level, fd)
        return fd

    def _keep(self, rel: str, fd: int) -> int:
        if len(self.fds) > _MAX_OPEN_DIRS:
            # Oldest first; never the root, which the others are reopened from.
            oldest = next(k for k in self.fds if k)
            os.close(self.fds.pop(oldest))
        self.fds[rel] = fd
        return fd

    def _forget(self, rel: str) -> None:
        """Close the descriptors of ``rel`` and everything below it (they were deleted)."""
        below = rel + "/"
        for key in [k for k in self.fds if k == rel or k.startswith(below)]:
            os.close(self.fds.pop(key))

    def _not_a_directory(self, pfd: int, rel: str, path: str) -> Exception:
        try:
            kind: int | None = os.stat(rel.rpartition("/")[2], dir_fd=pfd, follow_symlinks=False).st_mode
        except OSError:
            kind = None
        if kind is not None and st.S_ISLNK(kind):
            return PathEscape(
                f"refused to restore {path!r}: {rel!r} in {self.root} is a symlink that was not there when "
                "the restore started (something in the worktree swapped it in), and following it could lead "
                "outside the worktree; stop the task's processes and restore again"
            )
        what = "a file" if kind is not None and not st.S_ISDIR(kind) else "changing under it"
        return GitError(
            f"cannot restore {path!r}: {rel!r} in {self.root} is {what}, which it was not when the restore "
            "started (something in the worktree is racing the restore); stop the task's processes and restore again"
        )

    def unlink(self, parent: str, name: str, path: str) -> bool:
        """Delete file ``name`` in ``parent`` (gone already counts); False if it is a directory."""
        pfd = self.existing_directory(parent, path)
        if pfd is None:
            return True
        try:
            os.unlink(name, dir_fd=pfd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            return False
        return True

    def prune(self, emptied: set[str]) -> None:
        """Remove the directories in ``emptied``, and their parents, that are now empty."""
        candidates = set()
        for rel in emptied:
            while rel and rel not in candidates:
                candidates.add(rel)
                rel = rel.rpartition("/")[0]
        # Reverse order puts every directory before its parent.
        for rel in sorted(candidates, reverse=True):
            parent, _, name = rel.rpartition("/")
            try:
                pfd = self.existing_directory(parent, rel)
                if pfd is None:
                    continue
                os.rmdir(name, dir_fd=pfd)  # fails on a symlink: never follows one
            except (OSError, PathEscape, GitError):
                continue  # not empty, gone or not a directory: leave it
            self._forget(rel)

    def make_dir(self, pfd: int, name: str, path: str) -> None:
        try:
            os.mkdir(name, 0o777, dir_fd=pfd)
        except FileExistsError:
            if not st.S_ISDIR(os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode):
                raise GitError(
                    f"cannot restore submodule {path!r} in {self.root}: a file or symlink stands where its "
                    "directory goes; move it away and restore again"
                ) from None

    def _temp_name(self) -> str:
        self.temps += 1
        return f"{TEMP_PREFIX}{self.token}-{self.temps}"

    def write_file(self, pfd: int, parent: str, name: str, chunks: Iterator[bytes], perms: int) -> None:
        """Write ``chunks`` to a new file with ``perms`` and move it over ``name`` in ``pfd``."""
        while True:
            tmp = self._temp_name()
            try:
                fd = os.open(tmp, _NEW_FILE_FLAGS, 0o600, dir_fd=pfd)
                break
            except FileExistsError:
                continue  # the worktree's processes can make any name: take the next one
        try:
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                os.fchmod(fd, perms)
            finally:
                os.close(fd)
            self._move_into_place(pfd, parent, tmp, name)
        except BaseException:
            _unlink_quietly(pfd, tmp)
            raise

    def write_symlink(self, pfd: int, parent: str, name: str, link: bytes) -> None:
        while True:
            tmp = self._temp_name()
            try:
                os.symlink(os.fsdecode(link), tmp, dir_fd=pfd)
                break
            except FileExistsError:
                continue
        try:
            self._move_into_place(pfd, parent, tmp, name)
        except BaseException:
            _unlink_quietly(pfd, tmp)
            raise

    def _move_into_place(self, pfd: int, parent: str, tmp: str, name: str) -> None:
        try:
            os.replace(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except IsADirectoryError:
            # The target has a file where a directory now stands; what is left in
            # it was excluded from the scan (ignored files), which git too deletes.
            self._forget(f"{parent}/{name}" if parent else name)
            _remove_tree(pfd, name)
            os.replace(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)


def _unlink_quietly(pfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=pfd)
    except OSError:
        pass
