"""Making a worktree match a tree exactly: the write side of checkpoints.

The worktree belongs to a task whose processes may still run while it is
restored, so every change is made through directory file descriptors opened
one component at a time without following symlinks. A directory swapped for
a symlink in the middle of a restore makes the restore fail; it never makes
it write, chmod or delete anything outside the worktree.
"""

from __future__ import annotations

import os
import stat as st
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dulwich.index import validate_path_element_hfs, validate_path_element_ntfs
from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID, Tree, parse_tree

from armor_rx.errors import GitError, PathEscape
from armor_rx.sinks.git.blobs import iter_blob
from armor_rx.sinks.git.scan import CacheEntry

Files = dict[str, tuple[int, bytes]]

_GITLINK = 0o160000
_SYMLINK = 0o120000
_EXECUTABLE = 0o100755
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Open directory descriptors kept per restore; the rest are reopened on
#: demand (paths come sorted, so the ones in use are the recent ones).
_MAX_OPEN_DIRS = 128


@dataclass
class RestoreStats:
    written: int = 0
    removed: int = 0
    chmodded: int = 0


def flatten_tree(store: DiskObjectStore, tree_id: bytes, prefix: str = "") -> Files:
    """Every blob and gitlink under ``tree_id`` as ``{path: (mode, sha)}``.

    Raises :class:`GitError` if ``tree_id`` is not a tree and ``KeyError`` if
    it (or a tree under it) is missing from ``store``.
    """
    out: Files = {}
    _flatten_into(out, store, tree_id, f"{prefix}/" if prefix else "")
    return out


def _flatten_into(out: Files, store: DiskObjectStore, tree_id: bytes, prefix: str) -> None:
    # Raw entries straight from the object: building a Tree and its entry
    # objects costs more than everything else here.
    for name, mode, sha in _parse_entries(_read_tree(store, tree_id)):
        path = prefix + name.decode("utf-8", "surrogateescape")
        if st.S_ISDIR(mode):
            _flatten_into(out, store, sha, path + "/")
        else:
            out[path] = (mode, sha)


def _read_tree(store: DiskObjectStore, tree_id: bytes) -> bytes:
    """The body of tree ``tree_id``: read from its loose file when it has one, else through dulwich."""
    hexsha = tree_id.decode("ascii")
    try:
        with open(os.path.join(os.fspath(store.path), hexsha[:2], hexsha[2:]), "rb") as f:
            data = zlib.decompress(f.read())
    except FileNotFoundError:
        kind, body = store.get_raw(ObjectID(tree_id))
        if kind != Tree.type_num:
            raise GitError(f"object {hexsha} is not a tree") from None
        return body
    header, _, body = data.partition(b"\x00")
    if not header.startswith(b"tree "):
        raise GitError(f"object {hexsha} is not a tree")
    return body


def _parse_entries(body: bytes) -> Iterator[tuple[bytes, int, bytes]]:
    try:
        return parse_tree(body, sha_len=20)
    except TypeError:  # dulwich before 1.0 has no sha_len (SHA-256 repositories)
        return parse_tree(body)  # type: ignore[call-arg]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which is process-wide
# and would race with other threads creating files.
_UMASK = _read_umask()


def materialize(
    root: Path,
    store: DiskObjectStore,
    current: Files,
    target: Files,
    cache: dict[str, CacheEntry],
) -> RestoreStats:
    """Change the files of ``root`` from ``current`` to ``target``.

    ``current`` must come from a fresh scan of ``root`` (so it lists exactly
    the files the excludes keep); paths outside it are left alone unless the
    target needs the spot. Unchanged files are not touched. Submodule
    directories (gitlinks) are never deleted or rewritten. ``cache`` is
    updated in place for every file written. Raises :class:`GitError`,
    before changing anything, if the target needs a spot that holds something
    ``current`` does not (a file where a directory goes, a directory with
    unsaved files where a file goes, or an unsaved file it would overwrite).
    Raises :class:`PathEscape` if a directory on the way turns out to be a
    symlink ``current`` does not hold (something in the worktree swapped it
    in during the restore) or a name in ``target`` is ``..`` or means
    ``.git``, and :class:`GitError` if ``root`` is not a directory or
    something else in it changes under the restore; the restore then stops
    part-way, having changed nothing outside ``root``.
    """
    blocked = _unsaved_in_the_way(root, current, target)
    if blocked:
        raise GitError(
            f"restoring would overwrite or delete {len(blocked)} path(s) that are not in the current "
            f"snapshot (excluded, ignored, too large or nested repositories): {', '.join(blocked[:20])}; "
            "move them away (or widen the checkpoint policy) and restore again"
        )
    stats = RestoreStats()
    mask = _UMASK
    with _Worktree(root, current) as tree:
        # Remove first, deepest first, so a file can replace a directory and back.
        emptied: set[str] = set()
        for path in sorted(current.keys() - target.keys(), reverse=True):
            if current[path][0] == _GITLINK:
                continue
            parent, _, name = path.rpartition("/")
            _check_name(name, path)
            if not tree.unlink(parent, name, path):
                continue  # a directory now: not ours to delete
            cache.pop(path, None)
            stats.removed += 1
            emptied.add(parent)
        tree.prune(emptied)
        # Sorted, so each directory's files come together while its descriptor is open.
        for path in sorted(path for path, entry in target.items() if current.get(path) != entry):
            mode, sha = target[path]
            have = current.get(path)
            parent, _, name = path.rpartition("/")
            _check_name(name, path)
            pfd = tree.directory(parent, path)
            if mode == _GITLINK:
                tree.make_dir(pfd, name, path)
                continue
            perms = (0o777 if mode == _EXECUTABLE else 0o666) & ~mask
            if (
                have is not None and have[1] == sha and have[0] != _SYMLINK and mode != _SYMLINK
                and _chmod_regular_file(pfd, name, perms)
            ):
                stats.chmodded += 1
            elif mode == _SYMLINK:
                tree.write_symlink(pfd, parent, name, b"".join(iter_blob(store, sha)))
                stats.written += 1
            else:
                tree.write_file(pfd, parent, name, iter_blob(store, sha), perms)
                stats.written += 1
            info = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            cache[path] = [
                info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino,
                info.st_dev, info.st_uid, info.st_gid, mode, sha.decode(),
            ]
    return stats


