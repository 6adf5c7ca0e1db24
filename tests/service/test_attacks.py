"""Adversarial tests of the armor service: each names an attack; the numbered ones are defects it found (now fixed)."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import orjson
import pytest

from tests.service.conftest import armor_cli, kill_service, service_info, wait_for


def _events(repo):
    return [orjson.loads(line) for line in armor_cli("events", "--repo", repo, "--json").stdout.splitlines()]


def _stop(repo):
    if service_info(repo / ".armor") is not None:
        armor_cli("serve", "--stop", "--repo", repo)




# -- 1. the service's repository is whoever auto-started it ------------------------------------
@pytest.mark.usefixtures("no_docker")
def test_a_repo_client_never_gets_a_service_without_git(repo):
    try:
        first = armor_cli("start", "a", "--state-dir", repo / ".armor")  # the documented default state dir, spelled out
        assert first.returncode == 0, first.stderr
        second = armor_cli("start", "b", "--repo", repo)
        assert second.returncode == 0, second.stderr
        task = orjson.loads(armor_cli("tasks", "--repo", repo, "--json").stdout)
        b = next(t for t in task if t["task_id"] == "b")
        # Asked with --repo: the task must have its branch and worktree (or the client must be told why not).
        assert b["metadata"].get("branch") == "task/b", b
        assert (repo / ".armor" / "worktrees" / "b").is_dir()
    finally:
        _stop(repo)


# -- 2. a raw request event poisons the next recovery -----------------------------------------
@pytest.mark.usefixtures("no_docker")
def test_emitting_a_request_kind_does_not_interrupt_a_task_after_a_restart(repo):
    import armor_rx

    try:
        with armor_rx.connect(repo) as remote:
            remote.create_task("t1")
            remote.start("t1")
            try:
                remote.emit("t1", "task.cancel.requested", {})
            except armor_rx.ArmorError:
                pass  # refusing it is fine
            assert remote.task("t1").state.value == "running"
        armor_cli("serve", "--stop", "--repo", repo)  # a clean stop, then a new service
        with armor_rx.connect(repo) as remote:
            assert remote.task("t1").state.value == "running", remote.task("t1").reason
    finally:
        _stop(repo)


# -- 3. a client arriving while a service recovers --------------------------------------------
def _fill(repo, n):
    """A log of ``n`` events with a stale snapshot (the writer dies without closing): recovery replays them."""
    script = ("import os, sys\n"
              "from armor_rx import Armor\n"
              "from armor_rx.model.events import TaskEvent\n"
              "a = Armor(sys.argv[1], docker=False).open()\n"
              "a.create_task('big')\n"
              "f = [a.pipeline.record(TaskEvent.new('note.added', 'big', {'i': i, 'pad': 'x' * 200})) for i in range(int(sys.argv[2]))]\n"
              "f[-1].result()\n"
              "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", script, str(repo), str(n)], check=True, timeout=600, env={**os.environ, "ARMOR_RX_DOCKER": "0"})


@pytest.mark.usefixtures("no_docker")
def test_a_client_waits_for_a_service_that_is_still_recovering(repo):
    _fill(repo, 250_000)
    proc = subprocess.Popen([sys.executable, "-m", "armor_rx", "serve", "--foreground", "--repo", str(repo), "--idle-timeout", "60"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)  # it holds the lock and replays the log; its socket is not there yet
        assert proc.poll() is None
        done = armor_cli("start", "t1", "--repo", repo)
        assert done.returncode == 0, done.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


# -- 4. half-open connections lock everyone out -----------------------------------------------
@pytest.mark.usefixtures("no_docker")
def test_half_open_connections_do_not_lock_out_other_clients(repo):
    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proc = subprocess.Popen([sys.executable, "-m", "armor_rx", "serve", "--foreground", "--repo", str(repo), "--idle-timeout", "120"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=low_fd_limit)
    held = []
    try:
        wait_for(lambda: service_info(repo / ".armor"), what="the service")
        sock = str(repo / ".armor" / "run" / "armor.sock")
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)
            s.sendall(b"GET /v1/tasks HTTP/1.1\r\nHost: a\r\n")  # never finished
            held.append(s)
        time.sleep(5)  # a header timeout has had its chance
        done = armor_cli("start", "t1", "--repo", repo, timeout=120)
        assert done.returncode == 0, done.stderr
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


# -- held: damaged files and many spellings -----------------------------------------------------
@pytest.mark.usefixtures("no_docker")
@pytest.mark.parametrize("damage", ["garbage-socket", "dangling-symlink-socket", "loose-run-mode", "stale-start-lock", "garbage-log"])
def test_damaged_service_files_are_replaced(repo, damage):
    run = repo / ".armor" / "run"
    run.mkdir(parents=True)
    run.chmod(0o700)
    if damage == "garbage-socket":
        (run / "armor.sock").write_bytes(b"not a socket")
    elif damage == "dangling-symlink-socket":
        (run / "armor.sock").symlink_to(repo / "nowhere.sock")
    elif damage == "loose-run-mode":
        run.chmod(0o777)
    elif damage == "stale-start-lock":
        (run / "start.lock").write_text("12345")
    else:
        (repo / ".armor" / "service.log").write_bytes(os.urandom(50_000))
    try:
        done = armor_cli("start", "t1", "--repo", repo)
        assert done.returncode == 0, done.stderr
        assert (run.stat().st_mode & 0o777) == 0o700
    finally:
        _stop(repo)


@pytest.mark.usefixtures("no_docker")
def test_many_spellings_of_one_state_directory_share_one_service(repo, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(repo)
    spellings = [["--repo", str(repo)], ["--repo", str(link)], ["--repo", str(repo) + "/"], ["--repo", "."], ["--repo", "../repo"]]
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "armor_rx", "start", f"t{n}", *spec], cwd=repo, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for n, spec in enumerate(spellings)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        services = subprocess.run(["pgrep", "-f", f"armor_rx serve --foreground --state-dir {repo}/.armor"], capture_output=True, text=True)
        assert len(services.stdout.split()) == 1
        assert len(orjson.loads(armor_cli("tasks", "--repo", repo, "--json").stdout)) == len(spellings)
    finally:
        _stop(repo)


# -- with containers ------------------------------------------------------------------------------
@pytest.fixture
def image(test_image, monkeypatch):
    monkeypatch.setenv("ARMOR_RX_DOCKER", "1")
    monkeypatch.setenv("ARMOR_RX_IMAGE", test_image)
    return test_image


def _remove_quietly(container):
    import docker.errors

    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass  # already going: the service removes it too


def _exec_and_hang_up(sock_path, task, command, hang_up_after):
    """POST an exec over a raw socket, read a little, then close the connection (a Ctrl-C'd client)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sock_path))
    body = orjson.dumps({"command": command})
    s.sendall(b"POST /v1/tasks/%s/exec HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (task.encode(), len(body), body))
    time.sleep(hang_up_after)
    s.close()


@pytest.mark.docker
def test_a_queued_exec_whose_client_left_never_runs_to_completion(repo, image):
    import armor_rx

    try:
        assert armor_cli("start", "t1", "--repo", repo).returncode == 0
        with armor_rx.connect(repo) as remote:
            sock = remote.paths.socket
            for round_ in range(2):
                first = threading.Thread(target=remote.exec, args=("t1", ["sh", "-c", "sleep 2"]))
                first.start()
                time.sleep(0.5)
                for n in range(6):
                    _exec_and_hang_up(sock, "t1", ["sh", "-c", f"sleep 1; touch /tmp/left-{round_}-{n}"], 0.3)
                first.join(60)
                wait_for(lambda: len([e for e in remote.history(task_id="t1", kind="exec.done")]) >= 7 * (round_ + 1), timeout=90,
                      what="every exec to end")
            listing = []
            remote.exec("t1", ["sh", "-c", "ls /tmp"], on_output=listing.append)
            ran = [line for line in "".join(e.payload["data"] for e in listing).split() if line.startswith("left-")]
            assert ran == [], f"commands whose clients went away ran to completion: {ran}"
    finally:
        _stop(repo)


@pytest.mark.docker
def test_a_container_made_by_a_killed_service_does_not_outlive_its_task(repo, image, engine):
    import armor_rx

    try:
        leaked = []
        for attempt in range(8):
            task = f"k{attempt}"
            with armor_rx.connect(repo) as remote:
                remote.create_task(task)
            state = str((repo / ".armor").resolve())
            starter = subprocess.Popen([sys.executable, "-m", "armor_rx", "start", task, "--repo", str(repo)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Kill the service as soon as the task's container exists (before it is recorded if we are quick).
            wait_for(lambda: engine.client.containers.list(all=True, sparse=True, filters={"label": [f"armor.task={task}", f"armor.state={state}"]}),
                  timeout=60, what="the container")
            kill_service(repo / ".armor")
            starter.wait(30)
            with armor_rx.connect(repo) as remote:
                if remote.task(task).state.value != "interrupted":
                    remote.cancel(task)
                    continue
                remote.resume(task)
                remote.cancel(task)
            time.sleep(1)
            left = [c for c in engine.client.containers.list(all=True, sparse=True, filters={"label": [f"armor.task={task}", f"armor.state={state}"]})
                    if c.status == "running"]
            leaked += [c.name for c in left]
            if leaked:
                break
        assert leaked == [], f"containers still running after their task was cancelled: {leaked}"
    finally:
        _stop(repo)
        state = str((repo / ".armor").resolve())
        for c in engine.client.containers.list(all=True, sparse=True, filters={"label": f"armor.state={state}"}):
            _remove_quietly(c)


@pytest.mark.docker
def test_kill_9_at_random_points_keeps_the_log_gapless_and_git_clean(repo, image, engine):
    import random

    state = str((repo / ".armor").resolve())
    try:
        for i in range(4):
            runs = [subprocess.Popen([sys.executable, "-m", "armor_rx", "run", "--repo", str(repo), "--task", f"r{i}", "--",
                                      "sh", "-c", "echo a; sleep 1; echo b > f.txt"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    for _ in range(3)]
            time.sleep(random.uniform(0.5, 3.0))
            if service_info(repo / ".armor") is not None:
                kill_service(repo / ".armor")
            for p in runs:
                p.communicate(timeout=120)
        seqs = [e["seq"] for e in _events(repo)]
        assert seqs == list(range(1, len(seqs) + 1))
        subprocess.run(["git", "-C", str(repo), "fsck", "--strict"], check=True, capture_output=True)
        with __import__("armor_rx").connect(repo) as remote:
            assert not [t for t in remote.tasks() if t.state.value in ("starting", "completing", "failing", "resuming")]
    finally:
        _stop(repo)
        for c in engine.client.containers.list(all=True, sparse=True, filters={"label": f"armor.state={state}"}):
            _remove_quietly(c)
