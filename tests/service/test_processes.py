"""The service as processes: auto-start races, a dead owner's socket, idle exit, SIGKILL, other users, permissions."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from tests.service.conftest import armor_cli, kill_service, service_info, wait_ended

pytestmark = pytest.mark.usefixtures("no_docker")


def test_clients_racing_to_start_it_end_with_one_service(repo):
    state = repo / ".armor"
    script = ("import sys, armor_rx\n"
              "remote = armor_rx.connect(sys.argv[1])\n"
              "remote.create_task(sys.argv[2])\n"
              "print(remote.info['pid'])\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(repo), f"t{n}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(8)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    pids = {out.strip() for out, _ in outputs}
    assert len(pids) == 1, pids
    assert service_info(state)["pid"] == int(pids.pop())
    done = armor_cli("tasks", "--repo", repo, "--json")
    assert sorted(t["task_id"] for t in __import__("orjson").loads(done.stdout)) == [f"t{n}" for n in range(8)]


def test_socket_is_private(repo):
    import armor_rx

    with armor_rx.connect(repo) as remote:
        sock = remote.paths.socket
        assert stat.S_ISSOCK(sock.lstat().st_mode)
        assert stat.S_IMODE(sock.lstat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.lstat().st_mode) == 0o700


def test_a_killed_service_is_replaced_and_reconciles(repo):
    import armor_rx
    from armor_rx import State

    with armor_rx.connect(repo) as remote:
        remote.create_task("t1")
        remote.start("t1")
        first = remote.info["pid"]
    kill_service(repo / ".armor")
    assert (repo / ".armor" / "run" / "armor.sock").exists()  # the dead owner's socket is still there
    with armor_rx.connect(repo) as remote:
        assert remote.info["pid"] != first
        assert remote.task("t1").state is State.RUNNING  # nothing acknowledged was lost
        remote.emit("t1", "note.added", {"after": "restart"})


def test_a_client_gets_a_clear_error_within_a_second_when_the_service_dies(repo):
    import armor_rx
    from armor_rx.errors import ServiceLost

    remote = armor_rx.connect(repo)
    remote.create_task("t1")
    results = {}

    def follow():
        started = time.monotonic()
        try:
            for _ in remote.follow("*", from_seq=1):
                results.setdefault("got", True)
        except ServiceLost as exc:
            results["error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - the test reports the wrong type
            results["error"] = f"wrong type {type(exc).__name__}: {exc}"
        results["elapsed"] = time.monotonic() - started

    import threading

    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(0.5)
    pid = remote.info["pid"]
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    reader.join(10)
    assert not reader.is_alive(), "the client hung after the service died"
    assert "went away" in results["error"], results
    assert time.monotonic() - killed_at < 1.5
    remote.close()


def test_idle_service_exits(repo):
    import armor_rx

    with armor_rx.connect(repo, idle_timeout=1.0) as remote:
        pid = remote.info["pid"]
        remote.create_task("t1")  # pending is not active: it does not keep the service
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and service_info(repo / ".armor") is not None:
        time.sleep(0.2)
    assert service_info(repo / ".armor") is None
    wait_ended(pid, "the idle service")
    # The next client starts a new one, transparently.
    with armor_rx.connect(repo) as remote:
        assert remote.task("t1").task_id == "t1"


def test_an_active_task_keeps_the_service_alive(repo):
    import armor_rx

    with armor_rx.connect(repo, idle_timeout=1.0) as remote:
        remote.create_task("t1")
        remote.start("t1")
        pid = remote.info["pid"]
    time.sleep(3)
    assert service_info(repo / ".armor")["pid"] == pid


def test_read_only_verbs_work_from_the_log_when_no_service_runs(repo):
    import armor_rx

    with armor_rx.connect(repo) as remote:
        remote.create_task("t1")
    kill_service(repo / ".armor", signal.SIGTERM)
    done = armor_cli("tasks", "--repo", repo)
    assert done.returncode == 0 and "t1" in done.stdout
    events = armor_cli("events", "--repo", repo)
    assert "task.created" in events.stdout
    assert service_info(repo / ".armor") is None  # reading did not start one


def test_another_user_is_refused(repo, tmp_path):
    runner = shutil.which("setpriv")
    if os.getuid() != 0 or runner is None:
        pytest.skip("needs root and setpriv to act as another user")
    import armor_rx

    with armor_rx.connect(repo) as remote:
        sock = remote.paths.socket
        probe = ("import sys, httpx\n"
                 "t = httpx.HTTPTransport(uds=sys.argv[1])\n"
                 "try:\n"
                 "    r = httpx.Client(transport=t).get('http://armor/v1/tasks')\n"
                 "    print(r.status_code, r.text)\n"
                 "except Exception as e:\n"
                 "    print('refused', type(e).__name__, e)\n")
        as_nobody = [runner, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", probe, str(sock)]
        # The 0700 directory already keeps another user from reaching the socket ...
        out = subprocess.run(as_nobody, capture_output=True, text=True, timeout=60).stdout
        assert out.startswith("refused") and "Permission denied" in out, out
        # ... and if the modes were loosened, the peer-uid check still refuses it.
        os.chmod(sock.parent, 0o755)
        os.chmod(sock, 0o666)
        parents = [p for p in sock.parents if p != p.parent]
        saved = {p: stat.S_IMODE(p.stat().st_mode) for p in parents}
        try:
            for p in parents:
                os.chmod(p, saved[p] | 0o055)
            out = subprocess.run(as_nobody, capture_output=True, text=True, timeout=60).stdout
        finally:
            for p, mode in saved.items():
                os.chmod(p, mode)
        assert out.startswith("403") and "PermissionDenied" in out and "uid 65534" in out, out
        assert remote.tasks() == []  # and the service goes on serving its owner


def test_a_service_whose_socket_is_gone_exits(repo):
    import armor_rx

    with armor_rx.connect(repo) as remote:
        remote.create_task("t1")
        remote.start("t1")  # an active task would otherwise keep it forever
        pid = remote.info["pid"]
        remote.paths.socket.unlink()
    wait_ended(pid, "a service no client can reach")
    with armor_rx.connect(repo) as remote:  # the next client gets a new one, with everything
        assert remote.task("t1").state.value == "running" and remote.info["pid"] != pid


def test_a_tcp_listener_only_when_asked_and_only_with_the_token(repo):
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "armor_rx", "serve", "--foreground", "--repo", str(repo), "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        token_file = repo / ".armor" / "run" / "token"
        deadline = time.monotonic() + 30
        while not (token_file.exists() and token_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        url = f"http://127.0.0.1:{port}/v1/tasks"
        for _ in range(100):
            try:
                refused = httpx.get(url, trust_env=False)
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "PermissionDenied"
        wrong = httpx.get(url, headers={"Authorization": "Bearer " + "x" * len(token)}, trust_env=False)
        assert wrong.status_code == 403
        ok = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, trust_env=False)
        assert ok.status_code == 200 and ok.json() == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_no_tcp_listener_by_default(repo):
    import armor_rx

    with armor_rx.connect(repo) as remote:
        pid = remote.info["pid"]
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        tcp = open("/proc/net/tcp").read() + open("/proc/net/tcp6").read()
        listening = [line.split()[9] for line in tcp.splitlines()[1:] if line.split()[3] == "0A"]
        assert not any(f"socket:[{inode}]" in inodes for inode in listening)


def test_serve_stop_returns_once_the_service_is_gone_so_a_new_one_can_start(repo, no_docker):
    """'serve --stop' then 'serve' at once: the old process must have let go of the state directory's lock."""
    for _ in range(3):
        assert armor_cli("serve", "--repo", repo).returncode == 0
        pid = service_info(repo / ".armor")["pid"]
        stopped = armor_cli("serve", "--stop", "--repo", repo)
        assert stopped.returncode == 0, stopped.stderr
        try:  # gone, or a zombie waiting for whoever adopted it to reap it (it holds no lock then)
            with open(f"/proc/{pid}/stat") as proc_stat:
                assert proc_stat.read().rsplit(")", 1)[-1].split()[0] == "Z"
        except FileNotFoundError:
            pass
