"""The monitor's container commands for real: exec output in the detail pane, run, the container and exit columns."""

from __future__ import annotations

import pytest

from armor_rx.model.lifecycle import State
from tests.monitor.conftest import Screen
from tests.service.conftest import wait_for

pytestmark = [pytest.mark.docker]


@pytest.fixture
def docker_monitor(repo, test_image, monkeypatch, tmp_path):
    monkeypatch.setenv("ARMOR_RX_DOCKER", "1")
    monkeypatch.setenv("ARMOR_RX_IMAGE", test_image)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    from armor_rx import connect
    from armor_rx.monitor import Monitor

    with connect(repo) as client, Monitor(repo, retry=0.1) as mon:
        wait_for(lambda: mon.state.connected, 60, "the monitor to attach")
        screen = Screen(mon)
        try:
            yield client, screen
        finally:
            screen.close()
            if any(t.task_id == "c1" and t.state is State.RUNNING for t in client.tasks()):
                client.cancel("c1")  # its container goes with it


def test_exec_output_streams_into_the_detail_pane_and_run_makes_a_task(docker_monitor):
    client, screen = docker_monitor
    client.create_task("c1")
    client.start("c1")
    wait_for(lambda: screen.state.rows.get("c1") is not None and screen.state.rows["c1"].container, 60, "the container column")
    screen.keys(":exec c1 -- sh -c 'echo hello-from-c1; exit 3'\r")
    screen.said("exec in c1 exited 3", timeout=120)
    assert "hello-from-c1" in screen.detail_text() and "[exit 3]" in screen.detail_text()
    wait_for(lambda: screen.state.rows["c1"].exit_code == 3, 60, "the exit column")
    screen.keys(":show c1\r")
    screen.wait(lambda: "hello-from-c1" in screen.detail_text() and "last exit  3" in screen.detail_text(), "recent output in show")
    screen.keys(":run r1 -- echo ran-in-r1\r")
    screen.said("run r1 exited 0", timeout=180)
    assert "ran-in-r1" in screen.detail_text()
    wait_for(lambda: screen.state.rows.get("r1") is not None and screen.state.rows["r1"].state is State.COMPLETED, 60, "r1 completed")
