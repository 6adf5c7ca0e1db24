"""The service's API: one route per operation of the Python API, JSON in and out.

Every handler validates what the client sent (a wrong type is a 400 with a
one-line message, never a traceback or a crash) and calls the same
:class:`armor_rx.Armor` method an in-process user would, so the two
transports cannot disagree. Long streams (events, exec output, run) are
newline-delimited JSON: one event object per line, and control lines that
carry no ``kind``: ``{"lagged": {...}}``, ``{"outcome": event}``,
``{"result": {...}}`` or ``{"error": {...}}``.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import web

from armor_rx import __version__
from armor_rx.errors import ArmorError, BadRequest, ConfigError, DockerError, ServiceError, TaskExists
from armor_rx.model.events import TaskEvent
from armor_rx.model.ids import validate_task_id
from armor_rx.model.merge import MERGE_MODES
from armor_rx.model.patterns import kind_matcher
from armor_rx.model.secrets import Secret, check_reference
from armor_rx.operators import CheckpointTriggers
from armor_rx.model.services import services_payload
from armor_rx.service import wire
from armor_rx.service.feed import Batch, EventFeed, Lagged
from armor_rx.sinks.git.checkpoints import validate_tag
from armor_rx.sinks.git.submodules import STRATEGIES as SUBMODULE_STRATEGIES

_log = structlog.get_logger("armor_rx.service")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- reading what the client sent ---------------------------------------------
async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def _opt(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(key, default)
    if value is None or value is default:
        return value
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BadRequest(f"{key!r} must be {_name(kind)}, not a boolean")
    if not isinstance(value, kind):
        raise BadRequest(f"{key!r} must be {_name(kind)}, not {type(value).__name__} {value!r:.60}")
    return value


def _name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                        "dict": "an object", "list": "an array"}.get(k.__name__, k.__name__) for k in kinds)


def _req(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in body:
        raise BadRequest(f"the request needs {key!r}")
    return _opt(body, key, kind)


def _query_int(request: web.Request, key: str, default: int | None = None) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {key}={raw!r:.40} is not an integer") from None


def _query_bool(request: web.Request, key: str) -> bool:
    return request.query.get(key, "").lower() in ("1", "true", "yes", "on")


def _command(body: Mapping[str, Any]) -> list[str] | str:
    command = _req(body, "command", (list, str))
    if isinstance(command, list):
        if not command or not all(isinstance(a, str) for a in command):
            raise BadRequest("'command' must be a non-empty array of strings (or one shell string)")
    elif not command.strip():
        raise BadRequest("'command' must not be empty")
    return command  # type: ignore[no-any-return]


def _exec_options(body: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    timeout = _opt(body, "timeout", (int, float))
    if timeout is not None:
        if timeout <= 0:
            raise BadRequest(f"'timeout' must be a positive number of seconds, not {timeout}")
        options["timeout"] = timeout
    env = _opt(body, "env", dict)
    if env is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise BadRequest("'env' must map names to strings")
        options["env"] = env
    user = _opt(body, "user", str)
    if user is not None:
        options["user"] = user
    return options


def _secrets(body: Mapping[str, Any]) -> dict[str, Secret]:
    """``{"NAME": {"reference": "env://VAR", "value": "..."}}``, read by the client, as Secrets (checked, never logged)."""
    raw = _opt(body, "secrets", dict) or {}
    out: dict[str, Secret] = {}
    for name, item in raw.items():
        if not isinstance(item, dict) or not isinstance(item.get("value"), str) or not isinstance(item.get("reference", "value"), str):
            raise BadRequest(f"secret {str(name)[:60]!r} must be {{\"reference\": ..., \"value\": a string}}")
        reference = item.get("reference", "value")
        secret = Secret(item["value"], reference=None if reference == "value" else reference)
        try:
            check_reference(name, secret)
            if secret.reference is not None:
                check_reference(name, secret.reference)
        except ConfigError as exc:
            raise BadRequest(str(exc)) from None
        out[name] = secret
    return out


TRUNCATED = "exec.output.truncated"


class _LiveOutput:
    """A command's output past its task's quota, from the command's thread to one exec stream.

    At most ``room`` chunks wait: a client slower than the command slows it
    (as the log would), and one that is gone lets it go on at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, task: str, request_id: str, room: int = 64) -> None:
        self._loop = loop
        self._task = task
        self._request_id = request_id
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._room = threading.Semaphore(room)
        self._closed = threading.Event()

    def put(self, stream: str, text: str, after_seq: int) -> None:  # on the command's output thread
        while not self._room.acquire(timeout=0.5):
            if self._closed.is_set():
                return
        if self._closed.is_set():
            return
        line = TaskEvent.new("exec.output", self._task, {"stream": stream, "data": text, "recorded": False},
                             causation_id=self._request_id).to_json()
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, line)
        except RuntimeError:  # the loop has closed: the service is stopping
            self._closed.set()

    async def lines(self, done: asyncio.Future[Any]) -> AsyncIterator[bytes]:
        """Every chunk until the command is over and none is left."""
        while True:
            if done.done() and self._queue.empty():
                return
            getter = asyncio.ensure_future(self._queue.get())
            await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                self._room.release()
                yield getter.result()
            else:
                getter.cancel()

    def close(self) -> None:
        self._closed.set()


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=wire.dumps(value), status=status, content_type="application/json")


