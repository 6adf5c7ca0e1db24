"""Turning a worktree into a git tree, incrementally.

The scan walks the worktree, skips what the excludes say, and hashes only the
files whose stat information changed since the last scan (like git's index),
kept in a :class:`~armor_rx.sinks.git.statcache.StatCache`.
"""

from __future__ import annotations

import binascii
import errno
import os
import stat as st
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_IXUSR

import pathspec
from dulwich.index import read_submodule_head
from dulwich.object_store import DiskObjectStore

from armor_rx.errors import GitError
from armor_rx.sinks.git.beneath import TEMP_PREFIX
from armor_rx.sinks.git.blobs import FileChanged, write_blob_bytes, write_blob_from_fd, write_object_bytes
from armor_rx.sinks.git.paths import means_dot_git
from armor_rx.sinks.git.statcache import CacheEntry, DirCache, StatCache, TreeEntry, is_utf8

__all__ = ["CacheEntry", "DirCache", "ScanPolicy", "ScanResult", "StatCache", "TreeEntry", "scan_worktree"]


@dataclass(frozen=True)
class ScanPolicy:
    """What a scan leaves out.

    ``excludes`` are gitignore-syntax patterns relative to the worktree root;
    ``honor_gitignore`` also applies the worktree's ``.gitignore`` files (files
    git already tracks are kept even when ignored, as ``git add -A`` does);
    files larger than ``max_file_size`` bytes are skipped and reported.
    """

    excludes: tuple[str, ...] = ()
    honor_gitignore: bool = True
    max_file_size: int | None = None


@dataclass
class ScanResult:
    """A scanned worktree: its tree id, and the stat entries of the files in it.

    ``dirs`` holds the stat entries per directory; ``racy`` lists the files
    hashed in this scan that changed too recently (at or after ``stamp``) to
    be trusted next time.
    """

    tree: bytes
    dirs: DirCache
    links: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, TreeEntry] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    racy: list[str] = field(default_factory=list)
    stamp: int = 1 << 63
    hashed: int = 0
    bytes_added: int = 0

    @property
    def cache(self) -> dict[str, CacheEntry]:
        """The stat entries by path (a new dict, built on demand: completion needs it)."""
        return {
            (f"{d}/{name}" if d else name): entry for d, entries in self.dirs.items() for name, entry in entries.items()
        }

    @property
    def files(self) -> dict[str, tuple[int, bytes]]:
        """Each path's ``(mode, sha)``, submodules included."""
        out = {p: (int(e[7]), str(e[8]).encode()) for p, e in self.cache.items()}  # type: ignore[call-overload]
        out.update({p: (0o160000, sha) for p, sha in self.links.items()})
        return out

    @property
    def count(self) -> int:
        return sum(len(entries) for entries in self.dirs.values()) + len(self.links)


class _Ignore:
    """Exclude patterns plus the .gitignore files met on the way down."""

    def __init__(self, policy: ScanPolicy, tracked: Callable[[str], bool], submodule: Callable[[str], bool]) -> None:
        self.user = pathspec.GitIgnoreSpec.from_lines(policy.excludes) if policy.excludes else None
        self.honor = policy.honor_gitignore
        self.tracked = tracked
        self.submodule = submodule
        self.stack: list[tuple[str, pathspec.GitIgnoreSpec]] = []

    def push_dir(self, dir_fd: int, rel_dir: str) -> bool:
        if not self.honor:
            return False
        try:
            # Never through a symlink (git does not follow one either), and only
            # a regular file: a directory or fifo by that name is not read.
            fd = os.open(".gitignore", _FILE_FLAGS, dir_fd=dir_fd)
        except OSError:
            return False
        if not st.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return False
        with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
            spec = pathspec.GitIgnoreSpec.from_lines(f.read().splitlines())
        self.stack.append((rel_dir, spec))
        return True

    def excluded(self, rel: str, is_dir: bool) -> bool:
        probe = rel + "/" if is_dir else rel
        hit = self.user is not None and self.user.match_file(probe)
        if not hit:
            for prefix, spec in self.stack:
                if spec.match_file(probe[len(prefix) + 1 :] if prefix else probe):
                    hit = True
                    break
        # A tracked file stays even if excluded or ignored (leaving it out would
        # read as a deletion on completion); a directory may hold tracked
        # files, so it is only skipped when nothing in it is tracked.
        return hit and not self.tracked(probe)


