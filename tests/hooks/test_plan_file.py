"""The plan-file hook (issue 12 item 6) in real sessions on real repositories.

A plan is created at a task's start, gains a step per checkpoint (and per
command, see tests/sinks/docker/test_plan_file_exec.py), is finalised with the
outcome, survives restarts (from its file, caught up from the log, or rebuilt
from the log when the file is damaged), is written atomically, and a worktree
the agent booby-trapped never makes it write outside the worktree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from armor_rx import Armor
from armor_rx.errors import ConfigError
from armor_rx.hooks import plan_file
from armor_rx.model.plan import Plan, fold, render
from armor_rx.model.events import TaskEvent
from armor_rx.sinks.plans import PlanFiles
from armor_rx.testing import crash


def _plan(repo: Path, task: str) -> dict:
    return json.loads((repo / ".armor" / "plans" / f"{task}.json").read_text())


def _md(repo: Path, task: str) -> str:
    return (repo / ".armor" / "plans" / f"{task}.md").read_text()


def _steps(repo: Path, task: str) -> list[tuple[str, object]]:
    return [(s["step"], s.get("checkpoint")) for s in _plan(repo, task)["steps"]]


def test_created_at_start_updated_at_checkpoints_finalised_at_completion(repo: Path) -> None:
    with Armor(repo, plan_files="all") as armor:
        armor.create_task("t1")
        armor.start("t1", goal="make the greeting louder")
        armor.wait_idle()
        assert _plan(repo, "t1")["status"] == "running"
        assert "- status: **running**" in _md(repo, "t1") and "make the greeting louder" in _md(repo, "t1")
        (armor.git.worktree_path("t1") / "README.md").write_text("HELLO\n")
        armor.checkpoint("t1", message="louder")
        armor.checkpoint("t1", message="again")
        (armor.git.worktree_path("t1") / "notes").mkdir()
        (armor.git.worktree_path("t1") / "notes" / "todo.txt").write_text("more\n")
        armor.checkpoint("t1", message="notes")
        armor.rollback("t1", "cp-1")
        (armor.git.worktree_path("t1") / "extra.txt").write_text("x\n")
        armor.checkpoint("t1", message="after rollback")
        armor.complete("t1", message="done")
        armor.wait_idle()
        commit = armor.task("t1").metadata.get("branch")
    plan = _plan(repo, "t1")
    assert plan["status"] == "completed" and plan["outcome"]["committed"] is True and len(plan["outcome"]["commit"]) == 40
    steps = [(s["step"], s["checkpoint"], s.get("message"), s.get("files_changed")) for s in plan["steps"]
             if not s.get("auto")]
    assert steps == [
        ("checkpoint", "cp-1", "louder", ["README.md"]),  # against the commit the task started from
        ("checkpoint", "cp-2", "again", []),
        ("checkpoint", "cp-3", "notes", ["notes/todo.txt"]),
        ("rollback", "cp-1", None, None),
        ("checkpoint", "cp-4", "after rollback", ["extra.txt"]),  # against what the rollback restored
    ]
    text = _md(repo, "t1")
    assert "changed: notes/todo.txt" in text
    assert "## Outcome" in text and "**completed**" in text and "1. " in text and "checkpoint cp-1" in text
    assert commit == "task/t1"
    assert not [p for p in (repo / ".armor" / "plans").iterdir() if p.name.startswith(".armor-tmp-")]


def test_failure_and_cancellation_are_final_outcomes(repo: Path) -> None:
    with Armor(repo, plan_files="all") as armor:
        for task in ("f1", "c1"):
            armor.create_task(task)
            armor.start(task)
        armor.fail("f1", "tests do not pass")
        armor.cancel("c1", "not needed")
        armor.wait_idle()
    assert (_plan(repo, "f1")["status"], _plan(repo, "f1")["outcome"]["reason"]) == ("failed", "tests do not pass")
    assert (_plan(repo, "c1")["status"], _plan(repo, "c1")["outcome"]["reason"]) == ("cancelled", "not needed")
    assert "**failed**" in _md(repo, "f1") and "tests do not pass" in _md(repo, "f1")


def test_requested_mode_is_the_default_and_tracks_only_tasks_that_ask(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARMOR_RX_PLAN_FILES", raising=False)
    with Armor(repo) as armor:
        assert armor.config.plan_files == "requested"
        for task, plan in (("asked", True), ("quiet", None)):
            armor.create_task(task)
            armor.start(task, **({"plan": plan} if plan else {}))
            armor.checkpoint(task)
        armor.wait_idle()
    assert _steps(repo, "asked") == [("checkpoint", "cp-1")]
    assert not (repo / ".armor" / "plans" / "quiet.json").exists()


def test_off_runs_no_plan_hook(repo: Path) -> None:
    with Armor(repo, plan_files="off") as armor:
        assert not [h for h in armor.hooks.list() if "plan" in h.name]
        armor.create_task("t1")
        armor.start("t1", plan=True)
        armor.wait_idle()
    assert not (repo / ".armor" / "plans").exists()


def test_worktree_location_is_never_committed(repo: Path) -> None:
    from armor_rx.sinks.git.cli import run_git

    with Armor(repo) as armor:
        armor.create_task("t1")
        armor.start("t1", plan="worktree")
        armor.checkpoint("t1", message="one")
        armor.wait_idle()
        worktree = armor.git.worktree_path("t1")
        assert "checkpoint cp-1" in (worktree / ".armor" / "plan.md").read_text()
        armor.complete("t1")
        armor.wait_idle()
        assert "**completed**" in (worktree / ".armor" / "plan.md").read_text()
    assert not (repo / ".armor" / "plans" / "t1.md").exists()  # the state directory keeps only the state
    assert _plan(repo, "t1")["location"] == "worktree"
    files = run_git(repo / ".git", repo, "ls-tree", "-r", "--name-only", "task/t1").stdout.decode().split()
    assert files == ["README.md"]


def test_a_restart_loses_nothing_and_counts_nothing_twice(repo: Path) -> None:
    with Armor(repo, plan_files="all") as armor:
        armor.create_task("t1")
        armor.start("t1")
        armor.checkpoint("t1", message="before restart")
        armor.wait_idle()
    with Armor(repo, plan_files="all") as armor:
        armor.checkpoint("t1", message="after restart")
        armor.complete("t1")
        armor.wait_idle()
    plan = _plan(repo, "t1")
    assert [s["message"] for s in plan["steps"]] == ["before restart", "after restart"]
    assert plan["status"] == "completed"


def test_events_the_file_missed_are_caught_up_from_the_log(repo: Path) -> None:
    """A plan file older than the log (its last write lost, or written while the hook was off) is caught up."""
    with Armor(repo, plan_files="all") as armor:
        armor.create_task("t1")
        armor.start("t1")
        armor.wait_idle()
    stale = (repo / ".armor" / "plans" / "t1.json").read_bytes()
    with Armor(repo, plan_files="off") as armor:  # the hook is off: nothing written for these
        armor.checkpoint("t1", message="unseen 1")
        armor.checkpoint("t1", message="unseen 2")
    assert (repo / ".armor" / "plans" / "t1.json").read_bytes() == stale
    with Armor(repo, plan_files="requested") as armor:  # the task asked for nothing, but its file says it is tracked
        armor.checkpoint("t1", message="seen")
        armor.wait_idle()
    assert [s["message"] for s in _plan(repo, "t1")["steps"]] == ["unseen 1", "unseen 2", "seen"]


def test_a_damaged_plan_file_is_rebuilt_from_the_log(repo: Path) -> None:
    with Armor(repo) as armor:
        armor.create_task("t1")
        armor.start("t1", plan=True, goal="the goal survives")
        armor.checkpoint("t1", message="one")
        armor.wait_idle()
    (repo / ".armor" / "plans" / "t1.json").write_text("{ torn")
    with Armor(repo) as armor:
        armor.checkpoint("t1", message="two")
        armor.wait_idle()
    plan = _plan(repo, "t1")
    assert [s["message"] for s in plan["steps"]] == ["one", "two"]
    assert plan["goal"] == "the goal survives" and plan["status"] == "running"


def test_a_crash_shows_as_an_interruption(repo: Path) -> None:
    armor = Armor(repo, plan_files="all").open()
    armor.create_task("t1")
    armor.start("t1")
    armor.wait_idle()
    # A checkpoint request logged but never carried out: the next session reconciles it.
    armor.pipeline.log.append_async(TaskEvent.new("checkpoint.requested", "t1", {})).result()
    crash(armor)
    with Armor(repo, plan_files="all") as again:
        again.wait_idle()
        assert again.task("t1").state.value == "interrupted"
    assert _plan(repo, "t1")["status"] == "interrupted"
    assert _plan(repo, "t1")["steps"][-1]["step"] == "interrupted"


def test_a_symlinked_plan_file_is_replaced_not_followed(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "host-file"
    outside.write_text("the host's own\n")
    with Armor(repo) as armor:
        armor.create_task("t1")
        armor.start("t1", plan="worktree")
        armor.wait_idle()
        plan_md = armor.git.worktree_path("t1") / ".armor" / "plan.md"
        plan_md.unlink()
        os.symlink(outside, plan_md)  # the agent's trap
        armor.checkpoint("t1", message="after the trap")
        armor.wait_idle()
        assert not plan_md.is_symlink() and "after the trap" in plan_md.read_text()
    assert outside.read_text() == "the host's own\n"


def test_a_symlinked_directory_makes_the_write_fail_without_writing_outside(repo: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "host-dir"
    elsewhere.mkdir()
    with Armor(repo) as armor:
        armor.create_task("t1")
        armor.start("t1", plan="worktree")
        armor.wait_idle()
        armor_dir = armor.git.worktree_path("t1") / ".armor"
        for child in armor_dir.iterdir():
            child.unlink()
        armor_dir.rmdir()
        os.symlink(elsewhere, armor_dir)
        armor.checkpoint("t1", message="trapped")
        armor.wait_idle()
        [failed] = [e.payload for e in armor.history(kind="hook.failed")]
        assert failed["hook"] == "session-plan-files" and failed["error_type"] == "PathEscape"
        assert "'.armor' is a symlink or a file" in failed["error"]
        assert list(elsewhere.iterdir()) == []
        # The plan's state is kept all the same, and the next update after the trap is gone draws it.
        assert [s["message"] for s in _plan(repo, "t1")["steps"]] == ["trapped"]
        armor_dir.unlink()
        armor.checkpoint("t1", message="clear")
        armor.wait_idle()
        assert "checkpoint cp-2" in (armor.git.worktree_path("t1") / ".armor" / "plan.md").read_text()
        assert armor.task("t1").state.value == "running"  # a plan file never fails its task


@pytest.mark.parametrize("mode", ["off", "requested"])
def test_registered_from_python(repo: Path, mode: str) -> None:
    """The shipped hook registered by hand, with or without the session's own beside it."""
    with Armor(repo, plan_files=mode) as armor:  # type: ignore[arg-type]
        armor.use(plan_file(armor, tasks="all"), stage="after", name="my-plans")
        armor.create_task("t1")
        armor.start("t1")
        armor.complete("t1")
        armor.wait_idle()
        registered = [e.payload["hook"] for e in armor.history(kind="hook.registered")]
    assert registered == ["my-plans"]
    assert _plan(repo, "t1")["status"] == "completed"