class Routes:
    """The handlers, bound to one session. ``track`` keeps background jobs alive until they finish."""

    def __init__(self, armor: Any, executor: Executor, *, info: Mapping[str, Any], track: Callable[[asyncio.Task[Any]], None]) -> None:
        self.armor = armor
        self.executor = executor
        self.info = dict(info)
        self.track = track
        self._cache: Any = None

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def outcome(self, submit: Callable[[], Future[TaskEvent]]) -> TaskEvent:
        future = await self.call(submit)
        return await asyncio.wrap_future(future)

    def add_to(self, app: web.Application) -> None:
        r = app.router
        p = wire.PREFIX
        r.add_get(f"{p}/health", self.health)
        r.add_get(f"{p}/tasks", self.tasks)
        r.add_post(f"{p}/tasks", self.create_task)
        r.add_get(f"{p}/tasks/{{task}}", self.task)
        for verb in ("start", "complete", "fail", "cancel", "resume", "interrupt", "checkpoint", "rollback", "branch"):
            r.add_post(f"{p}/tasks/{{task}}/{verb}", functools.partial(self.lifecycle, verb))
        r.add_post(f"{p}/tasks/{{task}}/fork", self.fork)
        r.add_post(f"{p}/tasks/{{task}}/exec", self.exec)
        r.add_post(f"{p}/tasks/{{task}}/stop-command", self.stop_command)
        r.add_get(f"{p}/tasks/{{task}}/checkpoints", self.checkpoints)
        r.add_get(f"{p}/tasks/{{task}}/diff", self.diff)
        r.add_get(f"{p}/tasks/{{task}}/worktree", self.worktree)
        r.add_get(f"{p}/tasks/{{task}}/container", self.container)
        r.add_get(f"{p}/events", self.events)
        r.add_post(f"{p}/events", self.emit)
        r.add_get(f"{p}/dead-letters", self.dead_letters)
        r.add_get(f"{p}/conflicts", self.conflicts)
        r.add_post(f"{p}/dead-letters/{{letter}}/redrive", self.redrive)
        r.add_post(f"{p}/sweep", self.sweep)
        r.add_post(f"{p}/run", self.run)
        r.add_post(f"{p}/images/{{action}}", self.images)

    # -- reads ----------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        # last_seq: where the log ends now, so a client can replay "the last N events" before following.
        return json_response({"service": "armor-rx", "api": wire.API_VERSION, "version": __version__, **self.info,
                              "last_seq": self.armor.log.last_seq})

    async def tasks(self, request: web.Request) -> web.Response:
        records = await self.call(self.armor.tasks)
        return json_response([wire.record_out(r) for r in records])

    async def task(self, request: web.Request) -> web.Response:
        record = await self.call(self.armor.task, request.match_info["task"])
        return json_response(wire.record_out(record))

    async def checkpoints(self, request: web.Request) -> web.Response:
        found = await self.call(self.armor.checkpoints, validate_task_id(request.match_info["task"]))
        return json_response([wire.checkpoint_out(cp) for cp in found])

    async def diff(self, request: web.Request) -> web.Response:
        checkpoint = request.query.get("checkpoint") or None
        found = await self.call(self.armor.diff, validate_task_id(request.match_info["task"]), checkpoint)
        return json_response(found.to_payload())

    async def worktree(self, request: web.Request) -> web.Response:
        path = await self.call(self.armor.worktree, request.match_info["task"])
        return json_response({"path": str(path)})

    async def container(self, request: web.Request) -> web.Response:
        return json_response(await self.call(self.armor.container, request.match_info["task"]))

    async def conflicts(self, request: web.Request) -> web.Response:
        return json_response(await self.call(self.armor.conflicts))

    async def dead_letters(self, request: web.Request) -> web.Response:
        letters = await self.call(self.armor.dead_letters, include_redriven=_query_bool(request, "all"))
        return json_response([wire.letter_out(d) for d in letters])

    # -- writes ---------------------------------------------------------------
    async def create_task(self, request: web.Request) -> web.Response:
        body = await _body(request)
        task_id = validate_task_id(_req(body, "task_id", str))
        record = await self.call(self.armor.create_task, task_id, base_ref=_opt(body, "base_ref", str, "HEAD"),
                                 metadata=_opt(body, "metadata", dict))
        return json_response(wire.record_out(record), status=201)

    async def lifecycle(self, verb: str, request: web.Request) -> web.Response:
        body = await _body(request)
        task = validate_task_id(request.match_info["task"])
        a = self.armor
        if verb == "start":
            payload = {k: v for k, v in body.items() if k in ("image", "sandbox", "keep", "base_ref", "submodules", "plan", "goal")}
            if body.get("plan") not in (None, True, False, "state", "worktree"):
                raise BadRequest(f"'plan' must be true, false, 'state' or 'worktree', not {body['plan']!r}")
            _opt(body, "goal", str)
            _opt(body, "image", str), _opt(body, "sandbox", dict), _opt(body, "keep", bool)
            if _opt(body, "submodules", str) not in (None, *SUBMODULE_STRATEGIES):
                raise BadRequest(f"'submodules' must be one of {', '.join(SUBMODULE_STRATEGIES)}, not {body['submodules']!r}")
            if body.get("checkpoint_policy") is not None:  # refused here (400), before anything is logged
                payload["checkpoint_policy"] = CheckpointTriggers.from_payload(body["checkpoint_policy"]).to_payload()
            if body.get("services") is not None:  # validated now: a bad declaration logs nothing
                payload["services"] = services_payload(body["services"])
            payload = a.with_secrets(task, payload, _secrets(body))
            event = await self.outcome(lambda: a.request(task, "task.start.requested", payload))
        elif verb == "complete":
            payload = {}
            if _opt(body, "message", str) is not None:
                payload["message"] = body["message"]
            merge = _opt(body, "merge", str)
            if merge is not None:
                if merge not in MERGE_MODES:
                    raise BadRequest(f"'merge' must be one of {', '.join(MERGE_MODES)}, not {merge!r}")
                payload["merge"] = merge
            await self.call(a.check_complete, task, merge or "none")  # refused now, the task still running
            event = await self.outcome(lambda: a.request(task, "task.complete.requested", payload))
        elif verb == "fail":
            reason = _req(body, "reason", str)
            event = await self.outcome(lambda: a.request(task, "task.fail.requested", {"reason": reason}))
        elif verb == "cancel":
            reason = _opt(body, "reason", str, "cancelled by the user")
            event = await self.outcome(lambda: a.request(task, "task.cancel.requested", {"reason": reason}))
        elif verb == "resume":
            payload = {"checkpoint": body["checkpoint"]} if _opt(body, "checkpoint", str) else {}
            event = await self.call(a.resume, task, secrets=_secrets(body), **payload)  # the session fills in the start's image and sandbox
        elif verb == "interrupt":
            reason = _opt(body, "reason", str, "interrupted by the user")
            await self.call(a.stop_command, task, reason)
            event = await self.call(a.interrupt, task, reason)
        elif verb == "checkpoint":
            message = _opt(body, "message", str)
            tag = _opt(body, "tag", str)
            cp_payload: dict[str, Any] = {"message": message}
            if tag is not None:
                cp_payload["tags"] = [validate_tag(tag)]
            event = await self.outcome(lambda: a.request(task, "checkpoint.requested", cp_payload))
        elif verb == "rollback":
            checkpoint = _req(body, "checkpoint", str)
            event = await self.call(a.rollback, task, checkpoint)
        else:  # branch
            checkpoint = _req(body, "checkpoint", str)
            new_task = validate_task_id(_req(body, "new_task", str))
            event = await self.call(a.branch_from, task, checkpoint, new_task)
        return json_response(wire.event_out(event))

    async def fork(self, request: web.Request) -> web.Response:
        # One call, so the service's fork registers all the names before any task starts (see GitOperations.fork):
        # made by the client one branch at a time, another client could take a name half-way.
        body = await _body(request)
        names = _opt(body, "names", list)
        if names is not None and not all(isinstance(n, str) for n in names):
            raise BadRequest("'names' must be a list of task names")
        into = _opt(body, "into", int)
        started = await self.call(self.armor.fork, request.match_info["task"], _req(body, "checkpoint", str),
                                  into=into, names=names)
        return json_response([wire.event_out(e) for e in started])

    async def stop_command(self, request: web.Request) -> web.Response:
        body = await _body(request)
        stopped = await self.call(self.armor.stop_command, request.match_info["task"], _opt(body, "reason", str, "stopped by the user"))
        return json_response({"stopped": stopped})

    async def emit(self, request: web.Request) -> web.Response:
        body = await _body(request)
        task_id = _opt(body, "task_id", str)
        event = await self.call(self.armor.emit, task_id, _req(body, "kind", str), _opt(body, "payload", dict))
        return json_response(wire.event_out(event))

    async def redrive(self, request: web.Request) -> web.Response:
        event = await self.call(self.armor.redrive, request.match_info["letter"])
        return json_response(wire.event_out(event))

    async def sweep(self, request: web.Request) -> web.Response:
        body = await _body(request)
        grace = _opt(body, "grace", (int, float))
        if grace is not None and grace < 0:
            raise BadRequest(f"'grace' must be 0 or more seconds, not {grace}")
        found = await self.call(self.armor.sweep, now=bool(_opt(body, "now", bool, False)), dry_run=bool(_opt(body, "dry_run", bool, False)),
                                grace=grace)
        return json_response([wire.decision_out(d) for d in found])

    async def images(self, request: web.Request) -> web.Response:
        from armor_rx.service.images import ACTIONS, run_action

        action = request.match_info["action"]
        if action not in ACTIONS:
            raise BadRequest(f"no image action {action!r}; one of: {', '.join(ACTIONS)}")
        body = await _body(request)
        return json_response(await self.call(run_action, self._image_cache(), action, body))

    def _image_cache(self) -> Any:
        effect = self.armor.docker
        if effect is None:
            reason = self.info.get("docker_reason") or "the service was started without containers"
            raise DockerError(f"the image cache needs a Docker engine: {reason}")
        if self._cache is None:
            from armor_rx.sinks.docker.images import ImageCache

            armor = self.armor
            self._cache = ImageCache(effect.engine, armor.state.path, emit=lambda kind, payload: armor.emit(None, kind, payload),
                                     progress=lambda line: _log.info("image build", line=line))
        return self._cache

    # -- streams --------------------------------------------------------------
    async def events(self, request: web.Request) -> web.StreamResponse:
        task_id = request.query.get("task") or None
        if task_id is not None:
            validate_task_id(task_id)
        kind = request.query.get("kind") or None
        if kind is not None:
            kind_matcher(kind)
        follow = _query_bool(request, "follow")
        from_seq = _query_int(request, "from_seq", None if follow else 1)
        max_behind = _query_int(request, "max_behind", 100_000)
        if from_seq is not None and from_seq < 1:
            raise BadRequest(f"from_seq must be 1 or more, not {from_seq}")
        feed = EventFeed(self.armor, kind=kind, task_id=task_id, from_seq=from_seq, follow=follow,
                         max_behind=max_behind if max_behind and max_behind > 0 else None,
                         read=lambda fn: self.call(fn))

        async def lines() -> AsyncIterator[bytes]:
            async for item in feed:
                if isinstance(item, Lagged):
                    yield wire.dumps({"lagged": {"from_seq": item.from_seq, "to_seq": item.to_seq, "count": item.count}})
                elif isinstance(item, Batch):
                    yield item.blob
                else:
                    yield item.to_json()

        return await stream(request, lines(), on_gone=feed.close)

    async def _exec_lines(self, task: str, command: list[str] | str, options: Mapping[str, Any],
                          handle: dict[str, TaskEvent]) -> AsyncIterator[bytes]:
        """The output of one exec, then ``{"outcome": ...}``.

        ``handle["request"]`` is the request event from just before it is submitted, so a
        client that goes away at any moment after that can have it stopped (or never started).
        """
        argv = command if isinstance(command, list) else ["sh", "-c", command]
        if not self.armor.can_exec:
            await self.call(self.armor.exec, task, argv)  # raises the session's own error
        request_event = self.armor.exec_request(task, argv, **options)
        handle["request"] = request_event
        feed = EventFeed(self.armor, kind=f"exec.output,{TRUNCATED}", task_id=task, where=lambda e: e.causation_id == request_event.id,
                         max_behind=None, read=lambda fn: self.call(fn))
        loop = asyncio.get_running_loop()
        live = _LiveOutput(loop, task, request_event.id)
        effect = self.armor.docker
        detach = effect.attach(request_event.id, live.put) if effect is not None else (lambda: None)
        try:
            future = await self.call(self.armor.submit, request_event)
        except BaseException:
            detach()
            feed.close()
            raise
        done = asyncio.wrap_future(future)

        def finished(_f: Any) -> None:
            seq = done.result().seq if not done.exception() else self.armor.pipeline.bus.published_seq
            feed.stop_after(seq or 0)

        done.add_done_callback(lambda f: loop.call_soon(finished, f))
        try:
            async for item in feed:
                if isinstance(item, TaskEvent):
                    past_quota = item.kind == TRUNCATED
                    if not past_quota:
                        yield item.to_json()
                else:
                    past_quota = isinstance(item, Batch) and any(e.kind == TRUNCATED for e in item)
                    if isinstance(item, Batch):
                        yield item.blob
                if past_quota:  # what was recorded has been sent: the rest comes live, unrecorded
                    async for line in live.lines(done):
                        yield line
        finally:
            live.close()
            detach()
            feed.close()
        outcome = await done
        yield wire.dumps({"outcome": wire.event_out(outcome)})

    async def exec(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        task = validate_task_id(request.match_info["task"])
        command = _command(body)
        options = _exec_options(body)
        options["secrets"] = _secrets(body)
        await self.call(self.armor.task, task)  # an unknown task is an error response, not a stream
        handle: dict[str, TaskEvent] = {}
        lines = self._exec_lines(task, command, options, handle)

        def gone() -> None:
            # Ctrl-C in the client: stop this command only (or, if it is still queued, it never starts).
            if "request" in handle:
                self.track(asyncio.ensure_future(self._stop_command(task, handle["request"].id)))

        return await stream(request, lines, on_gone=gone)

    async def _stop_command(self, task: str, request_id: str) -> None:
        """Stop one exec request's command: the session kills it if it runs, or marks it so it never starts."""
        await self.call(self.armor.stop_command, task, "the client went away (Ctrl-C)", request_id=request_id)

    async def run(self, request: web.Request) -> web.StreamResponse:
        """One task's whole life for ``armor-rx run``: create (a free name), start, exec, then complete or fail."""
        body = await _body(request)
        name = validate_task_id(_req(body, "task_id", str))
        command = _command(body)
        options = _exec_options(body)
        detach = bool(_opt(body, "detach", bool, False))
        start = {k: body[k] for k in ("image", "sandbox", "keep") if body.get(k) is not None}
        _opt(body, "image", str), _opt(body, "sandbox", dict), _opt(body, "keep", bool)
        secrets = _secrets(body)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)
        state: dict[str, Any] = {}

        async def job() -> None:
            try:
                await self._check_can_run(start.get("image"))
                task = await self._create_free(name, _opt(body, "base_ref", str, "HEAD"))
                state["task"] = task
                await queue.put(wire.dumps({"task": {"task_id": task, "requested": name}}))
                start_payload = self.armor.with_secrets(task, start, secrets)
                await self.outcome(lambda: self.armor.request(task, "task.start.requested", start_payload))
                if state.get("gone") and not detach:
                    return  # the client went away while the container was made: no command runs
                handle: dict[str, TaskEvent] = {}
                state["handle"] = handle
                outcome = None
                async for line in self._exec_lines(task, command, options, handle):
                    if line.startswith(b'{"outcome"'):
                        outcome = orjson.loads(line)["outcome"]
                    await queue.put(line)
                assert outcome is not None
                code = outcome["payload"].get("exit_code")
                code = 1 if code is None else int(code)
                if state.get("gone") and not detach:
                    return
                if outcome["payload"].get("reason") in ("interrupted", "cancelled", "container_lost"):
                    # Stopped from outside (interrupt, the service stopping, the engine gone): whoever stopped it
                    # interrupts the task; failing it here would race that and lose the resumable state.
                    await queue.put(wire.dumps({"result": {"task_id": task, "exit_code": code, "interrupted": True}}))
                    return
                if code == 0:
                    await self.outcome(lambda: self.armor.request(task, "task.complete.requested", {}))
                else:
                    reason = f"the command exited with {code} ({outcome['payload'].get('reason')})"
                    await self.outcome(lambda: self.armor.request(task, "task.fail.requested", {"reason": reason}))
                await queue.put(wire.dumps({"result": {"task_id": task, "exit_code": code}}))
            except ArmorError as exc:
                await queue.put(wire.dumps(wire.error_body(exc)))
            except Exception as exc:  # noqa: BLE001 - reported to the client, logged here
                _log.exception("run failed", task=state.get("task"))
                await queue.put(wire.dumps(wire.error_body(ServiceError(f"the service failed running the task: {exc!r}"))))
            finally:
                await queue.put(None)

        worker = asyncio.ensure_future(job())
        self.track(worker)

        async def lines() -> AsyncIterator[bytes]:
            while True:
                line = await queue.get()
                if line is None:
                    return
                yield line

        def gone() -> None:
            state["gone"] = True
            if detach:
                # Keep draining so the job never waits on a queue nobody reads.
                async def drain() -> None:
                    while await queue.get() is not None:
                        pass
                self.track(asyncio.ensure_future(drain()))
                return
            self.track(asyncio.ensure_future(self._interrupt_run(state, worker, queue)))

        return await stream(request, lines(), on_gone=gone)

    async def _interrupt_run(self, state: dict[str, Any], worker: asyncio.Task[None], queue: asyncio.Queue[bytes | None]) -> None:
        async def drain() -> None:
            while await queue.get() is not None:
                pass

        drainer = asyncio.ensure_future(drain())
        task = state.get("task")
        handle = state.get("handle") or {}
        if task is not None and "request" in handle:
            await self._stop_command(task, handle["request"].id)
        await worker
        await drainer
        if task is None:
            return
        reason = "interrupted: the client of 'armor-rx run' went away"
        try:
            record = await self.call(self.armor.task, task)
            if record.state.value in ("running", "starting"):
                # A final checkpoint, then the container goes, then 'interrupted': a client that sees it sees them done.
                await self.call(functools.partial(self.armor.interrupt, task, reason, cause="client gone"))
        except ArmorError as exc:
            _log.warning("could not interrupt a run whose client went away", task=task, error=str(exc))

    async def _check_can_run(self, image: str | None) -> None:
        """Refuse a run before its task exists: no engine, or an image the engine does not have."""
        effect = self.armor.docker
        if effect is None:
            reason = self.info.get("docker_reason") or "the service was started without containers"
            raise DockerError(f"{reason} (the service checked when it started; once an engine runs, 'armor-rx serve --stop' "
                              "makes the next command start a service that uses it)")
        from armor_rx.sinks.docker.containers import ensure_image

        await self.call(ensure_image, effect.engine, image or effect.spec.image)

    async def _create_free(self, name: str, base_ref: str) -> str:
        """Create ``name``, or ``name-2``, ``name-3`` ... if it is taken (runs with one name never collide)."""
        for n in range(1, 1000):
            candidate = name if n == 1 else f"{name[:58]}-{n}"
            try:
                await self.call(self.armor.create_task, candidate, base_ref=base_ref)
                return candidate
            except TaskExists:
                continue
        raise TaskExists(name)


