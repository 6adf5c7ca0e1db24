"""GitEffect: the pipeline's view of the git sink, idempotent by request id."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from armor_rx.model.events import TaskEvent
from armor_rx.pipeline.effects import Effect, EffectContext
from armor_rx.sinks.git import GitEffect, GitWorkspace

from .conftest import git


class Recorder:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def __call__(self, kind: str, payload: Mapping[str, Any]) -> TaskEvent:
        self.kinds.append(kind)
        return TaskEvent.new(kind, "t", payload)


def ctx(request: TaskEvent, rec: Recorder) -> EffectContext:
    return EffectContext(request=request, task=None, emit=rec)


def test_effect_protocol(ws: GitWorkspace) -> None:
    effect = GitEffect(ws)
    assert isinstance(effect, Effect)
    assert effect.name == "git"


def test_start_checkpoint_complete_are_idempotent(ws: GitWorkspace, repo: Path) -> None:
    effect = GitEffect(ws)
    rec = Recorder()
    start = TaskEvent.new("task.start.requested", "eff", {"base_ref": "main"})
    out = effect.apply(ctx(start, rec))
    assert out is not None and out["branch"] == "task/eff"
    assert rec.kinds == ["git.branch.requested", "git.branch.created", "git.worktree.created"]
    again = effect.apply(ctx(start, rec))
    assert again == out and len(rec.kinds) == 3  # nothing new happened
    assert git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/task/").split() == ["task/eff"]

    wt = Path(out["worktree"])
    (wt / "work.txt").write_text("w\n")
    cp_req = TaskEvent.new("checkpoint.requested", "eff", {"message": "m"})
    cp = effect.apply(ctx(cp_req, rec))
    assert cp is not None and cp["checkpoint"] == "cp-1"
    assert effect.apply(ctx(cp_req, rec)) == cp
    assert len(ws.checkpoints("eff")) == 1

    done_req = TaskEvent.new("task.complete.requested", "eff", {"message": "finish", "merge": "ff"})
    done = effect.apply(ctx(done_req, rec))
    assert done is not None and done["merged"] is True and done["conflicts"] == []
    assert git(repo, "rev-parse", "main").strip() == done["commit"]
    assert "git.merge.completed" in rec.kinds


def test_half_applied_start_reuses_branch(ws: GitWorkspace, repo: Path) -> None:
    effect = GitEffect(ws)
    ws.create_branch("half")  # crashed after the branch, before the worktree and the stored result
    out = effect.apply(ctx(TaskEvent.new("task.start.requested", "half", {}), Recorder()))
    assert out is not None and out["branch"] == "task/half"
    assert git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/task/").split() == ["task/half"]


def test_resume_restores_checkpoint(ws: GitWorkspace) -> None:
    effect = GitEffect(ws)
    out = effect.apply(ctx(TaskEvent.new("task.start.requested", "res", {}), Recorder()))
    assert out is not None
    wt = Path(out["worktree"])
    (wt / "a.txt").write_text("a\n")
    ws.checkpoint("res")
    ws.remove_worktree("res", on_dirty="checkpoint")
    resumed = effect.apply(ctx(TaskEvent.new("task.resume.requested", "res", {"checkpoint": "cp-1"}), Recorder()))
    assert resumed is not None
    assert (Path(resumed["worktree"]) / "a.txt").read_text() == "a\n"
