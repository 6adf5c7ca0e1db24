"""Removing task worktrees without losing work, and pruning the stale ones."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dulwich.objects import ObjectID

from armor_rx.errors import NestedRepositoryAtRisk, WorktreeDirty
from armor_rx.model.ids import validate_task_id
from armor_rx.sinks.git import submodules as submodule_ops
from armor_rx.sinks.git import worktrees
from armor_rx.sinks.git.link import verify_link
from armor_rx.sinks.git.refs import read_commit
from armor_rx.sinks.git.trees import diff_trees
from armor_rx.sinks.git.scan import ScanResult

if TYPE_CHECKING:
    from armor_rx.sinks.git.workspace import GitWorkspace


def remove_worktree(ws: GitWorkspace, task_id: str, *, on_dirty: Literal["checkpoint", "refuse"] = "checkpoint") -> None:
    """Remove the task's worktree without losing work.

    If the worktree differs from its branch (changed, new or deleted
    files), it is checkpointed first (``on_dirty="checkpoint"``) or
    :class:`WorktreeDirty` is raised (``"refuse"``). Files too large to
    checkpoint always make it refuse, and so do nested repositories and
    submodules with work a checkpoint cannot hold
    (:class:`NestedRepositoryAtRisk`). The branch and checkpoints stay.
    """
    path = ws.worktree_path(task_id)
    with ws._task_lock(task_id):
        record = ws.records.get(task_id)
        checkpoint_id = None
        if path.is_dir():
            # The worktree's .git names the admin dir whose HEAD and index are read below: an agent
            # must not be able to point that at a git directory it made (WorktreeLinkChanged).
            verify_link(task_id, path, Path(ws.repo.commondir()))
            at_risk = submodule_ops.repositories_at_risk(ws.repo, path, worktrees.admin_dir(ws.repo, path))
            if at_risk:
                raise NestedRepositoryAtRisk(task_id, str(path), at_risk)
        if path.is_dir():
            scan = ws.checkpoints_store.scan(task_id, path)
            # Without a record (lost, or deleted) the worktree's own HEAD
            # says what is saved; nothing is removed unchecked.
            head = ws._head(record) if record is not None else _worktree_head(ws, path)
            head_tree = read_commit(ws.repo, head).tree if head else None
            if scan.tree != head_tree:
                changed = _count_changes(ws, scan, head_tree)
                if on_dirty == "refuse" or scan.skipped:
                    raise WorktreeDirty(task_id, str(path), changed)
                cp = ws.checkpoints_store.commit_scan(task_id, scan, "auto: before removing the worktree", head)
                checkpoint_id = cp.id
                ws.emit("checkpoint.created", task_id, {**cp.to_payload(), "auto": True})
        worktrees.delete(ws.repo, path)
        ws.checkpoints_store.forget_worktree(task_id)
        if record is not None:
            record.worktree = None
            ws.records.put(record)
    ws.emit("git.worktree.removed", task_id, {"path": str(path), "checkpoint": checkpoint_id})


def _count_changes(ws: GitWorkspace, scan: ScanResult, head_tree: bytes | None) -> int:
    if head_tree is None:
        return scan.count
    diff = diff_trees(ws.checkpoints_store.store, head_tree, scan.tree)
    return len(diff.old.keys() | diff.new.keys())


def prune_stale(ws: GitWorkspace, active_task_ids: Collection[str]) -> list[str]:
    """Remove the worktrees of tasks not in ``active_task_ids``; return their ids.

    Uncommitted work is checkpointed first. A worktree that cannot be
    removed safely (:class:`WorktreeDirty`) or is locked
    (``git worktree lock``) is kept and reported with a
    ``git.worktree.kept`` event; the others are still pruned. Git admin entries for
    worktrees under the state directory whose directory is gone are
    pruned too (like ``git worktree prune``, but never touching the
    user's own worktrees).
    """
    active = set(active_task_ids)
    pruned: list[str] = []
    if ws.worktrees_dir.is_dir():
        for entry in sorted(ws.worktrees_dir.iterdir()):
            if entry.name in active or not entry.is_dir():
                continue
            try:
                validate_task_id(entry.name)
            except Exception:
                continue  # not ours: leave foreign directories alone
            admin = worktrees.admin_dir(ws.repo, entry)
            if admin is not None and (admin / "locked").exists():
                ws.emit("git.worktree.kept", entry.name, {"path": str(entry), "reason": "locked"})
                continue
            try:
                remove_worktree(ws, entry.name, on_dirty="checkpoint")
            except WorktreeDirty as exc:
                # One worktree that cannot be saved must not keep the others around.
                ws.emit("git.worktree.kept", entry.name, {"path": str(entry), "reason": str(exc)})
                continue
            pruned.append(entry.name)
            ws.emit("git.worktree.pruned", entry.name, {"path": str(entry), "reason": "task not active"})
    admin_root = Path(ws.repo.commondir()) / "worktrees"
    if admin_root.is_dir():
        for admin in sorted(admin_root.iterdir()):
            if (admin / "locked").exists():
                continue  # 'git worktree prune' leaves locked entries alone too
            try:
                gitdir = (admin / "gitdir").read_text().strip()
            except OSError:
                continue
            wt_dir = Path(os.path.dirname(gitdir))
            if ws.worktrees_dir in wt_dir.parents and not wt_dir.exists() and admin.name not in active:
                worktrees.delete(ws.repo, wt_dir)
                if admin.name not in pruned:
                    pruned.append(admin.name)
                    ws.emit("git.worktree.pruned", None, {"path": str(wt_dir), "reason": "directory gone"})
    return pruned


def _worktree_head(ws: GitWorkspace, path: Path) -> bytes | None:
    """The commit a worktree has checked out, read from its admin directory (``None`` if unreadable).

    Never through the worktree's own ``.git`` file: the agent can point that anywhere.
    """
    admin = worktrees.admin_dir(ws.repo, path)
    head = worktrees.head_commit(ws.repo, admin) if admin is not None else None
    return head if head is not None and ObjectID(head) in ws.repo.object_store else None
