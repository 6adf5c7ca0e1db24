"""``armor-rx shell TASK``: an interactive shell in a task's container.

The service says which container the task runs in and on which engine; the
terminal is then joined to a ``docker exec`` with a tty directly (keystrokes
do not need to pass through the service). The shell runs as the container's
own user, with its limits; opening and closing it are logged.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from typing import Any

from armor_rx.model.ids import validate_task_id


def register(verbs: Any, common: argparse.ArgumentParser) -> dict[str, Callable[[argparse.Namespace], int]]:
    shell = verbs.add_parser("shell", parents=[common], help="an interactive shell in a task's container")
    shell.add_argument("task", metavar="TASK")
    shell.add_argument("--command", default="sh", metavar="CMD", help="the shell to run (default sh)")
    return {"shell": cmd_shell}


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
        return size.lines, size.columns
    except OSError:
        return 24, 80


def cmd_shell(args: argparse.Namespace) -> int:
    import docker

    from armor_rx.client.sync import connect

    task = validate_task_id(args.task)
    with connect(args.repo, state_dir=args.state_dir) as armor:
        where = armor.container(task)
        client = docker.DockerClient(base_url=where["docker_host"], version="auto") if where.get("docker_host") else docker.from_env(version="auto")
        try:
            api = client.api
            interactive = os.isatty(sys.stdin.fileno())
            exec_id = api.exec_create(where["id"], [args.command], stdin=True, tty=True, workdir=where.get("workdir"),
                                      environment={"TERM": os.environ.get("TERM", "xterm")})["Id"]
            sock = api.exec_start(exec_id, tty=True, socket=True)
            raw: socket.socket = getattr(sock, "_sock", sock)
            armor.emit(task, "shell.opened", {"container": where["id"], "command": args.command, "interactive": interactive})
            if interactive:
                rows, cols = _size(sys.stdout.fileno())
                with contextlib.suppress(docker.errors.APIError):
                    api.exec_resize(exec_id, height=rows, width=cols)

                def resize(_sig: int, _frame: Any) -> None:
                    rows, cols = _size(sys.stdout.fileno())
                    with contextlib.suppress(docker.errors.APIError):
                        api.exec_resize(exec_id, height=rows, width=cols)

                signal.signal(signal.SIGWINCH, resize)
            with _raw_terminal(sys.stdin.fileno()):
                _pump(raw, sys.stdin.fileno(), sys.stdout.fileno())
            code = api.exec_inspect(exec_id).get("ExitCode")
            armor.emit(task, "shell.closed", {"container": where["id"], "exit_code": code})
        finally:
            client.close()
    return int(code) if isinstance(code, int) else 0


def _pump(sock: socket.socket, stdin: int, stdout: int) -> None:
    """Copy the terminal to the exec and back until the shell ends."""
    stdin_open = True
    while True:
        readers = [sock] + ([stdin] if stdin_open else [])
        ready, _, _ = select.select(readers, [], [])
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            os.write(stdout, data)
        if stdin_open and stdin in ready:
            data = os.read(stdin, 65536)
            if not data:
                stdin_open = False
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
            else:
                sock.sendall(data)
