"""The session: one state directory, its log, registry, hooks, effects and bus.

Everything stateful lives in an :class:`Armor` value, so two sessions on two
state directories in one process never see each other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import reactivex
import structlog
from reactivex import Observable

from armor_rx.errors import ArmorError, ConfigError, LogClosed, SnapshotError
from armor_rx.model.events import TaskEvent, to_plain
from armor_rx.model.ids import validate_task_id
from armor_rx.model.lifecycle import ACTIVE, KIND_TO_STATE, State
from armor_rx.model.patterns import kind_matcher
from armor_rx.model.registry import TaskRecord
from armor_rx.operators import DropReport, backpressure
from armor_rx.pipeline.core import Pipeline
from armor_rx.pipeline.effect_runner import RetryPolicy
from armor_rx.pipeline.effects import Effect
from armor_rx.pipeline.hooks import Hook, HookSet
from armor_rx.pipeline.reconcile import interruptions
from armor_rx.session_deadletters import DeadLetterOperations
from armor_rx.session_git import GitOperations
from armor_rx.session_hooks import HookRegistry
from armor_rx.sinks.deadletter import DeadLetterLog
from armor_rx.sinks.docker import DockerEffect, SandboxSpec
from armor_rx.sinks.docker.sweep import DEFAULT_GRACE, SweepDecision
from armor_rx.sinks.eventlog import EventLog, FsyncPolicy
from armor_rx.sinks.git import CheckpointPolicy, GitEffect, GitWorkspace
from armor_rx.sinks.git.guards import branch_name_guard
from armor_rx.sinks.snapshot import (
    SNAPSHOT_PLUS_TAIL,
    RecoveryReport,
    SnapshotStore,
    recover_registry,
)
from armor_rx.sinks.statedir import StateDir

_log = structlog.get_logger("armor_rx.session")

BackpressurePolicy = Literal["block", "drop_oldest", "drop_newest", "latest", "error"]


class Armor(HookRegistry, GitOperations, DeadLetterOperations):
    """A session over one state directory.

    >>> import tempfile
    >>> with Armor(state_dir=tempfile.mkdtemp()) as armor:
    ...     _ = armor.create_task("demo")
    ...     _ = armor.start("demo")
    ...     _ = armor.complete("demo")
    ...     armor.task("demo").state.value
    'completed'

    Opening takes an inter-process lock on the state directory
    (:class:`armor_rx.errors.StateDirLocked` if another process holds it),
    recovers the log's tail, rebuilds the task registry (see :attr:`recovery`)
    and marks tasks whose last request never finished as ``interrupted``.
    """

    def __init__(
        self,
        repo: str | Path | None = None,
        *,
        state_dir: str | Path | None = None,
        fsync: FsyncPolicy = "batch",
        effects: Sequence[Effect] = (),
        retry: RetryPolicy = RetryPolicy(),
        lock_timeout: float = 0.0,
        max_workers: int = 8,
        max_pending: int = 10_000,
        memory_events: int = 10_000,
        memory_bytes: int = 32 * 1024 * 1024,
        snapshot_every: int = 1000,
        segment_bytes: int = 64 * 1024 * 1024,
        git: bool | None = None,
        docker: bool = False,
        sandbox: SandboxSpec | None = None,
        sweep_interval: float | None = 300.0,
        sweep_grace: float = DEFAULT_GRACE,
        git_author: str = "armor-rx <armor-rx@localhost>",
        checkpoint_policy: CheckpointPolicy | None = None,
    ) -> None:
        self.repo = Path(repo).resolve() if repo is not None else None
        self.state = StateDir(StateDir.resolve(state_dir, repo), lock_timeout=lock_timeout)
        self.hooks = HookSet()
        self.recovery: RecoveryReport | None = None
        self._fsync = fsync
        self._effects: list[Effect] = list(effects)
        self._retry = retry
        self._max_workers = max_workers
        self._max_pending = max_pending
        self._memory_events = memory_events
        self._memory_bytes = memory_bytes
        self._snapshot_every = snapshot_every
        self._segment_bytes = segment_bytes
        self._log: EventLog | None = None
        self._dead: DeadLetterLog | None = None
        self._snapshots = SnapshotStore(self.state.snapshot_path)
        self._pipeline: Pipeline | None = None
        self._last_snapshot_seq = 0
        # Git is on when the session has a repository (unless git=False).
        self._git_enabled = git if git is not None else self.repo is not None
        if docker:
            # A container per task with the task's worktree mounted; the periodic
            # orphan sweep asks this session which tasks are still active.
            self._effects.append(
                DockerEffect(
                    spec=sandbox,
                    worktree_of=self._worktree_if_any,
                    state_dir=self.state.path,
                    sweep_interval=sweep_interval,
                    sweep_grace=sweep_grace,
                    task_active=self._is_active,
                    sweep_emit=lambda kind, task_id, payload: self.emit(task_id, kind, payload),
                )
            )
        if self._git_enabled and self.repo is None:
            raise ConfigError("git=True needs a repository: Armor('path/to/repo', git=True)")
        self._git_author = git_author
        self._checkpoint_policy = checkpoint_policy
        self._git: GitWorkspace | None = None
        self._snapshot_sub: reactivex.abc.DisposableBase | None = None

    # -- opening and closing ------------------------------------------------
    def open(self) -> Armor:
        """Take the lock, recover, and start the pipeline. ``with Armor(...)`` calls it."""
        self.state.acquire()
        try:
            self._log = EventLog(self.state.events_dir, fsync=self._fsync, segment_bytes=self._segment_bytes).start()
            self._dead = DeadLetterLog(self.state.deadletter_dir, fsync=self._fsync).start()
            registry, self.recovery = recover_registry(self._snapshots, self._log)
            self._last_snapshot_seq = registry.seq
            effects = list(self._effects)
            if self._git_enabled:
                assert self.repo is not None
                self._git = GitWorkspace(
                    self.repo, self.state.path, emit=self._emit_from_sink, author=self._git_author, checkpoint_policy=self._checkpoint_policy
                ).start()
                effects.insert(0, GitEffect(self._git))
                docker_effect = next((e for e in effects if isinstance(e, DockerEffect)), None)
                if docker_effect is not None:
                    self._git.freeze = docker_effect.paused  # restores run with the task's container frozen
                if not any(h.name == "git-branch-name" for h in self.hooks.list()):
                    self.hooks.add(Hook(name="git-branch-name", stage="before", operator=branch_name_guard(), priority=1_000_000))
            for effect in self._effects:  # sinks with a lifecycle start with the session
                starter = getattr(effect, "start", None)
                if callable(starter):
                    starter()
            self._pipeline = Pipeline(
                log=self._log,
                registry=registry,
                hooks=self.hooks,
                effects=effects,
                dead_letters=self._dead,
                retry=self._retry,
                max_workers=self._max_workers,
                max_pending=self._max_pending,
                memory_events=self._memory_events,
                memory_bytes=self._memory_bytes,
            ).start()
            if self.recovery is not None and self.recovery.chosen != SNAPSHOT_PLUS_TAIL and self.recovery.reason != "no snapshot":
                # Replace the snapshot we could not use, so it can never be trusted later.
                self.snapshot()
            self._reconcile()
            self._snapshot_sub = self._pipeline.bus.subscribe("*").subscribe(self._maybe_snapshot)
        except BaseException:
            self.close()
            raise
        return self

    def _maybe_snapshot(self, event: TaskEvent) -> None:
        if event.seq is not None and event.seq - self._last_snapshot_seq >= self._snapshot_every:
            self._last_snapshot_seq = self.snapshot()

    def close(self) -> None:
        """Finish in-flight work, write a snapshot, close the logs, release the lock."""
        try:
            if self._snapshot_sub is not None:
                self._snapshot_sub.dispose()
                self._snapshot_sub = None
            if self._pipeline is not None:
                self._pipeline.stop()
                with self._pipeline._registry_lock:
                    self._snapshots.save(self._pipeline.registry)
        finally:
            self._pipeline = None
            if self._git is not None:
                self._git.stop()
                self._git = None
            for effect in reversed(self._effects):
                stopper = getattr(effect, "stop", None)
                if callable(stopper):
                    stopper()
            for sink in (self._dead, self._log):
                if sink is not None:
                    sink.stop()
            self._dead = self._log = None
            self.state.release()

    def __enter__(self) -> Armor:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise LogClosed("the session is not started (use 'with Armor(...) as armor:')")
        return self._pipeline

    def _is_active(self, task_id: str) -> bool:
        try:
            return self.task(task_id).state in ACTIVE or self.task(task_id).state == State.INTERRUPTED
        except ArmorError:
            return False

    def _emit_from_sink(self, kind: str, task_id: str | None, payload: Mapping[str, Any]) -> None:
        # Sink events outside a request (e.g. a direct worktree removal) are recorded as facts.
        self.pipeline.record(TaskEvent.new(kind, task_id, payload)).result()

    @property
    def log(self) -> EventLog:
        if self._log is None:
            raise LogClosed("the session is not started (use 'with Armor(...) as armor:')")
        return self._log

    def _reconcile(self) -> None:
        """Mark tasks whose last request has no outcome as interrupted (after a crash)."""
        for event in interruptions(self.log.read(), self.pipeline.task, self.pipeline.effects):
            self.pipeline.record(event).result()
            _log.warning("task interrupted by an earlier crash", task_id=event.task_id, request=event.payload.get("request_kind"))

    # -- tasks --------------------------------------------------------------
    def create_task(self, task_id: str, *, base_ref: str = "HEAD", metadata: Mapping[str, Any] | None = None) -> TaskRecord:
        """Register a new task in state ``pending``. Raises InvalidTaskId or TaskExists."""
        validate_task_id(task_id)
        meta = {"base_ref": base_ref, **(metadata or {})}
        if self.repo is not None:
            meta.setdefault("repo", str(self.repo))
        self.pipeline.record(TaskEvent.new("task.created", task_id, {"metadata": meta})).result()
        return self.task(task_id)

    def task(self, task_id: str) -> TaskRecord:
        """The task's current record. Raises TaskNotFound."""
        return self.pipeline.task(validate_task_id(task_id))

    def tasks(self) -> list[TaskRecord]:
        pipeline = self.pipeline
        with pipeline._registry_lock:
            return [pipeline.registry.tasks[k] for k in sorted(pipeline.registry.tasks)]

    def update_task(self, task_id: str, expected_version: int, metadata: Mapping[str, Any]) -> TaskRecord:
        """Merge ``metadata`` into the task if it is still at ``expected_version``.

        Raises :class:`armor_rx.errors.ConcurrencyConflict` when someone changed the
        task meanwhile; re-read it with :meth:`task` and retry.
        """
        validate_task_id(task_id)
        event = TaskEvent.new("task.updated", task_id, {"expected_version": expected_version, "metadata": dict(metadata)})
        self.pipeline.record(event).result()
        return self.task(task_id)

    def request(self, task_id: str, kind: str, payload: Mapping[str, Any] | None = None) -> Future[TaskEvent]:
        """Submit a request event without waiting; the future gives the outcome."""
        return self.pipeline.submit(TaskEvent.new(kind, validate_task_id(task_id), payload))

    def submit(self, request: TaskEvent) -> Future[TaskEvent]:
        """Submit a request event you built yourself (so you know its id, e.g. to pick out
        the ``exec.output`` events it causes); the future gives the outcome."""
        if request.task_id is not None:
            validate_task_id(request.task_id)
        return self.pipeline.submit(request)

    def _wait(self, task_id: str, kind: str, payload: Mapping[str, Any] | None, timeout: float | None) -> TaskEvent:
        return self.request(task_id, kind, payload).result(timeout)

    def start(self, task_id: str, *, timeout: float | None = None, **payload: Any) -> TaskEvent:
        """Start a task: its before_start hooks run, then its effects. Raises Vetoed or EffectFailed."""
        return self._wait(task_id, "task.start.requested", payload, timeout)

    def complete(self, task_id: str, *, timeout: float | None = None, **payload: Any) -> TaskEvent:
        return self._wait(task_id, "task.complete.requested", payload, timeout)

    def fail(self, task_id: str, reason: str, *, timeout: float | None = None, **payload: Any) -> TaskEvent:
        return self._wait(task_id, "task.fail.requested", {"reason": reason, **payload}, timeout)

    def cancel(self, task_id: str, reason: str = "cancelled by the user", *, timeout: float | None = None) -> TaskEvent:
        return self._wait(task_id, "task.cancel.requested", {"reason": reason}, timeout)

    def interrupt(self, task_id: str, reason: str) -> TaskEvent:
        return self.pipeline.record(TaskEvent.new("task.interrupted", validate_task_id(task_id), {"reason": reason})).result()

    def resume(self, task_id: str, *, timeout: float | None = None, **payload: Any) -> TaskEvent:
        """Bring an interrupted task back: a new container made as its start asked (image, sandbox, keep), unless
        ``payload`` says otherwise; ``checkpoint=`` restores one first."""
        validate_task_id(task_id)
        started = [e for e in self.log.read(task_id=task_id, kind="task.start.requested")]
        if started:
            for key in ("image", "sandbox", "keep"):
                if key in started[-1].payload and key not in payload:
                    payload[key] = to_plain(started[-1].payload[key])
        return self._wait(task_id, "task.resume.requested", payload, timeout)

    def exec(self, task_id: str, command: Sequence[str], *, timeout: float | None = None,
             on_output: Callable[[TaskEvent], object] | None = None, **options: Any) -> TaskEvent:
        """Run ``command`` in the task's container (``docker=True``); its output arrives as ``exec.output`` events.

        ``on_output`` gets this command's ``exec.output`` events, every one of
        them before ``exec`` returns. The outcome's payload has ``exit_code``
        and, when a limit stopped it, ``reason`` and ``limit_hit``.
        """
        if not self.can_exec:
            raise ConfigError(f"cannot run {list(command)!r} in task {task_id!r}: this session runs no containers "
                              "(open it with Armor(..., docker=True), or start a Docker engine before the service starts)")
        payload: dict[str, Any] = {"command": list(command), **options}
        if timeout is not None:
            payload["timeout"] = timeout
        request = TaskEvent.new("exec.requested", validate_task_id(task_id), payload)
        if on_output is None:
            return self.submit(request).result()
        bus = self.pipeline.bus
        def forward(event: TaskEvent) -> None:
            if event.causation_id == request.id:
                on_output(event)

        subscription = bus.subscribe("exec.output", task_id=task_id).subscribe(forward)
        try:
            outcome = self.submit(request).result()
            # The bus publishes a little behind the log: wait until it has passed the outcome.
            assert outcome.seq is not None
            while bus.published_seq < outcome.seq and self._pipeline is not None:
                time.sleep(0.001)
            return outcome
        finally:
            subscription.dispose()

    @property
    def docker(self) -> DockerEffect | None:
        """The session's container effect (``docker=True``), or None."""
        return next((e for e in self._effects if isinstance(e, DockerEffect)), None)

    @property
    def can_exec(self) -> bool:
        """Whether an effect of this session runs commands (``exec``)."""
        return any(kind_matcher(e.kinds)("exec.requested") for e in self._effects)

    def stop_command(self, task_id: str, reason: str = "stopped by the user", *, request_id: str | None = None) -> bool:
        """Kill the command running in the task's container now; True if one was running.

        Only that command stops (its ``exec`` outcome says why); the task and its
        container stay as they are. With ``request_id``, only if the running
        command is that ``exec.requested`` event's.
        """
        effect = self.docker
        return effect.kill(validate_task_id(task_id), reason, request_id=request_id) if effect is not None else False

    def container(self, task_id: str) -> dict[str, Any]:
        """Where the task's container runs: ``{"id", "name", "workdir", "docker_host"}``.

        Raises :class:`armor_rx.errors.ContainerNotFound` (start the task first)
        or ConfigError when the session runs no containers.
        """
        effect = self.docker
        if effect is None:
            raise ConfigError(f"task {task_id!r} has no container: this session runs none (open it with Armor(..., docker=True))")
        container = effect.container(validate_task_id(task_id))
        return {"id": container.id, "name": container.name, "workdir": effect.spec_for(task_id).workdir,
                "docker_host": os.environ.get("DOCKER_HOST")}

    def remove_container(self, task_id: str, reason: str) -> Mapping[str, Any]:
        """Remove the task's container outside a request (after an interruption); ``{}`` if it has none."""
        effect = self.docker
        if effect is None:
            return {}
        validate_task_id(task_id)
        return effect.remove(task_id, lambda kind, payload: self.emit(task_id, kind, payload), reason=reason)

    def sweep(self, *, now: bool = False, dry_run: bool = False, grace: float | None = None) -> list[SweepDecision]:
        """Sweep orphaned task containers once, as the periodic sweep does (``docker=True``).

        ``now`` ignores the grace period; ``dry_run`` removes nothing. The
        containers this session runs its tasks in are kept, adopted ones too.
        """
        effect = self.docker
        if effect is None:
            raise ConfigError("this session has no containers to sweep: open it with Armor(..., docker=True)")
        return effect.sweeper(grace=grace).sweep(now=now, dry_run=dry_run)

    def emit(self, task_id: str | None, kind: str, payload: Mapping[str, Any] | None = None) -> TaskEvent:
        """Record a fact about a task (``exec.output``, ``note.added`` ...); returns it once durable.

        Requests (``*.requested``) and the lifecycle's own kinds (``task.started``
        ...) are refused with ConfigError: logged as facts they would move a task
        without its hooks and effects, or read as a request a crash cut off.
        """
        if task_id is not None:
            validate_task_id(task_id)
        if kind.endswith(".requested") or kind in KIND_TO_STATE:
            raise ConfigError(f"event kind {kind!r} is armor_rx's own; ask for it with start/complete/fail/cancel/resume/exec/"
                              "checkpoint (emit records facts, such as 'note.added')")
        return self.pipeline.record(TaskEvent.new(kind, task_id, payload)).result()

    def ingest(
        self,
        source: Observable[TaskEvent],
        *,
        max_items: int = 1024,
        policy: BackpressurePolicy = "block",
        name: str = "ingest",
    ) -> reactivex.abc.DisposableBase:
        """Record every event of a fast ``source`` through a bounded buffer.

        ``block`` (the default) slows the producer and loses nothing; the other
        policies drop and report the drops as ``backpressure.dropped`` events.
        """
        pipeline = self.pipeline

        def report(drop: DropReport) -> None:
            pipeline.record(TaskEvent.new("backpressure.dropped", None, {"name": drop.name, "policy": drop.policy, "dropped": drop.dropped, "total_dropped": drop.total_dropped}))

        def record(event: TaskEvent) -> None:
            # One bad event must not end the stream: it is refused and reported.
            try:
                pipeline.record(event)
            except ArmorError as exc:
                pipeline.record(TaskEvent.new("ingest.rejected", None, {"name": name, "kind": event.kind, "task_id": event.task_id, "error": str(exc)}))

        return source.pipe(backpressure(max_items, policy, on_drop=report, name=name)).subscribe(
            record,
            lambda error: _log.error("ingest failed", name=name, error=repr(error)),
        )

    # -- events ---------------------------------------------------------------
    def events(
        self,
        pattern: str = "*",
        *,
        task_id: str | None = None,
        last: int | None = None,
        since: float | None = None,
        from_seq: int | None = None,
    ) -> Observable[TaskEvent]:
        """Subscribe to events by kind pattern (``task.*``, ``exec.*``, ``*.failed``), with replay.

        See :meth:`armor_rx.pipeline.bus.EventBus.subscribe` for the replay options.
        """
        if task_id is not None:
            validate_task_id(task_id)
        return self.pipeline.bus.subscribe(pattern, task_id=task_id, last=last, since=since, from_seq=from_seq)

    def history(self, *, task_id: str | None = None, kind: str | None = None, start_seq: int = 1) -> Iterable[TaskEvent]:
        """Logged events, oldest first, from the durable log."""
        return self.log.read(start_seq, task_id=task_id, kind=kind)

    def wait_idle(self, timeout: float | None = 10.0) -> bool:
        """Wait until in-flight requests are done and every event reached the bus."""
        return self.pipeline.wait_idle(timeout)

    def snapshot(self, timeout: float = 10.0) -> int:
        """Write the registry snapshot now; returns the seq it is at.

        The registry runs a little ahead of the disk (events are applied as
        they are numbered), so the snapshot is written only once everything it
        contains is durable: a snapshot never describes events a crash could
        still take away.
        """
        pipeline = self.pipeline
        with pipeline._registry_lock:
            registry = pipeline.registry.copy()
        deadline = time.monotonic() + timeout
        while self.log.last_seq < registry.seq:
            if time.monotonic() > deadline:
                raise SnapshotError(f"events up to seq {registry.seq} did not become durable within {timeout:g}s; snapshot not written")
            time.sleep(0.0005)
        self._snapshots.save(registry)
        return registry.seq
