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
from dulwich.object_store import DiskObjectStore

from armor_rx.errors import GitError
from armor_rx.sinks.git.beneath import TEMP_PREFIX
from armor_rx.sinks.git.blobs import FileChanged, write_blob_bytes, write_blob_from_fd, write_object_bytes
from armor_rx.sinks.git.paths import means_dot_git
from armor_rx.sinks.git.reserved import DEFAULT as DEFAULT_RESERVED
from armor_rx.sinks.git.reserved import REASON as RESERVED_REASON
from armor_rx.sinks.git.reserved import Reserved
from armor_rx.sinks.git.statcache import CacheEntry, DirCache, StatCache, TreeEntry, is_utf8

__all__ = ["CacheEntry", "DirCache", "ScanPolicy", "ScanResult", "StatCache", "TreeEntry", "scan_worktree"]


@dataclass(frozen=True)
class ScanPolicy:
    """What a scan leaves out.

    ``excludes`` are gitignore-syntax patterns relative to the worktree root;
    ``honor_gitignore`` also applies the worktree's ``.gitignore`` files (files
    git already tracks are kept even when ignored, as ``git add -A`` does);
    files larger than ``max_file_size`` bytes are skipped and reported;
    ``reserved`` names and paths are never scanned (see :mod:`.reserved`).
    """

    excludes: tuple[str, ...] = ()
    honor_gitignore: bool = True
    max_file_size: int | None = None
    reserved: Reserved = DEFAULT_RESERVED


@dataclass
class ScanResult:
    """A scanned worktree: its tree id, and the stat entries of the files in it.

    ``dirs`` holds the stat entries per directory; ``racy`` lists the files
    hashed in this scan that changed too recently (at or after ``stamp``) to
    be trusted next time. ``skipped`` lists the files left out for their
    size (and names that mean ``.git`` elsewhere); ``left_out`` says, for the
    first :data:`LEFT_OUT_LIMIT` paths the scan could or would not save, why
    (``left_out_count`` counts them all); ``nested`` lists nested
    repositories that are not registered submodules.
    """

    tree: bytes
    dirs: DirCache
    links: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, TreeEntry] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    racy: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    left_out_count: int = 0
    nested: list[str] = field(default_factory=list)
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
    submodule_head: Callable[[str], bytes | None] | None = None,
) -> ScanResult:
    """Write every kept file of ``root`` as blobs and trees; return the root tree.

    Files whose stat matches ``cache`` are not read, and directories whose
    files all matched and whose subdirectories are unchanged reuse their tree
    id from ``trees``. ``tracked(path)`` says whether git tracks a path (or,
    for ``"dir/"``, anything under it); it is only asked about ignored paths.
    ``submodule(path)`` says whether a directory holding a ``.git`` is a
    registered submodule (recorded as a gitlink, at the commit
    ``submodule_head(path)`` reads); any other nested repository is walked
    like a plain directory, its ``.git`` left out, and listed in ``nested``.
    Reserved names (see :mod:`.reserved`), fifos, sockets, devices, and
    directories too deep or with too long a path are left out and listed in
    ``left_out`` with the reason. Files hashed whose mtime or ctime is at or
    after ``stamp_ns`` (see :meth:`StatCache.stamp`) are listed in ``racy``.
    Raises :class:`GitError` if a file keeps changing while it is read or
    cannot be read, or if a directory is swapped while the scan is in it.
    """
    scan = _Scan(
        store, cache, trees or {}, policy, _Ignore(policy, tracked, submodule), stamp_ns, str(root),
        submodule_head or (lambda _: None),
    )
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise GitError(f"cannot scan {root}: {exc.strerror}; it must be a directory, not a symlink") from None
    try:
        scan.root_dev = os.fstat(root_fd).st_dev
        tree, _ = scan.walk(root_fd)
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
#: Deepest directory a scan enters (git's own core.maxTreeDepth default); deeper ones are left out.
MAX_DEPTH = 4096
#: Longest relative path, in bytes, of a directory a scan enters (the memory a walk holds grows with it).
MAX_PATH_BYTES = 16384
#: Left-out paths recorded one by one; past this only their number is kept.
LEFT_OUT_LIMIT = 1000
# Directory descriptors held open along the walk's path; deeper ones are
# closed and reopened (checked to be the same directory) when needed again.
_FD_WINDOW = 64
_SPECIAL = {
    0o010000: "a fifo", 0o140000: "a socket", 0o020000: "a character device", 0o060000: "a block device",
}


