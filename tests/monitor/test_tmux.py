"""``armor-rx monitor`` in a real terminal: tmux runs it, other processes drive tasks, capture-pane reads the screen.

Each test has its own tmux server (``-L``), killed at the end. The service
runs without containers (ARMOR_RX_DOCKER=0), like the service's own tests.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.service.conftest import armor_cli, service_info, wait_ended, wait_for

pytestmark = [pytest.mark.tmux, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")]


class Terminal:
    def __init__(self, command, env, cwd):
        self.server = f"armor-monitor-test-{uuid.uuid4().hex[:10]}"
        self.env = env
        subprocess.run(["tmux", "-L", self.server, "-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "45", command],
                       check=True, env=env, cwd=cwd)

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.server, *args], capture_output=True, text=True, env=self.env, timeout=30)

    def screen(self):
        return self.tmux("capture-pane", "-p").stdout

    def keys(self, *keys):
        self.tmux("send-keys", *keys)

    def type(self, text):
        self.tmux("send-keys", "-l", text)

    def shows(self, *fragments, timeout=60):
        try:
            return wait_for(lambda: all(f in self.screen() for f in fragments), timeout, f"the screen to show {fragments}")
        except AssertionError:
            raise AssertionError(f"the screen never showed {fragments}; it shows:\n{self.screen()}") from None

    def row(self, task):
        return next((line for line in self.screen().splitlines() if line.startswith(task + " ")), "")

    def close(self):
        self.tmux("kill-server")


@pytest.fixture
def term_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ARMOR_RX_DOCKER", "0")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    return {**os.environ, "TERM": "xterm-256color", "ARMOR_RX_DOCKER": "0", "XDG_STATE_HOME": str(tmp_path / "xdg")}


def monitor_terminal(repo, env, *extra):
    command = " ".join(shlex.quote(str(a)) for a in (sys.executable, "-m", "armor_rx", "monitor", "--repo", repo, *extra))
    return Terminal(f"{command}; echo MONITOR-EXITED $?; sleep 60", env, repo)


def cli(*args):
    proc = armor_cli(*args, env={"ARMOR_RX_DOCKER": "0"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_watch_tasks_flag_a_stuck_one_roll_back_cancel_and_quit(repo, term_env):
    term = monitor_terminal(repo, term_env, "--stuck-after", "4")
    try:
        term.shows("waiting for the armor service")  # the monitor starts no service of its own
        assert service_info(repo / ".armor") is None
        for task in ("t1", "t2", "t3"):
            cli("start", task, "--repo", repo)
        term.shows("attached to the service")
        wait_for(lambda: all("running" in term.row(t) for t in ("t1", "t2", "t3")), 60, "three running rows")
        assert "task/t1" in term.row("t1")
        cli("complete", "t2", "--repo", repo)
        wait_for(lambda: "completed" in term.row("t2"), 60, "t2 completed on screen")
        worktree = repo / ".armor" / "worktrees" / "t1"
        (worktree / "notes.txt").write_text("keep this\n")
        cli("checkpoint", "t1", "-m", "good", "--repo", repo)
        (worktree / "notes.txt").write_text("a mistake\n")
        wait_for(lambda: "stuck" in term.row("t3"), 60, "t3 flagged stuck")  # running, no event for 4 s
        # Roll t1 back from the monitor: it asks first.
        term.type(":rollback t1 cp-1")
        term.keys("Enter")
        term.shows("roll task t1 back to cp-1?")
        term.type("y")
        term.shows("rollback to cp-1 done")
        assert (worktree / "notes.txt").read_text() == "keep this\n"
        # Cancel t3 with its key: select it, x, y.
        term.type(":show t3")
        term.keys("Enter")
        term.shows("task t3: running")
        term.type("x")
        term.shows("cancel task t3?")
        term.type("y")
        wait_for(lambda: "cancelled" in term.row("t3"), 60, "t3 cancelled on screen")
        term.type(":quit")
        term.keys("Enter")
        term.shows("MONITOR-EXITED 0")
    finally:
        term.close()
    tasks = cli("tasks", "--repo", repo)
    assert [line.split()[:2] for line in tasks.splitlines()[1:]] == [["t1", "running"], ["t2", "completed"], ["t3", "cancelled"]]


def test_a_service_restart_shows_a_reconnect(repo, term_env):
    cli("start", "t1", "--repo", repo)
    term = monitor_terminal(repo, term_env)
    try:
        term.shows("attached to the service")
        wait_for(lambda: "running" in term.row("t1"), 60, "t1 on screen")
        pid = service_info(repo / ".armor")["pid"]
        cli("serve", "--stop", "--repo", repo)
        wait_ended(pid, "the old service", 30)
        term.shows("service lost")
        cli("serve", "--repo", repo)
        term.shows("reconnected to the service", "reconnects 1")
        cli("complete", "t1", "--repo", repo)
        wait_for(lambda: "completed" in term.row("t1"), 60, "an event from the new service on screen")
        term.keys("q")
        term.shows("MONITOR-EXITED 0")
    finally:
        term.close()


def test_without_a_terminal_the_monitor_says_what_to_use(repo, term_env):
    proc = armor_cli("monitor", "--repo", repo, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "needs a terminal" in proc.stderr and "Traceback" not in proc.stderr
