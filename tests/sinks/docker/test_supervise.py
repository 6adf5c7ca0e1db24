"""Service supervision on the real daemon: started detached, checked, restarted with backoff, given up on."""

from __future__ import annotations

import threading
import time

import pytest

from armor_rx import Armor, HealthCheck, ServiceSpec, State

from .conftest import wait_for

pytestmark = pytest.mark.docker


def kinds(armor: Armor, task: str, prefix: str = "service.") -> list[str]:
    return [e.kind for e in armor.history(task_id=task) if e.kind.startswith(prefix)]


def events(armor: Armor, task: str, kind: str) -> list[dict]:
    return [dict(e.payload) for e in armor.history(task_id=task, kind=kind)]


def supervisor_threads() -> list[str]:
    prefixes = ("armor-supervise-", "armor-health-", "armor-stall-watch")
    return [t.name for t in threading.enumerate() if t.name.startswith(prefixes)]


def test_a_healthy_service_stays_up_with_one_health_event(tmp_path, sandbox, cleanup_containers):
    # A port probe from inside the container's own network namespace (network "none"): busybox nc serves.
    web = ServiceSpec("web", "nc -ll -p 8080 -e cat", health=HealthCheck(port=8080, interval=0.3, timeout=2, retries=2))
    with Armor(state_dir=tmp_path / "state", docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        armor.create_task("svc")
        armor.start("svc", services=[web])
        assert wait_for(lambda: "service.health.changed" in kinds(armor, "svc"), timeout=30)
        time.sleep(2.5)  # several more checks, all healthy: nothing more is recorded
        assert kinds(armor, "svc") == ["service.started", "service.health.changed"]
        changes = events(armor, "svc", "service.health.changed")
        assert changes == [{"service": "web", "from": "starting", "to": "healthy"}]
        listening = armor.exec("svc", ["sh", "-c", "nc -w 2 127.0.0.1 8080 -e true && echo up"])
        assert listening.payload["exit_code"] == 0
        armor.complete("svc")
        assert kinds(armor, "svc")[-1] == "service.stopped"
        assert armor.task("svc").state is State.COMPLETED
    assert wait_for(lambda: supervisor_threads() == [], timeout=10), supervisor_threads()


def test_a_service_that_dies_is_restarted_with_backoff(tmp_path, sandbox, cleanup_containers):
    # Lives about a second, then exits 7: each end is seen, and it is started again after 0.2, 0.4, 0.8 s.
    flaky = ServiceSpec("flaky", "sleep 1; exit 7", health=HealthCheck(interval=0.2, timeout=2, retries=3),
                        backoff=0.2, backoff_max=5, max_restarts=10)
    with Armor(state_dir=tmp_path / "state", docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        armor.create_task("die")
        armor.start("die", services=[flaky])
        assert wait_for(lambda: len(events(armor, "die", "service.restarted")) >= 3, timeout=60)
        restarts = events(armor, "die", "service.restarted")[:3]
        assert [r["restart"] for r in restarts] == [1, 2, 3]
        assert [r["backoff"] for r in restarts] == [0.2, 0.4, 0.8]
        assert all("exited with code 7" in r["reason"] for r in restarts)
        assert events(armor, "die", "service.exited")[0]["exit_code"] == 7
        # With no health check, a running process is healthy: each life is one change up and one down,
        # never the same change twice in a row, however many checks it passed.
        changes = [(e["from"], e["to"]) for e in events(armor, "die", "service.health.changed")]
        assert changes[:2] == [("starting", "healthy"), ("healthy", "unhealthy")]
        assert all(a[1] == b[0] and a[1] != b[1] for a, b in zip(changes, changes[1:]))
        assert armor.task("die").state is State.RUNNING
        armor.cancel("die")
    assert supervisor_threads() == []


def test_a_hanging_health_check_times_out_restarts_and_gives_up_failing_the_task(tmp_path, sandbox, cleanup_containers):
    hangs = ServiceSpec("agent", "sleep 600",
                        health=HealthCheck(command="sleep 600", interval=0.2, timeout=0.5, retries=1),
                        backoff=0.1, backoff_max=0.2, max_restarts=2)
    with Armor(state_dir=tmp_path / "state", docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        armor.create_task("hang")
        armor.start("hang", services=[hangs])
        # The registry runs a little ahead of the log: wait for the event itself, which history reads.
        assert wait_for(lambda: events(armor, "hang", "task.failed"), timeout=60)
        assert kinds(armor, "hang") == ["service.started", "service.health.changed", "service.restarted",
                                        "service.restarted", "service.gave_up"]
        gave_up = events(armor, "hang", "service.gave_up")[0]
        assert "did not answer within 0.5s" in gave_up["reason"] and gave_up["restarts"] == 2
        failed = events(armor, "hang", "task.failed")[0]
        assert "service 'agent' is unhealthy" in failed["reason"] and "gave up after 2 restarts" in failed["reason"]
        # The health checks that hung were killed, not left running in the container.
        containers = [e for e in armor.history(task_id="hang", kind="container.removed")]
        assert containers
    assert supervisor_threads() == []


def test_a_timed_out_health_check_kills_only_itself_not_a_command_running_beside_it(tmp_path, sandbox,
                                                                                       cleanup_containers):
    slow = ServiceSpec("slow", "sleep 600",
                       health=HealthCheck(command="sleep 600", interval=0.2, timeout=0.5, retries=50))
    with Armor(state_dir=tmp_path / "state", docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        armor.create_task("beside")
        armor.start("beside", services=[slow])
        assert wait_for(lambda: "service.started" in kinds(armor, "beside"), timeout=30)
        out: list[str] = []
        done = armor.exec("beside", ["sh", "-c", "sleep 3; echo survived"],
                          on_output=lambda e: out.append(e.payload["data"]))
        assert done.payload["exit_code"] == 0 and "survived" in "".join(out)
        # The checks that hung were killed: no pile of 'sleep 600' checks, just the service's own.
        seen: list[str] = []
        listing = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"
        ps = armor.exec("beside", ["sh", "-c", listing],
                        on_output=lambda e: seen.append(e.payload["data"]))
        assert ps.payload["exit_code"] == 0
        running = [line.strip() for line in "".join(seen).splitlines() if line.strip().startswith("sleep 600")]
        assert 1 <= len(running) <= 2, running  # the service, and at most the check running right now
        armor.cancel("beside")


def test_interrupt_stops_the_services_resume_starts_them_again_and_no_thread_outlives_the_session(
        tmp_path, sandbox, cleanup_containers):
    web = ServiceSpec("web", "nc -ll -p 8080 -e cat", health=HealthCheck(port=8080, interval=0.3, timeout=2))
    state = tmp_path / "state"
    with Armor(state_dir=state, docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        armor.create_task("again")
        armor.start("again", services=[web.to_payload()])
        assert wait_for(lambda: "service.health.changed" in kinds(armor, "again"), timeout=30)
        assert [n for n in supervisor_threads() if n.startswith("armor-supervise-")] == ["armor-supervise-again"]
        armor.interrupt("again", "test: the agent's machine went away")
        stopped = [{"service": "web", "reason": "interrupted"}]
        assert wait_for(lambda: events(armor, "again", "service.stopped") == stopped,
                        timeout=30)
        assert wait_for(lambda: supervisor_threads() == [], timeout=10)
        armor.resume("again")  # a new container, and the services the start declared, from the log
        assert wait_for(lambda: kinds(armor, "again").count("service.started") == 2, timeout=30)
        assert wait_for(lambda: kinds(armor, "again").count("service.health.changed") == 2, timeout=30)
        assert [n for n in supervisor_threads() if n.startswith("armor-supervise-")] == ["armor-supervise-again"]
    # Closing the session ends (joins) the supervisor's threads before the pipeline stops.
    assert supervisor_threads() == []
    with Armor(state_dir=state, docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        assert armor.task("again").state is State.INTERRUPTED  # closing the session interrupted it
        armor.resume("again")
        assert wait_for(lambda: kinds(armor, "again").count("service.started") == 3, timeout=30)
        armor.cancel("again")
    assert supervisor_threads() == []


def test_bad_service_declarations_are_refused_before_anything_is_logged(tmp_path):
    from armor_rx.errors import ConfigError

    with Armor(state_dir=tmp_path / "state") as armor:
        armor.create_task("bad")
        with pytest.raises(ConfigError, match="not both"):
            armor.start("bad", services=[{"name": "x", "command": "true", "health": {"command": "true", "port": 80}}])
        with pytest.raises(ConfigError, match="more than once"):
            armor.start("bad", services=[{"name": "x", "command": "true"}, {"name": "x", "command": "false"}])
        assert [e.kind for e in armor.history(task_id="bad")] == ["task.created"]


def test_the_cli_declares_services_and_the_service_supervises_them(repo, test_image, tmp_path, cleanup_containers):
    """`armor-rx start --service NAME=CMD --health CHECK` and `--services FILE`, through the armor service."""
    import os
    import subprocess
    import sys

    import orjson

    env = {**os.environ, "ARMOR_RX_STALL_AFTER": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "armor_rx", *args, "--repo", str(repo)], capture_output=True,
                              text=True, timeout=120, env=env)

    def task_events(task: str) -> list[dict]:
        out = cli("events", "--task", task, "--json").stdout
        return [orjson.loads(line) for line in out.splitlines()]

    spec = tmp_path / "services.toml"
    spec.write_text('[[services]]\nname = "side"\ncommand = "sleep 600"\n[services.health]\ninterval = 0.3\n')
    try:
        started = cli("start", "web", "--image", test_image, "--service", "web=nc -ll -p 8080 -e cat",
                      "--health", "tcp:8080", "--services", str(spec))
        assert started.returncode == 0, started.stderr
        assert wait_for(lambda: len([e for e in task_events("web") if e["kind"] == "service.health.changed"]) == 2,
                        timeout=60)
        declared = [e for e in task_events("web") if e["kind"] == "service.started"]
        assert sorted(e["payload"]["service"] for e in declared) == ["side", "web"]
        assert {e["payload"]["service"]: e["payload"]["health"] for e in declared} == {"side": "process running",
                                                                                     "web": "tcp:8080"}
        # The service was started with ARMOR_RX_STALL_AFTER=1: a task with nothing happening is flagged.
        assert wait_for(lambda: any(e["kind"] == "task.stalled" for e in task_events("web")), timeout=60)
        bad = cli("start", "other", "--image", test_image, "--health", "true")
        assert bad.returncode != 0 and "--service" in bad.stderr and "Traceback" not in bad.stderr
        assert cli("cancel", "web").returncode == 0
        stopped = [e["payload"]["service"] for e in task_events("web") if e["kind"] == "service.stopped"]
        assert sorted(stopped) == ["side", "web"]
    finally:
        cli("serve", "--stop")


def test_a_service_healthy_for_stable_after_gets_its_restart_budget_back(tmp_path, sandbox, cleanup_containers):
    # Each life is about 4 s, healthy all along, then it exits: well past stable_after (1 s), so every restart
    # starts from a fresh budget of one. Without the reset the second death would be past max_restarts.
    steady = ServiceSpec("steady", "sleep 4; exit 7", health=HealthCheck(interval=0.1, timeout=2, retries=1),
                         backoff=0.1, backoff_max=0.1, max_restarts=1, stable_after=1.0)
    # The control: lives shorter than stable_after never earn the budget back, so the second death gives up.
    brief = ServiceSpec("brief", "sleep 1; exit 7", health=HealthCheck(interval=0.1, timeout=2, retries=1),
                        backoff=0.1, backoff_max=0.1, max_restarts=1, stable_after=30.0)
    with Armor(state_dir=tmp_path / "state", docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        armor.create_task("steady")
        armor.start("steady", services=[steady])
        armor.create_task("brief")
        armor.start("brief", services=[brief])
        assert wait_for(lambda: events(armor, "brief", "task.failed"), timeout=60)
        gave_up = events(armor, "brief", "service.gave_up")
        assert len(gave_up) == 1 and gave_up[0]["restarts"] == 1
        assert [r["restart"] for r in events(armor, "brief", "service.restarted")] == [1]

        assert wait_for(lambda: len(events(armor, "steady", "service.restarted")) >= 3, timeout=90)
        restarts = events(armor, "steady", "service.restarted")
        assert [r["restart"] for r in restarts[:3]] == [1, 1, 1]
        assert all("exited with code 7" in r["reason"] for r in restarts)
        assert events(armor, "steady", "service.gave_up") == []
        assert armor.task("steady").state is State.RUNNING
        armor.cancel("steady")
    assert wait_for(lambda: supervisor_threads() == [], timeout=10), supervisor_threads()
