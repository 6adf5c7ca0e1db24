"""A task's plan: what it set out to do and what happened, folded from its events.

Pure data and a pure fold (no I/O): :func:`fold` takes a plan and one event and
returns the next plan, so the same history always gives the same plan — which
is what lets the plan-file hook rebuild a task's plan from the log after a
restart. :func:`render` draws it as the Markdown a person (or the agent) reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from armor_rx.model.events import TaskEvent, to_plain

PlanStatus = Literal["planned", "running", "interrupted", "completed", "failed", "cancelled"]
#: The event kinds a plan is made from (the hook listens to these only).
PLAN_KINDS = ("task.start.requested,task.started,exec.requested,exec.exited,checkpoint.created,"
              "checkpoint.restored,task.interrupted,task.resumed,task.completed,task.failed,task.cancelled")
FINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
_COMMAND_CHARS = 300  # a step shows this much of a command; the log has all of it


@dataclass(frozen=True)
class Plan:
    """One task's plan. ``steps`` are JSON-safe dicts, oldest first; ``last_seq`` is the last event folded in."""

    task_id: str
    location: Literal["state", "worktree"] = "state"
    status: PlanStatus = "planned"
    goal: str | None = None
    base_ref: str | None = None
    branch: str | None = None
    started: float | None = None
    ended: float | None = None
    outcome: dict[str, Any] = field(default_factory=dict)
    steps: tuple[dict[str, Any], ...] = ()
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # exec request id -> command, ts
    last_seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "task_id": self.task_id, "location": self.location, "status": self.status,
                "goal": self.goal, "base_ref": self.base_ref, "branch": self.branch, "started": self.started,
                "ended": self.ended, "outcome": self.outcome, "steps": list(self.steps), "pending": self.pending,
                "last_seq": self.last_seq}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """The plan :meth:`to_dict` wrote. Raises ValueError (or KeyError/TypeError) for anything else."""
        if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("task_id"), str):
            raise ValueError("not a version-1 plan")
        return cls(task_id=data["task_id"], location=data["location"], status=data["status"], goal=data["goal"],
                   base_ref=data["base_ref"], branch=data["branch"], started=data["started"], ended=data["ended"],
                   outcome=dict(data["outcome"]), steps=tuple(dict(s) for s in data["steps"]),
                   pending=dict(data["pending"]), last_seq=int(data["last_seq"]))


def start(event: TaskEvent, location: Literal["state", "worktree"]) -> Plan:
    """A new plan for the task of ``event`` (its ``task.start.requested``, or the first event seen of it)."""
    assert event.task_id is not None
    goal = event.payload.get("goal")
    return Plan(task_id=event.task_id, location=location, goal=str(goal) if goal is not None else None)


def fold(plan: Plan, event: TaskEvent, extra: dict[str, Any] | None = None) -> Plan:
    """``plan`` after ``event``; an event already folded in (``seq <= last_seq``) changes nothing.

    ``extra`` is added to the step the event makes, if it makes one (what the
    hook found out besides the event, such as the files a checkpoint changed).
    """
    if event.seq is not None and event.seq <= plan.last_seq:
        return plan
    p = event.payload
    seq = event.seq if event.seq is not None else plan.last_seq
    kind = event.kind
    step: dict[str, Any] | None = None
    changes: dict[str, Any] = {}
    if kind == "task.start.requested":
        changes["base_ref"] = str(p["base_ref"]) if p.get("base_ref") is not None else plan.base_ref
    elif kind in ("task.started", "task.resumed"):
        changes.update(status="running", branch=p.get("branch", plan.branch))
        if kind == "task.started":
            changes["started"] = event.ts
        else:
            step = {"step": "resumed", "checkpoint": p.get("checkpoint")}
    elif kind == "exec.requested":
        command = p.get("command")
        shown = " ".join(str(a) for a in command) if isinstance(command, (list, tuple)) else str(command)
        changes["pending"] = {**plan.pending, event.id: {"command": shown[:_COMMAND_CHARS], "ts": event.ts}}
    elif kind == "exec.exited":
        pending = dict(plan.pending)
        asked = pending.pop(event.causation_id or "", None) or {}
        changes["pending"] = pending
        step = {"step": "exec", "command": asked.get("command"), "exit_code": p.get("exit_code"),
                "duration": p.get("duration"), "reason": p.get("reason")}
        for key in ("files_changed", "changed"):  # only if whoever ran it knew
            if key in p:
                step["files_changed"] = to_plain(p[key])
    elif kind == "checkpoint.created":
        step = {"step": "checkpoint", "checkpoint": p.get("checkpoint"), "message": p.get("message"),
                "files": p.get("files"), "bytes_added": p.get("bytes_added"), "auto": bool(p.get("auto")),
                "tree": p.get("tree")}
    elif kind == "checkpoint.restored":
        step = {"step": "rollback", "checkpoint": p.get("checkpoint"), "written": p.get("written"),
                "removed": p.get("removed"), "commit": p.get("commit")}
    elif kind == "task.interrupted":
        changes["status"] = "interrupted"
        step = {"step": "interrupted", "reason": p.get("reason")}
    elif kind in ("task.completed", "task.failed", "task.cancelled"):
        status = kind.split(".")[1]
        outcome = {k: to_plain(p[k]) for k in ("reason", "commit", "committed", "merged", "merge_commit", "conflicts")
                   if p.get(k) not in (None, [], ())}
        changes.update(status=status, ended=event.ts, outcome=outcome, pending={})
    if step is not None:
        changes["steps"] = (*plan.steps, {"ts": event.ts, **step, **(extra or {})})
    return replace(plan, last_seq=seq, **changes)


