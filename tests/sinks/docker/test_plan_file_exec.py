"""The plan-file hook records the commands a task runs in its real container: command, exit code, duration."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.docker


def test_each_exec_is_a_step_with_its_exit_code_and_duration(repo, sandbox, cleanup_containers):
    from armor_rx import Armor

    with Armor(repo, docker=True, sandbox=sandbox, plan_files="all", plan_location="worktree") as armor:
        armor.create_task("plan-exec")
        armor.start("plan-exec", goal="see the plan follow the commands")
        ok = armor.exec("plan-exec", ["sh", "-c", "echo hi > made.txt"])
        bad = armor.exec("plan-exec", ["sh", "-c", "sleep 0.3; exit 3"])
        armor.fail("plan-exec", "exit 3 is not good enough")
        armor.wait_idle()
        text = (armor.git.worktree_path("plan-exec") / ".armor" / "plan.md").read_text()
    assert (ok.payload["exit_code"], bad.payload["exit_code"]) == (0, 3)
    plan = json.loads((repo / ".armor" / "plans" / "plan-exec.json").read_text())
    execs = [s for s in plan["steps"] if s["step"] == "exec"]
    assert [(s["command"], s["exit_code"]) for s in execs] == [("sh -c echo hi > made.txt", 0), ("sh -c sleep 0.3; exit 3", 3)]
    assert execs[1]["duration"] >= 0.3 and plan["pending"] == {}
    assert plan["status"] == "failed" and plan["outcome"]["reason"] == "exit 3 is not good enough"
    assert "ran `sh -c sleep 0.3; exit 3`: exit 3 (exited)" in text and "**failed**" in text
