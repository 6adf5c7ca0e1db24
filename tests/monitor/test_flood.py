"""Floods and restarts: the monitor drops what it cannot draw, says how much, and stays right."""

from __future__ import annotations

import signal
import threading
from dataclasses import replace

from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import State
from armor_rx.monitor import Feed, MonitorState
from tests.monitor.conftest import Screen
from tests.service.conftest import armor_cli, kill_service, service_info, wait_ended, wait_for


def test_a_flood_through_the_real_service_is_skipped_counted_and_resynced(served):
    """The drain is held (as a screen far slower than the producer would); the buffer drops, never the feed."""
    from armor_rx.monitor import Monitor

    repo, client = served
    client.create_task("t1")
    with Monitor(repo, max_items=16, retry=0.1) as mon:
        wait_for(lambda: mon.state.connected and mon.state.rows.get("t1"), 30, "the monitor to attach")
        with mon.state.lock:  # nothing is applied meanwhile: the drain thread waits on this lock
            before = mon.feed.stats.received  # read under the lock: an event taken in just before is not counted as held
            client.start("t1")
            for n in range(300):
                client.emit("t1", "flood.line", {"n": n})
            wait_for(lambda: mon.feed.stats.received - before >= 300, 30, "the reader to take the flood in")
        wait_for(lambda: mon.state.skipped > 0, 30, "the skipped count")
        received, dropped = mon.feed.stats.received, mon.feed.stats.dropped
        # 16 queued, 1 in the drain's hands, and 1 the drain may have taken before it blocked on the lock.
        assert dropped >= received - before - 18 > 0
        wait_for(lambda: mon.feed.stats.delivered + mon.feed.stats.dropped == mon.feed.stats.received, 30, "the buffer to drain")
        assert mon.state.skipped == mon.feed.stats.dropped
        # task.started may have been among the dropped: the registry re-read puts the row right.
        wait_for(lambda: mon.state.rows["t1"].state is State.RUNNING, 30, "t1 running after the resync")
        screen = Screen(mon, record=True)
        try:
            wait_for(lambda: f"skipped {mon.state.skipped}" in screen.drawn(), 30, "the skipped count on screen")
            screen.keys(":stats\r")
            screen.wait(lambda: f"{mon.state.skipped} skipped by this monitor" in screen.detail_text(), "the skipped count in stats")
        finally:
            screen.close()


def test_latest_policy_keeps_only_the_newest():
    """A synthetic burst (no service): with 'latest', a held drain sees the newest event and little else."""
    state = MonitorState()

    class Burst:
        info = {"pid": 0, "last_seq": 0}

        def tasks(self):
            return []

        def checkpoints(self, task_id):
            return []

        def follow(self, pattern="*", *, task_id=None, from_seq=None, max_behind=None):
            go.wait(30)
            for n in range(1, 20_001):
                yield "event", replace(TaskEvent.new("flood.line", "t1", {"n": n}), seq=n)
            stop.wait(30)

        def close(self):
            pass

    stop, go = threading.Event(), threading.Event()
    feed = Feed(lambda: Burst(), state, max_items=8, policy="latest", retry=0.1)
    feed.start()
    wait_for(lambda: state.connected, 30, "the feed attached")
    with state.lock:
        go.set()
        wait_for(lambda: feed.stats.received == 20_000, 60, "the burst taken in")
    wait_for(lambda: state.last_seq == 20_000, 30, "the newest event applied")
    stop.set()
    feed.stop()
    assert state.skipped == feed.stats.dropped > 19_000
    assert state.applied == feed.stats.delivered < 1_000


def test_a_service_restart_is_survived_and_shown(served, no_docker):
    from armor_rx.monitor import Monitor

    repo, client = served
    client.create_task("t1")
    client.start("t1")
    with Monitor(repo, retry=0.1) as mon:
        wait_for(lambda: mon.state.rows.get("t1") is not None and mon.state.rows["t1"].state is State.RUNNING, 30, "t1 on the monitor")
        pid = kill_service(repo / ".armor", signal.SIGTERM)
        wait_ended(pid, "the old service", 30)
        wait_for(lambda: not mon.state.connected, 30, "the monitor to notice")
        assert "waiting for it to come back" in mon.state.connection_note
        assert service_info(repo / ".armor") is None  # the monitor did not start one
        proc = armor_cli("serve", "--repo", repo, env={"ARMOR_RX_DOCKER": "0"})
        assert proc.returncode == 0, proc.stderr
        wait_for(lambda: mon.state.connected, 30, "the monitor to reconnect")
        assert mon.state.reconnects == 1 and "reconnected" in mon.state.connection_note
        assert "reconnected to a restarted service" in mon.state.message
        new_pid = service_info(repo / ".armor")["pid"]
        assert str(new_pid) in mon.state.connection_note and new_pid != pid
        # Events after the restart still arrive, none twice.
        with client_of(repo) as again:
            again.emit("t1", "after.restart", {})
        wait_for(lambda: any(e.kind == "after.restart" for e in mon.state.events), 30, "an event from the new service")
        seqs = [e.seq for e in mon.state.events]
        assert seqs == sorted(set(seqs))


def client_of(repo):
    from armor_rx import connect

    return connect(repo)


def test_the_monitor_waits_for_a_service_and_never_starts_one(repo, no_docker, tmp_path):
    from armor_rx.monitor import Monitor

    with Monitor(repo, retry=0.1) as mon:
        wait_for(lambda: "waiting for the armor service" in mon.state.connection_note, 30, "the waiting note")
        assert service_info(repo / ".armor") is None
        with client_of(repo) as client:  # any other client starts it
            client.create_task("late")
            wait_for(lambda: "late" in mon.state.rows, 30, "the monitor to attach and see the task")
        # The row can come from the first registry read, just before the event stream is up.
        wait_for(lambda: mon.state.connected, 30, "the monitor's stream to be up")
        assert mon.state.reconnects == 0