def _unsaved_in_the_way(root: Path, current: Files, target: Files) -> list[str]:
    """Paths the restore would replace or delete although ``current`` holds no copy of them.

    This reads paths, so it only gives a clear refusal up front; the writes
    do not rely on it to stay inside ``root``.
    """
    def saved(path: str) -> bool:
        return path in current and current[path][0] != _GITLINK

    base = os.fspath(root)
    blocked: set[str] = set()
    real_dirs: dict[str, bool] = {"": True}

    def reachable(rel: str) -> bool:
        """Whether ``rel`` and its parents are directories or absent (nothing to look through)."""
        known = real_dirs.get(rel)
        if known is None:
            known = False
            if reachable(rel.rpartition("/")[0]):
                kind = _lstat_kind(f"{base}/{rel}")
                known = kind is None or st.S_ISDIR(kind)
                if not known and not saved(rel):
                    blocked.add(rel)  # a file or symlink stands where the target needs a directory
            real_dirs[rel] = known
        return known

    for path, entry in target.items():
        if current.get(path) == entry:
            continue
        # Below a file or symlink there is nothing of ours: it is replaced or refused as a whole.
        if not reachable(path.rpartition("/")[0]) or entry[0] == _GITLINK:
            continue
        full = f"{base}/{path}"
        kind = _lstat_kind(full)
        if kind is not None and st.S_ISDIR(kind):
            for here, dirnames, filenames in os.walk(full):
                rel = os.path.relpath(here, root).replace(os.sep, "/")
                if ".git" in dirnames or ".git" in filenames:
                    blocked.add(rel + "/")  # a repository, never ours to delete
                    dirnames[:] = []
                    continue
                blocked.update(f"{rel}/{n}" for n in filenames if not saved(f"{rel}/{n}"))
                for d in dirnames:
                    if os.path.islink(os.path.join(here, d)) and not saved(f"{rel}/{d}"):
                        blocked.add(f"{rel}/{d}")
        elif kind is not None and path not in current:
            blocked.add(path)  # an unsaved file the target would overwrite
    return sorted(blocked)


def _lstat_kind(path: str) -> int | None:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return None


def _refused_name(name: str) -> bool:
    """Whether ``name`` cannot be written: empty, ``.``, ``..`` or a spelling of ``.git``."""
    if name in ("", ".", ".."):
        return True
    if name.isascii() and "git" not in name.lower():
        return False  # the common case, and no such name can mean '.git' anywhere
    raw = os.fsencode(name)
    readable = raw.decode("utf-8", "ignore").encode("utf-8")
    return not (validate_path_element_ntfs(raw) and validate_path_element_hfs(readable))


def _check_name(name: str, path: str) -> None:
    if _refused_name(name):
        raise PathEscape(
            f"refused to restore {path!r}: its component {name!r} is empty, '.', '..' or means '.git'; "
            "such a tree was not made by a scan of a worktree, so restore a different checkpoint"
        )


def _chmod_regular_file(pfd: int, name: str, perms: int) -> bool:
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


def _remove_tree(pfd: int, name: str) -> None:
    """Delete directory ``name`` in ``pfd`` and all it holds, never following a symlink."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
    try:
        with os.scandir(fd) as entries:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for child, is_dir in children:
            if is_dir:
                _remove_tree(fd, child)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=pfd)


class _Worktree:
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

    def __enter__(self) -> _Worktree:
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
        parent, _, name = rel.rpartition("/")
        _check_name(name, path)  # before the parents are made: a refused path changes nothing
        pfd = self.directory(parent, path)
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
                if rel in self.current and self.current[rel][0] != _GITLINK:
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
        parent, _, name = rel.rpartition("/")
        _check_name(name, path)
        pfd = self.existing_directory(parent, path)
        if pfd is None:
            return None
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise self._not_a_directory(pfd, rel, path) from None
        return self._keep(rel, fd)

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
        return f".armor-tmp-{self.token}-{self.temps}"

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
