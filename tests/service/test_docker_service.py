"""The service with real containers: many `armor-rx run` at once, exec streaming and Ctrl-C, SIGKILL mid-command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from tests.service.conftest import armor_cli, kill_service, wait_for

pytestmark = [pytest.mark.docker]


@pytest.fixture
def image(test_image, monkeypatch):
    monkeypatch.setenv("ARMOR_RX_DOCKER", "1")
    monkeypatch.setenv("ARMOR_RX_IMAGE", test_image)
    return test_image


def _spawn(*args):
    return subprocess.Popen([sys.executable, "-m", "armor_rx", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)




def _events(repo, task=None):
    args = ["events", "--repo", repo, "--json"] + (["--task", task] if task else [])
    return [orjson.loads(line) for line in armor_cli(*args).stdout.splitlines()]


def test_twenty_runs_at_once_on_one_repository(repo, image, engine, git):
    follower = _spawn("events", "--repo", repo, "--follow", "--json", "--kind", "task.*")
    try:
        runs = []
        for n in range(20):
            name = "same" if n < 10 else f"other-{n}"
            runs.append((n, _spawn("run", "--repo", repo, "--task", name, "--image", image, "--",
                                   "sh", "-c", f"echo run-{n}; sleep 1; exit {n % 4}")))
        # While they run: the task list answers, through the same service.
        listed = wait_for(lambda: [t for t in orjson.loads(armor_cli("tasks", "--repo", repo, "--json").stdout or b"[]")],
                       what="tasks while the runs work")
        assert listed
        results = {}
        for n, proc in runs:
            out, err = proc.communicate(timeout=300)
            results[n] = (proc.returncode, out, err)
    finally:
        time.sleep(1)
        follower.send_signal(signal.SIGINT)
        try:
            followed, _ = follower.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # What it printed is what this test checks. Once, in a loaded CI run, the follower took
            # over 30 s to stop on SIGINT: noted in the closing note, not investigated yet.
            follower.kill()
            followed, _ = follower.communicate(timeout=30)
    for n, (code, out, err) in results.items():
        assert code == n % 4, (n, code, err)
        assert out == f"run-{n}\n", (n, out, err)
    tasks = orjson.loads(armor_cli("tasks", "--repo", repo, "--json").stdout)
    assert len(tasks) == 20
    names = {t["task_id"] for t in tasks}
    assert "same" in names and len([t for t in names if t.startswith("same")]) == 10
    states = sorted(t["state"] for t in tasks)
    assert states.count("completed") == 5 and states.count("failed") == 15
    branches = {t["metadata"]["branch"] for t in tasks}
    assert len(branches) == 20
    listed = git(repo, "branch", "--list", "task/*").split()
    assert set(listed) >= {b.removeprefix("refs/heads/") for b in branches}
    git(repo, "fsck", "--strict")
    seqs = [e["seq"] for e in _events(repo)]
    assert seqs == list(range(1, len(seqs) + 1))  # the log is gapless
    finished = [orjson.loads(line) for line in followed.splitlines()]
    assert {e["task_id"] for e in finished if e["kind"] in ("task.completed", "task.failed")} == names
    left = engine.client.containers.list(filters={"label": "armor.task"}, all=True, sparse=True)
    assert all(c.attrs.get("Labels", {}).get("armor.task") not in names for c in left)


def test_a_task_driven_from_the_shell(repo, image, git):
    assert armor_cli("start", "t1", "--repo", repo).returncode == 0
    done = armor_cli("exec", "--repo", repo, "t1", "--", "sh", "-c", "echo one > f.txt; cat f.txt; echo oops >&2; exit 5")
    assert (done.returncode, done.stdout, done.stderr) == (5, "one\n", "oops\n")
    cp = orjson.loads(armor_cli("checkpoint", "t1", "-m", "one", "--json", "--repo", repo).stdout)
    assert cp["id"] == "cp-1" and cp["message"] == "one"
    armor_cli("exec", "t1", "--repo", repo, "--", "sh", "-c", "echo two > f.txt; rm README.md")
    stat = armor_cli("diff", "t1", "cp-1", "--stat", "--repo", repo).stdout.split("\n")
    assert "deleted       README.md" in stat and "modified      f.txt" in stat
    assert armor_cli("rollback", "t1", "cp-1", "--repo", repo).returncode == 0
    assert armor_cli("exec", "t1", "--repo", repo, "--", "cat", "f.txt").stdout == "one\n"
    done = armor_cli("complete", "t1", "-m", "Add f", "--merge", "ff", "--repo", repo)
    assert done.returncode == 0, done.stderr
    assert "Add f" in git(repo, "log", "--format=%s", "main")
    assert (repo / "f.txt").read_text() == "one\n" or "f.txt" in git(repo, "ls-tree", "--name-only", "main")


def test_ctrl_c_in_exec_stops_that_command_only(repo, image):
    import armor_rx

    assert armor_cli("start", "t1", "--repo", repo).returncode == 0
    proc = _spawn("exec", "t1", "--repo", repo, "--", "sh", "-c", "echo started; sleep 120")
    assert proc.stdout.readline() == "started\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err, err
    with armor_rx.connect(repo) as remote:
        exited = wait_for(lambda: [e for e in remote.history(task_id="t1", kind="exec.done")], what="the exec outcome")
        assert exited[-1].payload["exit_code"] != 0
        assert remote.task("t1").state.value == "running"  # the task goes on
        lines = []
        assert remote.exec("t1", ["echo", "again"], on_output=lines.append).payload["exit_code"] == 0
        assert "".join(e.payload["data"] for e in lines) == "again\n"


def test_service_killed_mid_command_then_reconciled_and_resumed(repo, image, engine):
    assert armor_cli("start", "t1", "--repo", repo).returncode == 0
    proc = _spawn("exec", "t1", "--repo", repo, "--", "sh", "-c", "echo started; sleep 120")
    assert proc.stdout.readline() == "started\n"
    killed_at = time.monotonic()
    kill_service(repo / ".armor")
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - killed_at < 5
    assert proc.returncode == 1 and "went away" in err and len(err.strip().splitlines()) == 1, err
    # The next command starts a new service, which reconciles: the task is interrupted, resumable.
    state = {t["task_id"]: t for t in orjson.loads(armor_cli("tasks", "--repo", repo, "--json").stdout)}
    assert state["t1"]["state"] == "running"  # read from the log: no service yet
    resumed = armor_cli("resume", "t1", "--repo", repo)
    assert resumed.returncode == 0 and "task t1 is running" in resumed.stdout, resumed.stderr
    kinds = [e["kind"] for e in _events(repo, "t1")]
    assert kinds.index("task.interrupted") < kinds.index("task.resumed"), kinds
    done = armor_cli("exec", "t1", "--repo", repo, "--", "echo", "back")
    assert (done.returncode, done.stdout) == (0, "back\n"), done.stderr


def test_shell_is_an_interactive_terminal_in_the_tasks_container(repo, image):
    """`armor-rx shell` on a real pseudo-terminal: type commands, read their output, exit with the shell's code."""
    import pty
    import select

    assert armor_cli("start", "t1", "--repo", repo).returncode == 0
    parent, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "armor_rx", "shell", "t1", "--repo", str(repo)],
                            stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    seen = b""

    def read_until(marker, timeout=30):
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([parent], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(parent, 4096)
                except OSError:
                    break
        assert marker in seen, seen[-500:]

    try:
        read_until(b"$ ")  # the prompt: the shell is up
        if b"\x1b[6n" in seen:
            os.write(parent, b"\x1b[1;1R")  # answer the line editor's cursor query, as a terminal does
        os.write(parent, b"echo in-$((40+2)); pwd; test -t 0 && echo is-a-$((0))tty\r")
        read_until(b"is-a-0tty")  # the command's output, not its echo
        os.write(parent, b"echo from-the-shell > shell.txt; exit 3\r")
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            read_until(b"", timeout=0.5)
        proc.wait(5)
    finally:
        proc.kill()
        os.close(parent)
    assert proc.returncode == 3
    assert b"in-42" in seen and b"/workspace" in seen
    assert (repo / ".armor" / "worktrees" / "t1" / "shell.txt").read_text() == "from-the-shell\n"
    kinds = [e["kind"] for e in _events(repo, "t1")]
    assert "shell.opened" in kinds and "shell.closed" in kinds


def test_resume_makes_the_new_container_from_the_image_the_task_started_with(repo, test_image, engine, monkeypatch):
    import armor_rx

    monkeypatch.setenv("ARMOR_RX_DOCKER", "1")
    monkeypatch.setenv("ARMOR_RX_IMAGE", "armor-rx-test/no-such-image:1")  # the default would fail: no registry here
    with armor_rx.connect(repo) as remote:
        remote.create_task("t1")
        remote.start("t1", image=test_image)
        remote.interrupt("t1", "laptop closed")
        resumed = remote.resume("t1")
        assert resumed.kind == "task.resumed", resumed
        container = engine.client.containers.get(remote.container("t1")["id"])
        assert container.image.tags == [test_image]
        assert remote.exec("t1", ["true"]).payload["exit_code"] == 0
        remote.cancel("t1")


def test_a_detached_run_goes_on_when_its_terminal_goes_away(repo, image, engine):
    proc = _spawn("run", "--repo", repo, "--task", "bg", "--detach", "--", "sh", "-c", "echo started; sleep 2; echo done > done.txt")
    assert proc.stdout.readline() == "started\n"
    proc.kill()  # the terminal is gone
    proc.communicate(timeout=30)
    state = wait_for(lambda: next((t["state"] for t in orjson.loads(armor_cli("tasks", "--repo", repo, "--json").stdout)
                                if t["task_id"] == "bg" and t["state"] in ("completed", "failed", "interrupted")), None),
                  what="the detached task to finish")
    assert state == "completed"
    kinds = [e["kind"] for e in _events(repo, "bg")]
    assert "task.interrupted" not in kinds and "exec.done" in kinds


def test_a_command_for_a_task_that_is_not_running_is_refused_before_it_is_logged(repo, image):
    """Found by the adversarial review: after the service was killed mid-command the task was 'interrupted',
    yet a later exec ran in the dead session's container. No command runs in a task that is not running."""
    import armor_rx
    from armor_rx.errors import TaskNotRunning

    with armor_rx.connect(repo) as remote:
        remote.create_task("paused")
        with pytest.raises(TaskNotRunning, match="is pending"):
            remote.exec("paused", ["true"])
        remote.start("paused")
        remote.interrupt("paused", "the test")
        with pytest.raises(TaskNotRunning, match="resume paused"):
            remote.exec("paused", ["true"])
        assert not [e for e in remote.history(task_id="paused") if e.kind == "exec.requested"]
        remote.resume("paused")
        assert remote.exec("paused", ["true"]).payload["exit_code"] == 0
    done = armor_cli("exec", "--repo", repo, "paused", "--", "true")
    assert done.returncode == 0
    armor_cli("interrupt", "--repo", repo, "paused")
    refused = armor_cli("exec", "--repo", repo, "paused", "--", "true")
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1 and "resume" in refused.stderr
    kill_service(repo / ".armor", signal.SIGTERM)


def test_atomic_checkpoint_and_rollback_through_the_cli(repo, image, engine):
    """start --writable-root --volume, checkpoint, diff, rollback, cancel via the service: the container goes too."""
    task = "atomic-cli"
    assert armor_cli("start", task, "--repo", repo, "--writable-root", "--volume", "/var/cache/pkg").returncode == 0
    setup = ("mkdir -p /home/agent/.local/bin && echo v1 > /home/agent/.local/bin/tool"
             " && echo one > /var/cache/pkg/index")
    assert armor_cli("exec", task, "--repo", repo, "--", "sh", "-c", setup).returncode == 0
    made = armor_cli("checkpoint", task, "--repo", repo, "--json")
    assert made.returncode == 0, made.stderr
    cp = orjson.loads(made.stdout)
    assert cp["holds"] == ["worktree", "image", "volumes"] and cp["container"]["image"].startswith("sha256:")
    listed = armor_cli("checkpoints", task, "--repo", repo)
    assert "worktree+image+volumes" in listed.stdout
    change = "echo v2 > /home/agent/.local/bin/tool && rm /var/cache/pkg/index && echo new > /home/agent/added"
    assert armor_cli("exec", task, "--repo", repo, "--", "sh", "-c", change).returncode == 0
    diff = armor_cli("diff", task, cp["id"], "--repo", repo, "--stat")
    assert diff.returncode == 0, diff.stderr
    assert "A /home/agent/added" in diff.stdout and "# container" in diff.stdout
    as_json = orjson.loads(armor_cli("diff", task, "--repo", repo, "--json").stdout)
    assert "/home/agent/added" in {c["path"] for c in as_json["container"]["changes"]}
    back = armor_cli("rollback", task, cp["id"], "--repo", repo)
    assert back.returncode == 0 and "(worktree and container)" in back.stdout, back.stderr
    check = armor_cli("exec", task, "--repo", repo, "--", "sh", "-c",
                      "cat /home/agent/.local/bin/tool /var/cache/pkg/index; test -e /home/agent/added || echo gone")
    assert check.stdout == "v1\none\ngone\n", check.stderr
    state = str((repo / ".armor").resolve())
    labels = ["armor.snapshot", f"armor.task={task}", f"armor.state={state}"]
    assert engine.client.images.list(filters={"label": labels})
    assert armor_cli("cancel", task, "--repo", repo).returncode == 0
    assert engine.client.images.list(filters={"label": labels}) == []