def scan_worktree(
    root: Path,
    store: DiskObjectStore,
    cache: DirCache,
    policy: ScanPolicy,
    tracked: Callable[[str], bool] = lambda _: False,
    trees: dict[str, TreeEntry] | None = None,
    submodule: Callable[[str], bool] = lambda _: False,
    stamp_ns: int | None = None,
) -> ScanResult:
    """Write every kept file of ``root`` as blobs and trees; return the root tree.

    Files whose stat matches ``cache`` are not read, and directories whose
    files all matched and whose subdirectories are unchanged reuse their tree
    id from ``trees``. ``tracked(path)`` says whether git tracks a path (or,
    for ``"dir/"``, anything under it); it is only asked about ignored paths.
    ``submodule(path)`` says whether a directory holding a ``.git`` is a
    registered submodule (recorded as a gitlink); any other nested repository
    is walked like a plain directory, its ``.git`` left out. Files hashed
    whose mtime or ctime is at or after ``stamp_ns`` (see
    :meth:`StatCache.stamp`) are listed in ``racy``. Raises :class:`GitError`
    if a file keeps changing while it is read or cannot be read.
    """
    scan = _Scan(store, cache, trees or {}, policy, _Ignore(policy, tracked, submodule), stamp_ns, str(root))
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise GitError(f"cannot scan {root}: {exc.strerror}; it must be a directory, not a symlink") from None
    try:
        scan.root_dev = os.fstat(root_fd).st_dev
        tree, _, _ = scan.directory(root_fd, "")
    finally:
        os.close(root_fd)
    if tree is None:
        tree, _ = write_object_bytes(store, b"tree", b"")
        scan.result.trees[""] = [[], tree.decode()]
    scan.result.tree = tree
    return scan.result


