"""Reading trees fast: every file under a tree, and what differs between two.

Restore, completion and the stat cache read whole trees of thousands of
entries; going through dulwich's ``Tree`` objects costs more than the rest of
the work, so loose trees are read and parsed raw here.
"""

from __future__ import annotations

import os
import stat as st
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID, Tree, parse_tree

from armor_rx.errors import GitError
from armor_rx.sinks.git.reserved import Reserved

Files = dict[str, tuple[int, bytes]]


def flatten_tree(store: DiskObjectStore, tree_id: bytes, prefix: str = "") -> Files:
    """Every blob and gitlink under ``tree_id`` as ``{path: (mode, sha)}``.

    Iterative, so a tree of any depth is read. Raises :class:`GitError` if
    ``tree_id`` is not a tree and ``KeyError`` if it (or a tree under it) is
    missing from ``store``.
    """
    out: Files = {}
    # A stack of entry iterators, not recursion: any depth is read, in the
    # order a recursive walk (and dulwich) gives.
    stack = [(iter(parse_entries(read_tree(store, tree_id))), f"{prefix}/" if prefix else "")]
    while stack:
        entries, base = stack[-1]
        for name, mode, sha in entries:
            path = base + name.decode("utf-8", "surrogateescape")
            if st.S_ISDIR(mode):
                stack.append((iter(parse_entries(read_tree(store, sha))), path + "/"))
                break
            out[path] = (mode, sha)
        else:
            stack.pop()
    return out


def reserved_entries(store: DiskObjectStore, tree_id: bytes, reserved: Reserved) -> Files:
    """The blobs and gitlinks of ``tree_id`` at or under a reserved path (see :mod:`.reserved`)."""
    out: Files = {}
    todo: list[tuple[bytes, str, bool]] = [(tree_id, "", False)]
    while todo:
        tid, base, inside = todo.pop()
        for name, mode, sha in parse_entries(read_tree(store, tid)):
            path = base + name.decode("utf-8", "surrogateescape")
            hit = inside or reserved.entry(base, path[len(base):])
            if st.S_ISDIR(mode):
                todo.append((sha, path + "/", hit))
            elif hit:
                out[path] = (mode, sha)
    return out


def read_tree(store: DiskObjectStore, tree_id: bytes) -> bytes:
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


def parse_entries(body: bytes) -> Iterator[tuple[bytes, int, bytes]]:
    try:
        return parse_tree(body, sha_len=20)
    except TypeError:  # dulwich before 1.0 has no sha_len (SHA-256 repositories)
        return parse_tree(body)  # type: ignore[call-arg]


@dataclass
class TreeDiff:
    """What differs between two trees, read only as deep as they differ.

    ``old`` and ``new`` hold the blobs and gitlinks that differ (each side's
    ``(mode, sha)``; a path on one side only is missing from the other).
    ``trees`` holds, for every directory of the new tree on a differing
    path, the tree-cache entry a scan would have made (sorted names of its
    subdirectories and gitlinks, tree id); ``gone`` the directories only the
    old tree has. Directories that are the same in both are not visited.
    """

    old: Files = field(default_factory=dict)
    new: Files = field(default_factory=dict)
    trees: dict[str, list[object]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)


def diff_trees(store: DiskObjectStore, old_id: bytes, new_id: bytes) -> TreeDiff:
    """Compare two trees of ``store``; see :class:`TreeDiff`."""
    diff = TreeDiff()
    if old_id != new_id:
        _diff_into(diff, store, old_id, new_id, "")
    return diff


def _entries(store: DiskObjectStore, tree_id: bytes | None) -> dict[bytes, tuple[int, bytes]]:
    if tree_id is None:
        return {}
    return {name: (mode, sha) for name, mode, sha in parse_entries(read_tree(store, tree_id))}


def _diff_into(diff: TreeDiff, store: DiskObjectStore, old_id: bytes | None, new_id: bytes | None, rel: str) -> None:
    # An explicit stack, not recursion: trees can be thousands of levels deep.
    todo: list[tuple[bytes | None, bytes | None, str]] = [(old_id, new_id, rel)]
    while todo:
        old_id, new_id, rel = todo.pop()
        old, new = _entries(store, old_id), _entries(store, new_id)
        if new_id is None:
            diff.gone.add(rel)
        else:
            subs = sorted(n.decode("utf-8", "surrogateescape") for n, (m, _) in new.items() if m in (0o40000, 0o160000))
            diff.trees[rel] = [subs, new_id.decode()]
        prefix = rel + "/" if rel else ""
        for name in old.keys() | new.keys():
            was, now = old.get(name), new.get(name)
            if was == now:
                continue  # the same blob, or the same subtree: nothing below differs
            path = prefix + name.decode("utf-8", "surrogateescape")
            was_tree = was is not None and st.S_ISDIR(was[0])
            now_tree = now is not None and st.S_ISDIR(now[0])
            if was_tree or now_tree:
                todo.append((
                    was[1] if was is not None and was_tree else None,
                    now[1] if now is not None and now_tree else None, path,
                ))
            if was is not None and not was_tree:
                diff.old[path] = was
            if now is not None and not now_tree:
                diff.new[path] = now
