"""`armor-rx run`, `armor-rx gc` and the orphan sweep, end to end on the real daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

pytestmark = [pytest.mark.docker]


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    _git("init", "-q", cwd=path)
    (path / "README").write_text("hello from the repository\n")
    _git("add", "README", cwd=path)
    _git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init", cwd=path)
    return path


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "armor_rx", *args], capture_output=True, text=True, timeout=120, **kwargs)


def _spawn(*args):
    return subprocess.Popen([sys.executable, "-m", "armor_rx", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _events(repo, task=None):
    args = ["events", "--repo", str(repo), "--json"] + (["--task", task] if task else [])
    return [orjson.loads(line) for line in _cli(*args).stdout.splitlines()]


def _labelled(engine, task, repo):
    # sparse: no inspect per container, which races with a removal in progress (NotFound). Only this
    # repository's: other runs of these tests on a shared daemon have tasks of the same names.
    state = (repo / ".armor").resolve()
    return engine.client.containers.list(all=True, sparse=True, filters={"label": [f"armor.task={task}", f"armor.state={state}"]})


def _wait_started(repo, task, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["kind"] == "exec.requested" for e in _events(repo, task)):
            return
        time.sleep(0.2)
    raise AssertionError(f"task {task} never started its command")


def test_run_end_to_end(repo, test_image, engine):
    done = _cli("run", "--repo", str(repo), "--task", "e2e", "--image", test_image, "--",
                "sh", "-c", "cat README; pwd; echo made > made.txt; echo to-stderr >&2; exit 7")
    assert done.returncode == 7, done.stderr
    assert "hello from the repository" in done.stdout and "/workspace" in done.stdout
    assert "to-stderr" in done.stderr and "Traceback" not in done.stderr
    listed = _git("worktree", "list", cwd=repo)
    assert str(repo / ".armor" / "worktrees" / "e2e") in listed and "[task/e2e]" in listed
    assert (repo / ".armor" / "worktrees" / "e2e" / "made.txt").read_text() == "made\n"
    kinds = [e["kind"] for e in _events(repo, "e2e")]
    for kind in ("task.created", "git.worktree.created", "container.started", "exec.output", "exec.exited", "container.removed", "task.failed"):
        assert kind in kinds, kinds
    assert not _labelled(engine, "e2e", repo)
    ok = _cli("run", "--repo", str(repo), "--task", "ok", "--image", test_image, "--keep", "--", "true")
    assert ok.returncode == 0, ok.stderr
    assert [c.status for c in _labelled(engine, "ok", repo)] == ["running"]
    assert "task/ok" in _git("branch", "--list", "task/ok", cwd=repo)
    for c in _labelled(engine, "ok", repo):
        c.remove(force=True)


def test_unreachable_docker_host_is_one_clear_line(repo, tmp_path):
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"}
    done = _cli("run", "--repo", str(repo), "--task", "nodocker", "--", "true", env=env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("armor-rx: error: cannot use the Docker engine at unix://"), done.stderr
    assert "DOCKER_HOST" in lines[0] and "scripts/dockerd.sh" in lines[0]
    assert not (repo / ".armor" / "worktrees" / "nodocker").exists()


def test_ctrl_c_stops_command_and_container_and_records_interrupted(repo, test_image, engine):
    proc = _spawn("run", "--repo", str(repo), "--task", "ctrlc", "--image", test_image, "--", "sleep", "60")
    try:
        _wait_started(repo, "ctrlc")
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    kinds = [e["kind"] for e in _events(repo, "ctrlc")]
    assert "task.interrupted" in kinds and "container.removed" in kinds, kinds
    assert not _labelled(engine, "ctrlc", repo)


def _kill_service(repo):
    """SIGKILL the repository's service (the owner of its containers), as a crash would."""
    from armor_rx.client.autostart import probe
    from armor_rx.service.paths import ServicePaths

    found = probe(ServicePaths.of(repo / ".armor"))
    assert found is not None, "no service runs for the repository"
    os.kill(int(found["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while probe(ServicePaths.of(repo / ".armor"), timeout=0.5) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_killed_client_interrupts_its_task_and_removes_its_container(repo, test_image, engine):
    proc = _spawn("run", "--repo", str(repo), "--task", "gone", "--image", test_image, "--", "sleep", "300")
    _wait_started(repo, "gone")
    proc.kill()  # the terminal closed: no Ctrl-C handler runs
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while _labelled(engine, "gone", repo) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _labelled(engine, "gone", repo)
    kinds = [e["kind"] for e in _events(repo, "gone")]
    assert "task.interrupted" in kinds and "container.removed" in kinds, kinds


def test_a_killed_service_leaves_an_orphan_that_the_sweep_and_gc_remove(repo, test_image, engine):
    from armor_rx.sinks.docker.sweep import Sweeper

    procs = [_spawn("run", "--repo", str(repo), "--task", task, "--image", test_image, "--", "sleep", "300")
             for task in ("orphan-a", "orphan-b")]
    for task in ("orphan-a", "orphan-b"):
        _wait_started(repo, task)
    _kill_service(repo)
    for proc, task in zip(procs, ("orphan-a", "orphan-b")):
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1 and "went away" in err, err  # the client says its service went away
        assert [c.status for c in _labelled(engine, task, repo)] == ["running"]
    # A grace far longer than the steps above take on a loaded machine: the orphans are young.
    sweeper = Sweeper(engine, grace=600.0)
    first = {d.task_id: d.action for d in sweeper.sweep() if d.task_id.startswith("orphan-")}
    assert first == {"orphan-a": "waiting", "orphan-b": "waiting"}
    dry = _cli("gc", "--repo", str(repo), "--now", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.count("would_remove") >= 2, dry.stdout
    assert _labelled(engine, "orphan-a", repo) and _labelled(engine, "orphan-b", repo)
    # gc --now removes at once, checkpointing the worktree and logging each removal.
    (repo / ".armor" / "worktrees" / "orphan-a" / "unsaved.txt").write_text("work in progress\n")
    now = _cli("gc", "--repo", str(repo), "--now", "--json")
    assert now.returncode == 0, now.stderr
    removed = {row["task"]: row for row in orjson.loads(now.stdout) if row["action"] == "removed"}
    assert {"orphan-a", "orphan-b"} <= set(removed)
    assert removed["orphan-a"]["checkpoint"]
    # A removal another sweep on the shared daemon started first finishes a moment later (gc sees HTTP 409).
    deadline = time.monotonic() + 30
    while (_labelled(engine, "orphan-a", repo) or _labelled(engine, "orphan-b", repo)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _labelled(engine, "orphan-a", repo) and not _labelled(engine, "orphan-b", repo)
    swept = [e for e in _events(repo) if e["kind"] == "container.swept"]
    assert {e["payload"]["task"] for e in swept} >= {"orphan-a", "orphan-b"}
    # The periodic sweep removes an orphan once its grace has passed.
    proc = _spawn("run", "--repo", str(repo), "--task", "orphan-c", "--image", test_image, "--", "sleep", "300")
    _wait_started(repo, "orphan-c")
    _kill_service(repo)
    proc.communicate(timeout=30)
    with Sweeper(engine, grace=1.0, interval=0.5):
        deadline = time.monotonic() + 30
        while _labelled(engine, "orphan-c", repo) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not _labelled(engine, "orphan-c", repo)


def test_unknown_image_is_refused_before_the_task_exists(repo, engine):
    done = _cli("run", "--repo", str(repo), "--task", "noimage", "--image", "armor-rx-test/no-such-image:v1", "--", "true")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "image 'armor-rx-test/no-such-image:v1' is not present" in lines[0], done.stderr
    assert not (repo / ".armor" / "worktrees" / "noimage").exists()
    assert "'armor-rx image local'" in lines[0]  # the way out on a machine with no registry


def test_image_local_makes_an_image_that_runs_with_no_registry(repo, engine):
    made = _cli("image", "local")
    assert made.returncode == 0, made.stderr
    tag = made.stdout.strip()
    assert tag == "armor-rx/busybox:latest" and "ARMOR_RX_IMAGE" in made.stderr
    engine.client.images.get(tag)  # it is on the engine
    assert _cli("image", "local").stdout.strip() == tag  # and asking again reuses it
    done = _cli("run", "--repo", str(repo), "--task", "offline", "--image", tag, "--", "sh", "-c", "echo works")
    assert done.returncode == 0 and done.stdout == "works\n", done.stderr


def test_run_streams_a_flood_to_the_terminal_in_bounded_memory(repo, test_image, tmp_path):
    size = 100_000_000
    out = tmp_path / "out.bin"
    script = (
        "import resource, subprocess, sys\n"
        f"with open({str(out)!r}, 'wb') as f:\n"
        f"    code = subprocess.run([sys.executable, '-m', 'armor_rx', 'run', '--repo', {str(repo)!r}, '--task', 'flood',"
        f" '--image', {test_image!r}, '--', 'sh', '-c', 'yes 0123456789abcdef | head -c {size}'], stdout=f).returncode\n"
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    code, maxrss_kb = (int(x) for x in done.stdout.split())
    assert code == 0
    assert out.stat().st_size == size
    assert maxrss_kb < 160 * 1024, f"armor-rx run peaked at {maxrss_kb / 1024:.0f} MB for a {size / 1e6:.0f} MB flood"


def test_gc_leaves_the_containers_of_a_state_directory_a_live_session_holds(repo, test_image, engine):
    from armor_rx import Armor

    proc = _spawn("run", "--repo", str(repo), "--task", "held", "--image", test_image, "--", "sleep", "300")
    _wait_started(repo, "held")
    _kill_service(repo)
    proc.communicate(timeout=30)
    try:
        # A session reopens the state directory (it could adopt the container); gc from
        # outside must leave that state directory's containers to it.
        with Armor(repo, docker=True, sweep_interval=None):
            kept = _cli("gc", "--repo", str(repo), "--now", "--json")
            assert kept.returncode == 0, kept.stderr
            rows = [row for row in orjson.loads(kept.stdout) if row["task"] == "held"]
            assert [row["action"] for row in rows] == ["kept"]
            assert "leaving its containers to that session" in kept.stderr
            assert _labelled(engine, "held", repo)
        # With no live session there, the dead session's container is an orphan.
        gone = _cli("gc", "--repo", str(repo), "--now", "--json")
        assert {row["task"]: row["action"] for row in orjson.loads(gone.stdout)}.get("held") == "removed"
    finally:
        for container in _labelled(engine, "held", repo):
            container.remove(force=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_a_closed_terminal_interrupts_the_run(repo, test_image, engine, sig):
    proc = _spawn("run", "--repo", str(repo), "--task", "ended", "--image", test_image, "--", "sleep", "120")
    try:
        _wait_started(repo, "ended")
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig and "Traceback" not in err, err
    assert "is interrupted" in err
    kinds = [e["kind"] for e in _events(repo, "ended")]
    assert "task.interrupted" in kinds and "container.removed" in kinds, kinds  # already true when it exited
    assert not _labelled(engine, "ended", repo)
