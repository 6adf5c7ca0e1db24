"""Containers for a session: run commands in a task's container, stop them, find and sweep containers.

All of it goes through the session's container effect, which the assembly
builds when the config asks for ``docker=True``; without one, the reads
answer "none" and the actions are refused with a ConfigError that says how
to get containers.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from armor_rx.errors import ConfigError, TaskNotRunning
from armor_rx.model.events import TaskEvent
from armor_rx.model.ids import validate_task_id
from armor_rx.model.lifecycle import State
from armor_rx.model.patterns import kind_matcher
from armor_rx.model.registry import TaskRecord
from armor_rx.model.secrets import SecretSource, describe, resolve_all
from armor_rx.pipeline.core import Pipeline
from armor_rx.session.assembly import Assembly
from armor_rx.session.secrets import SecretVault
from armor_rx.sinks.docker import DockerEffect
from armor_rx.sinks.docker.sweep import SweepDecision


class ContainerSession(Protocol):
    """What the container operations need from their session."""

    @property
    def is_open(self) -> bool: ...

    @property
    def assembly(self) -> Assembly: ...

    @property
    def pipeline(self) -> Pipeline: ...

    @property
    def docker(self) -> DockerEffect | None: ...

    @property
    def can_exec(self) -> bool: ...

    @property
    def secrets(self) -> SecretVault: ...

    def submit(self, request: TaskEvent) -> Future[TaskEvent]: ...

    def task(self, task_id: str) -> TaskRecord: ...

    def exec_request(self, task_id: str, command: Sequence[str], *, timeout: float | None = None,
                     secrets: Mapping[str, SecretSource] | None = None, **options: Any) -> TaskEvent: ...

    def emit(self, task_id: str | None, kind: str, payload: Mapping[str, Any] | None = None) -> TaskEvent: ...


class ContainerOperations:
    """The container half of :class:`armor_rx.Armor`; ``self`` is a :class:`ContainerSession`."""

    @property
    def docker(self: ContainerSession) -> DockerEffect | None:
        """The session's container effect (``docker=True``), or None (also while the session is not open)."""
        return self.assembly.docker if self.is_open else None

    @property
    def can_exec(self: ContainerSession) -> bool:
        """Whether an effect of this session runs commands (``exec``)."""
        return self.is_open and any(kind_matcher(e.kinds)("exec.requested") for e in self.assembly.effects)

    def exec_request(self: ContainerSession, task_id: str, command: Sequence[str], *, timeout: float | None = None,
                     secrets: Mapping[str, SecretSource] | None = None, **options: Any) -> TaskEvent:
        """The ``exec.requested`` event for ``command``, not yet submitted (see :meth:`Armor.submit`).

        Its ``secrets`` are read now and held for this one command; the event
        records only their references.
        """
        state = self.task(task_id).state
        # Queued behind its start or resume is fine (the task's lane runs them in order); a task
        # that is interrupted or over has no container of this session to run in.
        if state not in (State.RUNNING, State.STARTING, State.RESUMING):
            raise TaskNotRunning(task_id, state.value)
        payload: dict[str, Any] = {"command": list(command), **options}
        if timeout is not None:
            payload["timeout"] = timeout
        resolved = resolve_all(secrets)
        if resolved:
            payload["secret_refs"] = {name: describe(secret) for name, secret in resolved.items()}
        request = TaskEvent.new("exec.requested", validate_task_id(task_id), payload)
        self.secrets.bind_request(request.id, resolved)
        return request

    def exec(self: ContainerSession, task_id: str, command: Sequence[str], *, timeout: float | None = None,
             on_output: Callable[[TaskEvent], object] | None = None, secrets: Mapping[str, SecretSource] | None = None,
             **options: Any) -> TaskEvent:
        """Run ``command`` in the task's container (``docker=True``); its output arrives as ``exec.output`` events.

        ``on_output`` gets this command's ``exec.output`` events, every one of
        them before ``exec`` returns. The outcome's payload has ``exit_code``
        and, when a limit stopped it, ``reason`` and ``limit_hit``. ``secrets``
        (name -> ``env://VAR``, ``file://PATH`` or a Secret) are given to this
        command only, on top of the task's own. Output past the task's output
        quota still reaches ``on_output`` (as events with ``recorded: False``
        that the log does not hold).
        """
        bus = self.pipeline.bus  # LogClosed before the question of containers, when the session is not open
        if not self.can_exec:
            raise ConfigError(f"cannot run {list(command)!r} in task {task_id!r}: this session runs no containers "
                              "(open it with Armor(..., docker=True), "
                              "or start a Docker engine before the service starts)")
        request = self.exec_request(task_id, command, timeout=timeout, secrets=secrets, **options)
        if on_output is None:
            return self.submit(request).result()

        truncated = threading.Event()

        def forward(event: TaskEvent) -> None:
            if event.causation_id == request.id:
                if event.kind == "exec.output.truncated":
                    truncated.set()
                else:
                    on_output(event)

        def live(stream: str, text: str, after_seq: int) -> None:
            # Output past the task's quota comes straight from the command; what was
            # recorded before it comes through the bus, so wait for that to pass first.
            truncated.wait(30)
            on_output(TaskEvent.new("exec.output", task_id, {"stream": stream, "data": text, "recorded": False},
                                    causation_id=request.id))

        subscription = bus.subscribe("exec.output,exec.output.truncated", task_id=task_id).subscribe(forward)
        effect = self.docker
        detach = effect.attach(request.id, live) if effect is not None else (lambda: None)
        try:
            outcome = self.submit(request).result()
            # The bus publishes a little behind the log: wait until it has passed the outcome.
            assert outcome.seq is not None
            while bus.published_seq < outcome.seq and self.is_open:
                time.sleep(0.001)
            return outcome
        finally:
            detach()
            subscription.dispose()

    def stop_command(self: ContainerSession, task_id: str, reason: str = "stopped by the user", *,
                     request_id: str | None = None) -> bool:
        """Kill the command running in the task's container now; True if one was running.

        Only that command stops (its ``exec`` outcome says why); the task and its
        container stay as they are. With ``request_id``, only if the running
        command is that ``exec.requested`` event's.
        """
        effect = self.docker
        return effect.kill(validate_task_id(task_id), reason, request_id=request_id) if effect is not None else False

    def container(self: ContainerSession, task_id: str) -> dict[str, Any]:
        """Where the task's container runs: ``{"id", "name", "workdir", "docker_host"}``.

        Raises :class:`armor_rx.errors.ContainerNotFound` (start the task first)
        or ConfigError when the session runs no containers.
        """
        effect = self.docker
        if effect is None:
            raise ConfigError(f"task {task_id!r} has no container: this session runs none "
                              "(open it with Armor(..., docker=True))")
        container = effect.container(validate_task_id(task_id))
        return {"id": container.id, "name": container.name, "workdir": effect.spec_for(task_id).workdir,
                "docker_host": os.environ.get("DOCKER_HOST")}

    def remove_container(self: ContainerSession, task_id: str, reason: str) -> Mapping[str, Any]:
        """Remove the task's container outside a request (after an interruption); ``{}`` if it has none."""
        effect = self.docker
        if effect is None:
            return {}
        validate_task_id(task_id)
        return effect.remove(task_id, lambda kind, payload: self.emit(task_id, kind, payload), reason=reason)

    def sweep(self: ContainerSession, *, now: bool = False, dry_run: bool = False,
              grace: float | None = None) -> list[SweepDecision]:
        """Sweep orphaned task containers once, as the periodic sweep does (``docker=True``).

        ``now`` ignores the grace period; ``dry_run`` removes nothing. The
        containers this session runs its tasks in are kept, adopted ones too.
        """
        effect = self.docker
        if effect is None:
            raise ConfigError("this session has no containers to sweep: open it with Armor(..., docker=True)")
        return effect.sweeper(grace=grace).sweep(now=now, dry_run=dry_run)
