"""GitEffect: the git sink as a pipeline effect.

Before any request that reads or writes a task's existing worktree on the host
(checkpoint, restore, completion, resume), the worktree's ``.git`` link and the
admin directory it names are verified (:mod:`.link`): a changed link fails the
request with :class:`~armor_rx.errors.WorktreeLinkChanged` and a
``git.link.changed`` event, before any git work runs there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from armor_rx.errors import GitError, WorktreeLinkChanged
from armor_rx.pipeline.effects import EffectContext
from armor_rx.sinks._atomic import write_atomic
from armor_rx.sinks.git.completion import manual_instructions
from armor_rx.sinks.git.link import verify_link
from armor_rx.sinks.git.submodules import STRATEGIES
from armor_rx.sinks.git.workspace import GitWorkspace

_REQUEST_ID = re.compile(r"[0-9A-Za-z_-]{1,100}")


class GitEffect:
    """Applies task start, checkpoint, completion and resume requests to git.

    Idempotent by request id: the result of each applied request is stored
    under ``<state_dir>/git/requests/<id>.json``, so a request re-delivered
    after a crash returns the stored result and changes nothing. A start
    request that crashed half-way (branch made, result not stored) reuses the
    task's existing branch and worktree instead of making new ones.
    Progress events go through ``ctx.emit``.
    """

    name = "git"
    kinds = "task.start.requested,task.complete.requested,checkpoint.requested,checkpoint.restore.requested,task.resume.requested"

    def __init__(self, workspace: GitWorkspace) -> None:
        self.workspace = workspace

    def _result_path(self, request_id: str) -> Path:
        if _REQUEST_ID.fullmatch(request_id) is None:
            raise GitError(f"request id {request_id!r} is not a plain event id")
        return self.workspace.git_dir / "requests" / f"{request_id}.json"

    def apply(self, ctx: EffectContext) -> Mapping[str, Any] | None:
        request = ctx.request
        path = self._result_path(request.id)
        if path.exists():
            stored: dict[str, Any] = orjson.loads(path.read_bytes())
            return stored
        task_id = request.task_id
        if task_id is None:
            raise GitError(f"request {request.kind!r} ({request.id}) has no task id")
        payload = dict(request.payload)
        if "base_ref" not in payload and ctx.task is not None and ctx.task.metadata.get("base_ref"):
            payload["base_ref"] = ctx.task.metadata["base_ref"]
        # Route the workspace's events through this request so they carry its
        # causation id.
        with self.workspace.routed(lambda kind, _task, data: ctx.emit(kind, data)):
            self._verify_link(ctx, task_id)
            result = self._dispatch(request.kind, task_id, payload, request.seq)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, orjson.dumps(result), durable=False)
        return result

    def _verify_link(self, ctx: EffectContext, task_id: str) -> None:
        """Refuse (event + typed error) to touch a worktree whose git link is not armor's."""
        worktree = self.workspace.worktree_path(task_id)
        if not os.path.lexists(worktree):
            return  # nothing there yet: the start (or resume) makes it
        try:
            verify_link(task_id, worktree, Path(self.workspace.repo.commondir()))
        except WorktreeLinkChanged as exc:
            ctx.emit("git.link.changed", {"path": str(worktree), "why": exc.why, "request": ctx.request.kind})
            raise

    def _dispatch(self, kind: str, task_id: str, payload: Mapping[str, Any], seq: int | None = None) -> dict[str, Any]:
        ws = self.workspace
        if kind == "task.start.requested":
            record = ws.records.get(task_id)
            if record is not None and ws.worktree_path(task_id).is_dir():
                branch = record.branch  # a half-applied earlier attempt: finish it, do not duplicate
            elif record is not None:
                branch = record.branch
            elif payload.get("from_checkpoint") is not None:
                branch = ws.branch_from_checkpoint(
                    str(payload["from_checkpoint"]), task_id, source_task_id=str(payload.get("source_task")))
            else:
                branch = ws.create_branch(task_id, str(payload.get("base_ref", "HEAD")))
            worktree = ws.add_worktree(task_id, branch)
            strategy = payload.get("submodules")
            if strategy in STRATEGIES:
                ws.submodules(task_id, strategy)
            return {"branch": branch, "worktree": str(worktree), "metadata": {"branch": branch, "worktree": str(worktree)}}
        if kind == "checkpoint.restore.requested":
            restored = ws.restore(task_id, str(payload.get("checkpoint")), log_seq=seq)
            return {"checkpoint": restored.id, "commit": restored.commit, "holds": restored.holds}
        if kind == "checkpoint.requested":
            message = payload.get("message")
            tags = tuple(str(t) for t in (payload.get("tags") or ()))
            cp = ws.checkpoint(task_id, str(message) if message is not None else None, tags=tags, log_seq=seq)
            return {"checkpoint": cp.id, "commit": cp.commit, "tree": cp.tree, "files": cp.files, "log_seq": cp.log_seq,
                    "holds": cp.holds, "container": cp.container, **({"tags": list(cp.tags)} if cp.tags else {})}
        if kind == "task.complete.requested":
            merge = str(payload.get("merge", "none"))
            message = str(payload.get("message") or f"armor-rx: complete task {task_id}")
            done = ws.complete(task_id, message, merge=merge)  # type: ignore[arg-type]
            out = {"commit": done.commit, "committed": done.committed, "merged": done.merged, "strategy": merge,
                   "merge_commit": done.merge_commit, "conflicts": list(done.conflicts), "reason": done.reason}
            if merge == "manual" and done.base_branch is not None:
                out["how"] = manual_instructions(done.branch, done.base_branch)
            return out
        if kind == "task.resume.requested":
            record = ws.records.get(task_id)
            # A crash before the start's effect ran leaves no branch yet: make it now.
            branch = record.branch if record is not None else ws.create_branch(task_id, str(payload.get("base_ref", "HEAD")))
            worktree = ws.worktree_path(task_id)
            if not worktree.is_dir():
                worktree = ws.add_worktree(task_id, branch)
            checkpoint = payload.get("checkpoint")
            if checkpoint is not None:
                ws.restore(task_id, str(checkpoint))
            return {"branch": branch, "worktree": str(worktree), "checkpoint": checkpoint,
                    "metadata": {"branch": branch, "worktree": str(worktree)}}
        raise GitError(f"the git effect does not handle {kind!r}")
