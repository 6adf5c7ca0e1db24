"""The per-task stat cache: what the last scan saw, so the next one reads only what changed.

Private to armor_rx (one JSON file per task under the state directory), so it
never fights with the git CLI over the real index.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
from dulwich.object_store import DiskObjectStore

from armor_rx.sinks.git.blobs import has_object

CACHE_VERSION = 3
#: Where no timestamp can be taken on the worktree's own filesystem, files
#: modified this close to the wall clock at scan start are not trusted (this
#: covers FAT's 2 s timestamps).
FALLBACK_RACY_NS = 2_000_000_000

# Cache entry: [mtime_ns, ctime_ns, size, ino, dev, uid, gid, mode, sha]
CacheEntry = list[object]
# The stat cache, per directory: {directory: {name: entry}}
DirCache = dict[str, dict[str, CacheEntry]]
# Tree entry: [names of the subdirectories and gitlinks in the directory, tree sha]
TreeEntry = list[object]


class StatCache:
    """The per-task stat cache, stored as JSON next to the other git state.

    Besides per-file stat entries it keeps, per directory, its tree id, so an
    unchanged directory's tree is reused without being rebuilt. The root tree
    id is kept too: if ``git gc`` has removed it, the objects the cache points
    at may be gone as well, and the cache is dropped.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # What this object last saved, with the file's stat signature: the next
        # load skips parsing the file when nobody else has written it since.
        self._memo: tuple[tuple[int, int, int], DirCache, dict[str, TreeEntry], str | None] | None = None

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def stamp(self, worktree: Path) -> int:
        """A timestamp from the worktree's filesystem clock, taken before a scan.

        Files whose mtime or ctime is at or after it may change again within
        the same timestamp tick after being hashed, so they are not trusted
        next time (git's "racy" case). Reading the time off a freshly touched
        file makes the comparison hold on filesystems with coarse timestamps
        and on network filesystems whose server clock differs from ours.
        """
        marker = self._marker()
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            os.utime(marker)  # touch() leaves an existing file's times alone on some systems
            info = marker.stat()
            if info.st_dev == os.stat(worktree).st_dev:
                return info.st_mtime_ns
        except OSError:
            pass
        # Another filesystem, or no stamp could be written: a generous window.
        return time.time_ns() - FALLBACK_RACY_NS

    def _marker(self) -> Path:
        return self.path.with_name(self.path.name + ".stamp")

    def delete(self) -> None:
        """Remove the cache and its stamp file (a worktree of thousands of files has a cache of megabytes)."""
        self._memo = None
        for path in (self.path, self._marker(), self.path.with_suffix(".tmp")):
            path.unlink(missing_ok=True)

    def load_all(self, store: DiskObjectStore | None = None) -> tuple[DirCache, dict[str, TreeEntry]]:
        memo = self._memo
        if memo is not None and memo[0] == self._signature():
            _, entries, trees, root_hex = memo
            if store is None or (root_hex is not None and has_object(store, root_hex.encode())):
                return entries, trees
        try:
            data = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}, {}  # a lost cache only costs a full re-hash
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            return {}, {}
        root = data.get("root")
        if store is not None and (not isinstance(root, str) or not has_object(store, root.encode())):
            return {}, {}
        # Racy entries were left out when saving (see save), so no filtering here.
        return data.get("dirs", {}), data.get("trees", {})

    def save(
        self,
        dirs: DirCache,
        stamp_ns: int,
        trees: dict[str, TreeEntry] | None = None,
        root: bytes | None = None,
        racy: list[str] | None = None,
    ) -> None:
        """Store ``dirs`` and ``trees``, leaving out entries changed at or after ``stamp_ns``.

        ``racy`` names those entries when the caller knows them (a scan
        does); otherwise every entry is checked. ``dirs`` is not modified.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if racy is None:
            # e[0], e[1] are always ints (mtime_ns, ctime_ns), from os.stat or from JSON.
            racy = [
                f"{d}/{name}" if d else name
                for d, entries in dirs.items()
                for name, e in entries.items()
                if e[0] >= stamp_ns or e[1] >= stamp_ns  # type: ignore[operator]
            ]
        trees = trees or {}
        if racy:
            dirs, trees = _without(dirs, trees, racy)
        document = {
            "version": CACHE_VERSION,
            "root": root.decode() if root else None,
            "dirs": dirs,
            "trees": trees,
        }
        try:
            raw = orjson.dumps(document)
        except orjson.JSONEncodeError:
            # Names that are not UTF-8 (undecodable bytes, kept as surrogates)
            # cannot go into JSON: their files are re-hashed on every scan, and
            # their directories' trees rebuilt, since they lack an entry.
            bad_dirs = {d for d in dirs if not is_utf8(d)}
            bad_files = [
                f"{d}/{n}" if d else n
                for d, entries in dirs.items()
                if d not in bad_dirs
                for n in entries
                if not is_utf8(n)
            ]
            dirs, trees = _without(dirs, trees, bad_files)
            dirs = {d: entries for d, entries in dirs.items() if d not in bad_dirs}
            trees = {d: t for d, t in trees.items() if is_utf8(d) and all(is_utf8(str(n)) for n in t[0])}  # type: ignore[attr-defined]
            document["dirs"], document["trees"] = dirs, trees
            raw = orjson.dumps(document)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(raw)
        os.replace(tmp, self.path)
        signature = self._signature()
        self._memo = (signature, dirs, trees, root.decode() if root else None) if signature is not None else None


def _without(
    dirs: DirCache, trees: dict[str, TreeEntry], paths: list[str]
) -> tuple[DirCache, dict[str, TreeEntry]]:
    """``dirs`` and ``trees`` without the entries of ``paths`` (the arguments are not modified).

    A directory's tree may only be reused while the cache holds an entry for
    every file in it (see the scan), so the trees of the directories that
    lose one go too, with their parents'; every other tree is kept.
    """
    dirs = dict(dirs)
    stale = {""}
    for path in paths:
        directory, _, name = path.rpartition("/")
        entries = dirs.get(directory)
        if entries is not None and name in entries:
            dirs[directory] = {n: e for n, e in entries.items() if n != name}
        parts = directory.split("/") if directory else []
        stale.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return dirs, {d: t for d, t in trees.items() if d not in stale}


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
