"""The session: one state directory, its log, registry, hooks, effects and bus.

Everything stateful lives in an :class:`Armor` value, so two sessions on two
state directories in one process never see each other. What the session is
made of (which sinks, in which order) is decided in one place,
:mod:`armor_rx.session.assembly`; this module is the API over it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import reactivex
import structlog
from reactivex import Observable

from armor_rx.errors import ArmorError, ConfigError, LogClosed, SnapshotError
from armor_rx.model.events import TaskEvent, to_plain
from armor_rx.model.ids import validate_task_id
from armor_rx.model.lifecycle import ACTIVE, KIND_TO_STATE, State
from armor_rx.model.registry import TaskRecord
from armor_rx.model.secrets import SecretSource, resolve
from armor_rx.model.services import services_payload
from armor_rx.operators import CheckpointTriggers, DropReport, backpressure
from armor_rx.pipeline.core import Pipeline
from armor_rx.pipeline.hooks import HookSet
from armor_rx.pipeline.reconcile import interruptions, stranded
from armor_rx.session.assembly import Assembly, assemble
from armor_rx.session.config import SessionConfig, SessionOptions
from armor_rx.session.containers import ContainerOperations
from armor_rx.session.deadletters import DeadLetterOperations
from armor_rx.session.git import GitOperations
from armor_rx.session.hooks import HookRegistry
from armor_rx.session.interruption import TaskWatch, interrupt_all, interrupt_task
from armor_rx.session.secrets import SecretVault
from armor_rx.session.space import SpaceGuard
from armor_rx.sinks.eventlog import EventLog
from armor_rx.sinks.git import GitWorkspace
from armor_rx.sinks.snapshot import SNAPSHOT_PLUS_TAIL, RecoveryReport
from armor_rx.sinks.statedir import StateDir

if TYPE_CHECKING:  # typing.Unpack is new in Python 3.11; the annotation is never evaluated
    from typing_extensions import Unpack

_log = structlog.get_logger("armor_rx.session")

BackpressurePolicy = Literal["block", "drop_oldest", "drop_newest", "latest", "error"]

# What a resume keeps of the sandbox its task last ran in (see resume).
_SANDBOX_KEPT = ("read_only", "volumes", "user", "allow_root")

_NOT_OPEN = "the session is not started (use 'with Armor(...) as armor:')"


class Armor(HookRegistry, GitOperations, ContainerOperations, DeadLetterOperations):
    """A session over one state directory.

    >>> import tempfile
    >>> with Armor(state_dir=tempfile.mkdtemp()) as armor:
    ...     _ = armor.create_task("demo")
    ...     _ = armor.start("demo")
    ...     _ = armor.complete("demo")
    ...     armor.task("demo").state.value
    'completed'

    Options come as a :class:`SessionConfig` (``Armor(repo, config=...)``) or
    as its fields by keyword (``Armor(repo, docker=True)``); keywords given
    with a config override its fields. Raises ConfigError for ``git=True``
    without a repository.

    Opening takes an inter-process lock on the state directory
    (:class:`armor_rx.errors.StateDirLocked` if another process holds it),
    recovers the log's tail, rebuilds the task registry (see :attr:`recovery`)
    and marks tasks whose last request never finished as ``interrupted``.
    """

    def __init__(self, repo: str | Path | None = None, *, config: SessionConfig | None = None,
                 **options: Unpack[SessionOptions]) -> None:
        self.config = replace(config, **options) if config is not None else SessionConfig(**options)
        self.repo = Path(repo).resolve() if repo is not None else None
        self.state = StateDir(StateDir.resolve(self.config.state_dir, repo), lock_timeout=self.config.lock_timeout)
        self.config.git_enabled(self.repo)  # ConfigError now, not at open()
        self.hooks = HookSet(classic=bool(self.config.classic_hooks))
        # Secret values given to tasks: in this process's memory only (see SecretVault).
        self.secrets = SecretVault()
        self.space = SpaceGuard(self.state.path, reserve=self.config.disk_reserve, cap=self.config.state_cap)
        self.recovery: RecoveryReport | None = None
        self._assembly: Assembly | None = None
        self._last_snapshot_seq = 0
        self._snapshot_sub: reactivex.abc.DisposableBase | None = None
        self._watch: TaskWatch | None = None

    # -- opening and closing ------------------------------------------------
    def open(self) -> Armor:
        """Take the lock, recover, and start the pipeline. ``with Armor(...)`` calls it."""
        self.state.acquire()
        try:
            self._assembly = assemble(self.config, self.state, self.repo, self.hooks,
                                      task_active=self._is_active, emit=self.emit, secrets=self.secrets,
                                      active_tasks=self._active_task_ids)
            self.recovery = self._assembly.recovery
            self._last_snapshot_seq = self._assembly.pipeline.registry.seq
            if self.recovery.chosen != SNAPSHOT_PLUS_TAIL and self.recovery.reason != "no snapshot":
                # Replace the snapshot we could not use, so it can never be trusted later.
                self.snapshot()
            self._reconcile()
            self._report_log_damage()
            self._snapshot_sub = self.pipeline.bus.subscribe("*").subscribe(self._maybe_snapshot)
            if self._assembly.docker is not None:
                self._watch = TaskWatch(self, idle_timeout=self.config.task_idle_timeout).start()
        except BaseException:
            self.close()
            raise
        return self

    def _maybe_snapshot(self, event: TaskEvent) -> None:
        if event.seq is not None and event.seq - self._last_snapshot_seq >= self.config.snapshot_every:
            try:
                self._last_snapshot_seq = self.snapshot()
            except ArmorError as exc:
                # Raised here it would end this subscription for good: the next event tries again.
                _log.warning("periodic snapshot not written", error=str(exc))
        elif event.task_id is not None and (event.kind in KIND_TO_STATE or event.kind == "task.updated"):
            # A row of 'armor-rx tasks' changed: refresh its view now rather than at the next snapshot,
            # so the command stays fast while an owner runs (it is only written if no event follows yet).
            pipeline = self.pipeline
            with pipeline._registry_lock:
                registry = pipeline.registry.copy()
            try:
                self.assembly.save_view(registry)
            except Exception as exc:  # noqa: BLE001 - raised here it would end the snapshots' subscription too
                _log.warning("tasks view not written", error=repr(exc))

    def close(self, *, cause: str = "session closed", reason: str | None = None) -> None:
        """Stop the tasks this session runs containers for, finish in-flight work, write a snapshot, stop every sink, release the lock.

        Each task with a container here is interrupted gracefully (its command
        stopped, a final checkpoint, its container removed, ``task.interrupted``
        with ``cause``), all within the config's ``stop_timeout``; ``resume``
        brings it back. Tasks without a container are left as they are.
        """
        try:
            if self._watch is not None:
                self._watch.stop()
                self._watch = None
            if self._assembly is not None:
                try:
                    interrupt_all(self, cause, reason or f"the armor session stopped ({cause})")
                except Exception as exc:  # noqa: BLE001 - closing goes on: what could not be stopped is reconciled on the next open
                    _log.warning("could not stop every task gracefully", cause=cause, error=str(exc))
            if self._snapshot_sub is not None:
                self._snapshot_sub.dispose()
                self._snapshot_sub = None
            assembly, self._assembly = self._assembly, None
            if assembly is not None:
                assembly.stop()
        finally:
            self.state.release()

    def _abandon(self) -> None:
        """Stop as a killed process would; see :func:`armor_rx.testing.crash`."""
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        assembly, self._assembly = self._assembly, None
        if assembly is not None:
            assembly.abandon()
        self.state.release()

    def __enter__(self) -> Armor:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        """Whether the session is open (between :meth:`open` and :meth:`close`)."""
        return self._assembly is not None

    @property
    def assembly(self) -> Assembly:
        """The open session's sinks and pipeline. Raises LogClosed when it is not open."""
        if self._assembly is None:
            raise LogClosed(_NOT_OPEN)
        return self._assembly

    @property
    def pipeline(self) -> Pipeline:
        return self.assembly.pipeline

    @property
    def log(self) -> EventLog:
        return self.assembly.log

    @property
    def git(self) -> GitWorkspace:
        """The git workspace (branches, worktrees, checkpoints) of this session's repository."""
        git = self._assembly.git if self._assembly is not None else None
        if git is None:
            raise ConfigError("this session has no git workspace: open it on a repository, Armor('path/to/repo')")
        return git

    def _is_active(self, task_id: str) -> bool:
        try:
            return self.task(task_id).state in ACTIVE or self.task(task_id).state == State.INTERRUPTED
        except ArmorError:
            return False

    def _active_task_ids(self) -> list[str]:
        return [t.task_id for t in self.tasks() if self._is_active(t.task_id)]

    def conflicts(self) -> list[dict[str, Any]]:
        """The conflicts between active tasks known now, one entry per pair (as ``conflict.detected`` says).

        Empty when the session has no git workspace or ``detect_conflicts=False``.
        """
        watcher = self.assembly.conflicts
        return watcher.conflicts() if watcher is not None else []

    def _reconcile(self) -> None:
        """Mark tasks whose last request has no outcome as interrupted (after a crash).

        The registry folds the requests in flight (the snapshot keeps them), so
        this reads no log."""
        with self.pipeline._registry_lock:
            pending = self.pipeline.registry.requests.pending()
        found = list(interruptions(pending, self.pipeline.task, self.pipeline.effects))
        # Tasks that ran in a container of the dead session with no request in flight were cut off too.
        found += stranded(self.tasks(), {e.task_id for e in found if e.task_id is not None}, self.pipeline.effects)
        # Recorded together: one group commit for a hundred tasks rather than a hundred fsyncs in a row.
        for event, future in [(event, self.pipeline.record(event)) for event in found]:
            future.result()
            _log.warning("task interrupted by an earlier crash", task_id=event.task_id, request=event.payload.get("request_kind"))

    def _report_log_damage(self) -> None:
        """Record what opening the log set aside: damaged bytes (kept, copied) and a cut torn line."""
        for damage in self.log.take_new_damage():
            self.pipeline.record(TaskEvent.new("log.corruption.quarantined", None, damage.describe())).result()
        for repair in self.log.repairs:
            self.pipeline.record(TaskEvent.new("log.tail.repaired", None, repair.describe())).result()

    # -- tasks --------------------------------------------------------------
    def create_task(self, task_id: str, *, base_ref: str = "HEAD", metadata: Mapping[str, Any] | None = None) -> TaskRecord:
        """Register a new task in state ``pending``. Raises InvalidTaskId or TaskExists."""
        validate_task_id(task_id)
        self.space.check("task.created")
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
        self.space.check(kind)
        return self.pipeline.submit(TaskEvent.new(kind, validate_task_id(task_id), payload))

    def submit(self, request: TaskEvent) -> Future[TaskEvent]:
        """Submit a request event you built yourself (so you know its id, e.g. to pick out
        the ``exec.output`` events it causes); the future gives the outcome."""
        if request.task_id is not None:
            validate_task_id(request.task_id)
        self.space.check(request.kind)
        return self.pipeline.submit(request)

    def _wait(self, task_id: str, kind: str, payload: Mapping[str, Any] | None, timeout: float | None) -> TaskEvent:
        return self.request(task_id, kind, payload).result(timeout)

    def start(self, task_id: str, *, timeout: float | None = None, secrets: Mapping[str, SecretSource] | None = None,
              **payload: Any) -> TaskEvent:
        """Start a task: its before_start hooks run, then its effects. Raises Vetoed or EffectFailed.

        ``secrets`` maps environment variable names to references (``env://VAR``,
        ``file://PATH``) or :class:`~armor_rx.Secret` values: every command of the
        task gets them in its environment; the log records only the references.
        ``services`` (a list of :class:`~armor_rx.ServiceSpec` or their mappings)
        are started in its container once it runs and supervised until it ends
        (with ``docker=True``; see :mod:`armor_rx.sinks.docker.supervise`).
        """
        if payload.get("checkpoint_policy") is not None:  # ConfigError now, before anything is logged
            payload["checkpoint_policy"] = CheckpointTriggers.from_payload(
                payload["checkpoint_policy"].to_payload() if isinstance(payload["checkpoint_policy"], CheckpointTriggers)
                else payload["checkpoint_policy"]).to_payload()
        if payload.get("services") is not None:
            payload["services"] = services_payload(payload["services"])  # ConfigError now, nothing logged
        return self._wait(task_id, "task.start.requested", self.with_secrets(task_id, payload, secrets), timeout)

    def with_secrets(self, task_id: str, payload: Mapping[str, Any], secrets: Mapping[str, SecretSource] | None) -> dict[str, Any]:
        """``payload`` for a start or resume of ``task_id`` that gives it ``secrets`` (resolved now; ConfigError if one cannot be read)."""
        out = dict(payload)
        refs = self.secrets.bind_task(validate_task_id(task_id), secrets)
        if refs:
            out["secret_refs"] = {**dict(out.get("secret_refs") or {}), **refs}
        return out

    def complete(self, task_id: str, *, timeout: float | None = None, **payload: Any) -> TaskEvent:
        self.check_complete(task_id, payload.get("merge", "none"))
        return self._wait(task_id, "task.complete.requested", payload, timeout)

    def check_complete(self, task_id: str, merge: object = "none") -> None:
        """Raise if completing with ``merge`` is bound to be refused (see :meth:`GitWorkspace.check_completable`).

        :meth:`complete` and the service call it before the request is logged,
        so the refusal leaves the task running instead of failing it.
        """
        git = self._assembly.git if self._assembly is not None else None
        if git is not None:
            git.check_completable(validate_task_id(task_id), merge)

    def fail(self, task_id: str, reason: str, *, timeout: float | None = None, **payload: Any) -> TaskEvent:
        return self._wait(task_id, "task.fail.requested", {"reason": reason, **payload}, timeout)

    def cancel(self, task_id: str, reason: str = "cancelled by the user", *, timeout: float | None = None) -> TaskEvent:
        return self._wait(task_id, "task.cancel.requested", {"reason": reason}, timeout)

    def interrupt(self, task_id: str, reason: str, *, cause: str = "user", checkpoint: bool = True) -> TaskEvent:
        """Stop the task gracefully and mark it ``interrupted`` (resumable).

        Its running command is stopped (and no queued one starts), a final
        checkpoint is taken (``checkpoint=False``: none), its container is
        removed, and ``task.interrupted`` records ``reason``, ``cause`` and the
        checkpoint — within the config's ``stop_timeout``. Raises
        IllegalTransition when the task is not active.
        """
        return interrupt_task(self, validate_task_id(task_id), reason, cause=cause, checkpoint=checkpoint)

    def resume(self, task_id: str, *, timeout: float | None = None, secrets: Mapping[str, SecretSource] | None = None,
               **payload: Any) -> TaskEvent:
        """Bring an interrupted task back: a new container made as its start asked (image, sandbox, keep), unless
        ``payload`` says otherwise; ``checkpoint=`` restores one first.

        A ``running`` task whose container has died (the engine restarted while
        it was idle) is recorded ``interrupted`` first, so it can be resumed.

        Secrets the task was started with are still held if this session gave
        them; a session opened since has only their references, and reads the
        ones it can (``file://``, ``env://`` set in this process) — any other
        must be given again in ``secrets``, or ConfigError says which.
        """
        validate_task_id(task_id)
        if payload.get("checkpoint") is not None:
            self.check_restorable(task_id, str(payload["checkpoint"]))  # CheckpointIncomplete: nothing logged or changed
        effect = self.docker
        if effect is not None and self.task(task_id).state is State.RUNNING and not effect.alive(task_id):
            # Its container died while no command ran (the engine restarted): that is an interruption.
            self.interrupt(task_id, "its container is gone (the Docker engine restarted, or the container was removed)",
                           cause="engine gone")
        started = [e for e in self.log.read(task_id=task_id, kind="task.start.requested")]
        if started:
            for key in ("image", "sandbox", "keep", "secret_refs", "checkpoint_policy", "services"):
                if key in started[-1].payload and key not in payload:
                    payload[key] = to_plain(started[-1].payload[key])
        if "sandbox" not in payload or isinstance(payload["sandbox"], Mapping):
            # The sandbox is the task's, not the session's: a session opened with another default (the
            # service restarted) must not make a read-only root of a writable one, or drop its volumes,
            # or its checkpoints would stop saving the container. What the engine was given is recorded.
            ran = [e for e in self.log.read(task_id=task_id, kind="container.started")]
            recorded = to_plain(ran[-1].payload.get("settings")) if ran else None
            settings: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
            kept = {k: to_plain(settings[k]) for k in _SANDBOX_KEPT if k in settings}
            if kept:
                payload["sandbox"] = {**kept, **dict(payload.get("sandbox") or {})}
        given = dict(secrets or {})
        for name in self.secrets.missing(task_id, [n for n in dict(payload.get("secret_refs") or {}) if n not in given]):
            reference = str(payload["secret_refs"][name])
            try:
                given[name] = resolve(name, reference)
            except ConfigError:
                raise ConfigError(f"task {task_id!r} was started with secret {name} ({reference}), which this session "
                                  f"cannot read; give it again: --secret {name}=env://VARIABLE (or file://PATH)") from None
        return self._wait(task_id, "task.resume.requested", self.with_secrets(task_id, payload, given), timeout)

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
        self.assembly.save_snapshot(registry)
        return registry.seq
