"""The plan-file hook: a plan per task, kept up to date from its events — the example of a stateful hook.

The state is per task and lives in three places, each for one job: in memory
(the operator, :class:`~armor_rx.operators._plan.PlanTracker`), in the state
directory (``plans/<task>.json``, written after every change, read back after
a restart) and in the log (the events since the last write, folded in on the
first event a restarted session sees of the task). See docs/hooks.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, Protocol

from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit, ObjectID
from reactivex import Observable

from armor_rx.errors import ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.operators import track_plans
from armor_rx.sinks.git import GitWorkspace
from armor_rx.sinks.git.paths import printable
from armor_rx.sinks.git.trees import diff_trees, flatten_tree
from armor_rx.sinks.plans import WORKTREE_PLAN, PlanFiles

Operator = Callable[[Observable[TaskEvent]], Observable[TaskEvent]]
History = Callable[[str, int], Iterable[TaskEvent]]


def plan_file_hook(
    state_dir: str | Path,
    *,
    worktree_of: Callable[[str], Path | None] | None = None,
    history: History | None = None,
    git: Callable[[], GitWorkspace | None] | None = None,
    tasks: Literal["all", "requested"] = "all",
    location: Literal["state", "worktree"] = "state",
    path: str = WORKTREE_PLAN,
    name: str = "plan-file",
) -> Operator:
    """The plan-file hook over the state directory ``state_dir`` (the machinery under :func:`plan_file`).

    ``worktree_of(task_id)`` finds a task's worktree (for ``location="worktree"``),
    ``history(task_id, start_seq)`` reads its logged events (to catch up after a
    restart), ``git()`` the workspace whose objects tell which files each
    checkpoint changed. Raises ConfigError for a bad ``tasks``, ``location`` or ``path``.
    """
    files = PlanFiles(state_dir, worktree_of=worktree_of, worktree_path=path)
    return track_plans(files.write, load=files.load, history=history, tasks=tasks, location=location, name=name,
                       changes=changed_paths(git) if git is not None else None)


def changed_paths(git: Callable[[], GitWorkspace | None]) -> Callable[[str | None, str], list[str]]:
    """``changes(since, tree)`` over the workspace ``git()``: the paths that differ, read from its object store.

    ``since`` is a tree or a commit id (None: everything in ``tree`` counts);
    only the directories that differ are read. No workspace: no paths.
    """

    def changes(since: str | None, tree: str) -> list[str]:
        workspace = git()
        if workspace is None:
            return []
        store = workspace.repo.object_store
        assert isinstance(store, DiskObjectStore)
        old: bytes | None = None
        if since is not None:
            found = store[ObjectID(since.encode())]
            old = bytes(found.tree) if isinstance(found, Commit) else since.encode()
        if old is None:
            return sorted(printable(p) for p in flatten_tree(store, tree.encode()))
        diff = diff_trees(store, old, tree.encode())
        return sorted(printable(p) for p in set(diff.old) | set(diff.new))

    return changes


class _StateDir(Protocol):
    @property
    def path(self) -> Path: ...


class PlanSession(Protocol):
    """What :func:`plan_file` needs of a session (an :class:`armor_rx.Armor`)."""

    @property
    def state(self) -> _StateDir: ...

    @property
    def git(self) -> Any: ...

    def history(
        self, *, task_id: str | None = None, kind: str | None = None, start_seq: int = 1
    ) -> Iterable[TaskEvent]: ...


def plan_file(
    session: PlanSession,
    *,
    tasks: Literal["all", "requested"] = "all",
    location: Literal["state", "worktree"] = "state",
    path: str = WORKTREE_PLAN,
    name: str = "plan-file",
) -> Operator:
    """A plan file per task of ``session``; register it with ``armor.use(plan_file(armor), stage="after")``.

    At a task's start it creates the plan (``<state dir>/plans/<task>.md``, or
    ``path`` in the task's worktree with ``location="worktree"`` — by default
    ``.armor/plan.md``, reserved, so never committed); each finished command
    (command, exit code, duration), checkpoint, rollback, interruption and
    resume adds a step; completion, failure or cancellation writes the
    outcome. ``tasks="requested"``: only tasks started with ``plan=True``
    (or ``plan="state"`` / ``plan="worktree"``). A session opened with
    ``plan_files="all"`` (or ``"requested"``, the default) already runs one:
    see :class:`~armor_rx.session.SessionConfig`.
    """

    def workspace() -> GitWorkspace | None:
        try:
            found: GitWorkspace = session.git
        except ConfigError:
            return None  # a session without git: no worktree, the plan goes to the state directory
        return found

    def worktree_of(task_id: str) -> Path | None:
        found = workspace()
        return found.worktree_path(task_id) if found is not None else None

    def history(task_id: str, start_seq: int) -> Iterable[TaskEvent]:
        return session.history(task_id=task_id, start_seq=start_seq)

    return plan_file_hook(session.state.path, worktree_of=worktree_of, history=history, git=workspace, tasks=tasks,
                          location=location, path=path, name=name)
