"""track_plans: the stateful half of the plan-file hook, with its I/O handed in.

Per task it keeps a :class:`~armor_rx.model.plan.Plan` folded from the task's
events and hands every new version to ``write``. State that is not in memory
(the session restarted, or the task began before the hook was added) is
rebuilt: ``load`` gives the last plan written, ``history`` the events after
it, so nothing is lost and nothing counted twice (events are folded by seq).
A finished plan is written one last time and forgotten, so memory holds only
the active tasks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Literal

from reactivex import Observable

from armor_rx.errors import ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.model.plan import FINAL, PLAN_KINDS, Plan, fold, last_state, start
from armor_rx.operators._observe import observe_

Location = Literal["state", "worktree"]
Tasks = Literal["all", "requested"]
#: ``history(task_id, start_seq)``: that task's logged events from ``start_seq`` on, oldest first.
History = Callable[[str, int], Iterable[TaskEvent]]
_LOCATIONS = ("state", "worktree")
#: ``changes(since, tree)``: the paths that differ between ``since`` (a tree or commit id; None: nothing) and ``tree``.
Changes = Callable[[str | None, str], list[str]]
#: A step lists this many changed paths, and counts the rest.
MAX_LISTED = 50


class PlanTracker:
    """Folds events into per-task plans; ``__call__(event)`` is the observer (see :func:`track_plans`)."""

    def __init__(self, write: Callable[[Plan], None], *, load: Callable[[str], Plan | None] | None = None,
                 history: History | None = None, tasks: Tasks = "all", location: Location = "state",
                 changes: Changes | None = None) -> None:
        if tasks not in ("all", "requested"):
            raise ConfigError(
                f"plan files for tasks={tasks!r}? use 'all' or 'requested' (those started with plan=True)")
        if location not in _LOCATIONS:
            raise ConfigError(f"plan file location {location!r}? use 'state' (the state directory) or 'worktree'")
        self.write, self.load, self.history, self.changes = write, load, history, changes
        self.tasks, self.location = tasks, location
        self._plans: dict[str, Plan] = {}
        self._ignored: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, event: TaskEvent) -> None:
        task_id = event.task_id
        if task_id is None:
            return
        with self._lock:
            plan = self._plans.get(task_id)
            if plan is None:
                plan = self._begin(event)
                if plan is None:
                    return
            new = fold(plan, event, self._extra(plan, event))
            if new is plan and plan.last_seq:
                return  # seen already (a replayed or re-delivered event)
            if new.status in FINAL:
                self._plans.pop(task_id, None)
            else:
                self._plans[task_id] = new
        self.write(new)

    def _begin(self, event: TaskEvent) -> Plan | None:
        """The plan of a task not in memory: a new one, the one last written (caught up), or None (not tracked)."""
        task_id = event.task_id
        assert task_id is not None
        if event.kind == "task.start.requested":
            asked = event.payload.get("plan")
            if not asked and (self.tasks == "requested" or asked is False):
                self._ignored.add(task_id)
                return None
            self._ignored.discard(task_id)
            return start(event, _location(asked, self.location))
        if task_id in self._ignored:
            return None
        plan = self._load(task_id)
        if plan is None and self.tasks == "requested":
            self._ignored.add(task_id)  # not asked for: never looked up again in this session
            return None
        if plan is None:
            plan = start(event, self.location)
        return self._catch_up(plan, event)

    def _load(self, task_id: str) -> Plan | None:
        if self.load is None:
            return None
        return self.load(task_id)

    def _catch_up(self, plan: Plan, event: TaskEvent) -> Plan | None:
        """``plan`` with the logged events between its last seq and ``event`` folded in."""
        if self.history is None or event.seq is None:
            return plan
        assert event.task_id is not None
        for past in self.history(event.task_id, plan.last_seq + 1):
            if past.seq is None or past.seq >= event.seq:
                break
            if past.kind == "task.start.requested" and plan.last_seq == 0:
                asked = past.payload.get("plan")
                if asked is False or (not asked and self.tasks == "requested"):
                    return None
                plan = start(past, _location(asked, plan.location))
            if _is_plan_kind(past.kind):
                plan = fold(plan, past, self._extra(plan, past))
        return plan

    def _extra(self, plan: Plan, event: TaskEvent) -> dict[str, object] | None:
        """The files a checkpoint changed since the last checkpoint or rollback (or since its head commit)."""
        if self.changes is None or event.kind != "checkpoint.created" or not event.payload.get("tree"):
            return None
        if event.seq is not None and event.seq <= plan.last_seq:
            return None
        since = last_state(plan) or event.payload.get("head")
        paths = self.changes(str(since) if since else None, str(event.payload["tree"]))
        return {"files_changed": paths[:MAX_LISTED], "files_changed_count": len(paths)}


_KINDS = frozenset(PLAN_KINDS.split(","))


def _location(asked: object, default: Location) -> Location:
    """Where a start's ``plan=`` puts the plan: ``"state"``, ``"worktree"``, or (True) the default."""
    if asked == "state":
        return "state"
    if asked == "worktree":
        return "worktree"
    return default


def _is_plan_kind(kind: str) -> bool:
    return kind in _KINDS


def track_plans(
    write: Callable[[Plan], None],
    *,
    load: Callable[[str], Plan | None] | None = None,
    history: History | None = None,
    tasks: Tasks = "all",
    location: Location = "state",
    name: str = "plan-file",
    changes: Changes | None = None,
) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    tracker = PlanTracker(write, load=load, history=history, tasks=tasks, location=location, changes=changes)
    # An after-hook: a write that fails is reported (hook.failed) and the task goes on.
    return observe_(tracker, PLAN_KINDS, name, "fail_open", None)
