"""Find the live service of a state directory, or start one.

Two clients racing to start it end with one service: starting happens under
a file lock in the state directory's ``run/`` folder, and whoever takes it
second finds the first one's service answering. A socket file left by a killed
owner does not answer; the new service (which first takes the state
directory's own lock, so it is the only one) replaces it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import filelock
import httpx

from armor_rx.errors import ServiceUnavailable
from armor_rx.service import wire
from armor_rx.service.paths import ServicePaths

START_TIMEOUT = 60.0

_LAUNCH = (
    "import subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr, "
    "start_new_session=True, close_fds=True)\n"
    "print(p.pid)\n"
)


def _owned(paths: ServicePaths) -> bool:
    """Whether a service (starting or serving) holds the state directory's owner lock."""
    lock = filelock.FileLock(paths.owner_lock, timeout=0, thread_local=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        return True
    lock.release()
    return False


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def probe(paths: ServicePaths, timeout: float = 2.0) -> dict[str, Any] | None:
    """The service's health answer, or None when nothing (alive) listens on the socket."""
    if not paths.socket.exists():
        return None
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=os.fsdecode(paths.socket), verify=False), timeout=timeout,
                          trust_env=False) as client:
            response = client.get(f"http://armor{wire.PREFIX}/health")
    except (httpx.TransportError, OSError):
        return None
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("service") != "armor-rx" or body.get("state_dir") != str(paths.state):
        return None
    return body


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(line.strip() for line in text[-lines:])


def ensure_service(state: Path, repo: Path | None, *, timeout: float = START_TIMEOUT, idle_timeout: float | None = None) -> dict[str, Any]:
    """The health answer of the state directory's service, started in the background if none runs.

    Raises :class:`ServiceUnavailable` (one line, with the service log's last
    words) when it cannot be started.
    """
    paths = ServicePaths.of(state)
    found = probe(paths)
    if found is not None:
        return found
    paths.prepare()
    deadline = time.monotonic() + timeout
    try:
        with filelock.FileLock(paths.start_lock, timeout=timeout):
            found = probe(paths)
            if found is not None:
                return found
            return _start(paths, repo, deadline, idle_timeout)
    except filelock.Timeout:
        raise ServiceUnavailable(f"another client has been starting the armor service for {state} for {timeout:g}s; "
                                 f"see {paths.log}") from None


def _start(paths: ServicePaths, repo: Path | None, deadline: float, idle_timeout: float | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "armor_rx", "serve", "--foreground", "--state-dir", str(paths.state)]
    if repo is not None:
        command += ["--repo", str(repo)]
    if idle_timeout is not None:
        command += ["--idle-timeout", str(idle_timeout)]
    with open(paths.log, "ab") as log:
        log.write(f"--- starting armor service at {time.strftime('%Y-%m-%dT%H:%M:%S')} for pid {os.getpid()}\n".encode())
        log.flush()
        # Started through a short-lived intermediate, so the service is never this
        # client's child (no zombie when it exits while the client lives on) and
        # runs in a new session (no SIGHUP or Ctrl-C from this terminal).
        launcher = subprocess.run([sys.executable, "-c", _LAUNCH, *command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=log, cwd="/", timeout=60, check=False)
    try:
        pid = int(launcher.stdout.strip())
    except ValueError:
        raise ServiceUnavailable(f"could not start the armor service for {paths.state}: {_log_tail(paths.log) or 'no output'}; "
                                 f"full log: {paths.log}") from None
    while time.monotonic() < deadline:
        found = probe(paths, timeout=1.0)
        if found is not None:
            return found
        if not _running(pid):
            found = probe(paths, timeout=1.0)  # another service (a manual 'serve') may hold the directory
            if found is not None:
                return found
            if _owned(paths):
                time.sleep(0.1)  # a service started elsewhere is still recovering: wait for its socket
                continue
            raise ServiceUnavailable(f"the armor service for {paths.state} exited at start: "
                                     f"{_log_tail(paths.log) or 'no output'}; full log: {paths.log}")
        time.sleep(0.05)
    raise ServiceUnavailable(f"the armor service for {paths.state} did not answer within its start timeout "
                             f"(recovering a long log can take a while; try again); see {paths.log}")
