"""Early conflict detection: two active tasks changing the same path, seen before either completes.

Parallel agents on one repository each work in their own worktree, so they
cannot see each other; the first sign that two of them touched the same file
used to be a refused merge at completion. :class:`ConflictWatcher` looks at a
task's worktree each time the task reaches a boundary (a command exited, a
checkpoint was made or restored) and compares the paths it changed since its
base with those every other active task changed since its own.

Cheap by construction: only the task that moved is scanned (with its stat
cache, so only files whose stat changed are read), and the other tasks'
changes are the ones remembered from their own last boundary; a task is
scanned out of turn only the first time it is needed (e.g. after a restart).
Whether two changes overlap by line is decided by a three-way merge of the
file (``merge3``) against the two tasks' common base. The conflicts known
are kept in ``<state_dir>/git/conflicts.json``, so a restarted session does
not announce them again (and resolves those that went away meanwhile).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import merge3
import orjson
import structlog
from dulwich.graph import find_merge_base
from dulwich.object_store import tree_lookup_path
from dulwich.errors import NotTreeError
from dulwich.objects import Blob, ObjectID

from armor_rx.errors import ArmorError
from armor_rx.model.ids import validate_task_id
from armor_rx.sinks._atomic import write_atomic
from armor_rx.sinks.git.paths import printable
from armor_rx.sinks.git.refs import read_commit

if TYPE_CHECKING:
    from armor_rx.sinks.git.workspace import GitWorkspace

_log = structlog.get_logger("armor_rx.conflicts")

#: The kinds after which a task's worktree is looked at again.
BOUNDARY_KINDS = "exec.exited,checkpoint.created,checkpoint.restored,task.started,task.resumed"
#: The kinds after which a task no longer takes part (its conflicts are resolved).
END_KINDS = "task.completed,task.failed,task.cancelled"
#: Files larger than this are compared as wholes (any change on both sides overlaps).
MAX_LINE_COMPARE_BYTES = 4 * 1024 * 1024

Record = Callable[[str, "str | None", Mapping[str, Any]], object]
# A task's changes since its base: {path: (sha at base or None, sha now or None)}.
Changes = dict[str, tuple[bytes | None, bytes | None]]


@dataclass(frozen=True)
class PathConflict:
    """One path two tasks both changed.

    ``overlap`` is true when their changes touch the same lines (a line-level
    merge would conflict), or when the file is binary, deleted on one side,
    or too large to compare by line; ``identical`` when both made the very
    same change; ``lines`` are the 1-based ``[first, last]`` line ranges of
    the common base that both changed (two tasks inserting at one place
    name the line they insert before).
    """

    path: str
    overlap: bool
    identical: bool
    why: str
    lines: tuple[tuple[int, int], ...] = ()

    def to_payload(self) -> dict[str, Any]:
        return {"path": printable(self.path), "overlap": self.overlap, "identical": self.identical,
                "why": self.why, "lines": [list(r) for r in self.lines]}

    @classmethod
    def from_payload(cls, path: str, data: Mapping[str, Any]) -> PathConflict:
        return cls(path, bool(data["overlap"]), bool(data["identical"]), str(data["why"]),
                   tuple((int(a), int(b)) for a, b in data.get("lines", ())))


def pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


class ConflictWatcher:
    """Watches a repository's active tasks for changes to the same paths.

    ``active()`` names the tasks that take part (the session's active ones);
    ``record(kind, task_id, payload)`` records ``conflict.detected`` and
    ``conflict.resolved``. :meth:`notify` queues a task to be looked at on
    this watcher's own thread (started by :meth:`start`, ended by
    :meth:`stop`); :meth:`check` does it now, on the caller's thread.
    """

    def __init__(self, workspace: GitWorkspace, active: Callable[[], Iterable[str]], record: Record,
                 state_file: Path | None = None) -> None:
        self.workspace = workspace
        self.state_file = state_file
        self.active = active
        self.record = record
        self._changes: dict[str, Changes] = {}
        # Line comparisons by (base, a, b) blob ids: a boundary that changed other files does not redo them.
        self._compared: dict[tuple[bytes | None, bytes, bytes], tuple[bool, str, tuple[tuple[int, int], ...]]] = {}
        self._bases: dict[str, bytes] = {}
        # Current conflicts: {(task, task): {path: PathConflict}}.
        self._pairs: dict[tuple[str, str], dict[str, PathConflict]] = {}
        self._lock = threading.RLock()
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------
    def start(self) -> ConflictWatcher:
        if self._thread is None:
            self._pairs = self._load()
            self._thread = threading.Thread(target=self._run, name="armor-conflicts", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Finish the task being looked at, drop the rest of the queue, end the thread. Safe twice."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)

    def notify(self, kind: str, task_id: str | None) -> None:
        """Queue ``task_id`` to be looked at after an event of ``kind`` (never blocks)."""
        if task_id is not None and self._thread is not None:
            self._queue.put((kind, task_id))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            # Coalesce: a burst of boundaries of one task is one look at it.
            todo = {item[1]: item[0]}
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    return
                todo[more[1]] = more[0]
            for task_id, kind in todo.items():
                try:
                    if kind in END_KINDS.split(","):
                        self.forget(task_id, f"task {task_id!r} ended ({kind})")
                    else:
                        self.check(task_id)
                except ArmorError as exc:
                    # The session may be closing, or the worktree gone: the next boundary tries again.
                    _log.warning("conflict check skipped", task_id=task_id, error=str(exc))
                except Exception as exc:  # noqa: BLE001 - this thread must outlive one bad look (a vanished object ...)
                    _log.error("conflict check failed", task_id=task_id, error=repr(exc))

    # -- the work ---------------------------------------------------------
    def conflicts(self) -> list[dict[str, Any]]:
        """The conflicts known now, one entry per pair of tasks (as in ``conflict.detected``)."""
        with self._lock:
            return [_payload(pair, found) for pair, found in sorted(self._pairs.items())]

    def check(self, task_id: str) -> list[dict[str, Any]]:
        """Look at ``task_id``'s worktree now; record new and resolved conflicts; return those recorded."""
        active = set(self.active())
        if task_id not in active:
            self.forget(task_id, f"task {task_id!r} is not active")
            return []
        if active == {task_id} and not self._pairs:
            # Alone: nothing to compare with, so no scan. What it has is looked at when a second task needs it.
            with self._lock:
                self._changes.pop(task_id, None)
            return []
        changes = self._scan(task_id)
        if changes is None:
            return []
        recorded: list[dict[str, Any]] = []
        with self._lock:
            self._changes[task_id] = changes
            # Tasks that ended unseen (or while the session was closed) take no part any more.
            known = set(self._changes) | {t for pair in self._pairs for t in pair}
            for gone in sorted(known - active):
                recorded += self._forget_locked(gone, f"task {gone!r} is not active")
            fresh = {task_id}
            for other in sorted(active - {task_id}):
                theirs = self._changes.get(other)
                if theirs is None:
                    theirs = self._scan(other)
                    if theirs is None:
                        continue
                    self._changes[other] = theirs
                    fresh.add(other)
                shared = changes.keys() & theirs.keys()
                found = {p: self._compare(task_id, other, p) for p in sorted(shared)}
                recorded += self._update(task_id, pair_key(task_id, other), found)
            # Known pairs with a side just scanned out of turn (the other side is remembered): settled without a scan.
            settle = [p for p in self._pairs if task_id not in p and fresh & set(p) and all(t in self._changes for t in p)]
            for x, y in settle:
                shared = self._changes[x].keys() & self._changes[y].keys()
                recorded += self._update(x, (x, y), {p: self._compare(x, y, p) for p in sorted(shared)})
        return recorded

    def forget(self, task_id: str, reason: str) -> list[dict[str, Any]]:
        """``task_id`` takes part no more: its conflicts are resolved (recorded) and its changes dropped."""
        with self._lock:
            return self._forget_locked(task_id, reason)

    def _forget_locked(self, task_id: str, reason: str) -> list[dict[str, Any]]:
        self._changes.pop(task_id, None)
        self._bases.pop(task_id, None)
        recorded = []
        for pair in [p for p in self._pairs if task_id in p]:
            found = self._pairs.pop(pair)
            payload = {**_payload(pair, found), "reason": reason, "remaining": []}
            self.record("conflict.resolved", task_id, payload)
            recorded.append(payload)
        if recorded:
            self._save()
        return recorded

    def _update(self, task_id: str, pair: tuple[str, str], found: dict[str, PathConflict]) -> list[dict[str, Any]]:
        before = self._pairs.get(pair, {})
        recorded = []
        resolved = sorted(set(before) - set(found))
        if resolved:
            payload = {**_payload(pair, {p: before[p] for p in resolved}),
                       "remaining": [printable(p) for p in sorted(found)],
                       "reason": f"task {task_id!r} no longer shares {'them' if len(resolved) > 1 else 'it'}"}
            self.record("conflict.resolved", task_id, payload)
            recorded.append(payload)
        # New paths, or a path whose changes now overlap by line, are news; the rest was said already.
        news = [p for p, c in found.items() if p not in before or (c.overlap and not before[p].overlap)]
        if news:
            payload = {**_payload(pair, found), "new_paths": [printable(p) for p in news], "seen_at": task_id}
            self.record("conflict.detected", task_id, payload)
            recorded.append(payload)
        if found:
            self._pairs[pair] = found
        else:
            self._pairs.pop(pair, None)
        if recorded or found != before:
            self._save()
        return recorded

    def _load(self) -> dict[tuple[str, str], dict[str, PathConflict]]:
        if self.state_file is None:
            return {}
        try:
            data = orjson.loads(self.state_file.read_bytes())
            pairs = {pair_key(*row["tasks"]): {f["path"]: PathConflict.from_payload(f["path"], f) for f in row["files"]}
                     for row in data}
            # Names that are not what _save wrote would break every later listing (conflicts(), the monitor).
            if not all(validate_task_id(t) for pair in pairs for t in pair) \
                    or not all(isinstance(p, str) for found in pairs.values() for p in found):
                raise ValueError("not a conflicts file")
            return pairs
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, ArmorError):
            return {}  # lost or damaged: conflicts still there are announced again, nothing worse

    def _save(self) -> None:
        if self.state_file is None:
            return
        # Not fsynced: a lost file only means conflicts still there are announced again.
        rows = [_payload(pair, found) for pair, found in sorted(self._pairs.items())]
        write_atomic(self.state_file, orjson.dumps(rows), durable=False)

    def _scan(self, task_id: str) -> Changes | None:
        """The task's changes since its base (None when it has no worktree or branch here)."""
        ws = self.workspace
        record = ws.records.get(task_id)
        if record is None or not ws.worktree_path(task_id).is_dir():
            return None
        changes = ws.changes_since_base(task_id)
        self._bases[task_id] = record.base_commit.encode()
        return changes

    def _compare(self, a: str, b: str, path: str) -> PathConflict:
        a_old, a_new = self._changes[a][path]
        b_old, b_new = self._changes[b][path]
        if a_new == b_new:
            return PathConflict(path, False, True, "both made the same change")
        if a_new is None or b_new is None:
            return PathConflict(path, True, False, "deleted by one task and changed by the other")
        base = a_old if self._bases.get(a) == self._bases.get(b) else self._common_blob(a, b, path)
        key = (base, a_new, b_new)
        known = self._compared.get(key)
        if known is None:
            if len(self._compared) > 10_000:
                self._compared.clear()
            known = self._compared[key] = self._compare_lines(base, a_new, b_new)
        overlap, why, lines = known
        return PathConflict(path, overlap, False, why, lines)

    def _compare_lines(
        self, base: bytes | None, a_new: bytes, b_new: bytes
    ) -> tuple[bool, str, tuple[tuple[int, int], ...]]:
        """``(overlap, why, base line ranges)`` for two versions of one file and their common base."""
        store = self.workspace.checkpoints_store.store
        blobs = [store[ObjectID(s)] if s is not None else None for s in (base, a_new, b_new)]
        data = [b.as_raw_string() if isinstance(b, Blob) else b"" for b in blobs]
        if any(len(d) > MAX_LINE_COMPARE_BYTES for d in data):
            return True, "too large to compare by line", ()
        if any(b"\x00" in d[:8000] for d in data):
            return True, "binary", ()
        lines = [d.splitlines(keepends=True) for d in data]
        overlapping: list[tuple[int, int]] = []
        # Older merge3 releases ship no type hints: called through Any, the lowest pinned one type-checks too.
        merger: Any = merge3.Merge3
        for region in merger(lines[0], lines[1], lines[2]).merge_regions():
            if region[0] == "conflict":
                start, end = region[1], region[2]
                overlapping.append((start + 1, max(start + 1, end)))
        if overlapping:
            return True, "both changed the same lines", tuple(overlapping)
        return False, "changes on different lines (a three-way merge takes both)", ()

    def _common_blob(self, a: str, b: str, path: str) -> bytes | None:
        """``path``'s blob in the merge base of the two tasks' bases (they started from different commits)."""
        repo = self.workspace.repo
        bases = find_merge_base(repo, [ObjectID(self._bases[a]), ObjectID(self._bases[b])])
        if not bases:
            return None
        store = self.workspace.checkpoints_store.store
        try:
            _mode, sha = tree_lookup_path(store.__getitem__, read_commit(repo, bases[0]).tree,
                                          path.encode("utf-8", "surrogateescape"))
        except (KeyError, NotTreeError):
            return None  # the path is not in the common base: both added it
        return bytes(sha)


def _payload(pair: tuple[str, str], found: Mapping[str, PathConflict]) -> dict[str, Any]:
    conflicts = [found[p] for p in sorted(found)]
    return {
        "tasks": list(pair),
        "paths": [printable(c.path) for c in conflicts],
        "overlap": any(c.overlap for c in conflicts),
        "files": [c.to_payload() for c in conflicts],
    }
