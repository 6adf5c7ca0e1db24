"""ServiceSupervisor: keeps a task's declared services running and healthy in its container.

A task's start (or resume) request may declare services
(:class:`armor_rx.model.services.ServiceSpec`). Once the task is running, a
thread of this sink (one per supervised task, all ended by :meth:`stop`)
starts each service detached in the task's container, checks it every
``interval`` seconds (its process still running, then its health check: a
command, or a TCP probe from inside the container's network namespace), and
restarts it with exponential backoff when it becomes unhealthy or its
process ends. Past ``max_restarts`` it gives up and fails the task with the
reason.

Events, one per change (a check that agrees with the last one records
nothing): ``service.started``, ``service.health.changed`` {from, to,
reason}, ``service.exited`` (its process ended by itself),
``service.restarted`` {restart, backoff, reason}, ``service.gave_up``, and
``service.stopped`` when the task ends.

It runs as an effect placed *before* the docker effect: at the end of a task
(complete, fail, cancel) it stops supervising and stops the services while
the container still exists; at a start or resume it only registers the
services, and its thread waits for the task to be ``running`` (its
container made) before starting them.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import docker.errors
import structlog
from docker.models.containers import Container

from armor_rx.errors import ArmorError, ContainerNotFound
from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import State
from armor_rx.model.services import ServiceSpec, parse_services
from armor_rx.pipeline.effects import EffectContext
from armor_rx.sinks.docker.effect import DockerEffect
from armor_rx.sinks.docker.engine import is_engine_lost
from armor_rx.sinks.docker.exec import _in_container, _kill_tree

_log = structlog.get_logger("armor_rx.supervise")

# (task, kind, payload, causation id) -> the recorded event
Record = Callable[[str, str, Mapping[str, Any], "str | None"], TaskEvent]
# (task, reason, cause) -> submits the task's fail request (does not wait for it)
Fail = Callable[[str, str, TaskEvent], object]
TaskState = Callable[[str], "State | None"]

_END_KINDS = ("task.complete.requested", "task.fail.requested", "task.cancel.requested")
# How long a stopped service gets to exit after SIGTERM before it is killed.
_STOP_GRACE = 2.0


@dataclass
class _Service:
    """One service's supervision state (only its task's thread touches it)."""

    spec: ServiceSpec
    exec_id: str | None = None
    container_id: str = ""
    host_pid: int = 0  # 0 unless it is a process of this host in the service's container (see _running)
    status: str = "starting"  # starting | healthy | unhealthy
    failures: int = 0
    restarts: int = 0
    launched_at: float = 0.0
    healthy_since: float | None = None
    next_check: float = 0.0
    restart_at: float | None = None  # when a pending restart is due
    reason: str = ""


class _Supervision:
    """The services of one task and the thread that watches them."""

    def __init__(self, task_id: str, services: tuple[ServiceSpec, ...], request_id: str) -> None:
        self.task_id = task_id
        self.services = [_Service(spec) for spec in services]
        self.request_id = request_id
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None


class ServiceSupervisor:
    """Supervises the declared services of every running task of a session. Start/stop like any sink.

    ``docker`` is the session's container effect (its engine and the task's
    container); ``record(task, kind, payload, causation_id)`` logs an event;
    ``fail(task, reason, cause)`` submits the task's fail request;
    ``task_state(task)`` reads the registry (None for an unknown task).
    """

    name = "services"
    kinds = "task.start.requested,task.resume.requested," + ",".join(_END_KINDS)

    def __init__(self, docker: DockerEffect, *, record: Record, fail: Fail, task_state: TaskState,
                 poll: float = 0.05) -> None:
        self.docker = docker
        self.record = record
        self.fail_task = fail
        self.task_state = task_state
        self.poll = poll
        self._tasks: dict[str, _Supervision] = {}
        self._lock = threading.Lock()
        self._stopped = False

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> ServiceSupervisor:
        self._stopped = False
        return self

    def stop(self) -> None:
        """End every supervision thread (joined) and stop the services; records nothing (the log may be closing)."""
        with self._lock:
            self._stopped = True
            tasks, self._tasks = list(self._tasks.values()), {}
        for supervision in tasks:
            self._end(supervision, reason="the session stopped", emit=None)

    def __enter__(self) -> ServiceSupervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def supervised(self, task_id: str) -> list[str]:
        """Names of the task's supervised services (empty when it has none)."""
        with self._lock:
            supervision = self._tasks.get(task_id)
        return [s.spec.name for s in supervision.services] if supervision is not None else []

    # -- the effect -------------------------------------------------------------
    def apply(self, ctx: EffectContext) -> Mapping[str, Any] | None:
        request = ctx.request
        task_id = request.task_id
        if task_id is None:
            return None
        if request.kind in _END_KINDS:
            with self._lock:
                supervision = self._tasks.pop(task_id, None)
            if supervision is not None:
                self._end(supervision, reason=request.kind.split(".")[1], emit=ctx.emit)
            return None
        services = parse_services(request.payload.get("services"))
        with self._lock:
            previous = self._tasks.pop(task_id, None)
        if previous is not None:  # a resume replaces the supervision of the container it left
            self._end(previous, reason="resumed", emit=None)
        if not services:
            return None
        supervision = _Supervision(task_id, services, request.id)
        supervision.thread = threading.Thread(target=self._watch, args=(supervision,), daemon=True,
                                              name=f"armor-supervise-{task_id}")
        with self._lock:
            if self._stopped:  # the session is closing: a resume after it starts them
                return None
            self._tasks[task_id] = supervision
            supervision.thread.start()  # under the lock: stop() cannot miss a thread started now
        return None

    def halt(self, task_id: str, reason: str, emit: Callable[[str, Mapping[str, Any]], object]) -> None:
        """Stop the task's services now, while its container is still there (an interruption is about to
        remove it); a resume starts them again."""
        with self._lock:
            supervision = self._tasks.pop(task_id, None)
        if supervision is not None:
            self._end(supervision, reason=reason, emit=emit)

    # -- ending -----------------------------------------------------------------
    def _end(self, supervision: _Supervision, *, reason: str,
             emit: Callable[[str, Mapping[str, Any]], object] | None) -> None:
        supervision.stopping.set()
        thread = supervision.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        for service in supervision.services:
            if service.exec_id is None:
                continue
            running = self._running(service)
            self._kill(service, supervision.task_id)
            if emit is not None and running:
                emit("service.stopped", {"service": service.spec.name, "reason": reason})

    def _halt(self, supervision: _Supervision, reason: str) -> None:
        """Stop the task's services from its own thread (the task was interrupted)."""
        for service in supervision.services:
            if self._running(service):
                self._kill(service, supervision.task_id)
                self._emit(supervision, "service.stopped", {"service": service.spec.name, "reason": reason})
            service.exec_id = None

    # -- the watch: one thread per task ------------------------------------------
    def _watch(self, supervision: _Supervision) -> None:
        try:
            if not self._wait_running(supervision):
                return
            now = time.monotonic()
            for service in supervision.services:
                self._launch(supervision, service, first=True)
                service.next_check = now + service.spec.health.interval
            while not supervision.stopping.is_set():
                due = min(s.restart_at if s.restart_at is not None else s.next_check for s in supervision.services)
                if supervision.stopping.wait(max(0.0, due - time.monotonic())):
                    return
                state = self.task_state(supervision.task_id)
                if state is not State.RUNNING:
                    if state is State.INTERRUPTED:  # a resume starts them again, in its new container
                        self._halt(supervision, "interrupted")
                    return  # ending: the end request's apply stops them while the container is there
                for service in supervision.services:
                    if supervision.stopping.is_set():
                        return
                    now = time.monotonic()
                    if service.restart_at is not None:
                        if now >= service.restart_at:
                            self._restart(supervision, service)
                    elif now >= service.next_check:
                        if not self._check(supervision, service):
                            return  # gave up: the task is failing
                        service.next_check = time.monotonic() + service.spec.health.interval
        except ArmorError as exc:  # the log closed under us (session stopping): nothing more to record
            _log.info("service supervision ended", task_id=supervision.task_id, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - a supervisor thread must end, not die loudly
            if not is_engine_lost(exc):
                _log.error("service supervision failed", task_id=supervision.task_id, error=repr(exc))

    def _wait_running(self, supervision: _Supervision) -> bool:
        """Wait for the task's container (state ``running``); False if the task went elsewhere or we stop."""
        while not supervision.stopping.is_set():
            state = self.task_state(supervision.task_id)
            if state is State.RUNNING:
                return True
            if state not in (State.STARTING, State.RESUMING, State.PENDING):
                return False
            supervision.stopping.wait(self.poll)
        return False

    def _emit(self, supervision: _Supervision, kind: str, payload: Mapping[str, Any]) -> TaskEvent:
        return self.record(supervision.task_id, kind, payload, supervision.request_id)

    def _launch(self, supervision: _Supervision, service: _Service, *, first: bool) -> None:
        """Start the service's process detached in the container."""
        container = self.docker.container(supervision.task_id)
        spec = self.docker.spec_for(supervision.task_id)
        environment = dict(service.spec.environment)
        if self.docker.secrets is not None:  # the task's secrets, as its commands get them
            secrets = self.docker.secrets.for_exec(supervision.task_id, "")
            environment.update({name: secret.reveal() for name, secret in secrets.items()})
        api = self.docker.engine.api
        kwargs: dict[str, Any] = {"stdout": False, "stderr": False, "environment": environment or None}
        if spec.workdir and self.docker.engine.info.supported.get("exec_workdir", True):
            kwargs["workdir"] = spec.workdir
        service.exec_id = api.exec_create(container.id, service.spec.argv(), **kwargs)["Id"]
        service.container_id = container.id
        api.exec_start(service.exec_id, detach=True)
        service.host_pid = 0
        # A detached exec is reported not running (and with no exit code) until its process exists;
        # taken for a dead one on a loaded machine, it would be "restarted" before it ever ran.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            info = api.exec_inspect(service.exec_id)
            if info.get("Running") or info.get("ExitCode") is not None:
                break
            time.sleep(0.02)
        service.launched_at = time.monotonic()
        service.failures = 0
        service.restart_at = None
        service.healthy_since = None
        if first:
            self._emit(supervision, "service.started", {
                "service": service.spec.name, "command": service.spec.to_payload()["command"],
                "health": service.spec.health.describe(), "interval": service.spec.health.interval,
                "timeout": service.spec.health.timeout, "retries": service.spec.health.retries,
                "max_restarts": service.spec.max_restarts})

    def _running(self, service: _Service) -> bool:
        if service.exec_id is None:
            return False
        try:
            info = self.docker.engine.api.exec_inspect(service.exec_id)
        except docker.errors.APIError:
            return False
        pid = int(info.get("Pid") or 0)
        # The engine's pid is in its own pid namespace: on a remote or VM engine (or once the process is gone and
        # the number reused) it names some process of this host, which _kill would signal with its whole tree.
        if pid > 0 and _in_container(pid, service.container_id):
            service.host_pid = pid
        return bool(info.get("Running"))

    def _exit_code(self, service: _Service) -> int | None:
        try:
            code = self.docker.engine.api.exec_inspect(service.exec_id).get("ExitCode")
        except docker.errors.APIError:
            return None
        return int(code) if code is not None else None

    def _kill(self, service: _Service, task_id: str) -> None:
        """SIGTERM the service's process group, then kill its tree after a grace period.

        An exec'd process leads its own process group, so the group is the
        service and whatever it started (short of a daemon that left it).
        """
        if not self._running(service) or service.host_pid <= 0:
            return
        try:
            os.killpg(service.host_pid, signal.SIGTERM)
        except OSError:
            pass  # a remote engine's process: its container's end stops it
        deadline = time.monotonic() + _STOP_GRACE
        while time.monotonic() < deadline and self._running(service):
            time.sleep(0.05)
        if self._running(service):
            _kill_tree(service.host_pid)
            try:
                os.killpg(service.host_pid, signal.SIGKILL)
            except OSError:
                pass

    def _probe(self, supervision: _Supervision, service: _Service) -> str | None:
        """Run the health check once; None if healthy, else why not."""
        if not self._running(service):
            code = self._exit_code(service)
            why = f"its process exited with code {code}"
            self._emit(supervision, "service.exited", {"service": service.spec.name, "exit_code": code})
            return why
        health = service.spec.health
        argv = health.probe()
        if argv is None:
            return None
        try:
            container = self.docker.container(supervision.task_id)
        except ContainerNotFound:
            return "the task's container is gone"
        exit_code, tail = self._run_check(supervision, container, argv, health.timeout)
        if exit_code is None:
            return f"its health check ({health.describe()}) did not answer within {health.timeout:g}s"
        if exit_code == 0:
            return None
        last = tail.strip().splitlines()[-1:] if tail.strip() else []
        return (f"its health check ({health.describe()}) exited with code {exit_code}"
                + (f": {last[0][:200]}" if last else ""))

    def _run_check(self, supervision: _Supervision, container: Container, argv: list[str],
                   timeout: float) -> tuple[int | None, str]:
        """Run a check command; (exit code, the tail of its output), or (None, ...) when it timed out and was killed.

        Not an :class:`ExecRun`: a timed-out command there also kills whatever
        else started in the container meanwhile (a user's command among them);
        a check kills only its own process group and tree.
        """
        api = self.docker.engine.api
        kwargs: dict[str, Any] = {"stdout": True, "stderr": True}
        workdir = self.docker.spec_for(supervision.task_id).workdir
        if workdir and self.docker.engine.info.supported.get("exec_workdir", True):
            kwargs["workdir"] = workdir
        exec_id = api.exec_create(container.id, argv, **kwargs)["Id"]
        tail = bytearray()

        def read() -> None:
            try:
                for chunk in api.exec_start(exec_id, stream=True):
                    tail.extend(chunk[-4096:])
                    del tail[:-4096]
            except Exception:  # noqa: BLE001 - the exit code (or the timeout) says how the check went
                pass

        reader = threading.Thread(target=read, daemon=True, name=f"armor-health-{supervision.task_id}")
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            pid = int(api.exec_inspect(exec_id).get("Pid") or 0)
            if pid > 0 and _in_container(pid, container.id):  # else not a process of this host (see _running)
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                _kill_tree(pid)
            reader.join(5.0)
            return None, tail.decode("utf-8", "replace")
        deadline = time.monotonic() + 2.0
        info = api.exec_inspect(exec_id)
        while info.get("Running") and time.monotonic() < deadline:  # its output ended a moment before it did
            time.sleep(0.02)
            info = api.exec_inspect(exec_id)
        code = info.get("ExitCode")
        return (int(code) if code is not None else -1), tail.decode("utf-8", "replace")

    def _check(self, supervision: _Supervision, service: _Service) -> bool:
        """One check and what follows from it; False when the supervisor gave up (the task is failing)."""
        why = self._probe(supervision, service)
        now = time.monotonic()
        if why is None:
            service.failures = 0
            if service.status != "healthy":
                self._emit(supervision, "service.health.changed",
                           {"service": service.spec.name, "from": service.status, "to": "healthy"})
                service.status = "healthy"
                service.healthy_since = now
            elif service.healthy_since is not None and now - service.healthy_since >= service.spec.stable_after:
                service.restarts = 0  # healthy long enough: earlier restarts no longer count against the limit
            return True
        died = why.startswith("its process exited")
        in_start_period = now - service.launched_at < service.spec.health.start_period
        if not died and in_start_period and service.status != "healthy":
            return True  # still starting up: failures do not count yet
        service.failures += 1
        if not died and service.failures < service.spec.health.retries:
            return True
        service.reason = why
        if service.status != "unhealthy":
            self._emit(supervision, "service.health.changed",
                       {"service": service.spec.name, "from": service.status, "to": "unhealthy", "reason": why})
            service.status = "unhealthy"
            service.healthy_since = None
        if service.restarts >= service.spec.max_restarts:
            with self._lock:  # the task's end (or a resume) may have taken the supervision meanwhile: then it decides
                ours = self._tasks.get(supervision.task_id) is supervision
                if ours:
                    del self._tasks[supervision.task_id]
            supervision.stopping.set()
            if not ours:
                return False
            self._kill(service, supervision.task_id)
            reason = (f"service {service.spec.name!r} is unhealthy ({why}); gave up after "
                      f"{service.restarts} restart{'s' if service.restarts != 1 else ''}")
            cause = self._emit(supervision, "service.gave_up", {"service": service.spec.name, "reason": why,
                                                                "restarts": service.restarts, "message": reason})
            for other in supervision.services:  # the task fails: its other services stop with it
                if other is not service and self._running(other):
                    self._kill(other, supervision.task_id)
                    self._emit(supervision, "service.stopped", {"service": other.spec.name, "reason": "fail"})
            self.fail_task(supervision.task_id, reason, cause)
            return False
        self._kill(service, supervision.task_id)
        service.restarts += 1
        service.restart_at = time.monotonic() + service.spec.backoff_for(service.restarts)
        return True

    def _restart(self, supervision: _Supervision, service: _Service) -> None:
        backoff = service.spec.backoff_for(service.restarts)
        self._launch(supervision, service, first=False)
        service.next_check = time.monotonic() + service.spec.health.interval
        self._emit(supervision, "service.restarted", {"service": service.spec.name, "restart": service.restarts,
                                                      "max_restarts": service.spec.max_restarts,
                                                      "backoff": backoff, "reason": service.reason})
