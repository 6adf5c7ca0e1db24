"""Making a worktree match a tree exactly: the write side of checkpoints."""

from __future__ import annotations

import os
import shutil
import stat as st
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID, Tree

from armor_rx.errors import GitError
from armor_rx.sinks.git.blobs import iter_blob
from armor_rx.sinks.git.paths import resolve_inside
from armor_rx.sinks.git.scan import CacheEntry

Files = dict[str, tuple[int, bytes]]


@dataclass
class RestoreStats:
    written: int = 0
    removed: int = 0
    chmodded: int = 0


def flatten_tree(store: DiskObjectStore, tree_id: bytes, prefix: str = "") -> Files:
    """Every blob and gitlink under ``tree_id`` as ``{path: (mode, sha)}``."""
    out: Files = {}
    tree = store[ObjectID(tree_id)]
    if not isinstance(tree, Tree):
        raise GitError(f"object {tree_id.decode()} is not a tree")
    for item in tree.iteritems():
        name = item.path.decode("utf-8", "surrogateescape")
        path = f"{prefix}/{name}" if prefix else name
        if st.S_ISDIR(item.mode):
            out.update(flatten_tree(store, item.sha, path))
        else:
            out[path] = (item.mode, item.sha)
    return out


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
    updated in place for every file written. Raises :class:`PathEscape` if a
    write would go through a symlink out of ``root``, and :class:`GitError`,
    before changing anything, if the target needs a spot that holds something
    ``current`` does not (a file where a directory goes, a directory with
    unsaved files where a file goes, or an unsaved file it would overwrite).
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
    # Remove first, deepest first, so a file can replace a directory and back.
    for path in sorted(set(current) - set(target), reverse=True):
        mode = current[path][0]
        if mode == 0o160000:
            continue
        full = root / path
        try:
            full.unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            continue
        cache.pop(path, None)
        stats.removed += 1
        _prune_empty_dirs(root, full.parent)
    for path, (mode, sha) in sorted(target.items()):
        have = current.get(path)
        if have == (mode, sha):
            continue
        full = root / path
        if mode == 0o160000:
            full.mkdir(parents=True, exist_ok=True)
            continue
        if (
            have is not None
            and have[1] == sha
            and have[0] != 0o120000
            and mode != 0o120000
            and not full.is_symlink()
            and full.is_file()
        ):
            os.chmod(full, (0o777 if mode == 0o100755 else 0o666) & ~mask)
            stats.chmodded += 1
        else:
            _write(root, path, mode, sha, store, mask)
            stats.written += 1
        info = os.lstat(full)
        cache[path] = [
            info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino,
            info.st_dev, info.st_uid, info.st_gid, mode, sha.decode(),
        ]
    return stats


def _unsaved_in_the_way(root: Path, current: Files, target: Files) -> list[str]:
    """Paths the restore would replace or delete although ``current`` holds no copy of them."""
    def saved(path: str) -> bool:
        return path in current and current[path][0] != 0o160000

    blocked: set[str] = set()
    seen_dirs: set[str] = set()
    for path, (mode, sha) in target.items():
        if current.get(path) == (mode, sha):
            continue
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in seen_dirs:
                continue
            seen_dirs.add(parent)
            full = root / parent
            if (full.is_symlink() or (full.exists() and not full.is_dir())) and not saved(parent):
                blocked.add(parent)  # a file stands where the target needs a directory
        if mode == 0o160000:
            continue
        full = root / path
        if full.is_dir() and not full.is_symlink():
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
        elif os.path.lexists(full) and not saved(path) and path not in current:
            blocked.add(path)  # an unsaved file the target would overwrite
    return sorted(blocked)


def _prune_empty_dirs(root: Path, directory: Path) -> None:
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (or already gone): stop climbing
        directory = directory.parent


def _make_parents(root: Path, path: str) -> Path:
    parts = path.split("/")
    here = root
    for part in parts[:-1]:
        here = here / part
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            here.unlink()
        here.mkdir(exist_ok=True)
    parent = here
    # The parent chain is now real directories we made or found; confirm no
    # symlink sneaked in above (a racing writer), since we are about to write.
    resolve_inside(root, "/".join(parts[:-1]) or ".")
    return parent


def _write(root: Path, path: str, mode: int, sha: bytes, store: DiskObjectStore, mask: int) -> None:
    parent = _make_parents(root, path)
    full = root / path
    if full.is_dir() and not full.is_symlink():
        # The target has a file where a directory now stands; what is left in
        # it was excluded from the scan (ignored files), which git too deletes.
        shutil.rmtree(full)
    if mode == 0o120000:
        link = b"".join(iter_blob(store, sha))
        tmp = parent / f".armor-tmp-{os.urandom(6).hex()}"
        os.symlink(os.fsdecode(link), tmp)
        os.replace(tmp, full)
        return
    fd, tmp_name = tempfile.mkstemp(prefix=".armor-tmp-", dir=parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in iter_blob(store, sha):
                out.write(chunk)
        os.chmod(tmp_name, (0o777 if mode == 0o100755 else 0o666) & ~mask)
        os.replace(tmp_name, full)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
