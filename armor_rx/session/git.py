"""Git for a session: the task's worktree, its checkpoints, rollback and branching.

Checkpoint, rollback and branching go through the pipeline as requests, so
hooks see them and the log records them like any other request; the reads
and the worktree removal go straight to the :class:`GitWorkspace`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal, Protocol

from armor_rx.errors import (
    ArmorError,
    CheckpointNotFound,
    ForkNameTaken,
    GitError,
    TaskExists,
)
from armor_rx.model.events import TaskEvent
from armor_rx.model.forks import MAX_FORKS, fork_names
from armor_rx.model.ids import validate_task_id
from armor_rx.model.registry import TaskRecord
from armor_rx.sinks.docker import DockerEffect
from armor_rx.sinks.git import Checkpoint, GitWorkspace, TaskDiff
from armor_rx.sinks.git.checkpoints import validate_tag
from armor_rx.sinks.git.compare import Comparison, compare
from armor_rx.sinks.git.diffs import MAX_PATCH_BYTES

# Forks choose their tasks' names from those not taken, then make them one by one: two at once (two clients of
# one service) chose the same names, and the second failed on TaskExists with part of its tasks made.
_FORKING = threading.Lock()


class GitSession(Protocol):
    """What the git operations need from their session: its workspace, its tasks, and requests."""

    @property
    def git(self) -> GitWorkspace: ...

    @property
    def docker(self) -> DockerEffect | None: ...

    def create_task(self, task_id: str, *, base_ref: str = "HEAD",
                    metadata: Mapping[str, Any] | None = None) -> TaskRecord: ...

    def task(self, task_id: str) -> TaskRecord: ...

    def tasks(self) -> list[TaskRecord]: ...

    def request(self, task_id: str, kind: str, payload: Mapping[str, Any] | None = None) -> Future[TaskEvent]: ...


class GitOperations:
    """The git half of :class:`armor_rx.Armor`; ``self`` is a :class:`GitSession`."""

    def worktree(self: GitSession, task_id: str) -> Path:
        """The task's worktree (exists once the task has started)."""
        return self.git.worktree_path(validate_task_id(task_id))

    def checkpoint(self: GitSession, task_id: str, message: str | None = None, *,
                   timeout: float | None = None, tag: str | None = None) -> TaskEvent:
        """Snapshot the task's worktree on its shadow ref; the outcome's payload names the checkpoint.

        A ``tag`` (letters, digits, ``.``, ``_``, ``-``) marks it to be kept by
        retention (``keep_tagged``); a bad one is refused (ConfigError) before anything is logged.
        """
        payload: dict[str, Any] = {"message": message}
        if tag is not None:
            payload["tags"] = [validate_tag(tag)]
        return self.request(task_id, "checkpoint.requested", payload).result(timeout)

    def checkpoints(self: GitSession, task_id: str) -> list[Checkpoint]:
        return self.git.checkpoints(validate_task_id(task_id))

    def diff(self: GitSession, task_id: str, checkpoint: str | None = None, *,
             max_patch_bytes: int = MAX_PATCH_BYTES) -> TaskDiff:
        """What the task changed: its worktree now against its base commit, or against ``checkpoint``.

        With a container (``docker=True``), ``container`` lists its changes
        outside the worktree as ``docker diff`` does (see
        :meth:`DockerEffect.container_changes`). A read: no checkpoint is made and nothing is logged. Raises
        :class:`TaskNotFound` for an unknown task, :class:`GitError` for one
        not started yet (it has no worktree) and :class:`CheckpointNotFound`
        for an unknown checkpoint (``armor-rx checkpoints TASK`` lists them).
        """
        self.task(validate_task_id(task_id))  # TaskNotFound names the session's tasks, not the git records
        if self.git.records.get(task_id) is None:
            raise GitError(
                f"task {task_id!r} has not started, so it has no worktree to diff; "
                f"start it first (Armor.start({task_id!r}))"
            )
        found = self.git.diff(task_id, checkpoint, max_patch_bytes=max_patch_bytes)
        effect = self.docker
        if effect is None:
            return found
        part = self.git.checkpoints_store.find(task_id, checkpoint).container if checkpoint is not None else None
        changes = effect.container_changes(task_id, part if checkpoint is None or part is not None else {})
        return dataclasses.replace(found, container=changes) if changes is not None else found

    def rollback(self: GitSession, task_id: str, checkpoint: str, *, timeout: float | None = None) -> TaskEvent:
        """Restore the task's worktree to ``checkpoint`` exactly (the current state is checkpointed first).

        With ``docker=True`` the task's container is frozen while its worktree
        is rewritten, so nothing inside can race the restore. A checkpoint
        whose saved container part is gone (its snapshot image removed by
        ``docker rmi`` or a prune, a volume archive deleted) is refused with
        :class:`CheckpointIncomplete` before anything is logged or changed.
        """
        GitOperations.check_restorable(self, task_id, checkpoint)
        return self.request(task_id, "checkpoint.restore.requested", {"checkpoint": checkpoint}).result(timeout)

    def check_restorable(self: GitSession, task_id: str, checkpoint: str) -> None:
        """Raise :class:`CheckpointIncomplete` if the container part ``checkpoint`` saved is gone (with docker only).

        Read before a rollback or a resume at a checkpoint is logged, so a
        refusal changes nothing. An unknown checkpoint passes: the restore
        itself refuses it, as it does without docker.
        """
        effect = self.docker
        if effect is None:
            return
        try:
            target = self.git.checkpoints_store.find(validate_task_id(task_id), checkpoint)
        except CheckpointNotFound:
            return
        effect.check_restorable(task_id, target.id, target.container)

    def branch_from(self: GitSession, source_task: str, checkpoint: str, new_task: str, *,
                    timeout: float | None = None) -> TaskEvent:
        """Create and start ``new_task`` on a new branch holding ``checkpoint`` of ``source_task``.

        An unknown source task or checkpoint is refused before ``new_task`` exists.
        """
        validate_task_id(new_task)
        self.git.checkpoints_store.find(validate_task_id(source_task), checkpoint)  # CheckpointNotFound, nothing made
        self.create_task(new_task, metadata={"source_task": source_task, "from_checkpoint": checkpoint})
        payload = {"source_task": source_task, "from_checkpoint": checkpoint}
        return self.request(new_task, "task.start.requested", payload).result(timeout)

    def fork(self: GitSession, task_id: str, checkpoint: str, *, into: int | None = None,
             names: Sequence[str] | None = None, timeout: float | None = None) -> list[TaskEvent]:
        """Start several new tasks from one checkpoint of ``task_id`` (competing attempts at one problem).

        Either ``into`` tasks named ``<task>-1``, ``<task>-2`` ... (from the
        first free number) or the tasks ``names``; each gets its own branch
        holding the checkpoint, its own worktree and (with docker) its own
        container, as :meth:`branch_from` makes them. Returns their start
        outcomes in order. An unknown checkpoint, a bad or taken name or a
        count outside 1..100 is refused before any task exists.

        All the tasks are registered before any starts, so another client
        creating one of the names meanwhile cannot leave the fork half made:
        a counted fork takes the next free number instead; a fork with
        ``names`` cancels the tasks it registered (still ``pending``: no
        branch, worktree or container) and raises :class:`ForkNameTaken`.
        A start that fails (vetoed, an effect failed) raises its error; the
        forks started before it stay, those after it are cancelled.
        """
        validate_task_id(task_id)
        with _FORKING:
            self.git.checkpoints_store.find(task_id, checkpoint)  # CheckpointNotFound, nothing made
            made = fork_names(task_id, into=into, names=names, taken={t.task_id for t in self.tasks()})
            made = _register_forks(self, task_id, checkpoint, made, renamable=not names, timeout=timeout)
            payload = {"source_task": task_id, "from_checkpoint": checkpoint}
            started: list[TaskEvent] = []
            try:
                for name in made:
                    started.append(self.request(name, "task.start.requested", payload).result(timeout))
            except BaseException:
                # The start that failed reports itself; the forks not started yet are not left pending behind it.
                _cancel_pending(self, made[len(started) + 1:], "fork stopped: an earlier fork failed to start", timeout)
                raise
            return started

    def compare(self: GitSession, task_ids: Sequence[str]) -> Comparison:
        """The tasks' diffs against their bases side by side: files, lines added and removed, shared paths.

        A read, like :meth:`diff` (and raising what it raises) for each task.
        """
        if not task_ids:
            raise GitError("compare needs at least one task")
        return compare([GitOperations.diff(self, validate_task_id(t)) for t in task_ids])

    def remove_worktree(self: GitSession, task_id: str, *,
                        on_dirty: Literal["checkpoint", "refuse"] = "checkpoint") -> None:
        """Remove the task's worktree; unsaved work is checkpointed first (or refused)."""
        self.git.remove_worktree(validate_task_id(task_id), on_dirty=on_dirty)

    def prune_stale_worktrees(self: GitSession) -> list[str]:
        """Remove worktrees whose task this state directory no longer knows; returns their task ids."""
        return self.git.prune_stale([t.task_id for t in self.tasks()])


