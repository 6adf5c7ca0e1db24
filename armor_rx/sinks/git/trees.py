"""Reading trees fast: every file under a tree, and the directory trees under one.

Restore, completion and the stat cache read whole trees of thousands of
entries; going through dulwich's ``Tree`` objects costs more than the rest of
the work, so loose trees are read and parsed raw here.
"""

from __future__ import annotations

import os
import stat as st
import zlib
from collections.abc import Iterator

from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID, Tree, parse_tree

from armor_rx.errors import GitError

Files = dict[str, tuple[int, bytes]]


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
    for name, mode, sha in parse_entries(read_tree(store, tree_id)):
        path = prefix + name.decode("utf-8", "surrogateescape")
        if st.S_ISDIR(mode):
            _flatten_into(out, store, sha, path + "/")
        else:
            out[path] = (mode, sha)


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


def trees_of(store: DiskObjectStore, tree_id: bytes) -> dict[str, list[object]]:
    """The tree cache a scan would have built for a worktree holding exactly ``tree_id``.

    Per directory: the sorted names of its subdirectories and gitlinks, and
    its tree id (see :mod:`armor_rx.sinks.git.scan`). After a restore the
    worktree's kept files are the checkpoint's, so its directories' trees
    are taken from there instead of rebuilt by the next scan.
    """
    out: dict[str, list[object]] = {}
    pending = [("", tree_id)]
    while pending:
        rel, sha = pending.pop()
        subs: list[str] = []
        for name, mode, child in parse_entries(read_tree(store, sha)):
            if mode == 0o40000 or mode == 0o160000:
                text = name.decode("utf-8", "surrogateescape")
                subs.append(text)
                if mode == 0o40000:
                    pending.append((f"{rel}/{text}" if rel else text, child))
        out[rel] = [sorted(subs), sha.decode()]
    return out
