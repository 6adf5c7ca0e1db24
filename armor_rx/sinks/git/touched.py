"""How many files did a step touch? Counted by comparing stat walks of the worktree.

The adaptive checkpoint policy counts a step that touched many files as a
reason to checkpoint before the next one. Knowing that needs I/O, so it is
an effect here, run after the command's own effect: it walks the task's
worktree (no file is read, only ``lstat``), compares with the walk after the
previous step, and adds ``files_touched`` (added + changed + removed) to the
exec's outcome. Only tasks with a checkpoint policy are walked, and a tree
over ``max_entries`` is not counted at all (``files_touched`` is then left
out): a cheap, bounded signal, not an inventory.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from armor_rx.pipeline.effects import EffectContext

MAX_ENTRIES = 50_000
_SKIP = frozenset({".git", ".armor"})

Stat = tuple[int, int, int, int]


def stat_walk(root: Path, max_entries: int = MAX_ENTRIES) -> dict[str, Stat] | None:
    """``{relative path: (mtime_ns, size, inode, mode)}`` of every file under ``root`` (None if over ``max_entries``).

    Symbolic links are recorded, not followed; ``.git`` and ``.armor`` at the top are skipped.
    """
    found: dict[str, Stat] = {}
    stack = [("", str(root))]
    while stack:
        prefix, directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if not prefix and entry.name in _SKIP:
                    continue
                rel = prefix + entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((rel + "/", entry.path))
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                found[rel] = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)
                if len(found) > max_entries:
                    return None
    return found


def count_touched(before: Mapping[str, Stat], after: Mapping[str, Stat]) -> int:
    """Files added, removed or changed (any of mtime, size, inode, mode) between two walks."""
    changed = sum(1 for path, st in after.items() if before.get(path) != st)
    return changed + sum(1 for path in before if path not in after)


class TouchedFilesEffect:
    """Adds ``files_touched`` to the outcome of each exec of a task that has a checkpoint policy.

    ``worktree_of(task_id)`` gives the task's worktree (None: not yet);
    ``wanted(request)`` says whether a start or resume request asks for
    counting. Idempotent in the only way that matters: a re-run compares
    with the walk the last run left, so it reports the files touched since.
    """

    name = "touched-files"
    kinds = ("task.start.requested,task.resume.requested,exec.requested,"
             "task.complete.requested,task.fail.requested,task.cancel.requested")

    def __init__(self, worktree_of: Callable[[str], Path | None], wanted: Callable[[Mapping[str, Any]], bool],
                 max_entries: int = MAX_ENTRIES) -> None:
        self.worktree_of = worktree_of
        self.wanted = wanted
        self.max_entries = max_entries
        self._walks: dict[str, dict[str, Stat] | None] = {}
        self._lock = threading.Lock()

    def apply(self, ctx: EffectContext) -> Mapping[str, Any] | None:
        request = ctx.request
        task_id = request.task_id
        if task_id is None:
            return None
        if request.kind in ("task.complete.requested", "task.fail.requested", "task.cancel.requested"):
            self.forget(task_id)
            return None
        if request.kind != "exec.requested":
            if self.wanted(request.payload):
                with self._lock:
                    self._walks[task_id] = self._walk(task_id)
            else:
                with self._lock:
                    self._walks.pop(task_id, None)
            return None
        with self._lock:
            if task_id not in self._walks:
                return None  # not a task that counts (or started before this session: from its next start/resume)
            before = self._walks[task_id]
        after = self._walk(task_id)
        with self._lock:
            self._walks[task_id] = after
        if before is None or after is None:
            return None
        return {"files_touched": count_touched(before, after)}

    def _walk(self, task_id: str) -> dict[str, Stat] | None:
        root = self.worktree_of(task_id)
        return stat_walk(root, self.max_entries) if root is not None else None

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._walks.pop(task_id, None)