def test_bad_settings_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="plan_files must be one of off, requested, all, not 'some'"):
        Armor(state_dir=tmp_path / "s", plan_files="some")  # type: ignore[arg-type]
    monkeypatch.setenv("ARMOR_RX_PLAN_LOCATION", "desk")
    with pytest.raises(ConfigError, match="ARMOR_RX_PLAN_LOCATION must be one of state, worktree, not 'desk'"):
        Armor(state_dir=tmp_path / "s")
    with pytest.raises(ConfigError, match="must be relative"):
        PlanFiles(tmp_path, worktree_path="../outside.md")
    with pytest.raises(ConfigError, match="'.git'"):
        PlanFiles(tmp_path, worktree_path=".git/plan.md")


def test_the_fold_is_idempotent_and_pairs_commands_with_their_exits() -> None:
    start = TaskEvent.new("task.start.requested", "t1", {"goal": "g"}).with_seq(1)
    ran = TaskEvent.new("exec.requested", "t1", {"command": ["make", "test"]}).with_seq(2)
    other = TaskEvent.new("exec.requested", "t1", {"command": "echo other"}).with_seq(3)
    exited = ran.caused("exec.exited", {"exit_code": 2, "duration": 0.25, "reason": "exited"}).with_seq(4)
    plan = Plan("t1")
    for event in (start, ran, other, exited):
        plan = fold(plan, event)
    assert fold(plan, exited) is plan and fold(plan, ran) is plan  # folded once, by seq
    assert [(s["command"], s["exit_code"], s["duration"]) for s in plan.steps] == [("make test", 2, 0.25)]
    assert list(plan.pending.values())[0]["command"] == "echo other"
    assert "ran `make test`: exit 2 (exited) in 0.25s" in render(plan) and "running `echo other`" in render(plan)
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
