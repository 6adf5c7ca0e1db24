"""Issue 12 options through the service: the classic hook switch reaches the service's
session, and 'armor-rx start --submodules' passes a strategy (a bad one is refused)."""

from __future__ import annotations

import signal

import pytest

from .conftest import armor_cli, kill_service, service_info, wait_for


@pytest.mark.parametrize(("env", "expected"), [({"ARMOR_RX_CLASSIC_HOOKS": "0"}, False), ({}, True)])
def test_the_service_session_follows_the_classic_hooks_switch(repo, no_docker, monkeypatch, env, expected):
    monkeypatch.delenv("ARMOR_RX_CLASSIC_HOOKS", raising=False)
    done = armor_cli("serve", "--repo", repo, env=env)
    assert done.returncode == 0, done.stderr
    try:
        assert service_info(repo / ".armor")["classic_hooks"] is expected
    finally:
        kill_service(repo / ".armor", signal.SIGTERM)


def test_start_passes_the_submodule_strategy(repo, no_docker):
    from armor_rx import connect
    from armor_rx.errors import ArmorError

    try:
        done = armor_cli("start", "--repo", repo, "t1", "--submodules", "merge")
        assert done.returncode == 0, done.stderr
        with connect(repo) as armor:
            [request] = list(armor.history(task_id="t1", kind="task.start.requested"))
            assert request.payload["submodules"] == "merge"
            armor.create_task("t2")
            with pytest.raises(ArmorError, match="'submodules' must be one of skip, reset, fail, merge, rebase"):
                armor.start("t2", submodules="squash")
    finally:
        kill_service(repo / ".armor", signal.SIGTERM)


def test_start_plan_through_the_service(repo, no_docker, monkeypatch):
    import json

    from armor_rx import connect
    from armor_rx.errors import ArmorError

    monkeypatch.delenv("ARMOR_RX_PLAN_FILES", raising=False)
    try:
        assert armor_cli("start", "--repo", repo, "in-state", "--plan", "--goal", "ship it").returncode == 0
        assert armor_cli("start", "--repo", repo, "in-tree", "--plan", "worktree").returncode == 0
        assert armor_cli("start", "--repo", repo, "none").returncode == 0
        assert armor_cli("checkpoint", "--repo", repo, "in-tree", "-m", "saved").returncode == 0
        with connect(repo) as armor:
            armor.create_task("bad")
            with pytest.raises(ArmorError, match="'plan' must be true, false, 'state' or 'worktree'"):
                armor.start("bad", plan="desk")
        plans = repo / ".armor" / "plans"
        # The plan is written by an after-hook in the service, just after the outcome is answered.
        wait_for(lambda: (plans / "in-state.md").exists() and "running" in (plans / "in-state.md").read_text(), what="plan")
        assert "ship it" in (plans / "in-state.md").read_text()
        tree_plan = repo / ".armor" / "worktrees" / "in-tree" / ".armor" / "plan.md"
        wait_for(lambda: tree_plan.exists() and "checkpoint cp-1: saved" in tree_plan.read_text(), what="worktree plan")
        assert json.loads((plans / "in-tree.json").read_text())["location"] == "worktree"
        assert not (plans / "none.json").exists()
        assert service_info(repo / ".armor")["plan_files"] == "requested"
    finally:
        kill_service(repo / ".armor", signal.SIGTERM)


def test_serve_plan_files_all(repo, no_docker):
    try:
        done = armor_cli("start", "--repo", repo, "t1", env={"ARMOR_RX_PLAN_FILES": "all"})
        assert done.returncode == 0, done.stderr
        assert service_info(repo / ".armor")["plan_files"] == "all"
        wait_for(lambda: (repo / ".armor" / "plans" / "t1.json").exists(), what="plan of a task that did not ask")
    finally:
        kill_service(repo / ".armor", signal.SIGTERM)


def test_background_serve_passes_its_options_to_the_service(repo, no_docker, monkeypatch):
    for name in ("ARMOR_RX_PLAN_FILES", "ARMOR_RX_PLAN_LOCATION", "ARMOR_RX_CLASSIC_HOOKS"):
        monkeypatch.delenv(name, raising=False)
    done = armor_cli("serve", "--repo", repo, "--plan-files", "all", "--plan-location", "worktree", "--classic-hooks", "off")
    assert done.returncode == 0, done.stderr
    try:
        info = service_info(repo / ".armor")
        assert (info["plan_files"], info["plan_location"], info["classic_hooks"]) == ("all", "worktree", False)
    finally:
        kill_service(repo / ".armor", signal.SIGTERM)
