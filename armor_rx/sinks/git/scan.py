"""Turning a worktree into a git tree, incrementally.

The scan walks the worktree, skips what the excludes say, and hashes only the
files whose stat information changed since the last scan (like git's index).
The stat cache is private to armor_rx, one file per task under the state
directory, so it never fights with the git CLI over the real index.
"""

from __future__ import annotations

import binascii
import os
import stat as st
from stat import S_ISLNK, S_IXUSR
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pathspec
from dulwich.index import read_submodule_head, validate_path_element_hfs, validate_path_element_ntfs
from dulwich.object_store import DiskObjectStore

from armor_rx.errors import GitError
from armor_rx.sinks.git.blobs import FileChanged, has_object, write_blob_bytes, write_blob_from_file, write_object_bytes

# A file modified within this window before a scan began may have been changed
# again in the same timestamp tick after we hashed it; such entries are not
# trusted next time (git calls this the "racy" case).
RACY_NS = 1_000_000_000
CACHE_VERSION = 2

# Cache entry: [mtime_ns, ctime_ns, size, ino, dev, uid, gid, mode, sha]
CacheEntry = list[object]
# Tree entry: [names in the directory, tree sha]
TreeEntry = list[object]


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

    ``files`` maps each path to ``(mode, sha)``, submodules included.
    """

    tree: bytes
    cache: dict[str, CacheEntry]
    links: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, TreeEntry] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    hashed: int = 0
    bytes_added: int = 0

    @property
    def files(self) -> dict[str, tuple[int, bytes]]:
        # Built on demand: a plain checkpoint never needs it, restore does.
        out = {p: (int(e[7]), str(e[8]).encode()) for p, e in self.cache.items()}  # type: ignore[call-overload]
        out.update({p: (0o160000, sha) for p, sha in self.links.items()})
        return out

    @property
    def count(self) -> int:
        return len(self.cache) + len(self.links)


class StatCache:
    """The per-task stat cache, stored as JSON next to the other git state.

    Besides per-file stat entries it keeps, per directory, the names it held
    and its tree id, so an unchanged directory's tree is reused without being
    rebuilt. The root tree id is kept too: if ``git gc`` has removed it, the
    objects the cache points at may be gone as well, and the cache is dropped.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # What this object last saved, with the file's stat signature: the next
        # load skips parsing the file when nobody else has written it since.
        self._memo: tuple[tuple[int, int, int], dict[str, CacheEntry], dict[str, TreeEntry], str | None] | None = None

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def load(self, store: DiskObjectStore | None = None) -> dict[str, CacheEntry]:
        return self.load_all(store)[0]

    def load_all(self, store: DiskObjectStore | None = None) -> tuple[dict[str, CacheEntry], dict[str, TreeEntry]]:
        memo = self._memo
        if memo is not None and memo[0] == self._signature():
            _, entries, trees, root_hex = memo
            if store is None or (root_hex is not None and has_object(store, root_hex.encode())):
                return entries, trees
        try:
            data = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}, {}  # a lost cache only costs a full re-hash
        if data.get("version") != CACHE_VERSION:
            return {}, {}
        root = data.get("root")
        if store is not None and (not isinstance(root, str) or not has_object(store, root.encode())):
            return {}, {}
        # Racy entries were left out when saving (see save), so no filtering here.
        return data.get("entries", {}), data.get("trees", {})

    def save(
        self,
        entries: dict[str, CacheEntry],
        scan_start_ns: int,
        trees: dict[str, TreeEntry] | None = None,
        root: bytes | None = None,
    ) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        limit = scan_start_ns - RACY_NS
        # e[0] is always an int (mtime_ns), from os.stat or from JSON.
        racy = [p for p, e in entries.items() if e[0] >= limit]  # type: ignore[operator]
        if racy:
            dropped = set(racy)
            entries = {p: e for p, e in entries.items() if p not in dropped}
            # The directories holding a dropped entry, and their parents, must be
            # rebuilt next time; every other directory's tree can still be reused.
            stale = {""}
            for path in racy:
                parts = path.split("/")[:-1]
                stale.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
            trees = {d: t for d, t in (trees or {}).items() if d not in stale}
        trees = trees or {}
        document = {
            "version": CACHE_VERSION,
            "scan_start_ns": scan_start_ns,
            "root": root.decode() if root else None,
            "entries": entries,
            "trees": trees,
        }
        try:
            raw = orjson.dumps(document)
        except orjson.JSONEncodeError:
            # Names that are not UTF-8 (undecodable bytes, kept as surrogates)
            # cannot go into JSON: their files are simply re-hashed on every scan.
            entries = {p: e for p, e in entries.items() if _is_utf8(p)}
            trees = {d: t for d, t in trees.items() if _is_utf8(d) and all(_is_utf8(str(n)) for n in t[0])}  # type: ignore[attr-defined]
            document["entries"], document["trees"] = entries, trees
            raw = orjson.dumps(document)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(raw)
        os.replace(tmp, self.path)
        signature = self._signature()
        self._memo = (signature, entries, trees, root.decode() if root else None) if signature is not None else None


