"""The blocking client of the service: :func:`armor_rx.connect` returns one.

It implements :class:`armor_rx.api.ArmorAPI`, the Protocol the in-process
:class:`armor_rx.Armor` implements too, so code written against one runs
against the other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from armor_rx.client.autostart import ensure_service
from armor_rx.client.base import Call, Operations, parse_line, secrets_body, start_body
from armor_rx.errors import ArmorError, ConfigError, GitError, ServiceLost, ServiceUnavailable
from armor_rx.model.events import TaskEvent
from armor_rx.model.ids import validate_task_id
from armor_rx.model.registry import TaskRecord
from armor_rx.model.secrets import SecretSource
from armor_rx.service import wire
from armor_rx.service.paths import ServicePaths
from armor_rx.sinks.statedir import DEFAULT_NAME, StateDir

T = TypeVar("T")


class RemoteArmor:
    """A session served by the armor service of a repository's state directory.

    >>> # armor = armor_rx.connect("path/to/repo")   # starts the service if none runs
    """

    def __init__(self, repo: str | Path | None = None, *, state_dir: str | Path | None = None, autostart: bool = True,
                 idle_timeout: float | None = None) -> None:
        self.repo = Path(repo).resolve() if repo is not None else None
        state = StateDir.resolve(state_dir, repo)
        if self.repo is None and state.name == DEFAULT_NAME and (state.parent / ".git").exists():
            self.repo = state.parent  # a repository's own .armor/, however it was named
        self.state_dir = state
        self.paths = ServicePaths.of(state)
        self._autostart = autostart
        self._idle_timeout = idle_timeout
        self._ops = Operations()
        self._client: httpx.Client | None = None
        self.info = self._ensure()

    # -- the connection ------------------------------------------------------
    def _ensure(self) -> dict[str, Any]:
        if self._autostart:
            info = ensure_service(self.state_dir, self.repo, idle_timeout=self._idle_timeout)
        else:
            from armor_rx.client.autostart import probe

            found = probe(self.paths)
            if found is None:
                raise ServiceUnavailable(f"no armor service runs for {self.state_dir} ('armor-rx serve' starts one)")
            info = found
        served = info.get("repo")
        if self.repo is not None and served != str(self.repo):
            raise ConfigError(f"the armor service for {self.state_dir} serves {served or 'no repository (no git)'}, not {self.repo}; "
                              f"stop it with 'armor-rx serve --stop --state-dir {self.state_dir}' and run this again")
        if self._client is None:
            self._client = httpx.Client(transport=httpx.HTTPTransport(uds=os.fsdecode(self.paths.socket), verify=False),
                                        base_url="http://armor", timeout=httpx.Timeout(10.0, read=None),
                                        trust_env=False)
        return info

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> RemoteArmor:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _lost(self, call: str, exc: BaseException) -> ServiceLost:
        return ServiceLost(f"the armor service for {self.state_dir} went away during {call} "
                           f"({type(exc).__name__}); run it again: a new service starts and reconciles")

    def _send(self, call: Call[T]) -> T:
        for attempt in (1, 2):
            assert self._client is not None, "the client is closed"
            try:
                response = self._client.request(call.method, call.path, json=call.body, params=call.query or None)
            except httpx.ConnectError as exc:
                # Nothing was sent: safe to start a service (it may have exited when idle) and try again.
                if attempt == 2:
                    raise ServiceUnavailable(f"cannot reach the armor service for {self.state_dir}: {exc}") from None
                self._ensure()
                continue
            except httpx.TransportError as exc:
                if call.idempotent and attempt == 1:
                    self._ensure()
                    continue
                raise self._lost(f"{call.method} {call.path}", exc) from None
            return self._decode(call, response)
        raise AssertionError("unreachable")

    @staticmethod
    def _decode(call: Call[T], response: httpx.Response) -> T:
        try:
            body = response.json()
        except ValueError:
            raise wire.error_from(None, response.status_code) from None
        if response.status_code >= 400:
            raise wire.error_from(body, response.status_code)
        return call.decode(body)

    def _stream(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                query: Mapping[str, str] | None = None) -> Iterator[tuple[str, Any]]:
        """The lines of one streamed call, parsed; errors at the start raise, later ones come as ("error", exc)."""
        assert self._client is not None, "the client is closed"
        for attempt in (1, 2):
            try:
                with self._client.stream(method, path, json=body, params=query or None) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise self._decode(Call(method, path, dict), response)  # type: ignore[misc]
                    try:
                        # Lines are split from raw chunks as bytes (iter_lines decodes every line to str first).
                        rest = b""
                        for chunk in response.iter_raw():
                            lines = (rest + chunk).split(b"\n")
                            rest = lines.pop()
                            for line in lines:
                                if line:
                                    yield parse_line(line)
                        if rest.strip():
                            yield parse_line(rest)
                    except httpx.TransportError as exc:
                        raise self._lost(f"{method} {path}", exc) from None
                return
            except httpx.ConnectError as exc:
                if attempt == 2:
                    raise ServiceUnavailable(f"cannot reach the armor service for {self.state_dir}: {exc}") from None
                self._ensure()
            except httpx.TransportError as exc:
                # Connected, then dropped before the answer began (a service stopping): a typed error, not httpx's own.
                raise self._lost(f"{method} {path}", exc) from None

    def health(self) -> dict[str, Any]:
        """The service's health answer now: pid, state_dir, repo, docker, and ``last_seq`` (where its log ends)."""
        return self._send(self._ops.health())

    # -- tasks ----------------------------------------------------------------
    def create_task(self, task_id: str, *, base_ref: str = "HEAD", metadata: Mapping[str, Any] | None = None) -> TaskRecord:
        return self._send(self._ops.create_task(task_id, base_ref, metadata))  # type: ignore[no-any-return]

    def task(self, task_id: str) -> TaskRecord:
        return self._send(self._ops.task(task_id))  # type: ignore[no-any-return]

    def tasks(self) -> list[TaskRecord]:
        return self._send(self._ops.tasks())

    def start(self, task_id: str, *, timeout: float | None = None, secrets: Mapping[str, SecretSource] | None = None,
              **payload: Any) -> TaskEvent:
        return self._send(self._ops.lifecycle(task_id, "start", start_body(payload, secrets)))  # type: ignore[no-any-return]

    def complete(self, task_id: str, *, timeout: float | None = None, **payload: Any) -> TaskEvent:
        return self._send(self._ops.lifecycle(task_id, "complete", start_body(payload)))  # type: ignore[no-any-return]

    def fail(self, task_id: str, reason: str, *, timeout: float | None = None, **payload: Any) -> TaskEvent:
        return self._send(self._ops.lifecycle(task_id, "fail", {"reason": reason}))  # type: ignore[no-any-return]

    def cancel(self, task_id: str, reason: str = "cancelled by the user", *, timeout: float | None = None) -> TaskEvent:
        return self._send(self._ops.lifecycle(task_id, "cancel", {"reason": reason}))  # type: ignore[no-any-return]

    def interrupt(self, task_id: str, reason: str) -> TaskEvent:
        return self._send(self._ops.lifecycle(task_id, "interrupt", {"reason": reason}))  # type: ignore[no-any-return]

    def resume(self, task_id: str, *, timeout: float | None = None, secrets: Mapping[str, SecretSource] | None = None,
               **payload: Any) -> TaskEvent:
        return self._send(self._ops.lifecycle(task_id, "resume", start_body(payload, secrets)))  # type: ignore[no-any-return]

    def stop_command(self, task_id: str, reason: str = "stopped by the user") -> bool:
        return self._send(self._ops.stop_command(task_id, reason))

    def exec(self, task_id: str, command: Sequence[str], *, timeout: float | None = None,
             on_output: Callable[[TaskEvent], object] | None = None, secrets: Mapping[str, SecretSource] | None = None,
             **options: Any) -> TaskEvent:
        """Run ``command`` in the task's container; ``on_output`` gets each ``exec.output`` event as it comes.

        Closing the connection (Ctrl-C, a dead client) stops the command on the service.
        ``secrets`` are read here (this process's environment and files) and given to this command only.
        """
        extra = {"secrets": secrets_body(secrets)} if secrets else {}
        call = self._ops.exec(task_id, command, {**options, **extra, **({"timeout": timeout} if timeout is not None else {})})
        outcome: TaskEvent | None = None
        for key, value in self._stream(call.method, call.path, body=call.body):
            if key == "event" and on_output is not None and value.kind == "exec.output":
                on_output(value)
            elif key == "outcome":
                outcome = wire.event_in(value)
            elif key == "error":
                raise value
        if outcome is None:
            raise ServiceLost(f"the armor service for {self.state_dir} ended the exec stream without an outcome")
        return outcome

    # -- git ------------------------------------------------------------------
    def checkpoint(self, task_id: str, message: str | None = None, *, timeout: float | None = None,
                   tag: str | None = None) -> TaskEvent:
        body: dict[str, Any] = {"message": message}
        if tag is not None:
            body["tag"] = tag
        return self._send(self._ops.lifecycle(task_id, "checkpoint", body))  # type: ignore[no-any-return]

    def checkpoints(self, task_id: str) -> list[Any]:
        return self._send(self._ops.checkpoints(task_id))

    def diff(self, task_id: str, checkpoint: str | None = None) -> Any:
        return self._send(self._ops.diff(task_id, checkpoint))

    def rollback(self, task_id: str, checkpoint: str, *, timeout: float | None = None) -> TaskEvent:
        return self._send(self._ops.lifecycle(task_id, "rollback", {"checkpoint": checkpoint}))  # type: ignore[no-any-return]

    def branch_from(self, source_task: str, checkpoint: str, new_task: str, *, timeout: float | None = None) -> TaskEvent:
        return self._send(self._ops.lifecycle(source_task, "branch", {"checkpoint": checkpoint, "new_task": new_task}))  # type: ignore[no-any-return]

    def fork(self, task_id: str, checkpoint: str, *, into: int | None = None, names: Sequence[str] | None = None,
             timeout: float | None = None) -> list[TaskEvent]:
        """As :meth:`armor_rx.Armor.fork`, done by the service in one call (its names cannot be taken half-way)."""
        return self._send(self._ops.fork(task_id, checkpoint, into, names))  # type: ignore[no-any-return]

    def compare(self, task_ids: Sequence[str]) -> Any:
        """As :meth:`armor_rx.Armor.compare`, from the service's diffs."""
        from armor_rx.sinks.git.compare import compare

        if not task_ids:
            raise GitError("compare needs at least one task")
        return compare([self.diff(validate_task_id(t)) for t in task_ids])

    def conflicts(self) -> list[dict[str, Any]]:
        return self._send(self._ops.conflicts())

    def worktree(self, task_id: str) -> Path:
        return self._send(self._ops.worktree(task_id))

    def container(self, task_id: str) -> dict[str, Any]:
        return self._send(self._ops.container(task_id))

    # -- events ---------------------------------------------------------------
    def emit(self, task_id: str | None, kind: str, payload: Mapping[str, Any] | None = None) -> TaskEvent:
        return self._send(self._ops.emit(task_id, kind, payload))  # type: ignore[no-any-return]

    def history(self, *, task_id: str | None = None, kind: str | None = None, start_seq: int = 1) -> Iterator[TaskEvent]:
        query = self._ops.events_query(kind, task_id, start_seq, False, None)
        for key, value in self._stream("GET", f"{wire.PREFIX}/events", query=query):
            if key == "event":
                yield value
            elif key == "error":
                raise value

    def follow(self, pattern: str = "*", *, task_id: str | None = None, from_seq: int | None = None,
               max_behind: int | None = None) -> Iterator[tuple[str, Any]]:
        """Iterate the live stream: ("event", TaskEvent) and ("lagged", {"from_seq", "to_seq", "count"}) items."""
        query = self._ops.events_query(None if pattern == "*" else pattern, task_id, from_seq, True, max_behind)
        for key, value in self._stream("GET", f"{wire.PREFIX}/events", query=query):
            if key == "error":
                raise value
            if key in ("event", "lagged"):
                yield key, value

    def events(self, pattern: str = "*", *, task_id: str | None = None, last: int | None = None,
               since: float | None = None, from_seq: int | None = None) -> Observable[TaskEvent]:
        """The service's events as an observable, like :meth:`armor_rx.Armor.events` (``from_seq`` replay only).

        Each subscription reads its own stream on its own thread, which ends when
        the subscription is disposed.
        """
        if last is not None or since is not None:
            raise ArmorError("over the service, replay is by from_seq (last= and since= are in-process only)")

        def on_subscribe(observer: abc.ObserverBase[TaskEvent], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            stop = threading.Event()
            reader = RemoteArmor.__new__(RemoteArmor)
            reader.__dict__.update(self.__dict__)
            reader._client = None
            reader._ensure()

            def pump() -> None:
                try:
                    for key, value in reader.follow(pattern, task_id=task_id, from_seq=from_seq):
                        if stop.is_set():
                            return
                        if key == "event":
                            observer.on_next(value)
                    observer.on_completed()
                except Exception as exc:  # noqa: BLE001 - delivered as on_error, the reactivex way
                    if not stop.is_set():
                        observer.on_error(exc)

            thread = threading.Thread(target=pump, name="armor-remote-events", daemon=True)
            thread.start()

            def dispose() -> None:
                stop.set()
                reader.close()  # ends the blocked read
                if thread is not threading.current_thread():
                    thread.join(5)

            return Disposable(dispose)

        return reactivex.create(on_subscribe)

    # -- dead letters and containers -------------------------------------------
    def dead_letters(self, *, include_redriven: bool = False) -> list[Any]:
        return self._send(self._ops.dead_letters(include_redriven))

    def redrive(self, letter_id: str, *, timeout: float | None = None) -> TaskEvent:
        return self._send(self._ops.redrive(letter_id))  # type: ignore[no-any-return]

    def sweep(self, *, now: bool = False, dry_run: bool = False, grace: float | None = None) -> list[Any]:
        return self._send(self._ops.sweep(now, dry_run, grace))

    def image_cache(self, action: str, body: Mapping[str, Any] | None = None) -> Any:
        """One image-cache operation on the service's engine (``stats``, ``ensure``, ``warm``, ``invalidate``,
        ``gc``, ``export``, ``import``); see ``docs/service.md``."""
        return self._send(Call("POST", f"{wire.PREFIX}/images/{action}", lambda d: d, dict(body or {})))

    def run(self, task_id: str, command: Sequence[str] | str, *, on_line: Callable[[str, Any], object] | None = None,
            detach: bool = False, **options: Any) -> dict[str, Any]:
        """A task's whole life on the service (create under a free name, start, exec, complete or fail).

        ``on_line(key, value)`` sees each stream item: ``("task", {...})``,
        ``("event", exec.output event)``, ``("outcome", ...)``. Returns
        ``{"task_id", "exit_code"}``.
        """
        secrets = options.pop("secrets", None)
        body = {"task_id": validate(task_id), "command": command if isinstance(command, str) else list(command), "detach": detach,
                **{k: v for k, v in options.items() if v is not None}}
        if secrets:
            body["secrets"] = secrets_body(secrets)  # read here; the task's every command gets them
        for key, value in self._stream("POST", f"{wire.PREFIX}/run", body=body):
            if key == "error":
                raise value
            if on_line is not None:
                on_line(key, value)
            if key == "result":
                return dict(value)
        raise ServiceLost(f"the armor service for {self.state_dir} ended the run stream without a result")


def validate(task_id: str) -> str:
    from armor_rx.model.ids import validate_task_id

    return validate_task_id(task_id)


def connect(repo: str | Path | None = None, *, state_dir: str | Path | None = None, autostart: bool = True,
            idle_timeout: float | None = None) -> RemoteArmor:
    """A client of the repository's armor service, starting it in the background if none runs.

    >>> # with armor_rx.connect("path/to/repo") as armor:
    >>> #     armor.create_task("fix-login"); armor.start("fix-login")
    """
    return RemoteArmor(repo, state_dir=state_dir, autostart=autostart, idle_timeout=idle_timeout)