def _register_forks(session: GitSession, source: str, checkpoint: str, chosen: list[str], *, renamable: bool,
                    timeout: float | None) -> list[str]:
    """Create the fork's tasks (``pending``); the names they got.

    ``_FORKING`` orders forks, not other clients' ``create_task``: a name can
    be taken between choosing and creating. A made-up name is replaced by the
    next free number; a given one undoes the registrations (cancelled) and
    raises :class:`ForkNameTaken`.
    """
    metadata = {"source_task": source, "from_checkpoint": checkpoint}
    registered: list[str] = []
    waiting = list(chosen)
    renamed = 0
    while waiting:
        name = waiting.pop(0)
        try:
            session.create_task(name, metadata=metadata)
        except TaskExists:
            if renamable and renamed < MAX_FORKS:
                renamed += 1
                taken = {t.task_id for t in session.tasks()} | set(registered) | set(waiting)
                waiting += fork_names(source, into=1, names=None, taken=taken)
                continue
            cancelled = _cancel_pending(session, registered, f"fork stopped: {name!r} was taken", timeout)
            raise ForkNameTaken(name, source, cancelled) from None
        registered.append(name)
    return registered


def _cancel_pending(session: GitSession, names: Sequence[str], reason: str, timeout: float | None) -> list[str]:
    """Cancel the fork's tasks ``names`` (registered, never started); those it could cancel."""
    cancelled: list[str] = []
    for name in names:
        try:
            session.request(name, "task.cancel.requested", {"reason": reason}).result(timeout)
            cancelled.append(name)
        except ArmorError:
            pass  # left pending; still nothing was started for it
    return cancelled