def _aliases_git_dir(name: str) -> bool:
    """Whether ``name`` means ``.git`` on a case-insensitive, NTFS or HFS+ filesystem.

    Such entries in a tree are how checkouts get hooks planted in them; git's
    fsck rejects them, so they are never recorded.
    """
    raw = os.fsencode(name)
    # dulwich's HFS check refuses any undecodable name; HFS+ cannot store one,
    # so only its decodable characters could spell '.git' there.
    readable = raw.decode("utf-8", "ignore").encode("utf-8")
    return not (validate_path_element_ntfs(raw) and validate_path_element_hfs(readable))


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_mode(st_mode: int) -> int:
    """Git's mode for a file: 100755 if the owner may execute it, else 100644."""
    return 0o100755 if st_mode & st.S_IXUSR else 0o100644


class _Ignore:
    """Exclude patterns plus the .gitignore files met on the way down."""

    def __init__(self, policy: ScanPolicy, tracked: Callable[[str], bool], submodule: Callable[[str], bool]) -> None:
        self.user = pathspec.GitIgnoreSpec.from_lines(policy.excludes) if policy.excludes else None
        self.honor = policy.honor_gitignore
        self.tracked = tracked
        self.submodule = submodule
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
    cache: dict[str, CacheEntry],
    policy: ScanPolicy,
    tracked: Callable[[str], bool] = lambda _: False,
    trees: dict[str, TreeEntry] | None = None,
    submodule: Callable[[str], bool] = lambda _: False,
) -> ScanResult:
    """Write every kept file of ``root`` as blobs and trees; return the root tree.

    Files whose stat matches ``cache`` are not read, and directories whose
    files all matched and whose names match ``trees`` reuse their tree id.
    ``tracked(path)`` says whether git tracks a path (or, for ``"dir/"``,
    anything under it); it is only asked about ignored paths.
    ``submodule(path)`` says whether a directory holding a ``.git`` is a
    registered submodule (recorded as a gitlink); any other nested repository
    is walked like a plain directory, its ``.git`` left out. Raises
    :class:`GitError` if a file keeps changing while it is read or cannot be read.
    """
    result = ScanResult(tree=b"", cache={})
    ignore = _Ignore(policy, tracked, submodule)
    tree, _, _ = _scan_dir(str(root), "", store, cache, trees or {}, policy, ignore, result)
    if tree is None:
        tree, _ = write_object_bytes(store, b"tree", b"")
        result.trees[""] = [[], tree.decode()]
    result.tree = tree
    return result


