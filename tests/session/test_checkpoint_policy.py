"""The checkpoint policy in a real session: checkpoints before risky commands, in the lane, on real git."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from armor_rx import Armor
from armor_rx.errors import ConfigError
from armor_rx.operators import CheckpointTriggers, checkpoint_policy
from armor_rx.pipeline.effects import EffectContext

from tests.conftest import run_git


class LocalExec:
    """Runs exec requests as real processes in the task's worktree (a session without Docker)."""

    name = "local-exec"
    kinds = "exec.requested"

    def __init__(self) -> None:
        self.worktree_of: Any = None

    def apply(self, ctx: EffectContext) -> dict[str, Any]:
        command = [str(w) for w in ctx.request.payload["command"]]
        if command == ["boom"]:
            raise RuntimeError("the command could not be started")
        began = time.monotonic()
        done = subprocess.run(command, cwd=self.worktree_of(ctx.request.task_id), capture_output=True, timeout=60)
        return {"exit_code": done.returncode, "duration": round(time.monotonic() - began, 3)}


def session(repo: Path, **options: Any) -> tuple[Armor, LocalExec]:
    runner = LocalExec()
    armor = Armor(repo, effects=[runner], **options)
    runner.worktree_of = armor.worktree
    return armor, runner


def events(armor: Armor, task: str) -> list[Any]:
    armor.wait_idle()
    return list(armor.history(task_id=task))


def test_a_checkpoint_is_taken_before_a_risky_command_runs(repo: Path) -> None:
    armor, _ = session(repo, checkpoint_when=CheckpointTriggers(risk_threshold=40))
    with armor:
        armor.create_task("t1")
        armor.start("t1")
        build = armor.worktree("t1") / "build"
        build.mkdir()
        (build / "out.o").write_text("object code\n")
        armor.exec("t1", ["ls"])
        risky = armor.exec("t1", ["sh", "-c", "true && rm -rf build"])
        assert not build.exists()
        history = events(armor, "t1")
        kinds = [e.kind for e in history]
        scored = [e for e in history if e.kind == "checkpoint.risk.scored"]
        assert [s.payload["decision"] for s in scored] == ["none", "checkpoint"]
        assert scored[1].payload["reasons"][0]["detail"] == "rm -rf build"
        request = next(e for e in history if e.id == risky.causation_id)
        checkpoint_request = next(e for e in history if e.kind == "checkpoint.requested")
        assert checkpoint_request.causation_id == request.id
        done = next(e for e in history if e.kind == "checkpoint.done")
        # in the log: the exec's intent, the decision, the checkpoint, and only then the exec's outcome
        assert request.seq < scored[1].seq < checkpoint_request.seq < done.seq < risky.seq
        assert kinds.count("checkpoint.done") == 1
        cp = armor.checkpoints("t1")[-1]
        assert cp.id == done.payload["checkpoint"]
        # real git: the checkpoint holds the files the command then deleted
        assert "build/out.o" in run_git(repo, "ls-tree", "-r", "--name-only", cp.commit)
        shadow_log = run_git(repo, "log", "--format=%s", "refs/armor/checkpoints/t1")
        assert "policy: before exec (risk: score 60 >= 40)" in shadow_log
        armor.rollback("t1", cp.id)
        assert (build / "out.o").read_text() == "object code\n"
    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=repo, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


def test_files_touched_by_a_step_raise_the_next_steps_risk(repo: Path) -> None:
    armor, _ = session(repo, checkpoint_when=CheckpointTriggers(risk_threshold=25, many_files=20))
    with armor:
        armor.create_task("t1")
        armor.start("t1")
        wide = armor.exec("t1", ["sh", "-c", "mkdir gen && for i in $(seq 1 30); do echo $i >> gen/f$i; done"])
        assert wide.payload["files_touched"] == 30
        narrow = armor.exec("t1", ["ls"])
        assert narrow.payload["files_touched"] == 0
        history = events(armor, "t1")
        scored = [e.payload for e in history if e.kind == "checkpoint.risk.scored"]
        assert scored[1]["decision"] == "checkpoint"
        reason = scored[1]["reasons"][0]
        assert reason["rule"] == "many_files_touched" and "30 files" in reason["detail"]
        assert len(armor.checkpoints("t1")) == 1


def test_an_after_exec_checkpoint_is_skipped_when_the_exec_failed(repo: Path) -> None:
    armor, _ = session(repo, checkpoint_when=CheckpointTriggers(at=("after_exec",)))
    with armor:
        armor.create_task("t1")
        armor.start("t1")
        armor.exec("t1", ["true"])
        with pytest.raises(Exception, match="could not be started"):
            armor.exec("t1", ["boom"])
        history = events(armor, "t1")
        kinds = [e.kind for e in history]
        assert kinds.count("checkpoint.done") == 1
        skipped = [e for e in history if e.kind == "checkpoint.skipped"]
        assert len(skipped) == 1 and "did not succeed" in skipped[0].payload["reason"]
        assert armor.task("t1").state.value == "running"  # a failed exec does not end the task


def test_a_task_can_bring_its_own_policy_and_a_bad_one_is_refused_before_anything_is_logged(repo: Path) -> None:
    armor, _ = session(repo)
    with armor:
        armor.create_task("plain")
        armor.start("plain")
        armor.exec("plain", ["sh", "-c", "rm -rf nothing"])
        armor.create_task("careful")
        before = armor.log.last_seq
        with pytest.raises(ConfigError, match="unknown checkpoint policy key"):
            armor.start("careful", checkpoint_policy="bravery=11")
        assert armor.log.last_seq == before
        armor.start("careful", checkpoint_policy="adaptive")
        armor.exec("careful", ["sh", "-c", "rm -rf nothing"])
        armor.complete("careful")
        assert armor.checkpoints("plain") == []
        assert [cp.message.split(" (")[0] for cp in armor.checkpoints("careful")] == [
            "policy: before exec", "policy: before task.complete"]
        assert not [e for e in events(armor, "plain") if e.kind.startswith("checkpoint.")]


def test_use_checkpoint_policy_replaces_the_sessions_own(repo: Path) -> None:
    armor, _ = session(repo, checkpoint_when=CheckpointTriggers(every_execs=1))
    with armor:
        armor.use_checkpoint_policy(checkpoint_policy(at=("before_complete",)))
        armor.create_task("t1")
        armor.start("t1")
        for _ in range(3):
            armor.exec("t1", ["true"])
        armor.complete("t1")
        assert [cp.message for cp in armor.checkpoints("t1")] == ["policy: before task.complete (before_complete)"]
        assert sorted(h.stage for h in armor.hooks.list() if h.name == "checkpoint-policy") == ["after", "before"]
