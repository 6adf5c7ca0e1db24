"""DockerEffect: the Docker sink as a pipeline effect.

* ``task.start.requested`` / ``task.resume.requested``: create and start the
  task's hardened container with its worktree at ``/workspace``; the effective
  settings go into a ``container.started`` event.
* ``exec.requested`` (payload ``command``, optional ``timeout``, ``user``,
  ``env``): run the command, stream ``exec.output``, record ``exec.exited``
  (and ``container.oom`` when the memory limit killed it).
* ``checkpoint.requested``: the git effect made the checkpoint (and, through
  :meth:`DockerEffect.capture`, a snapshot of what the container holds outside
  the worktree); afterwards the task's snapshots no checkpoint names (pruned,
  or left by a crash) are removed (see :mod:`.snapshots`).
* ``checkpoint.restore.requested`` (after the git effect rewrote the
  worktree): when the checkpoint holds a snapshot, the task's container is
  replaced by a new one made from it (image and volumes); then the files armor
  wrote are given to the shared group again, with the container paused, so the
  agent can write them (see :mod:`.access`).
* ``task.complete/fail/cancel.requested``: stop and remove the container,
  unless the spec (or the request payload) says ``keep``.

Idempotent by request id: a start finds the container labelled with its
request id instead of making a second; an exec whose result is stored (under
``<state_dir>/docker/requests/<task>/``) is not run again. A task's stored
results are removed when it ends (complete, fail, cancel): no request of it
can come again then. A stored result that does not parse is a
:class:`~armor_rx.errors.DockerError`, never a reason to run the command twice.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import docker.errors
import orjson
from docker.models.containers import Container

from dataclasses import dataclass

from armor_rx.errors import CheckpointIncomplete, ConfigError, ContainerNotFound, DockerError, EngineLost, readable
from armor_rx.model.events import TaskEvent
from armor_rx.model.ids import validate_task_id
from armor_rx.model.secrets import Secret
from armor_rx.pipeline.effects import EffectContext
from armor_rx.sinks._atomic import write_atomic
from armor_rx.sinks._log import LazyLogger
from armor_rx.sinks.docker.containers import (
    SessionIdentity,
    create_task_container,
    containers_by_task,
    find_containers,
    mark_adopted,
    remove_container,
    session_alive,
    task_labels,
)
from armor_rx.sinks.docker.access import share_worktree
from armor_rx.sinks.docker.adopt import adopt_beside
from armor_rx.sinks.docker.engine import Engine, is_engine_lost
from armor_rx.sinks.docker.exec import ExecRun, Live
from armor_rx.sinks.docker.identity import check_exec_user, resolve_identity
from armor_rx.sinks.docker.quota import DEFAULT_OUTPUT_QUOTA, OutputQuota
from armor_rx.sinks.docker.snapshots import ContainerSnapshots, SnapshotRemoval
from armor_rx.sinks.docker.spec import SandboxSpec
from armor_rx.sinks.docker.sweep import DEFAULT_GRACE, DEFAULT_INTERVAL, SweepEmit, Sweeper

_REQUEST_ID = re.compile(r"[0-9A-Za-z_-]{1,100}")
_logger = LazyLogger("armor_rx.docker")


@dataclass(frozen=True)
class TaskClock:
    """The times that bound one task's container (``time.monotonic()`` values): see :meth:`DockerEffect.clocks`."""

    started: float  # when its container started
    last_used: float  # when a command last started or ended in it (or it started)
    busy: bool  # a command runs in it now
    wall_clock: float  # its spec's limit, in seconds from ``started``
    held: str | None = None  # why its commands may not start (see DockerEffect.hold); None: they may


# Why a task's commands are held once its wall clock passed (the session's watch interrupts it next).
WALL_CLOCK_HELD = "the task's wall-clock limit passed"


class SecretKeeper(Protocol):
    """Where the session holds the secret values of its tasks (:class:`armor_rx.session.secrets.SecretVault`)."""

    def for_exec(self, task_id: str, request_id: str) -> Mapping[str, Secret]: ...

    def forget(self, task_id: str) -> None: ...