def _scan_dir(
    abs_dir: str,
    rel_dir: str,
    store: DiskObjectStore,
    cache: dict[str, CacheEntry],
    trees: dict[str, TreeEntry],
    policy: ScanPolicy,
    ignore: _Ignore,
    result: ScanResult,
) -> tuple[bytes | None, bool, bytes | None]:
    """Scan one directory; return ``(tree id or None if empty, changed, submodule head)``.

    A directory below the root that holds a ``.git`` and is a registered
    submodule is not walked; its checked-out commit is returned as the third
    value (``b""`` if it has none). A nested repository that is not a
    submodule is walked, so its files are saved.

    This loop runs once per file on every checkpoint, so it is written for
    speed: names stay ``str``, and the tree is only serialised when something
    in the directory changed.
    """
    try:
        entries = list(os.scandir(abs_dir))
    except OSError as exc:
        raise GitError(f"cannot list {abs_dir}: {exc}") from None
    names_here = {entry.name for entry in entries}
    if rel_dir and ".git" in names_here and ignore.submodule(rel_dir):
        return None, True, read_submodule_head(abs_dir) or b""
    # Only directories that have a .gitignore pay for reading one.
    pushed = ignore.push_dir(abs_dir, rel_dir) if ".gitignore" in names_here else False
    filtering = ignore.user is not None or bool(ignore.stack)
    max_size = policy.max_file_size
    prefix = rel_dir + "/" if rel_dir else ""
    out_cache = result.cache
    # (sort key, mode, name, hex sha) — git orders names as bytes, and a
    # directory as if named "name/".
    items: list[tuple[str, int, str, str]] = []
    changed = False
    for entry in entries:
        name = entry.name
        if name == ".git":
            continue  # the worktree's link to the repository, or a nested repo's
        rel = prefix + name
        if (name[0] in ".gG" or not name.isascii()) and _aliases_git_dir(name):
            result.skipped.append(rel)  # '.GIT', 'git~1', '.g\u200cit': .git on other filesystems
            continue
        if entry.is_dir(follow_symlinks=False):  # from d_type: no system call
            if filtering and ignore.excluded(rel, True):
                continue
            sub, sub_changed, head = _scan_dir(entry.path, rel, store, cache, trees, policy, ignore, result)
            if head is not None:
                if head:  # a submodule with a checked-out commit
                    items.append((name, 0o160000, name, head.decode()))
                    result.links[rel] = head
                changed = True  # rare enough not to cache
                continue
            if sub is not None:
                items.append((name + "/", 0o40000, name, sub.decode()))
                changed = changed or sub_changed
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # deleted while we looked: it is simply not in this snapshot
        mode = info.st_mode
        kind = mode & 0o170000  # S_IFMT, inline: this runs once per file
        if kind == 0o100000:
            is_link = False
        elif kind == 0o120000:
            is_link = True
        else:
            continue  # sockets, fifos, devices have no git representation
        if filtering and ignore.excluded(rel, False):
            continue
        if max_size is not None and not is_link and info.st_size > max_size:
            result.skipped.append(rel)
            continue
        git_mode = 0o120000 if is_link else (0o100755 if mode & S_IXUSR else 0o100644)
        record = cache.get(rel)
        if (
            record is None
            or record[0] != info.st_mtime_ns
            or record[2] != info.st_size
            or record[1] != info.st_ctime_ns
            or record[3] != info.st_ino
            or record[7] != git_mode
        ):
            record = _blob_for(entry.path, info, store, result)
            changed = True
        items.append((name, record[7], name, record[8]))  # type: ignore[arg-type]
        out_cache[rel] = record
    if pushed:
        ignore.stack.pop()
    if not items:
        return None, True, None  # git has no empty trees; an empty directory is not recorded
    # Git orders entries by their bytes. For names that are valid UTF-8 the
    # code-point order of str is the same, and much cheaper; only a directory
    # holding an undecodable name (kept as surrogates) pays for bytes keys.
    names = [item[0] for item in items]
    joined = "".join(names)  # one C-level check for the whole directory
    if joined.isascii() or _is_utf8(joined):
        items.sort()
    else:
        items.sort(key=lambda item: os.fsencode(item[0]))
    names = [item[0] for item in items]
    previous = trees.get(rel_dir)
    if not changed and previous is not None and previous[0] == names:
        result.trees[rel_dir] = previous
        return str(previous[1]).encode(), False, None
    raw = b"".join(
        b"%o %s\x00%s" % (m, os.fsencode(n), binascii.unhexlify(h)) for _, m, n, h in items
    )
    tree_id, _ = write_object_bytes(store, b"tree", raw)
    result.trees[rel_dir] = [names, tree_id.decode()]
    return tree_id, previous is None or str(previous[1]).encode() != tree_id, None


def _blob_for(path: str, info: os.stat_result, store: DiskObjectStore, result: ScanResult) -> CacheEntry:
    """Hash and store one file whose stat did not match the cache; return its cache entry."""
    for _ in range(5):
        is_link = S_ISLNK(info.st_mode)
        git_mode = 0o120000 if is_link else (0o100755 if info.st_mode & S_IXUSR else 0o100644)
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
        return [
            info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino,
            info.st_dev, info.st_uid, info.st_gid, git_mode, sha.decode(),
        ]
    raise GitError(f"{path} kept changing while it was read; stop the writer and retry the checkpoint")


def scan_start() -> int:
    """The timestamp to save with a cache: taken before the walk starts."""
    return time.time_ns()
