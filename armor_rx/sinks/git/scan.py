"""Turning a worktree into a git tree, incrementally.

The scan walks the worktree, skips what the excludes say, and hashes only the
files whose stat information changed since the last scan (like git's index).
The stat cache is private to armor_rx, one file per task under the state
directory, so it never fights with the git CLI over the real index.
"""

from __future__ import annotations

import os
import stat as st
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pathspec
from dulwich.index import read_submodule_head
from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID, Tree

from armor_rx.errors import GitError
from armor_rx.sinks.git.blobs import FileChanged, has_object, write_blob_bytes, write_blob_from_file

# A file modified within this window before a scan began may have been changed
# again in the same timestamp tick after we hashed it; such entries are not
# trusted next time (git calls this the "racy" case).
RACY_NS = 1_000_000_000
CACHE_VERSION = 1

# Cache entry: [mtime_ns, ctime_ns, size, ino, dev, uid, gid, mode, sha]
CacheEntry = list[object]


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
    """A scanned worktree: its tree id and, per file, ``(mode, sha)``."""

    tree: bytes
    files: dict[str, tuple[int, bytes]]
    cache: dict[str, CacheEntry]
    skipped: list[str] = field(default_factory=list)
    hashed: int = 0
    bytes_added: int = 0


class StatCache:
    """The per-task stat cache, stored as JSON next to the other git state."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, CacheEntry]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}  # a lost cache only costs a full re-hash
        if data.get("version") != CACHE_VERSION:
            return {}
        limit = int(data.get("scan_start_ns", 0)) - RACY_NS
        entries: dict[str, CacheEntry] = data.get("entries", {})
        return {p: e for p, e in entries.items() if int(e[0]) < limit}  # type: ignore[call-overload]

    def save(self, entries: dict[str, CacheEntry], scan_start_ns: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(
            orjson.dumps({"version": CACHE_VERSION, "scan_start_ns": scan_start_ns, "entries": entries})
        )
        os.replace(tmp, self.path)


def file_mode(st_mode: int) -> int:
    """Git's mode for a file: 100755 if the owner may execute it, else 100644."""
    return 0o100755 if st_mode & st.S_IXUSR else 0o100644


class _Ignore:
    """Exclude patterns plus the .gitignore files met on the way down."""

    def __init__(self, policy: ScanPolicy, tracked: Callable[[str], bool]) -> None:
        self.user = pathspec.GitIgnoreSpec.from_lines(policy.excludes) if policy.excludes else None
        self.honor = policy.honor_gitignore
        self.tracked = tracked
        self.stack: list[tuple[str, pathspec.GitIgnoreSpec]] = []

    def push_dir(self, abs_dir: str, rel_dir: str) -> bool:
        if not self.honor:
            return False
        try:
            with open(os.path.join(abs_dir, ".gitignore"), encoding="utf-8", errors="replace") as f:
                spec = pathspec.GitIgnoreSpec.from_lines(f.read().splitlines())
        except (FileNotFoundError, NotADirectoryError):
            return False
        self.stack.append((rel_dir, spec))
        return True

    def excluded(self, rel: str, is_dir: bool) -> bool:
        probe = rel + "/" if is_dir else rel
        if self.user is not None and self.user.match_file(probe):
            return True
        for prefix, spec in self.stack:
            if spec.match_file(probe[len(prefix) + 1 :] if prefix else probe):
                # A tracked file stays even if ignored; a directory may hold
                # tracked files, so it is only skipped when nothing in it is.
                return not self.tracked(rel) if not is_dir else not self.tracked(rel + "/")
        return False


def scan_worktree(
    root: Path,
    store: DiskObjectStore,
    cache: dict[str, CacheEntry],
    policy: ScanPolicy,
    tracked: Callable[[str], bool] = lambda _: False,
) -> ScanResult:
    """Write every kept file of ``root`` as blobs and trees; return the root tree.

    Files whose stat matches ``cache`` are not read. ``tracked(path)`` says
    whether git tracks a path (or, for ``"dir/"``, anything under it); it is
    only asked about ignored paths. Raises :class:`GitError` if a file keeps
    changing while it is read or cannot be read.
    """
    result = ScanResult(tree=b"", files={}, cache={})
    ignore = _Ignore(policy, tracked)
    empty = Tree()
    tree = _scan_dir(str(root), "", store, cache, policy, ignore, result)
    if tree is None:
        store.add_object(empty)
        tree = empty.id
    result.tree = tree
    return result