async def stream(request: web.Request, lines: AsyncIterator[bytes], *, on_gone: Callable[[], None]) -> web.StreamResponse:
    """Write ``lines`` as NDJSON; call ``on_gone`` if the client goes away first.

    The first line is produced before the response starts, so an error at the
    start (an unknown task, an illegal state) is an ordinary error response.
    Lines that are ready together go out in one write (a flood costs one
    chunk per batch, not per event); the queue between the producer and the
    socket is small, so a slow client slows its producer instead of growing it.
    """
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=256)

    async def pump() -> None:
        try:
            async for line in lines:
                await queue.put(line)
            await queue.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the writer
            await queue.put(exc)

    producer = asyncio.ensure_future(pump())
    getter: asyncio.Future[bytes | BaseException | None] | None = None
    response: web.StreamResponse | None = None
    finished = False
    try:
        while True:
            if request.transport is None or request.transport.is_closing():
                break
            if getter is None:
                getter = asyncio.ensure_future(queue.get())
            # One waiting get for many lines; the timeout only re-checks the connection.
            done, _ = await asyncio.wait({getter}, timeout=0.1)
            if not done:
                continue
            batch = [getter.result()]
            getter = None
            while not queue.empty() and len(batch) < 512 and isinstance(batch[-1], bytes):
                batch.append(queue.get_nowait())
            tail = batch[-1]
            lines_out = [item for item in batch if isinstance(item, bytes)]
            if isinstance(tail, BaseException) and response is None and not lines_out:
                raise tail
            if response is None:
                response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
                await response.prepare(request)
            if lines_out:
                await response.write(b"\n".join(lines_out) + b"\n")
            if isinstance(tail, BaseException):
                if isinstance(tail, ArmorError):
                    body = wire.error_body(tail)
                else:
                    _log.error("stream failed", error=repr(tail))
                    body = wire.error_body(ServiceError(f"the service failed: {tail!r}"))
                await response.write(wire.dumps(body) + b"\n")
                finished = True
                break
            if tail is None:
                finished = True
                break
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        if getter is not None:
            getter.cancel()
        producer.cancel()
        if not finished:
            on_gone()
    if response is None:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
    try:
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
    return response
