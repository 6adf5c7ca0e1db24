"""The armor service: one process owns a state directory and serves it on a private unix socket.

Start-up order matters. The session is opened first: it takes the state
directory's lock, so a second service for the same directory fails there and
never touches the socket. Only the lock holder replaces a socket file (one left
by a killed owner cannot belong to anyone else), binds, and restricts it to the
owner; the socket appears only once recovery is done, so a client that can
connect is a client that can be served.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import os
import secrets
import signal
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import structlog
from aiohttp import web

from armor_rx.errors import (
    ArmorError,
    BadRequest,
    ConcurrencyConflict,
    ConfigError,
    DockerUnavailable,
    IllegalTransition,
    PermissionDenied,
    ServiceError,
    StateDirFull,
    StateDirLocked,
    TaskExists,
    TaskNotRunning,
    Vetoed,
)
from armor_rx.model.lifecycle import ACTIVE
from armor_rx.operators import CheckpointTriggers
from armor_rx.service import wire
from armor_rx.service.paths import ServicePaths
from armor_rx.service.routes import Routes, json_response
from armor_rx.sinks.docker.quota import DEFAULT_OUTPUT_QUOTA
from armor_rx.sinks.git.checkpoints import CheckpointPolicy

_log = structlog.get_logger("armor_rx.service")

DEFAULT_IDLE_TIMEOUT = 300.0
MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServiceConfig:
    """What ``armor-rx serve`` was asked for."""

    state_dir: Path
    repo: Path | None = None
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT  # None: never exit when idle
    listen: tuple[str, int] | None = None  # an extra TCP listener (token required)
    docker: bool | None = None  # None: use an engine if one answers
    output_quota: int | None = DEFAULT_OUTPUT_QUOTA  # recorded output bytes per task ($ARMOR_RX_OUTPUT_QUOTA)
    classic_hooks: bool | None = None  # the classic hook API; None: $ARMOR_RX_CLASSIC_HOOKS, else on
    plan_files: str | None = None  # off, requested, all; None: $ARMOR_RX_PLAN_FILES, else requested
    plan_location: str | None = None  # state, worktree; None: $ARMOR_RX_PLAN_LOCATION, else state
    # When to checkpoint tasks started without a policy of their own ($ARMOR_RX_CHECKPOINT_POLICY),
    # and what to keep ($ARMOR_RX_CHECKPOINT_RETENTION): see docs/checkpoints.md.
    checkpoint_when: CheckpointTriggers | None = None
    checkpoint_retention: CheckpointPolicy | None = None
    stall_after: float | None = None  # flag a task quiet this long as task.stalled ($ARMOR_RX_STALL_AFTER)
    stop_timeout: float = 30.0  # how long a graceful stop may take ($ARMOR_RX_STOP_TIMEOUT)
    task_idle_timeout: float | None = None  # interrupt a task after this long with no command ($ARMOR_RX_TASK_IDLE_TIMEOUT)


def _status(exc: BaseException) -> int:
    if isinstance(exc, KeyError):  # TaskNotFound, CheckpointNotFound, DeadLetterNotFound, ContainerNotFound
        return 404
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, (TaskExists, IllegalTransition, ConcurrencyConflict, Vetoed, TaskNotRunning)):
        return 409
    if isinstance(exc, StateDirFull):
        return 507  # Insufficient Storage
    if isinstance(exc, ValueError):
        return 400
    if isinstance(exc, ArmorError):
        return 422
    return 500


def _peer_uid(request: web.Request) -> int | None:
    """The uid of the process at the other end of a unix socket (None for TCP)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class _Connections:
    """Every client connection, so a flood of them cannot lock everyone out.

    aiohttp has no time limit for a request's headers, so a client that opens
    connections and never finishes a request (slowloris, or many stuck clients)
    would hold descriptors until the service could accept no one. Here a
    connection with no request in flight is closed after ``idle`` seconds, and
    when there are more than ``limit``, the longest-idle ones go first.
    Connections with a request in flight (an open event stream) are never cut.
    """

    def __init__(self, limit: int, idle: float = 30.0) -> None:
        self.limit = limit
        self.idle = idle
        self.idle_since: dict[asyncio.BaseTransport, float] = {}
        self.busy: dict[asyncio.BaseTransport, int] = {}

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory whose connections are counted (aiohttp's handler has slots: it is wrapped, not patched)."""
        return lambda: _Counted(factory(), self)

    def enter(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None:
            self.busy[transport] = self.busy.get(transport, 0) + 1

    def leave(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None and transport in self.busy:
            self.busy[transport] -= 1
            if self.busy[transport] <= 0:
                del self.busy[transport]
                if transport in self.idle_since:
                    self.idle_since[transport] = time.monotonic()

    def _enforce(self) -> None:
        excess = len(self.idle_since) - self.limit
        if excess > 0:
            quiet = sorted((since, id(t), t) for t, since in self.idle_since.items() if t not in self.busy)
            for _, _, transport in quiet[:excess]:
                transport.close()

    def sweep(self) -> None:
        cutoff = time.monotonic() - self.idle
        for transport, since in list(self.idle_since.items()):
            if since < cutoff and transport not in self.busy:
                transport.close()


class _Counted(asyncio.Protocol):
    """Hands every call to aiohttp's protocol, noting when the connection opens and closes."""

    def __init__(self, inner: asyncio.Protocol, connections: _Connections) -> None:
        self.inner = inner
        self.connections = connections
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.connections.idle_since[transport] = time.monotonic()
        self.inner.connection_made(transport)
        self.connections._enforce()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.connections.idle_since.pop(self.transport, None)
            self.connections.busy.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Service:
    """The service's lifetime: open the session, serve, exit when idle or told to."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.paths = ServicePaths.of(config.state_dir)
        self.token: str | None = None
        self._inflight = 0
        self._last_activity = time.monotonic()
        self._jobs: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self.stop_cause = "service stopped"  # what the tasks it still runs are interrupted with
        self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="armor-service")
        self.armor: Any = None
        self.docker_reason: str | None = None
        self._socket_inode = 0
        self.connections = _Connections(limit=_connection_limit())

    # -- the session ----------------------------------------------------------
    def _open_session(self) -> Any:
        from armor_rx.session import Armor, SessionConfig

        docker = self.config.docker
        if docker is None:
            from armor_rx.sinks.docker import Engine

            try:
                Engine.connect(timeout=10).close()
                docker = True
            except DockerUnavailable as exc:
                docker = False
                self.docker_reason = str(exc)
                _log.warning("no Docker engine: tasks get no containers and exec is refused", reason=str(exc))
        repo = self.config.repo
        return Armor(repo, config=SessionConfig(state_dir=self.config.state_dir, docker=docker, git=repo is not None,
                                                output_quota=self.config.output_quota,
                                                classic_hooks=self.config.classic_hooks,
                                                plan_files=self.config.plan_files,  # type: ignore[arg-type]  # checked there
                                                plan_location=self.config.plan_location,  # type: ignore[arg-type]
                                                checkpoint_when=self.config.checkpoint_when,
                                                checkpoint_policy=self.config.checkpoint_retention,
                                                stall_after=self.config.stall_after, stop_timeout=self.config.stop_timeout,
                                                task_idle_timeout=self.config.task_idle_timeout)).open()

    # -- requests -------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        # A health probe (a client looking for the service) is not a client using it.
        counts = request.path != f"{wire.PREFIX}/health"
        self._inflight += counts
        self.connections.enter(request.transport)
        if counts:
            self._last_activity = time.monotonic()
        try:
            self._authorize(request)
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 404:
                return json_response(wire.error_body(BadRequest(f"no such API route: {request.method} {request.path}")), 404)
            if exc.status == 405:
                return json_response(wire.error_body(BadRequest(f"{request.method} is not allowed on {request.path}")), 405)
            if exc.status == 413:
                return json_response(wire.error_body(BadRequest(f"the request body is larger than {MAX_BODY} bytes")), 413)
            raise
        except ArmorError as exc:
            return json_response(wire.error_body(exc), _status(exc))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug must answer this client and leave the others alone
            _log.exception("request failed", method=request.method, path=request.path)
            return json_response(wire.error_body(ServiceError(f"the service failed on {request.method} {request.path}: "
                                                             f"{type(exc).__name__}: {exc}")), 500)
        finally:
            self.connections.leave(request.transport)
            self._inflight -= counts
            if counts:
                self._last_activity = time.monotonic()

    def _authorize(self, request: web.Request) -> None:
        uid = _peer_uid(request)
        if uid is not None:
            if uid not in (os.getuid(), 0):
                raise PermissionDenied(f"uid {uid} may not use this armor service (it belongs to uid {os.getuid()})")
            return
        # Over TCP, only with the token.
        expected = self.token or ""
        given = request.headers.get("Authorization", "")
        if not expected or not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            raise PermissionDenied("a TCP client needs 'Authorization: Bearer TOKEN' (the token is in the service's run/token file)")

    def _track(self, job: asyncio.Task[Any]) -> None:
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    # -- the life of the process ---------------------------------------------
    def _idle(self) -> bool:
        if self._inflight or self._jobs or self.armor is None:
            return False
        try:
            return not any(t.state in ACTIVE for t in self.armor.tasks())
        except ArmorError:
            return False

    async def _watch(self) -> None:
        """Exit when idle, or when this service is no longer the one clients find.

        A socket file that is gone or replaced (the state directory deleted and
        made again, by hand) means no client can reach this process any more; a
        service that stayed would hold containers and a lock nobody can use.
        """
        timeout = self.config.idle_timeout
        while not self._stop.is_set():
            await asyncio.sleep(min(1.0, timeout / 4) if timeout else 1.0)
            try:
                replaced = os.stat(self.paths.socket).st_ino != self._socket_inode
            except FileNotFoundError:
                replaced = True
            self.connections.sweep()
            if replaced:
                _log.warning("the socket was removed or replaced; no client can reach this service: exiting", socket=str(self.paths.socket))
                self._stop.set()
            elif timeout is None:
                continue
            elif not self._idle():
                self._last_activity = time.monotonic()  # a client or an active task keeps the service
            elif time.monotonic() - self._last_activity >= timeout:
                _log.info("idle: no client and no active task; exiting", idle_timeout=timeout)
                self._stop.set()

    def _bind_unix(self) -> socket.socket:
        self.paths.prepare()
        path = self.paths.socket
        with contextlib.suppress(FileNotFoundError):
            # We hold the state directory's lock, so a socket file here is a dead owner's.
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(os.fsdecode(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._socket_inode = os.stat(path).st_ino
        sock.listen(128)
        return sock

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        _raise_open_file_limit()
        self.connections.limit = _connection_limit()
        # Held for the service's whole life, from before recovery: a client whose own
        # start attempt lost the race sees a service is on its way and waits for it.
        self.paths.prepare()
        owner = filelock.FileLock(self.paths.owner_lock, timeout=0, thread_local=False)
        try:
            owner.acquire()
        except filelock.Timeout:
            raise StateDirLocked(str(self.paths.state)) from None
        try:
            return await self._run(loop)
        finally:
            owner.release()

    async def _run(self, loop: asyncio.AbstractEventLoop) -> int:
        self.armor = await loop.run_in_executor(self._executor, self._open_session)
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_BODY)
        info = {"pid": os.getpid(), "state_dir": str(self.paths.state), "repo": str(self.config.repo) if self.config.repo else None,
                "socket": str(self.paths.socket), "docker": self.armor.docker is not None, "docker_reason": self.docker_reason,
                "classic_hooks": self.armor.config.classic_hooks, "plan_files": self.armor.config.plan_files,
                "plan_location": self.armor.config.plan_location}
        Routes(self.armor, self._executor, info=info, track=self._track).add_to(app)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        sock = self._bind_unix()
        unix_server: asyncio.AbstractServer | None = None
        try:
            assert runner.server is not None
            unix_server = await loop.create_unix_server(self.connections.wrap(runner.server), sock=sock)
            if self.config.listen is not None:
                self.token = secrets.token_urlsafe(32)
                token_file = self.paths.run_dir / "token"
                fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(self.token + "\n")
                host, port = self.config.listen
                await web.TCPSite(runner, host, port).start()
            # An auto-started service runs in a session of its own, so a closed terminal never sends it
            # SIGHUP; one that does get it ('serve --foreground' in a terminal that closed) stops like on SIGTERM.
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.add_signal_handler(sig, functools.partial(self._signalled, sig))
            _log.info("serving", socket=str(self.paths.socket), pid=os.getpid(), docker=self.armor.docker is not None)
            watcher = asyncio.ensure_future(self._watch())
            await self._stop.wait()
            watcher.cancel()
        finally:
            if unix_server is not None:
                unix_server.close()
            await self._shutdown(runner)
        return 0

    def _signalled(self, sig: signal.Signals) -> None:
        if not self._stop.is_set():
            self.stop_cause = sig.name
            _log.info("stopping", signal=sig.name, stop_timeout=self.config.stop_timeout)
        self._stop.set()

    async def _shutdown(self, runner: web.AppRunner) -> None:
        # Stop taking requests, let background jobs (detached runs) see the session
        # close, then close it: in-flight requests finish and the snapshot is written.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.paths.socket).st_ino == self._socket_inode:
                os.unlink(self.paths.socket)  # never a successor's
        armor, self.armor = self.armor, None
        loop = asyncio.get_running_loop()
        if armor is not None:
            from armor_rx.session.interruption import interrupt_all

            # First, while the session is whole: every task it runs a container for is stopped, checkpointed and
            # recorded interrupted with the cause (within the stop bound); then the clients are let go.
            cause = self.stop_cause
            await loop.run_in_executor(self._executor, functools.partial(
                interrupt_all, armor, cause, f"the armor service stopped ({cause}); 'armor-rx resume TASK' continues the task"))
        for job in list(self._jobs):
            job.cancel()
        await runner.cleanup()
        if armor is not None:
            await loop.run_in_executor(self._executor, functools.partial(armor.close, cause=self.stop_cause))
        self._executor.shutdown(wait=True, cancel_futures=True)
        _log.info("stopped")


def _connection_limit() -> int:
    """How many client connections to keep: the open-file limit, less room for the log, git and Docker."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(16, min(100_000, soft - 96))


def _raise_open_file_limit() -> None:
    """Take the hard limit on open files: every client connection is one, and running out
    would refuse everyone (asyncio pauses accepting on EMFILE rather than failing)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


def serve(config: ServiceConfig) -> int:
    """Run the service in this process until it is idle or stopped (SIGTERM, SIGINT)."""
    if config.idle_timeout is not None and config.idle_timeout <= 0:
        raise ConfigError(f"--idle-timeout must be a positive number of seconds, not {config.idle_timeout:g}")
    return asyncio.run(Service(config).run())
