"""A task's changes as ``git diff`` prints them: the files that differ and a unified patch.

The hunks come from dulwich (:func:`dulwich.patch.unified_diff_with_algorithm`,
its binary test and short ids). The per-file header is written here because
dulwich's differs from git's where ``git apply`` cares: a mode change comes
out as ``old file mode`` / ``new file mode`` (which ``git apply`` rejects),
names are not quoted the way git quotes them, and names are decoded as UTF-8.
"""

from __future__ import annotations

import stat as st
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from dulwich.object_store import DiskObjectStore
from dulwich.objects import Blob, ObjectID
from dulwich.patch import is_binary, shortid, unified_diff_with_algorithm

from armor_rx.sinks.git.paths import printable
from armor_rx.sinks.git.trees import diff_trees

ChangeStatus = Literal["added", "modified", "deleted", "type-changed"]

#: The default cap on a patch's size: past it the patch is cut and ``truncated`` set.
MAX_PATCH_BYTES = 1_000_000

_GITLINK = 0o160000


@dataclass(frozen=True)
class FileChange:
    """One path that differs. A mode is None on the side the path is missing from.

    ``"modified"`` covers a content or an executable-bit change;
    ``"type-changed"`` is a file, symlink or submodule becoming another of those.
    """

    path: str
    status: ChangeStatus
    old_mode: int | None
    new_mode: int | None

    def to_payload(self) -> dict[str, Any]:
        # JSON cannot carry a name that is not UTF-8: it is shown escaped (see paths.printable).
        return {"path": printable(self.path), "status": self.status, "old_mode": self.old_mode,
                "new_mode": self.new_mode}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> FileChange:
        status = data["status"]
        if status not in get_args(ChangeStatus):
            raise ValueError(f"unknown file change status {status!r}; expected one of {get_args(ChangeStatus)}")
        return cls(str(data["path"]), cast(ChangeStatus, status), data["old_mode"], data["new_mode"])


