"""Making a worktree match a tree exactly: the write side of checkpoints.

The worktree belongs to a task whose processes may still run while it is
restored, so every change goes through :class:`~armor_rx.sinks.git.beneath.Beneath`:
a directory swapped for a symlink in the middle of a restore makes the
restore fail; it never makes it write, chmod or delete anything outside the
worktree.
"""

from __future__ import annotations

import os
import stat as st
from dataclasses import dataclass
from pathlib import Path

from dulwich.object_store import DiskObjectStore

from armor_rx.errors import GitError
from armor_rx.sinks.git.beneath import GITLINK as _GITLINK
from armor_rx.sinks.git.beneath import Beneath, check_name, chmod_regular_file, walk_beneath
from armor_rx.sinks.git.blobs import iter_blob
from armor_rx.sinks.git.scan import CacheEntry
from armor_rx.sinks.git.trees import Files, flatten_tree

__all__ = ["Files", "RestoreStats", "flatten_tree", "materialize"]

_SYMLINK = 0o120000
_EXECUTABLE = 0o100755


@dataclass
class RestoreStats:
    written: int = 0
    removed: int = 0
    chmodded: int = 0


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

    ``current`` comes from a fresh scan of ``root``: all the files it kept, or
    only those that differ from ``target`` (see
    :func:`~armor_rx.sinks.git.trees.diff_trees`; files the same on both sides
    need no change). Paths on disk that it does not list are left alone
    unless the target needs the spot. Unchanged files are not touched. Submodule
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
    with Beneath(root, current) as tree:
        # Remove first, deepest first, so a file can replace a directory and back.
        emptied: set[str] = set()
        for path in sorted(current.keys() - target.keys(), reverse=True):
            if current[path][0] == _GITLINK:
                continue
            parent, _, name = path.rpartition("/")
            check_name(name, path)
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
            check_name(name, path)
            pfd = tree.directory(parent, path)
            if mode == _GITLINK:
                tree.make_dir(pfd, name, path)
                continue
            perms = (0o777 if mode == _EXECUTABLE else 0o666) & ~mask
            if (
                have is not None and have[1] == sha and have[0] != _SYMLINK and mode != _SYMLINK
                and chmod_regular_file(pfd, name, perms)
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
        # Iterative: the parents not looked at yet are checked top-down.
        pending = []
        while rel not in real_dirs:
            pending.append(rel)
            rel = rel.rpartition("/")[0]
        known = real_dirs[rel]
        for here in reversed(pending):
            if known:
                kind = _lstat_kind(f"{base}/{here}")
                known = kind is None or st.S_ISDIR(kind)
                if not known and not saved(here):
                    blocked.add(here)  # a file or symlink stands where the target needs a directory
            real_dirs[here] = known
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
            # Iterative and symlink-safe (os.walk recurses once per level);
            # symlinks to directories come back as files, which is what they are here.
            for sub, dirnames, filenames in walk_beneath(full):
                rel = f"{path}/{sub}" if sub else path
                if ".git" in dirnames or ".git" in filenames:
                    blocked.add(rel + "/")  # a repository, never ours to delete
                    dirnames[:] = []
                    continue
                blocked.update(f"{rel}/{n}" for n in filenames if not saved(f"{rel}/{n}"))
        elif kind is not None and path not in current:
            blocked.add(path)  # an unsaved file the target would overwrite
    return sorted(blocked)


def _lstat_kind(path: str) -> int | None:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return None