def _scan_dir(
    abs_dir: str,
    rel_dir: str,
    store: DiskObjectStore,
    cache: dict[str, CacheEntry],
    policy: ScanPolicy,
    ignore: _Ignore,
    result: ScanResult,
) -> bytes | None:
    pushed = ignore.push_dir(abs_dir, rel_dir)
    tree = Tree()
    count = 0
    try:
        entries = list(os.scandir(abs_dir))
    except OSError as exc:
        raise GitError(f"cannot list {abs_dir}: {exc}") from None
    for entry in entries:
        name = entry.name
        if name == ".git":
            continue  # the worktree's link to the repository, or a nested repo's
        rel = f"{rel_dir}/{name}" if rel_dir else name
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # deleted while we looked: it is simply not in this snapshot
        mode = info.st_mode
        if st.S_ISDIR(mode):
            if ignore.excluded(rel, True):
                continue
            if os.path.lexists(os.path.join(entry.path, ".git")):
                head = read_submodule_head(entry.path)
                if head is not None:
                    tree.add(os.fsencode(name), 0o160000, ObjectID(head))
                    result.files[rel] = (0o160000, head)
                    count += 1
                continue
            sub = _scan_dir(entry.path, rel, store, cache, policy, ignore, result)
            if sub is not None:
                tree.add(os.fsencode(name), st.S_IFDIR, ObjectID(sub))
                count += 1
            continue
        if not (st.S_ISREG(mode) or st.S_ISLNK(mode)):
            continue  # sockets, fifos, devices have no git representation
        if ignore.excluded(rel, False):
            continue
        if policy.max_file_size is not None and st.S_ISREG(mode) and info.st_size > policy.max_file_size:
            result.skipped.append(rel)
            continue
        sha, git_mode, info = _blob_for(entry.path, rel, info, store, cache, result)
        tree.add(os.fsencode(name), git_mode, ObjectID(sha))
        result.files[rel] = (git_mode, sha)
        result.cache[rel] = [
            info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino,
            info.st_dev, info.st_uid, info.st_gid, git_mode, sha.decode(),
        ]
        count += 1
    if pushed:
        ignore.stack.pop()
    if count == 0:
        return None  # git has no empty trees; an empty directory is not recorded
    tree_id: bytes = tree.id
    if not has_object(store, tree_id):
        store.add_object(tree)
    return tree_id


def _blob_for(
    path: str,
    rel: str,
    info: os.stat_result,
    store: DiskObjectStore,
    cache: dict[str, CacheEntry],
    result: ScanResult,
) -> tuple[bytes, int, os.stat_result]:
    for _ in range(5):
        is_link = st.S_ISLNK(info.st_mode)
        git_mode = 0o120000 if is_link else file_mode(info.st_mode)
        hit = cache.get(rel)
        if (
            hit is not None
            and hit[0] == info.st_mtime_ns
            and hit[1] == info.st_ctime_ns
            and hit[2] == info.st_size
            and hit[3] == info.st_ino
            and hit[7] == git_mode
        ):
            return str(hit[8]).encode(), git_mode, info
        try:
            if is_link:
                sha, added = write_blob_bytes(store, os.fsencode(os.readlink(path)))
            else:
                sha, added = write_blob_from_file(store, path, info.st_size)
        except FileChanged:
            info = os.lstat(path)
            continue
        except OSError as exc:
            raise GitError(f"cannot read {path}: {exc}; fix its permissions or exclude it") from None
        result.hashed += 1
        result.bytes_added += added
        return sha, git_mode, info
    raise GitError(f"{path} kept changing while it was read; stop the writer and retry the checkpoint")


def scan_start() -> int:
    """The timestamp to save with a cache: taken before the walk starts."""
    return time.time_ns()