_NOTHING: dict[str, CacheEntry] = {}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a fifo swapped in after the stat must not hang the open.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _Scan:
    """One walk of a worktree (the state shared by its directories)."""

    def __init__(
        self,
        store: DiskObjectStore,
        cache: DirCache,
        trees: dict[str, TreeEntry],
        policy: ScanPolicy,
        ignore: _Ignore,
        stamp_ns: int | None,
        root: str,
    ) -> None:
        self.root = root
        self.root_dev = -1
        self.store = store
        self.cache = cache
        self.trees = trees
        self.max_size = policy.max_file_size
        self.ignore = ignore
        # Without a stamp nothing hashed now counts as racy (callers that save
        # the cache always pass one).
        self.stamp = stamp_ns if stamp_ns is not None else 1 << 63
        self.result = ScanResult(tree=b"", dirs={}, stamp=self.stamp)

    def directory(self, dir_fd: int, rel_dir: str) -> tuple[bytes | None, bool, bytes | None]:
        """Scan one directory (open as ``dir_fd``); return ``(tree id or None if empty, changed, submodule head)``.

        A directory below the root that holds a ``.git`` and is a registered
        submodule is not walked; its checked-out commit is returned as the
        third value (``b""`` if it has none). A nested repository that is not
        a submodule is walked, so its files are saved.

        Everything is opened relative to ``dir_fd`` without following
        symlinks, so a directory swapped for a symlink while the scan runs
        cannot make it read (and store) files from outside the worktree.
        This loop runs once per file on every checkpoint, so it is written
        for speed: an unchanged file costs one ``fstatat`` and a few
        comparisons, and a directory's tree is only serialised when
        something in it changed.
        """
        try:
            with os.scandir(dir_fd) as listing:
                entries = list(listing)
        except OSError as exc:
            raise GitError(f"cannot list {self._path(rel_dir)}: {exc.strerror}") from None
        result, ignore = self.result, self.ignore
        names_here = {entry.name for entry in entries}
        if rel_dir and ".git" in names_here and ignore.submodule(rel_dir):
            return None, True, read_submodule_head(self._path(rel_dir)) or b""
        # Only directories that have a .gitignore pay for reading one.
        pushed = ignore.push_dir(dir_fd, rel_dir) if ".gitignore" in names_here else False
        filtering = ignore.user is not None or bool(ignore.stack)
        max_size, stamp, root_dev = self.max_size, self.stamp, self.root_dev
        prefix = rel_dir + "/" if rel_dir else ""
        known = self.cache.get(rel_dir, _NOTHING)
        files: dict[str, CacheEntry] = {}
        subs: list[tuple[str, int, bytes]] = []  # subdirectories and gitlinks: (name, mode, hex sha)
        changed = False
        for entry in entries:
            name = entry.name
            if name == ".git" or name.startswith(TEMP_PREFIX):
                continue  # the worktree's link to its repository (or a nested repo's); a crashed restore's temp file
            if (name[0] in ".gG" or not name.isascii()) and means_dot_git(name):
                result.skipped.append(prefix + name)  # '.GIT', 'git~1', '.g\u200cit': .git on other filesystems
                continue
            if entry.is_dir(follow_symlinks=False):  # from d_type: no system call
                rel = prefix + name
                if filtering and ignore.excluded(rel, True):
                    continue
                try:
                    sub_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue  # deleted while we looked
                except OSError:
                    sub_fd = -1  # no longer a directory (swapped meanwhile): taken as what it is now
                if sub_fd >= 0:
                    try:
                        sub, sub_changed, head = self.directory(sub_fd, rel)
                    finally:
                        os.close(sub_fd)
                    if head is not None:
                        if head:  # a submodule with a checked-out commit
                            subs.append((name, 0o160000, head))
                            result.links[rel] = head
                        changed = True  # rare enough not to cache
                    elif sub is not None:
                        subs.append((name, 0o40000, sub))
                        changed = changed or sub_changed
                    continue
            try:
                info = entry.stat(follow_symlinks=False)  # fstatat on dir_fd: the name, not a path
            except FileNotFoundError:
                continue  # deleted while we looked: it is simply not in this snapshot
            mode = info.st_mode
            kind = mode & 0o170000  # S_IFMT, inline: this runs once per file
            if kind == 0o100000:
                git_mode = 0o100755 if mode & S_IXUSR else 0o100644
            elif kind == 0o120000:
                git_mode = 0o120000
            else:
                continue  # sockets, fifos, devices (and a directory that just appeared) have no blob
            if filtering and ignore.excluded(prefix + name, False):
                continue
            if max_size is not None and kind == 0o100000 and info.st_size > max_size:
                result.skipped.append(prefix + name)
                continue
            record = known.get(name)
            if (
                record is None
                or record[0] != info.st_mtime_ns
                or record[2] != info.st_size
                or record[1] != info.st_ctime_ns
                or record[3] != info.st_ino
                or record[7] != git_mode
            ):
                record = self._blob(dir_fd, name, prefix + name, info)
                if record is None:
                    continue  # gone or no longer a file: not in this snapshot
                changed = True
                # A file on another filesystem (a mount inside the worktree) has
                # timestamps from another clock than the stamp's: never trusted.
                if record[0] >= stamp or record[1] >= stamp or record[4] != root_dev:  # type: ignore[operator]
                    result.racy.append(prefix + name)
            files[name] = record
        if pushed:
            ignore.stack.pop()
        if files:
            result.dirs[rel_dir] = files
        if not files and not subs:
            return None, True, None  # git has no empty trees; an empty directory is not recorded
        previous = self.trees.get(rel_dir)
        sub_names = sorted(name for name, _, _ in subs) if subs else []
        # Every file matched its cache entry one to one, so the names are the
        # same as last time; only the subdirectory names are left to compare.
        if not changed and previous is not None and len(files) == len(known) and previous[0] == sub_names:
            result.trees[rel_dir] = previous
            return str(previous[1]).encode(), False, None
        tree_id = self._write_tree(files, subs)
        result.trees[rel_dir] = [sub_names, tree_id.decode()]
        return tree_id, previous is None or str(previous[1]).encode() != tree_id, None

    def _path(self, rel: str) -> str:
        """``rel`` under the root, for messages and the rare path-based reads."""
        return f"{self.root}/{rel}" if rel else self.root

    def _blob(self, dir_fd: int, name: str, rel: str, info: os.stat_result) -> CacheEntry | None:
        """Hash and store one file whose stat did not match the cache; return its cache entry.

        None if it is gone or is no longer a file or symlink. Raises
        :class:`GitError` if it keeps changing while it is read or cannot be read.
        """
        for _ in range(5):
            kind = info.st_mode & 0o170000
            try:
                if kind == 0o120000:
                    git_mode = 0o120000
                    sha, added = write_blob_bytes(self.store, os.fsencode(os.readlink(name, dir_fd=dir_fd)))
                elif kind == 0o100000:
                    git_mode = 0o100755 if info.st_mode & S_IXUSR else 0o100644
                    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
                    try:
                        opened = os.fstat(fd)
                        if (opened.st_ino, opened.st_dev) != (info.st_ino, info.st_dev):
                            raise FileChanged(rel)  # replaced between the stat and the open
                        sha, added = write_blob_from_fd(self.store, fd, info.st_size, rel)
                    finally:
                        os.close(fd)
                else:
                    return None
            except FileChanged:
                pass
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EINVAL):  # swapped for a symlink, or one for a file
                    pass
                else:
                    raise GitError(
                        f"cannot read {self._path(rel)}: {exc.strerror}; fix its permissions or exclude it"
                    ) from None
            else:
                self.result.hashed += 1
                self.result.bytes_added += added
                return [
                    info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino,
                    info.st_dev, info.st_uid, info.st_gid, git_mode, sha.decode(),
                ]
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return None
        raise GitError(
            f"{self._path(rel)} kept changing while it was read; stop the writer and retry the checkpoint"
        )

    def _write_tree(self, files: dict[str, CacheEntry], subs: list[tuple[str, int, bytes]]) -> bytes:
        # (sort key, mode, name, hex sha): git orders names as bytes, and a
        # directory as if named "name/".
        items: list[tuple[str, int, str, bytes]] = [
            (name, int(e[7]), name, str(e[8]).encode()) for name, e in files.items()  # type: ignore[call-overload]
        ]
        items += [(name + "/" if mode == 0o40000 else name, mode, name, sha) for name, mode, sha in subs]
        # For names that are valid UTF-8 the code-point order of str is the
        # same as git's byte order, and much cheaper; only a directory holding
        # an undecodable name (kept as surrogates) pays for bytes keys.
        joined = "".join(item[0] for item in items)  # one C-level check for the whole directory
        if joined.isascii() or is_utf8(joined):
            items.sort()
        else:
            items.sort(key=lambda item: os.fsencode(item[0]))
        raw = b"".join(b"%o %s\x00%s" % (m, os.fsencode(n), binascii.unhexlify(h)) for _, m, n, h in items)
        tree_id, _ = write_object_bytes(self.store, b"tree", raw)
        return tree_id