BARE_REASON = "makes its directory a git repository to git on the host (HEAD with objects/ and refs/, or commondir)"


class _Frame:
    """One directory on the walk's path: its listing, where the walk is in it, and what it found."""

    __slots__ = ("rel", "prefix", "name", "fd", "ident", "entries", "pos", "known", "files", "subs",
                 "changed", "pushed")

    def __init__(self, rel: str, name: str, fd: int, ident: tuple[int, int], entries: list[tuple[str, bool]],
                 known: dict[str, CacheEntry], pushed: bool) -> None:
        self.rel = rel
        self.prefix = rel + "/" if rel else ""
        self.name = name
        self.fd = fd
        self.ident = ident
        self.entries = entries
        self.pos = 0
        self.known = known
        self.files: dict[str, CacheEntry] = {}
        self.subs: list[tuple[str, int, bytes]] = []  # subdirectories and gitlinks: (name, mode, hex sha)
        self.changed = False
        self.pushed = pushed


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
        submodule_head: Callable[[str], bytes | None],
    ) -> None:
        self.root = root
        self.root_dev = -1
        self.store = store
        self.cache = cache
        self.trees = trees
        self.max_size = policy.max_file_size
        self.reserved = policy.reserved
        self.ignore = ignore
        self.submodule_head = submodule_head
        # Without a stamp nothing hashed now counts as racy (callers that save
        # the cache always pass one).
        self.stamp = stamp_ns if stamp_ns is not None else 1 << 63
        self.result = ScanResult(tree=b"", dirs={}, stamp=self.stamp)

    def leave_out(self, path: str, reason: str) -> None:
        result = self.result
        result.left_out_count += 1
        if len(result.left_out) < LEFT_OUT_LIMIT:
            result.left_out[path] = reason

    def walk(self, root_fd: int) -> tuple[bytes | None, bool]:
        """Scan the tree under ``root_fd``; return ``(root tree id or None if empty, changed)``.

        Depth-first with an explicit stack, never recursion, so any depth
        the limits allow is walked; at most :data:`_FD_WINDOW` directory
        descriptors are held, whatever the depth. Everything is opened
        relative to a directory descriptor without following symlinks, so
        a directory swapped for a symlink while the scan runs cannot make it
        read (and store) files from outside the worktree.
        """
        info = os.fstat(root_fd)
        stack = [self._enter(root_fd, "", "", (info.st_dev, info.st_ino))]
        try:
            while True:
                frame = stack[-1]
                child = self._files(stack)
                if child is not None:
                    self._descend(stack, *child)
                    continue
                tree, changed = self._finish(frame)
                stack.pop()
                if frame.fd >= 0 and stack:
                    os.close(frame.fd)
                if not stack:
                    return tree, changed
                parent = stack[-1]
                if tree is not None:
                    parent.subs.append((frame.name, 0o40000, tree))
                    parent.changed = parent.changed or changed
        finally:
            for frame in stack[1:]:
                if frame.fd >= 0:
                    os.close(frame.fd)

    def _enter(self, fd: int, rel: str, name: str, ident: tuple[int, int]) -> _Frame:
        try:
            # Names and d_type only: the descriptor may be closed and reopened
            # (as another number) before the entries are looked at, so nothing
            # may later go through a DirEntry, which remembers the old one.
            with os.scandir(fd) as listing:
                entries = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing]
        except OSError as exc:
            raise GitError(f"cannot list {self._path(rel)}: {exc.strerror}") from None
        pushed = False
        for entry_name, _ in entries:
            if entry_name == ".gitignore":
                # Only directories that have a .gitignore pay for reading one.
                pushed = self.ignore.push_dir(fd, rel)
                break
        return _Frame(rel, name, fd, ident, entries, self.cache.get(rel, _NOTHING), pushed)

    def _descend(self, stack: list[_Frame], name: str, rel: str, fd: int) -> None:
        """Enter subdirectory ``name`` (open as ``fd``) of the top frame, or record it as a gitlink."""
        parent = stack[-1]
        try:
            info = os.fstat(fd)
            frame = self._enter(fd, rel, name, (info.st_dev, info.st_ino))
        except BaseException:
            os.close(fd)  # not on the stack yet, so the walk's clean-up would miss it
            raise
        if any(entry_name == ".git" for entry_name, _ in frame.entries):
            if self.ignore.submodule(rel):
                os.close(fd)
                if frame.pushed:
                    self.ignore.stack.pop()
                head = self.submodule_head(rel)
                if head:  # a submodule with a checked-out commit
                    parent.subs.append((name, 0o160000, head))
                    self.result.links[rel] = head
                parent.changed = True  # rare enough not to cache
                return
            # Someone else's repository inside the worktree: its files are
            # saved like any others, its .git is never read or followed.
            self.result.nested.append(rel)
            self.leave_out(rel + "/.git", "a nested repository's git directory (never read or followed)")
        names = {entry_name for entry_name, _ in frame.entries}
        if "HEAD" in names and ("commondir" in names or ("objects" in names and "refs" in names)):
            # Git on the host takes such a directory for a (bare) repository, and trusts its config
            # because armor, not the agent, made the directory: without its HEAD, no checkout of it is one.
            self.result.nested.append(rel)
            self.leave_out(rel + "/HEAD", BARE_REASON)
            frame.entries = [entry for entry in frame.entries if entry[0] != "HEAD"]
        stack.append(frame)
        # Keep a bounded number of descriptors open: close the one that fell out of the window.
        far = len(stack) - 1 - _FD_WINDOW
        if far > 0 and stack[far].fd >= 0:
            os.close(stack[far].fd)
            stack[far].fd = -1

    def _reopen(self, stack: list[_Frame]) -> int:
        """The top frame's descriptor, reopened from the nearest open ancestor if it was closed.

        Each level reopened is checked to be the directory the walk entered
        (device and inode), so a directory renamed or swapped meanwhile is
        never read in its place. The last :data:`_FD_WINDOW` levels reopened
        stay open, so climbing back up a deep chain costs O(depth) opens per
        window, not per level.
        """
        top = len(stack) - 1
        if stack[top].fd >= 0:
            return stack[top].fd
        start = top
        while stack[start].fd < 0:
            start -= 1
        keep_from = top - _FD_WINDOW + 1
        fd = stack[start].fd
        for i in range(start + 1, top + 1):
            frame = stack[i]
            try:
                new = os.open(frame.name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                new = -1
            if i - 1 > start and i - 1 < keep_from:
                os.close(fd)
                stack[i - 1].fd = -1
            if new >= 0:
                info = os.fstat(new)
                if (info.st_dev, info.st_ino) != frame.ident:
                    os.close(new)
                    new = -1
            if new < 0:
                raise GitError(
                    f"{self._path(frame.rel)} was moved or replaced while it was scanned; "
                    "stop whatever is rewriting the worktree and retry the checkpoint"
                )
            frame.fd = fd = new
        return fd

    def _files(self, stack: list[_Frame]) -> tuple[str, str, int] | None:
        """Go on through the top frame's entries; return the next subdirectory to enter, or None when done.

        This loop runs once per file on every checkpoint, so it is written
        for speed: an unchanged file costs one ``fstatat`` and a few
        comparisons.
        """
        frame = stack[-1]
        result, ignore, reserved = self.result, self.ignore, self.reserved
        filtering = ignore.user is not None or bool(ignore.stack)
        max_size, stamp, root_dev = self.max_size, self.stamp, self.root_dev
        prefix, known, files, entries = frame.prefix, frame.known, frame.files, frame.entries
        if frame.pos >= len(entries):
            return None  # done: no need to reopen a descriptor closed while below
        dir_fd = self._reopen(stack)
        while frame.pos < len(entries):
            name, is_dir = entries[frame.pos]
            frame.pos += 1
            if name == ".git" or name.startswith(TEMP_PREFIX):
                continue  # the worktree's link to its repository (or a nested repo's); a crashed restore's temp file
            if (name[0] in ".gG" or not name.isascii()) and means_dot_git(name):
                result.skipped.append(prefix + name)  # '.GIT', 'git~1', '.g\u200cit': .git on other filesystems
                self.leave_out(prefix + name, "means '.git' on another filesystem")
                continue
            if reserved.entry(prefix, name):
                self.leave_out(prefix + name, RESERVED_REASON)
                continue
            if is_dir:  # from d_type, read with the listing
                rel = prefix + name
                if filtering and ignore.excluded(rel, True):
                    continue
                if len(stack) >= MAX_DEPTH:
                    self.leave_out(rel, f"deeper than {MAX_DEPTH} directories")
                    continue
                if len(rel) > MAX_PATH_BYTES // 4 and len(os.fsencode(rel)) > MAX_PATH_BYTES:
                    self.leave_out(rel, f"its path is longer than {MAX_PATH_BYTES} bytes")
                    continue
                try:
                    sub_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue  # deleted while we looked
                except OSError:
                    sub_fd = -1  # no longer a directory (swapped meanwhile): taken as what it is now
                if sub_fd >= 0:
                    return name, rel, sub_fd
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)  # the name in dir_fd, not a path
            except FileNotFoundError:
                continue  # deleted while we looked: it is simply not in this snapshot
            mode = info.st_mode
            kind = mode & 0o170000  # S_IFMT, inline: this runs once per file
            if kind == 0o100000:
                git_mode = 0o100755 if mode & S_IXUSR else 0o100644
            elif kind == 0o120000:
                git_mode = 0o120000
            else:
                if kind in _SPECIAL:  # git has no object for these
                    self.leave_out(prefix + name, _SPECIAL[kind])
                continue  # (a directory that just appeared is in the next snapshot)
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
                frame.changed = True
                # A file on another filesystem (a mount inside the worktree) has
                # timestamps from another clock than the stamp's: never trusted.
                if record[0] >= stamp or record[1] >= stamp or record[4] != root_dev:  # type: ignore[operator]
                    result.racy.append(prefix + name)
            files[name] = record
        return None

    def _finish(self, frame: _Frame) -> tuple[bytes | None, bool]:
        """Write the finished frame's tree (or reuse last scan's); return ``(tree id or None if empty, changed)``."""
        result, files, subs, rel_dir = self.result, frame.files, frame.subs, frame.rel
        if frame.pushed:
            self.ignore.stack.pop()
        if files:
            result.dirs[rel_dir] = files
        if not files and not subs:
            return None, True  # git has no empty trees; an empty directory is not recorded
        previous = self.trees.get(rel_dir)
        sub_names = sorted(name for name, _, _ in subs) if subs else []
        # Every file matched its cache entry one to one, so the names are the
        # same as last time; only the subdirectory names are left to compare.
        if not frame.changed and previous is not None and len(files) == len(frame.known) and previous[0] == sub_names:
            result.trees[rel_dir] = previous
            return str(previous[1]).encode(), False
        tree_id = self._write_tree(files, subs)
        result.trees[rel_dir] = [sub_names, tree_id.decode()]
        return tree_id, previous is None or str(previous[1]).encode() != tree_id

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