class DockerEffect:
    """One hardened container per task. Use as a context manager (or start()/stop()).

    ``worktree_of(task_id)`` gives the directory to mount (for a git session:
    ``lambda t: armor.worktree(t)``); ``None`` or a missing directory mounts
    nothing. A start payload may carry ``sandbox`` overrides and ``keep``.
    With ``sweep_interval`` set, :meth:`start` also runs an orphan
    :class:`Sweeper` every so many seconds until :meth:`stop`; ``task_active``
    (e.g. ``lambda t: armor.task(t).state in ACTIVE``) lets it remove
    containers of this state directory whose task is over.
    ``secrets`` gives each command its secret values: put in that command's
    environment (never the container's, which the engine shows to anyone who
    inspects it) and masked in its output; a task's are forgotten when its
    container goes. ``output_quota`` bounds the bytes of output the log
    records per task (see :mod:`armor_rx.sinks.docker.quota`).
    """

    name = "docker"
    kinds = ("task.start.requested,task.resume.requested,exec.requested,"
             "checkpoint.requested,checkpoint.restore.requested,"
             "task.complete.requested,task.fail.requested,task.cancel.requested")

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        spec: SandboxSpec | None = None,
        worktree_of: Callable[[str], Path | None] | None = None,
        state_dir: str | Path | None = None,
        session: SessionIdentity | None = None,
        output_buffer: int = 64,
        sweep_interval: float | None = None,
        sweep_grace: float = DEFAULT_GRACE,
        task_active: Callable[[str], bool] | None = None,
        sweep_emit: SweepEmit | None = None,
        secrets: SecretKeeper | None = None,
        output_quota: int | None = DEFAULT_OUTPUT_QUOTA,
    ) -> None:
        self._engine = engine
        self._own_engine = engine is None
        self.spec = spec or SandboxSpec()
        self.worktree_of = worktree_of
        self.state_dir = Path(state_dir).resolve() if state_dir is not None else None
        self.session = session or SessionIdentity.current()
        self.output_buffer = output_buffer
        self._specs: dict[str, SandboxSpec] = {}
        self._containers: dict[str, Container] = {}
        self._running: dict[str, ExecRun] = {}
        self._running_request: dict[str, str] = {}  # task -> id of the exec request it is running
        self._cancelled: dict[str, str] = {}  # exec request id -> why, for requests stopped before they ran
        self._kill_messages: dict[str, str] = {}  # task -> why its running command was stopped
        self._started_at: dict[str, float] = {}  # task -> when its container started (monotonic)
        self._last_used: dict[str, float] = {}  # task -> when a command last started or ended (monotonic)
        self._held: dict[str, str] = {}  # task -> why none of its commands may start (it is being interrupted)
        self._lock = threading.Lock()
        self._sweep_options = (sweep_interval, sweep_grace, task_active, sweep_emit)
        self._sweeper: Sweeper | None = None
        self.secrets = secrets
        self.quota = OutputQuota(output_quota, state_dir=self.state_dir)
        self._taps: dict[str, Live] = {}  # exec request id -> whoever is attached to its output past the quota
        self.snapshots = ContainerSnapshots(lambda: self.engine, self.state_dir, self.session)
        # Set by the session's assembly when it has checkpoints (git): the record of one checkpoint
        # (its ``container`` part), the snapshot ids the task's checkpoints name, and the lock they are made under.
        self.checkpoint_part: Callable[[str, str], Mapping[str, Any] | None] | None = None
        self.snapshot_refs: Callable[[str], Collection[str]] | None = None
        self.task_lock: Callable[[str], AbstractContextManager[object]] = lambda _task: nullcontext()

    # -- lifecycle ------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine.connect()
        return self._engine

    def start(self) -> DockerEffect:
        """Connect (DockerUnavailable now, not on the first request); start the periodic sweep if asked."""
        engine = self.engine
        interval = self._sweep_options[0]
        if interval is not None and self._sweeper is None:
            try:
                self._sweeper = self.sweeper(interval=interval).start()
            except BaseException:
                self.stop()  # a sink that refuses to start leaves nothing open (see Lifecycle)
                raise
        return self

    def sweeper(self, *, grace: float | None = None, interval: float | None = None) -> Sweeper:
        """A sweep for this session: its registry says which tasks are active, and
        the containers it runs active tasks in (adopted ones too) are never
        taken for orphans."""
        default_interval, default_grace, task_active, sweep_emit = self._sweep_options
        return Sweeper(
            self.engine,
            grace=default_grace if grace is None else grace,
            interval=interval or default_interval or DEFAULT_INTERVAL,
            is_active=task_active,
            state_dir=str(self.state_dir) if self.state_dir is not None else None,
            emit=sweep_emit,
            in_use=self._holds,
            snapshots=lambda dry_run: self.sweep_snapshots(dry_run=dry_run),
        )

    def _holds(self, container_id: str) -> bool:
        """Whether this session runs an active task in the container (a finished task's kept one is not in use)."""
        task_active = self._sweep_options[2]
        with self._lock:
            tasks = [task for task, c in self._containers.items() if c.id == container_id]
        return any(task_active is None or task_active(task) for task in tasks)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        for run in list(self._running.values()):
            run.kill("interrupted")
        if self._own_engine and self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> DockerEffect:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the effect -------------------------------------------------------------
    def apply(self, ctx: EffectContext) -> Mapping[str, Any] | None:
        request = ctx.request
        task_id = request.task_id
        if task_id is None:
            raise DockerError(f"request {request.kind!r} ({request.id}) has no task id")
        try:
            if request.kind in ("task.start.requested", "task.resume.requested"):
                return self._start(ctx, task_id)
            if request.kind == "exec.requested":
                return self._exec(ctx, task_id)
            if request.kind == "checkpoint.requested":
                return self._drop_unnamed(ctx, task_id)
            if request.kind == "checkpoint.restore.requested":
                replaced = self._restore_container(ctx, task_id)
                return {**self._reshare(ctx, task_id), **replaced}
        except Exception as exc:
            if is_engine_lost(exc):  # transient: retried with backoff, then dead-lettered for a redrive
                raise EngineLost(f"handling {request.kind} for task {task_id!r}", readable(exc)) from None
            raise
        keep = bool(request.payload.get("keep", self.spec_for(task_id).keep))
        if self.secrets is not None:
            self.secrets.forget(task_id)  # the task is over: nothing will run with them again
        removed = self._remove(task_id, ctx.emit, reason=request.kind.split(".")[1], keep=keep)
        dropped = self._drop_snapshots(ctx, task_id, ())
        self._drop_results(task_id)
        return {**removed, **dropped}

    # -- checkpoints: the part outside the worktree (see .snapshots) ------------------
    def _made_as(self, task_id: str) -> SandboxSpec:
        """The task's spec; for a task this session did not start (the service restarted since), as its container says.

        Only what decides the container part is read back (root writable, volumes): enough to save and
        restore it the way it was made.
        """
        known = self._specs.get(task_id)
        if known is not None:
            return known
        try:
            attrs = self.container(task_id).attrs
        except ContainerNotFound:
            return self.spec
        volumes = [str(m["Destination"]) for m in attrs.get("Mounts") or [] if m.get("Type") == "volume"]
        read_only = bool((attrs.get("HostConfig") or {}).get("ReadonlyRootfs", True))
        return self.spec.with_overrides({"read_only": read_only, "volumes": volumes})

    def wants(self, task_id: str) -> bool:
        """Whether the task's checkpoints must save its container too (a writable root, or volumes)."""
        return self._made_as(task_id).outside_changes

    def capture(self, task_id: str, checkpoint_id: str) -> Mapping[str, Any]:
        """Snapshot the task's container for checkpoint ``checkpoint_id`` (called frozen, before the git commit)."""
        spec = self._made_as(task_id)
        try:
            container = self.container(task_id)
            container.reload()
        except (ContainerNotFound, docker.errors.NotFound):
            container = None
        if container is None or container.status not in ("running", "paused"):
            # Said in the record, so a rollback to it knows it brings back the worktree only.
            return {"snapshot": None, "image": None, "volumes": {},
                    "note": "the task had no running container; only the worktree was saved"}
        try:
            return self.snapshots.capture(task_id, checkpoint_id, container, spec)
        except Exception as exc:
            if is_engine_lost(exc):
                raise EngineLost(f"saving the container of task {task_id!r}", readable(exc)) from None
            raise

    def check_restorable(self, task_id: str, checkpoint_id: str, part: Mapping[str, Any] | None) -> None:
        """Raise :class:`CheckpointIncomplete` when the container part ``part`` of a checkpoint is not all there."""
        if not part or not part.get("snapshot"):
            return
        try:
            missing = self.snapshots.missing(task_id, part)
        except Exception as exc:
            if is_engine_lost(exc):
                raise EngineLost(f"checking the snapshot of task {task_id!r}", readable(exc)) from None
            raise
        if missing:
            raise CheckpointIncomplete(task_id, checkpoint_id, missing)

    def _drop_snapshots(self, ctx: EffectContext, task_id: str, keep: Collection[str]) -> dict[str, Any]:
        try:
            removed = self.snapshots.sweep_task(task_id, keep)
        except Exception as exc:  # noqa: BLE001 - the request's work is done; 'armor-rx gc' sweeps what is left
            if not is_engine_lost(exc) and not isinstance(exc, DockerError):
                raise
            ctx.emit("snapshot.remove_failed", {"error": readable(exc)})
            return {}
        return self._report_snapshots(ctx.emit, removed)

    @staticmethod
    def _report_snapshots(emit: Callable[[str, Mapping[str, Any]], object],
                          removed: list[SnapshotRemoval]) -> dict[str, Any]:
        gone = [r for r in removed if r.removed]
        if gone:
            emit("snapshot.removed", {"snapshots": [r.to_payload() for r in gone]})
        return {"snapshots_removed": [r.snapshot for r in gone]} if gone else {}

    def _drop_unnamed(self, ctx: EffectContext, task_id: str) -> dict[str, Any]:
        """After a checkpoint: remove the task's snapshots its checkpoints no longer name (pruned, or a crash's)."""
        if self.snapshot_refs is None:
            return {}
        with self.task_lock(task_id):
            return self._drop_snapshots(ctx, task_id, set(self.snapshot_refs(task_id)))

    def sweep_snapshots(self, *, dry_run: bool = False) -> list[SnapshotRemoval]:
        """Every snapshot of this state directory no checkpoint names, and those of tasks that are over (``gc``)."""
        task_active = self._sweep_options[2] or (lambda _task: True)
        refs = self.snapshot_refs or (lambda _task: ())
        return self.snapshots.sweep(is_active=task_active, referenced=refs, lock=self.task_lock, dry_run=dry_run)

    def _restore_container(self, ctx: EffectContext, task_id: str) -> dict[str, Any]:
        """Replace the task's container with one made from the checkpoint's snapshot (if it holds one)."""
        if self.checkpoint_part is None:
            return {}
        part = self.checkpoint_part(task_id, str(ctx.request.payload.get("checkpoint")))
        if not part or not part.get("snapshot"):
            return {"container_restored": False} if part else {}
        existing = [c for c in find_containers(self.engine, task_id=task_id, request_id=ctx.request.id) if c.status == "running"]
        if existing:  # re-delivered after a crash: the new container is already there
            with self._lock:
                self._containers[task_id] = existing[0]
            return {"container_restored": True, "container": existing[0].short_id}
        try:
            old: Container | None = self.container(task_id)
        except ContainerNotFound:
            old = None
        spec = self._made_as(task_id)
        if not self.snapshots.exists(task_id, part):  # checked before the worktree was restored; gone since
            raise DockerError(f"task {task_id!r}: the container snapshot of checkpoint "
                              f"{ctx.request.payload.get('checkpoint')} went away during the rollback (removed by "
                              "'docker rmi' or a prune); its worktree was restored, its container was not")
        worktree = self.worktree_of(task_id) if self.worktree_of is not None else None
        worktree = worktree if worktree is not None and Path(worktree).is_dir() else None
        labels = task_labels(task_id, self.session, request_id=ctx.request.id, worktree=worktree, state_dir=self.state_dir)
        container, effective, volumes = self.snapshots.start_from(task_id, part, spec, labels=labels, worktree=worktree)
        with self._lock:
            self._containers[task_id] = container
            self._started_at[task_id] = time.monotonic()
        if old is not None and old.id != container.id and remove_container(old, timeout=spec.stop_timeout):
            ctx.emit("container.removed", {"container": old.id, "name": old.name, "reason": "replaced by a restore",
                                           "oom_killed": False})
        ctx.emit("container.started", {"container": container.id, "name": container.name, "labels": labels,
                                       "settings": effective, "engine": self.engine.info.to_payload()})
        ctx.emit("container.restored", {"checkpoint": ctx.request.payload.get("checkpoint"),
                                        "snapshot": part.get("snapshot"),
                                        "image": part.get("image"), "volumes": volumes, "container": container.id,
                                        "replaced": old.id if old is not None else None})
        return {"container_restored": True, "container": container.short_id}

    def _resume_snapshot(self, ctx: EffectContext, task_id: str) -> Mapping[str, Any] | None:
        """The container part of the checkpoint a resume asks for (``checkpoint`` in its payload), if it saved one."""
        checkpoint = ctx.request.payload.get("checkpoint")
        if ctx.request.kind != "task.resume.requested" or not checkpoint or self.checkpoint_part is None:
            return None
        part = self.checkpoint_part(task_id, str(checkpoint))
        if not part or not part.get("snapshot"):
            return None
        self.check_restorable(task_id, str(checkpoint), part)
        return part

    def container_changes(self, task_id: str, checkpoint: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The task container's changes outside its mounts (:meth:`ContainerSnapshots.changes`); None without one."""
        try:
            container = self.container(task_id)
            container.reload()
        except (ContainerNotFound, docker.errors.NotFound):
            return None
        return self.snapshots.changes(container, checkpoint)

    def reconcile(self, request: TaskEvent) -> Mapping[str, Any]:
        """After a crash: is the task's container still there?"""
        if request.task_id is None:
            return {}
        found = find_containers(self.engine, task_id=request.task_id)
        return {"containers": [{"id": c.short_id, "status": c.status} for c in found]}

    def reconcile_many(self, requests: Sequence[TaskEvent]) -> list[Mapping[str, Any]]:
        """:meth:`reconcile` for many tasks with one container listing (no inspect per container)."""
        by_task = containers_by_task(self.engine)
        return [{} if r.task_id is None else {"containers": by_task.get(r.task_id, [])} for r in requests]

    def spec_for(self, task_id: str) -> SandboxSpec:
        return self._specs.get(task_id, self.spec)

    def container(self, task_id: str) -> Container:
        """The task's container. Raises ContainerNotFound."""
        with self._lock:
            known = self._containers.get(task_id)
        if known is not None:
            return known
        found = [c for c in find_containers(self.engine, task_id=task_id) if c.labels.get("armor.session") == self.session.id]
        if not found:
            found = self._adoptable(task_id)
            if found and self.state_dir is not None:
                mark_adopted(self.state_dir, found[0].id, self.session)
        if not found:
            raise ContainerNotFound(task_id)
        with self._lock:
            self._containers[task_id] = found[0]
        return found[0]

    def _remove_stale(self, task_id: str, emit: Callable[[str, Mapping[str, Any]], object], reason: str) -> None:
        """Remove the task's containers that a dead session had not yet started (or paused).

        A service killed between creating a container and starting it leaves one in
        'created' that the engine may still start a moment later; the task ending
        must not leave it to run on (found by test_attacks on a loaded machine).
        """
        try:
            stale = self._adoptable(task_id, ("created", "paused", "restarting"))
        except Exception as exc:  # noqa: BLE001 - a lost engine is handled by the removal that follows
            if is_engine_lost(exc):
                return
            raise
        for container in stale:
            if remove_container(container, timeout=self.spec_for(task_id).stop_timeout):
                emit("container.removed", {"container": container.id, "name": container.name,
                                           "reason": f"{reason}: left by a session that died", "oom_killed": False})

    def _adoptable(self, task_id: str, statuses: tuple[str, ...] = ("running",)) -> list[Container]:
        """Running containers of this task and state directory whose session has died.

        A reopened session can go on using them (exec) until the orphan sweep's
        grace period ends; resuming the task gives it a fresh container.
        """
        if self.state_dir is None:
            return []
        return [
            c
            for c in find_containers(self.engine, task_id=task_id)
            if c.status in statuses
            and c.labels.get("armor.state") == str(self.state_dir)
            and session_alive(c.labels) is False
        ]

    def _start(self, ctx: EffectContext, task_id: str) -> Mapping[str, Any]:
        payload = ctx.request.payload
        overrides = payload.get("sandbox")
        if overrides is not None and not isinstance(overrides, Mapping):
            raise ConfigError(f"the start payload's 'sandbox' must be a mapping of settings, not {overrides!r}")
        with self._lock:
            self._held.pop(task_id, None)  # started (or resumed) again: its commands may run
        spec = self.spec.with_overrides(overrides)
        if payload.get("image"):
            spec = spec.with_overrides({"image": payload["image"]})
        if "keep" in payload:
            spec = spec.with_overrides({"keep": bool(payload["keep"])})
        self._specs[task_id] = spec
        existing = [c for c in find_containers(self.engine, task_id=task_id, request_id=ctx.request.id) if c.status == "running"]
        if existing:  # re-delivered after a crash: the container is already there
            with self._lock:
                self._containers[task_id] = existing[0]
                self._started_at.setdefault(task_id, time.monotonic())
                self._last_used[task_id] = time.monotonic()
            return {"container": existing[0].short_id, "metadata": {"container": existing[0].short_id}}
        # A container a dead session made for this task (it was killed while starting it,
        # or while the task ran) is replaced by the new one, never left running beside it.
        # Paused too: a restore freezes the container, and a session killed then never thaws it.
        if ctx.request.kind == "task.resume.requested":
            self._remove_earlier(ctx, task_id)  # every earlier one, a dead session's included: one listing, not two
        else:
            for stale in self._adoptable(task_id, ("running", "paused", "restarting", "created")):
                if remove_container(stale, timeout=self.spec_for(task_id).stop_timeout):
                    ctx.emit("container.removed", {"container": stale.id, "name": stale.name,
                                                   "reason": "replaced: its session died", "oom_killed": False})
        worktree = self.worktree_of(task_id) if self.worktree_of is not None else None
        if worktree is not None and not Path(worktree).is_dir():
            worktree = None
        labels = task_labels(task_id, self.session, request_id=ctx.request.id, worktree=worktree, state_dir=self.state_dir)
        snapshot = self._resume_snapshot(ctx, task_id)
        if snapshot is not None:  # resumed at a checkpoint that saved the container: made from it, as a rollback does
            container, effective, _volumes = self.snapshots.start_from(task_id, snapshot, spec, labels=labels,
                                                                       worktree=worktree)
        else:
            container, effective = create_task_container(self.engine, spec, task_id=task_id, labels=labels,
                                                         worktree=worktree)
        with self._lock:
            self._containers[task_id] = container
            self._started_at[task_id] = self._last_used[task_id] = time.monotonic()
        ctx.emit("container.started", {"container": container.id, "name": container.name, "labels": labels,
                                       "settings": effective, "engine": self.engine.info.to_payload()})
        # In the task's record: a task that had a container when its session died was interrupted by that death.
        return {"container": container.short_id, "metadata": {"container": container.short_id}}

    def _remove_earlier(self, ctx: EffectContext, task_id: str) -> None:
        """Before a resume makes its container: remove every earlier one of the task (any status, any session).

        One process owns a state directory, so a container of this task and state
        directory is one that died with the engine (exited), one this session
        stopped using (interrupted), or a dead session's: none is used again.
        """
        with self._lock:
            self._containers.pop(task_id, None)
        if self.state_dir is None:
            return
        for old in find_containers(self.engine, task_id=task_id):
            if old.labels.get("armor.state") != str(self.state_dir):
                continue
            why = "replaced: its session died" if session_alive(old.labels) is False else "replaced: the task was resumed"
            if remove_container(old, timeout=self.spec_for(task_id).stop_timeout):
                ctx.emit("container.removed", {"container": old.id, "name": old.name, "reason": why, "oom_killed": False})

    def _reshare(self, ctx: EffectContext, task_id: str) -> Mapping[str, Any]:
        """Hand what a restore wrote back to the shared group (idempotent: a second pass changes nothing)."""
        worktree = self.worktree_of(task_id) if self.worktree_of is not None else None
        if worktree is None or not Path(worktree).is_dir():
            return {}
        identity = resolve_identity(self.spec_for(task_id))
        if identity.gid is None or identity.root:
            return {}
        plain = os.geteuid() != 0 and identity.uid is not None
        adopted = None
        try:
            with self.paused(task_id) as frozen:
                stats = share_worktree(Path(worktree), identity.gid, owner=identity.uid)
                if plain and frozen and identity.uid is not None:
                    # Directories the restore made are the plain user's again: the agent takes them over
                    # (see adopt.py), in a container beside its own, which stays frozen so nothing races it.
                    # With no running container nothing of the agent's runs, and its next start does it.
                    adopted = adopt_beside(self.container(task_id), identity.uid, self.spec_for(task_id).workdir,
                                           str(worktree))
        except OSError as exc:
            # The restore itself is done; the agent may lack write access to what it wrote, and is told so.
            ctx.emit("worktree.shared", {"gid": identity.gid, "error": f"{type(exc).__name__}: {exc}"})
            return {}
        if stats.changed or stats.skipped:
            ctx.emit("worktree.shared", {"gid": identity.gid, **stats.to_payload()})
        if adopted is not None and (adopted.adopted or adopted.failed or adopted.notes):
            ctx.emit("worktree.adopted", {"uid": identity.uid, **adopted.to_payload()})
        return {}

    def _results_dir(self, task_id: str) -> Path | None:
        """Where the task's exec results are stored (one directory a task, so its end removes them at once)."""
        if self.state_dir is None:
            return None
        return self.state_dir / "docker" / "requests" / validate_task_id(task_id)

    def _result_path(self, task_id: str, request_id: str) -> Path | None:
        directory = self._results_dir(task_id)
        if directory is None:
            return None
        if _REQUEST_ID.fullmatch(request_id) is None:
            raise DockerError(f"request id {request_id!r} is not a plain event id")
        return directory / f"{request_id}.json"

    def _stored_result(self, task_id: str, request_id: str) -> dict[str, Any] | None:
        """The result stored for the exec request; None when it has not run.

        Also looked for where earlier versions kept it (``requests/<id>.json``),
        so a request re-delivered across an upgrade is not run twice either.
        """
        path = self._result_path(task_id, request_id)
        if path is None:
            return None
        for candidate in (path, path.parent.parent / path.name):
            try:
                raw = candidate.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise DockerError(f"cannot read the stored result of exec request {request_id} ({candidate}): "
                                  f"{exc.strerror or exc}") from None
            try:
                stored = orjson.loads(raw)
            except orjson.JSONDecodeError:
                stored = None
            if not isinstance(stored, dict):
                raise DockerError(f"the stored result of exec request {request_id} ({candidate}) is damaged; the command "
                                  "is not run twice: delete the file and redrive the request to run it again")
            return stored
        return None

    def _drop_results(self, task_id: str) -> None:
        """Remove the task's stored exec results (its end: no request of it comes again)."""
        directory = self._results_dir(task_id)
        if directory is None:
            return
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:  # left behind, not a reason to fail the task's end
            _logger.warning("could not remove a task's stored exec results", task_id=task_id, directory=str(directory),
                            error=str(exc))

    def _exec(self, ctx: EffectContext, task_id: str) -> Mapping[str, Any]:
        stored = self._stored_result(task_id, ctx.request.id)
        if stored is not None:
            return stored
        path = self._result_path(task_id, ctx.request.id)
        with self._lock:
            cancelled = self._cancelled.pop(ctx.request.id, None) or self._held.get(task_id)
        if cancelled is not None:
            out = {"exit_code": None, "reason": "cancelled", "limit_hit": None, "message": f"not run: {cancelled}"}
            ctx.emit("exec.exited", out)
            return out
        payload = ctx.request.payload
        command = payload.get("command")
        if not command or not isinstance(command, (list, tuple, str)):
            raise ConfigError(f"exec.requested needs a 'command' (a list of arguments or a shell string), not {command!r}")
        spec = self.spec_for(task_id)
        container = self.container(task_id)
        raw_timeout = payload.get("timeout", spec.exec_timeout)
        # The container's own life ends at its wall clock: no command outlives it.
        remaining = max(0.1, spec.wall_clock - (time.monotonic() - self._started_at.get(task_id, time.monotonic())))
        timeout = min(float(raw_timeout), remaining) if isinstance(raw_timeout, (int, float, str)) else remaining
        user = payload.get("user")
        check_exec_user(spec, str(user) if user else None)
        env = payload.get("env")
        environment = {str(k): str(v) for k, v in env.items()} if isinstance(env, Mapping) else {}
        secrets = dict(self.secrets.for_exec(task_id, ctx.request.id)) if self.secrets is not None else {}
        environment.update({name: secret.reveal() for name, secret in secrets.items()})
        run = ExecRun(self.engine, container, [str(a) for a in command] if not isinstance(command, str) else ["sh", "-c", command],
                      emit=ctx.emit, timeout=timeout, user=str(user) if user else None, workdir=spec.workdir,
                      environment=environment or None, max_items=self.output_buffer, secrets=secrets,
                      record=lambda size: self.quota.take(task_id, size), live=self._live(ctx.request.id),
                      quota_bytes=self.quota.limit)
        with self._lock:
            self._running[task_id] = run
            self._running_request[task_id] = ctx.request.id
            self._last_used[task_id] = time.monotonic()
            late = self._cancelled.pop(ctx.request.id, None) or self._held.get(task_id)  # stopped between the check above and now
        if late is not None:
            self._kill_messages[task_id] = late
            run.kill("interrupted")
        try:
            result = run.run()
        except Exception as exc:
            if not is_engine_lost(exc):
                raise
            return self._container_lost(ctx, task_id, container, f"the Docker engine went away during the command ({readable(exc)})")
        finally:
            with self._lock:
                self._running.pop(task_id, None)
                self._running_request.pop(task_id, None)
                self._last_used[task_id] = time.monotonic()
            self.quota.save(task_id)
        out = result.to_payload()
        with self._lock:
            message = self._kill_messages.pop(task_id, None)
        if message is not None and result.reason == "interrupted":
            out["message"] = message
        started_at = self._started_at.get(task_id)
        if result.exit_code != 0 and result.reason in ("exited", "timeout") and started_at is not None \
                and time.monotonic() - started_at >= spec.wall_clock - 0.5:
            out.update(reason="wall_clock", limit_hit="wall_clock",
                       message=f"the task's wall-clock limit of {spec.wall_clock:g}s passed; the command and its container were stopped "
                               f"(the task is interrupted: 'armor-rx resume {task_id}' gives it a new container)")
            self.hold(task_id, WALL_CLOCK_HELD, kill=False)  # its container is gone: nothing more runs
        elif result.reason == "timeout":
            out["message"] = f"the command did not finish within {timeout:g}s and was killed"
        elif result.reason == "exited" and not self._alive(container):
            # Its container died under it (the engine restarted, or it was removed): the task can go on
            # in a new one, so it is interrupted, not failed.
            return self._container_lost(ctx, task_id, container, "the task's container stopped during the command "
                                        "(the Docker engine restarted, or the container was removed)")
        if result.reason == "oom":
            ctx.emit("container.oom", {"container": container.id, "mem_limit": spec.mem_limit,
                                       "message": f"the command was killed: it needed more than the memory limit of {spec.mem_limit} bytes"})
        ctx.emit("exec.exited", out)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, orjson.dumps(out), durable=False)
        return out

    def _alive(self, container: Container) -> bool:
        try:
            container.reload()
        except docker.errors.NotFound:
            return False
        except Exception as exc:  # noqa: BLE001 - only a lost engine counts as "not alive"; anything else is raised
            if is_engine_lost(exc):
                return False
            raise
        return bool(container.status == "running")

    def alive(self, task_id: str) -> bool:
        """Whether the task has a running container (False when it has none, or the engine lost it)."""
        try:
            return self._alive(self.container(task_id))
        except ContainerNotFound:
            return False
        except Exception as exc:  # noqa: BLE001 - see _alive
            if is_engine_lost(exc):
                return False
            raise

    def _container_lost(self, ctx: EffectContext, task_id: str, container: Container, why: str) -> Mapping[str, Any]:
        """The command's container is gone: the task becomes ``interrupted`` (resumable), the exec says why."""
        with self._lock:
            if self._containers.get(task_id) is container:
                del self._containers[task_id]
        out = {"exit_code": None, "reason": "container_lost", "limit_hit": None, "message": why}
        ctx.emit("exec.exited", out)
        self.hold(task_id, why, kill=False)
        ctx.emit("task.interrupted", {"reason": f"{why}; 'armor-rx resume {task_id}' starts a new container on the same worktree",
                                      "cause": "engine gone"})
        return out

    def attach(self, request_id: str, live: Live) -> Callable[[], None]:
        """Give ``live`` the output of exec request ``request_id`` that its task's quota keeps out of the log.

        ``live(stream, text, after_seq)`` runs on the command's output thread
        (blocking it slows the command, as a slow log would); ``after_seq`` is
        the seq of the ``exec.output.truncated`` event the text comes after.
        Returns the function that detaches it.
        """
        with self._lock:
            self._taps[request_id] = live
        return lambda: self._detach(request_id, live)

    def _detach(self, request_id: str, live: Live) -> None:
        with self._lock:
            if self._taps.get(request_id) is live:
                del self._taps[request_id]

    def _live(self, request_id: str) -> Live:
        def live(stream: str, text: str, after_seq: int) -> None:
            with self._lock:
                tap = self._taps.get(request_id)
            if tap is not None:
                tap(stream, text, after_seq)
        return live

    @contextmanager
    def paused(self, task_id: str) -> Iterator[bool]:
        """Freeze the task's container (if it has a running one) for the block.

        Used around a restore: a process in the container must not change the
        worktree (or swap a directory for a symlink) while it is rewritten.
        Yields whether a container was paused.
        """
        try:
            container = self.container(task_id)
            container.reload()
            running = container.status == "running"
        except (ContainerNotFound, docker.errors.APIError):
            running = False
        if not running:
            yield False
            return
        container.pause()
        try:
            yield True
        finally:
            try:
                container.unpause()
            except docker.errors.APIError:
                pass  # it was removed meanwhile: nothing left to thaw

    def kill(self, task_id: str, reason: str = "interrupted", *, request_id: str | None = None) -> bool:
        """Stop the task's running command now (Ctrl-C); True if one was running.

        With ``request_id``, only if the running command is that request's (a
        client that went away must not stop another client's command).
        """
        with self._lock:
            run = self._running.get(task_id)
            if request_id is not None and self._running_request.get(task_id) != request_id:
                # Not running yet (queued behind another command of the task): it never starts.
                self._cancelled[request_id] = reason
                while len(self._cancelled) > 10_000:
                    self._cancelled.pop(next(iter(self._cancelled)))
                return True
            if run is not None:
                self._kill_messages[task_id] = reason
        if run is None:
            return False
        run.kill("interrupted" if reason not in ("timeout", "interrupted", "killed") else reason)
        return True

    def hold(self, task_id: str, reason: str, *, kill: bool = True) -> None:
        """Let no command of the task start until it is started or resumed again, and stop the running one (``kill``).

        A command that was queued behind it ends at once with ``reason`` "cancelled"
        and ``message`` "not run: <reason>".
        """
        with self._lock:
            self._held[task_id] = reason
        if kill:
            self.kill(task_id, reason)

    def clocks(self) -> dict[str, TaskClock]:
        """The times of every task this session runs a container for (see :class:`TaskClock`)."""
        with self._lock:
            return {task: TaskClock(started=self._started_at[task], last_used=self._last_used.get(task, self._started_at[task]),
                                    busy=task in self._running, wall_clock=self.spec_for(task).wall_clock, held=self._held.get(task))
                    for task in self._containers if task in self._started_at}

    def container_died(self, task_id: str) -> bool:
        """Whether the engine answers and says the task's container is no longer running (False while it does not answer)."""
        with self._lock:
            container = self._containers.get(task_id)
        if container is None:
            return False
        try:
            container.reload()
        except docker.errors.NotFound:
            return True
        except Exception as exc:  # noqa: BLE001 - an engine that does not answer says nothing yet
            if is_engine_lost(exc):
                return False
            raise
        return bool(container.status not in ("running", "paused", "restarting"))

    def tasks_with_containers(self) -> list[str]:
        """The tasks this session holds a container for (made or adopted by it)."""
        with self._lock:
            return sorted(self._containers)

    def remove(self, task_id: str, emit: Callable[[str, Mapping[str, Any]], object], *, reason: str) -> Mapping[str, Any]:
        """Remove the task's container outside a request (e.g. after Ctrl-C)."""
        return self._remove(task_id, emit, reason=reason, keep=False)

    def _remove(self, task_id: str, emit: Callable[[str, Mapping[str, Any]], object], *, reason: str, keep: bool) -> Mapping[str, Any]:
        if not keep:
            self._remove_stale(task_id, emit, reason)
        try:
            container = self.container(task_id)
        except ContainerNotFound:
            return {}
        except Exception as exc:
            if not is_engine_lost(exc):
                raise
            emit("container.remove_failed", {"container": None, "name": None, "reason": reason,
                                             "error": f"lost the Docker engine: {readable(exc)}",
                                             "message": "the orphan sweep ('armor-rx gc') removes the task's container once the engine answers"})
            return {"removed": False}
        if keep:
            emit("container.kept", {"container": container.id, "name": container.name, "reason": reason})
            return {"container": container.short_id, "kept": True}
        try:
            try:
                container.reload()
                oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
            except docker.errors.NotFound:
                oom = False
            removed = remove_container(container, timeout=self.spec_for(task_id).stop_timeout)
        except Exception as exc:
            if not is_engine_lost(exc):
                raise
            # The task's other effects (git: commit, merge) have happened: the task must end as the
            # world is, not fail after its work was merged. The orphan sweep removes the container later.
            with self._lock:
                self._containers.pop(task_id, None)
            emit("container.remove_failed", {"container": container.id, "name": container.name, "reason": reason,
                                             "error": f"lost the Docker engine: {readable(exc)}",
                                             "message": "the orphan sweep ('armor-rx gc') removes it once the engine answers"})
            return {"container": container.short_id, "removed": False}
        with self._lock:
            self._containers.pop(task_id, None)
        if removed:
            emit("container.removed", {"container": container.id, "name": container.name, "reason": reason, "oom_killed": oom})
        return {"container": container.short_id, "removed": removed}