def last_state(plan: Plan) -> str | None:
    """The tree (or commit) the task's files were at by its last checkpoint or rollback; None before any."""
    for step in reversed(plan.steps):
        if step.get("step") == "checkpoint" and step.get("tree"):
            return str(step["tree"])
        if step.get("step") == "rollback" and step.get("commit"):
            return str(step["commit"])
    return None


def render(plan: Plan) -> str:
    """The plan as Markdown: a header, the steps in order, and the outcome once there is one."""
    lines = [f"# Plan: task {plan.task_id}", "", f"- status: **{plan.status}**"]
    if plan.goal:
        lines.append(f"- goal: {plan.goal}")
    if plan.branch:
        lines.append(f"- branch: {plan.branch}" + (f" (from {plan.base_ref})" if plan.base_ref else ""))
    if plan.started is not None:
        lines.append(f"- started: {_when(plan.started)}")
    lines += ["", "## Steps", ""]
    if not plan.steps and not plan.pending:
        lines.append("(none yet)")
    for n, s in enumerate(plan.steps, 1):
        lines.append(f"{n}. {_when(s['ts'])} {_describe(s)}")
    for asked in plan.pending.values():
        lines.append(f"- {_when(asked['ts'])} running `{asked['command']}`")
    if plan.status in FINAL:
        lines += ["", "## Outcome", "", f"**{plan.status}** at {_when(plan.ended)}"]
        lines += [f"- {k}: {v}" for k, v in plan.outcome.items()]
    return "\n".join(lines) + "\n"


def _describe(s: dict[str, Any]) -> str:
    kind = s.get("step")
    if kind == "exec":
        text = f"ran `{s.get('command')}`: exit {s.get('exit_code')} ({s.get('reason')}) in {s.get('duration')}s"
        if "files_changed" in s:
            text += f"; files changed: {s['files_changed']}"
        return text
    if kind == "checkpoint":
        auto = " (automatic)" if s.get("auto") else ""
        message = f": {s['message']}" if s.get("message") else ""
        text = f"checkpoint {s.get('checkpoint')}{auto}{message} ({s.get('files')} files)"
        if "files_changed" in s:
            shown = ", ".join(s["files_changed"]) or "none"
            more = s.get("files_changed_count", len(s["files_changed"])) - len(s["files_changed"])
            text += f"; changed: {shown}" + (f" and {more} more" if more > 0 else "")
        return text
    if kind == "rollback":
        return f"rolled back to {s.get('checkpoint')} ({s.get('written')} written, {s.get('removed')} removed)"
    if kind == "interrupted":
        return f"interrupted: {s.get('reason')}"
    if kind == "resumed":
        return "resumed" + (f" at {s['checkpoint']}" if s.get("checkpoint") else "")
    return str(kind)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts is not None else "?"
