"""Fault injection with real processes (issue 12 item 1): the service and its client are killed with SIGKILL at
random points of a running task. Every time: every event the client was told is durable is in the log, the next
service finds the task ``interrupted`` with a report that names what was cut off, and resuming it and running the
agent again ends with the same tree as a run that was never interrupted; no container is left behind.

The points are drawn from a seeded generator (``ARMOR_FAULT_SEED`` replays a failing run); 20 of them by
default, 100 in the ``soak`` variant (``pytest -m soak tests/resilience``; about an hour on a loaded machine).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from armor_rx.pipeline.requests import outcome_kind
from tests.resilience.driver import drive
from tests.service.conftest import armor_cli, service_info

pytestmark = [pytest.mark.docker]

DRIVER = Path(__file__).with_name("driver.py")
ROOT = Path(__file__).resolve().parents[2]
STEPS = 5
SETTLING = ("hook.vetoed", "effect.failed", "effect.dead_lettered")


def _open_request(events):
    """The last request of the task that nothing settled, if any (worked out here from the log, not by armor)."""
    def settled(request):
        return any(e.causation_id == request.id and (e.kind in SETTLING or e.kind == outcome_kind(request.kind)) for e in events)

    cut_off = [e for e in events if e.kind.endswith(".requested") and e.causation_id is None and not settled(e)]
    return cut_off[-1] if cut_off else None


def _tree(git, repo, commit):
    return git(repo, "rev-parse", f"{commit}^{{tree}}").strip()


def _kill_at_random_points(repo, git, engine, points: int):
    import armor_rx

    seed = int(os.environ.get("ARMOR_FAULT_SEED", random.SystemRandom().randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"ARMOR_FAULT_SEED={seed}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The uninterrupted run: its tree is what every interrupted one must end with, its time sets the window.
    assert armor_cli("start", "baseline", "--repo", repo).returncode == 0
    clean = subprocess.Popen([sys.executable, str(DRIVER), str(repo), "baseline", str(STEPS)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    assert clean.stdout.readline() == "ready\n"
    began = time.monotonic()
    out, err = clean.communicate(timeout=300)
    window = time.monotonic() - began  # the steps' phase: the kill points are drawn from it
    assert out.endswith("done\n"), err
    with armor_rx.connect(repo) as remote:
        expected = _tree(git, repo, remote.complete("baseline", message="the work").payload["commit"])

    acknowledged: dict[str, list[str]] = {}
    cut_in_flight = 0
    for n in range(points):
        task = f"cut-{n}"
        started = armor_cli("start", task, "--repo", repo)  # the service of the last round was killed: a new one reconciles
        assert started.returncode == 0, started.stderr
        pid = int(service_info(repo / ".armor")["pid"])
        agent = subprocess.Popen([sys.executable, str(DRIVER), str(repo), task, str(STEPS)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        # Once connected, at a random moment of the steps (or just after them: the task is still running then).
        agent.stdout.readline()
        time.sleep(rng.uniform(0.0, window * 1.1))
        os.kill(pid, signal.SIGKILL)
        agent.kill()
        out, _ = agent.communicate(timeout=30)
        acknowledged[task] = [line.split()[1] for line in out.splitlines() if line.startswith("ack ")]
        cut_in_flight += bool(out.count("ack ") < 2 * STEPS)
        deadline = time.monotonic() + 30
        while service_info(repo / ".armor") is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    with_request = 0
    with armor_rx.connect(repo) as remote:  # a new service: it reconciles the last round's task
        history = list(remote.history())
        ids = {e.id for e in history}
        assert [e.seq for e in history] == list(range(1, len(history) + 1))  # gapless
        for n in range(points):
            task = f"cut-{n}"
            missing = [i for i in acknowledged[task] if i not in ids]
            assert not missing, (task, missing)  # acknowledged means durable
            events = [e for e in history if e.task_id == task]
            assert remote.task(task).state.value == "interrupted", (task, [e.kind for e in events][-6:])
            cut = [i for i, e in enumerate(events) if e.kind == "task.interrupted"][0]
            report = events[cut].payload
            assert report["cause"] == "crash", report
            in_flight = _open_request(events[:cut])
            assert report["request_id"] == (in_flight.id if in_flight else None), (task, report, in_flight)
            if in_flight is not None:
                assert report["request_kind"] == in_flight.kind
                with_request += 1
            assert "docker" in report["findings"]  # what the engine showed of its container
            remote.resume(task)
            drive(remote, task, STEPS)
            done = remote.complete(task, message="the work")
            assert _tree(git, repo, done.payload["commit"]) == expected, (task, seed)
    print(f"{points} points: {cut_in_flight} among the steps, {with_request} with a request in flight")
    assert cut_in_flight >= points // 4, (cut_in_flight, seed)  # most points fall among the steps, not after them
    left = [c for c in engine.client.containers.list(all=True, filters={"label": "armor.task"})
            if c.labels.get("armor.state") == str(repo / ".armor")]
    assert not left, [c.labels.get("armor.task") for c in left]
    git(repo, "fsck", "--strict")


@pytest.mark.timeout(3600)  # each point starts a service (seconds on a loaded machine); the bound is generous
def test_sigkill_at_20_random_points_of_a_running_task(repo, image, engine, git):
    _kill_at_random_points(repo, git, engine, 20)


@pytest.mark.soak
@pytest.mark.timeout(6 * 3600)
def test_sigkill_at_100_random_points_of_a_running_task(repo, image, engine, git):
    _kill_at_random_points(repo, git, engine, 100)