@dataclass(frozen=True)
class TaskDiff:
    """What a task changed: its worktree now against its base commit or one of its checkpoints.

    ``against`` is ``"base"`` or a checkpoint id (``cp-3``); ``old_commit``
    is that side's commit and ``new_tree`` the tree the worktree scanned to
    (``git diff <old_commit> <new_tree>`` prints the same changes). ``files``
    lists every change, in git's order. ``patch`` is the unified patch; it
    stops at the size cap, and leaves out files larger than the cap, in which
    case ``truncated`` is true. ``skipped`` are files the scan left out for
    their size (see ``CheckpointPolicy.max_file_size``): they are not compared.
    """

    task_id: str
    against: str
    old_commit: str
    new_tree: str
    files: tuple[FileChange, ...]
    patch: str
    truncated: bool = False
    skipped: tuple[str, ...] = ()
    # The container's changes outside the worktree (see DockerEffect.container_changes); None without a container.
    container: dict[str, Any] | None = field(default=None, hash=False)

    def to_payload(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_payload` rebuilds an equal :class:`TaskDiff` from it.

        (Equal but for names that are not UTF-8, which come back escaped.)
        """
        return {
            "task_id": self.task_id,
            "against": self.against,
            "old_commit": self.old_commit,
            "new_tree": self.new_tree,
            "files": [change.to_payload() for change in self.files],
            "patch": self.patch,
            "truncated": self.truncated,
            "skipped": [printable(p) for p in self.skipped],
            "container": self.container,
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> TaskDiff:
        """The diff :meth:`to_payload` described; ``KeyError``/``ValueError`` if ``data`` is not one."""
        return cls(
            task_id=str(data["task_id"]),
            against=str(data["against"]),
            old_commit=str(data["old_commit"]),
            new_tree=str(data["new_tree"]),
            files=tuple(FileChange.from_payload(f) for f in data["files"]),
            patch=str(data["patch"]),
            truncated=bool(data["truncated"]),
            skipped=tuple(str(p) for p in data["skipped"]),
            container=dict(data["container"]) if data.get("container") else None,
        )


Side = tuple[int, bytes]  # (mode, hex sha)


def compare_trees(
    store: DiskObjectStore,
    old_tree: bytes,
    new_tree: bytes,
    *,
    unchanged: Collection[str] = (),
    max_patch_bytes: int = MAX_PATCH_BYTES,
    ignore: Callable[[str], bool] | None = None,
) -> tuple[tuple[FileChange, ...], str, bool]:
    """The changes from ``old_tree`` to ``new_tree``: ``(files, patch, truncated)``.

    Paths in ``unchanged`` count as the same on both sides whatever the new
    tree says (a scan skipped them, so the new tree lacks them), and so do
    paths for which ``ignore(path)`` is true. File contents that are not
    UTF-8 show as U+FFFD in the patch text.
    """
    diff = diff_trees(store, old_tree, new_tree)
    paths = sorted(
        (p for p in (diff.old.keys() | diff.new.keys()) - set(unchanged) if ignore is None or not ignore(p)),
        key=lambda p: p.encode("utf-8", "surrogateescape"),  # git orders by bytes
    )
    files: list[FileChange] = []
    patch = _Patch(max_patch_bytes)
    for path in paths:
        old, new = diff.old.get(path), diff.new.get(path)
        files.append(_change(path, old, new))
        if not patch.full:
            raw = path.encode("utf-8", "surrogateescape")
            if old is not None and new is not None and _kind(old[0]) != _kind(new[0]):
                # Git shows a type change as the old path deleted, then the new one added.
                patch.add(store, raw, old, None)
                patch.add(store, raw, None, new)
            else:
                patch.add(store, raw, old, new)
    return tuple(files), patch.text(), patch.truncated


def _kind(mode: int) -> int:
    return _GITLINK if mode == _GITLINK else st.S_IFMT(mode)


def _change(path: str, old: Side | None, new: Side | None) -> FileChange:
    if old is None:
        status: ChangeStatus = "added"
    elif new is None:
        status = "deleted"
    elif _kind(old[0]) != _kind(new[0]):
        status = "type-changed"
    else:
        status = "modified"
    return FileChange(path, status, old[0] if old else None, new[0] if new else None)


class _Patch:
    """The patch text, built one file at a time up to ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.full = False

    def add(self, store: DiskObjectStore, path: bytes, old: Side | None, new: Side | None) -> None:
        old_data, new_data = _content(store, old), _content(store, new)
        if max(len(old_data), len(new_data)) > self.limit:
            self.truncated = True  # diffing it would cost more than the whole patch may hold
            return
        self._write(_file_patch(path, old, new, old_data, new_data))

    def _write(self, data: bytes) -> None:
        room = self.limit - self.size
        if len(data) > room:
            # Cut at a line's end, so what is shown reads as a (short) patch.
            data = data[: data.rfind(b"\n", 0, room) + 1]
            self.truncated = self.full = True
        self.parts.append(data)
        self.size += len(data)

    def text(self) -> str:
        return b"".join(self.parts).decode("utf-8", "replace")


def _content(store: DiskObjectStore, side: Side | None) -> bytes:
    if side is None:
        return b""
    mode, sha = side
    if mode == _GITLINK:
        return b"Subproject commit " + sha + b"\n"  # the commit is in the submodule's repository, not here
    blob = store[ObjectID(sha)]
    assert isinstance(blob, Blob)
    return blob.as_raw_string()


def _file_patch(path: bytes, old: Side | None, new: Side | None, old_data: bytes, new_data: bytes) -> bytes:
    """One file's ``diff --git`` section, header and hunks, as git writes it."""
    a, b = _quoted(b"a/" + path), _quoted(b"b/" + path)
    lines = [b"diff --git " + a + b" " + b + b"\n"]
    old_sha, new_sha = (old[1] if old else None), (new[1] if new else None)
    if old is None and new is not None:
        lines.append(b"new file mode %o\n" % new[0])
        lines.append(b"index " + shortid(None) + b".." + shortid(new_sha) + b"\n")
    elif new is None and old is not None:
        lines.append(b"deleted file mode %o\n" % old[0])
        lines.append(b"index " + shortid(old_sha) + b".." + shortid(None) + b"\n")
    elif old is not None and new is not None and old[0] != new[0]:
        lines.append(b"old mode %o\nnew mode %o\n" % (old[0], new[0]))
        if old_sha != new_sha:
            lines.append(b"index " + shortid(old_sha) + b".." + shortid(new_sha) + b"\n")
    elif new is not None:
        lines.append(b"index " + shortid(old_sha) + b".." + shortid(new_sha) + b" %o\n" % new[0])
    if old_sha == new_sha:
        return b"".join(lines)  # a mode change only
    from_name = a if old is not None else b"/dev/null"
    to_name = b if new is not None else b"/dev/null"
    if is_binary(old_data) or is_binary(new_data):
        lines.append(b"Binary files " + from_name + b" and " + to_name + b" differ\n")
        return b"".join(lines)
    # Git ends a name holding a space with a tab on the ---/+++ lines (so GNU
    # patch reads the whole name); latin-1 both ways hands the (already
    # quoted) names to dulwich and back byte for byte.
    from_label, to_label = (name + b"\t" if b" " in name else name for name in (from_name, to_name))
    lines.extend(
        unified_diff_with_algorithm(
            _split(old_data), _split(new_data), from_label, to_label, tree_encoding="latin-1", output_encoding="latin-1"
        )
    )
    return b"".join(lines)


def _split(data: bytes) -> list[bytes]:
    # Lines end at b"\n" only, as git reads them; bytes.splitlines would also
    # break at a lone b"\r" and the patch would no longer apply.
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


_ESCAPES = {7: b"\\a", 8: b"\\b", 9: b"\\t", 10: b"\\n", 11: b"\\v", 12: b"\\f", 13: b"\\r", 34: b'\\"', 92: b"\\\\"}


def _quoted(name: bytes) -> bytes:
    """``name`` as git writes it in a patch: in C quotes when it has control, quote or non-ASCII bytes."""
    if not any(c < 0x20 or c >= 0x7F or c in (34, 92) for c in name):
        return name
    return b'"' + b"".join(
        _ESCAPES.get(c) or (b"\\%03o" % c if c < 0x20 or c >= 0x7F else bytes([c])) for c in name
    ) + b'"'
