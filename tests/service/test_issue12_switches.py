"""Issue 12 options through the service: the classic hook switch reaches the service's
session, and 'armor-rx start --submodules' passes a strategy (a bad one is refused)."""

from __future__ import annotations

import signal

import pytest

from .conftest import armor_cli, kill_service, service_info


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
