"""Assembly: the one place that knows which sinks a session has and how they fit.

:func:`assemble` turns a :class:`SessionConfig` (plus the state directory and
the repository) into a running :class:`Assembly`: the event log, dead
letters, snapshot store, git workspace, container effect, the user's own
effects and the pipeline over them. The in-process API and the service both
build their session through it, so they cannot differ in what they run.

Sinks plug in through :class:`~armor_rx.pipeline.effects.Lifecycle`: started
in order, stopped in reverse, so a sink may rely on every sink started
before it (the docker effect mounts worktrees the git workspace made).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog

from armor_rx import _taskview
from armor_rx.errors import ArmorError, LogClosed
from armor_rx.hooks.plan import plan_file_hook
from armor_rx.model.lifecycle import State
from armor_rx.model.events import TaskEvent
from armor_rx.model.patterns import kind_matcher
from armor_rx.model.registry import Registry
from armor_rx.operators import CheckpointTriggers, checkpoint_policy
from armor_rx.pipeline.core import Pipeline
from armor_rx.pipeline.effects import Effect, Lifecycle
from armor_rx.pipeline.hooks import Hook, HookSet
from armor_rx.pipeline.stages import isolated
from armor_rx.pipeline.stalls import StallWatch
from armor_rx.session.config import SessionConfig
from armor_rx.sinks.deadletter import DeadLetterLog
from armor_rx.sinks.docker import DockerEffect
from armor_rx.sinks.docker.effect import SecretKeeper
from armor_rx.sinks.docker.supervise import ServiceSupervisor
from armor_rx.sinks.eventlog import EventLog
from armor_rx.sinks.git import GitEffect, GitWorkspace
from armor_rx.sinks.git.conflicts import BOUNDARY_KINDS, END_KINDS, ConflictWatcher
from armor_rx.sinks.git.guards import branch_name_guard
from armor_rx.sinks.git.touched import TouchedFilesEffect
from armor_rx.sinks.snapshot import RecoveryReport, SnapshotStore, recover_registry
from armor_rx.sinks.statedir import StateDir

_S = TypeVar("_S", bound=Lifecycle)

# The guard every git session runs first: a task's branch name must be one git accepts.
BRANCH_GUARD = "git-branch-name"
# The plan-file hook a session runs unless plan_files="off" (see armor_rx.hooks.plan); named
# apart from plan_file()'s default, so a user's own registration never collides with it.
PLAN_HOOK = "session-plan-files"
# The hooks (before and after) of the session's checkpoint policy.
CHECKPOINT_POLICY = "checkpoint-policy"


_log = structlog.get_logger("armor_rx.session.assembly")


@dataclass
class Assembly:
    """The sinks and pipeline of one open session, as :func:`assemble` built them.

    ``effects`` is what the pipeline runs, in order: git, the user's effects,
    docker. ``git`` and ``docker`` are ``None`` when the config leaves them off.
    """

    log: EventLog
    dead_letters: DeadLetterLog
    snapshots: SnapshotStore
    recovery: RecoveryReport
    git: GitWorkspace | None
    docker: DockerEffect | None
    effects: tuple[Effect, ...]
    pipeline: Pipeline
    # Sinks in the order they started; stop() walks it backwards.
    started: list[Lifecycle] = field(default_factory=list)
    # Early conflict detection between active tasks (git sessions); stopped before the pipeline.
    conflicts: ConflictWatcher | None = None
    # Watchers that record events of their own (service supervision, stall flags): stopped
    # first, while the pipeline still takes their events, so none of their threads outlives it.
    watchers: list[Lifecycle] = field(default_factory=list)
    services: ServiceSupervisor | None = None
    # The tasks view has one writer: the caller's snapshot() and the bus's row-change refresh take turns,
    # and a registry older than the last one written never replaces (or discards) its view.
    _view_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _view_seq: int = -1

    def stop(self) -> None:
        """Finish in-flight work, write the registry snapshot, stop every sink in reverse order."""
        try:
            _stop_all(self.watchers)
            self._stop_watcher()
            self.pipeline.stop()
            with self.pipeline._registry_lock:
                self.save_snapshot(self.pipeline.registry, settle=True)
        finally:
            _stop_all(self.started)

    def save_snapshot(self, registry: Registry, *, settle: bool = False) -> None:
        """Write the registry snapshot, and the tasks view when the log ends exactly at the registry's seq.

        The view (:mod:`armor_rx._taskview`) lets ``armor-rx tasks`` answer
        without folding anything; it is only a cache, so failing to write it
        costs speed, never correctness, and is not an error. ``settle``: see :meth:`save_view`.
        """
        self.snapshots.save(registry)
        self.save_view(registry, settle=settle)

    def save_view(self, registry: Registry, *, settle: bool = False) -> None:
        """Write the tasks view for ``registry`` if the log ends exactly at its seq; else remove the stale one.

        ``settle`` (at close) first waits out the clock tick of the log's last write (a few ms), so the
        view that stays behind needs no CRC of the segment by every reader (see :mod:`armor_rx._taskview`).
        """
        state_dir = self.snapshots.path.parent
        with self._view_lock:
            if registry.seq < self._view_seq:
                return
            self._view_seq = registry.seq
            position = self.log.end_position(registry.seq, settle=settle)
            try:
                if position is None:
                    _taskview.discard(state_dir)
                    return
                rows = registry.to_list()
                _taskview.write(state_dir, _taskview.encode(rows, registry.seq, position, orjson.dumps(rows) + b"\n"))
            except OSError as exc:
                _log.warning("could not write the tasks view; 'armor-rx tasks' takes the full path", error=str(exc))

    def abandon(self) -> None:
        """Stop as a killed process would (for :func:`armor_rx.testing.crash`).

        No snapshot is written and no effect is told to clean up: only the
        pipeline's threads end and the log, dead letters and repository close,
        as the kernel would close them on exit.
        """
        _stop_all(self.watchers)
        self._stop_watcher()
        self.pipeline.stop(timeout=5)
        for sink in (self.git, self.dead_letters, self.log):
            if sink is not None:
                sink.stop()
        self.started.clear()

    def _stop_watcher(self) -> None:
        # First: it records events through the pipeline, which must still be running.
        watcher, self.conflicts = self.conflicts, None
        if watcher is not None:
            watcher.stop()


def _stop_all(sinks: list[Lifecycle]) -> None:
    # Every sink gets its stop even if a later one's failed; the first failure is raised.
    failure: BaseException | None = None
    for sink in reversed(sinks):
        try:
            sink.stop()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the rest stopped
            failure = failure or exc
    sinks.clear()
    if failure is not None:
        raise failure


def assemble(
    config: SessionConfig,
    state: StateDir,
    repo: Path | None,
    hooks: HookSet,
    *,
    task_active: Callable[[str], bool],
    emit: Callable[[str | None, str, Mapping[str, Any]], object],
    secrets: SecretKeeper | None = None,
    active_tasks: Callable[[], list[str]] | None = None,
) -> Assembly:
    """Build and start every sink of a session, then its pipeline.

    ``hooks`` is the session's hook set (a git session gets the branch-name
    guard added to it); ``task_active`` and ``emit`` let the orphan sweep
    ask the session which tasks are live and record what it removed;
    ``secrets`` holds the secret values the docker effect gives commands;
    ``active_tasks`` lists the tasks the conflict watcher compares. The
    caller holds the state directory's lock. If a sink refuses to start
    (a corrupt log, no repository, no Docker engine ...), the ones already
    started are stopped again and the error is raised.
    """
    started: list[Lifecycle] = []
    watchers: list[Lifecycle] = []

    def start(sink: _S) -> _S:
        sink.start()
        started.append(sink)
        return sink

    pipeline: Pipeline | None = None

    def record_from_sink(kind: str, task_id: str | None, payload: Mapping[str, Any]) -> None:
        # Sink events outside a request (e.g. a direct worktree removal) are recorded as facts.
        if pipeline is None:  # the pipeline says the same once it has stopped
            raise LogClosed("the session is not started (use 'with Armor(...) as armor:')")
        pipeline.record(TaskEvent.new(kind, task_id, payload)).result()

    try:
        log = start(EventLog(state.events_dir, fsync=config.fsync, segment_bytes=config.segment_bytes))
        dead = start(DeadLetterLog(state.deadletter_dir, fsync=config.fsync))
        snapshots = SnapshotStore(state.snapshot_path)
        registry, recovery = recover_registry(snapshots, log)
        git: GitWorkspace | None = None
        if config.git_enabled(repo):
            assert repo is not None
            git = start(GitWorkspace(repo, state.path, emit=record_from_sink, author=config.git_author,
                                     checkpoint_policy=config.checkpoint_policy))
            if not any(h.name == BRANCH_GUARD for h in hooks.list()):
                hooks.add(Hook(name=BRANCH_GUARD, stage="before", operator=branch_name_guard(), priority=1_000_000))
        docker: DockerEffect | None = None
        if config.docker:
            # A container per task with the task's worktree mounted; the periodic
            # orphan sweep asks the session which tasks are still active.
            docker = DockerEffect(
                spec=config.sandbox,
                worktree_of=_worktree_of(git),
                state_dir=state.path,
                sweep_interval=config.sweep_interval,
                sweep_grace=config.sweep_grace,
                task_active=task_active,
                sweep_emit=lambda kind, task_id, payload: emit(task_id, kind, payload),
                secrets=secrets,
                output_quota=config.output_quota,
            )
            if git is not None:
                git.freeze = docker.paused  # restores run with the task's container frozen
                _bind_snapshots(git, docker)
        services: ServiceSupervisor | None = None
        if docker is not None:
            # Before docker: at a task's end its services stop while its container is still there.
            services = ServiceSupervisor(docker, record=_recorder(lambda: pipeline), fail=_failer(lambda: pipeline),
                                         task_state=_state_reader(lambda: pipeline))
        own: list[Effect] = [*config.effects]
        if services is not None and docker is not None:
            own += [services, docker]
        for effect in own:  # effects with a lifecycle live as long as the session
            if isinstance(effect, Lifecycle):
                start(effect)
        if git is not None:
            touched = _checkpoint_policy(config, hooks, git)
            # Last, so it sees what the command did: how many files each exec touched. Only
            # where something runs commands: an effect that matches exec.requested is what
            # tells the session it can exec at all.
            if any(kind_matcher(e.kinds)("exec.requested") for e in own):
                own.append(touched)
        effects = tuple([GitEffect(git)] if git is not None else []) + tuple(own)
        _install_plan_hook(config, state, hooks, log, git)
        pipeline = Pipeline(
            log=log,
            registry=registry,
            hooks=hooks,
            effects=effects,
            dead_letters=dead,
            retry=config.retry,
            max_workers=config.max_workers,
            max_pending=config.max_pending,
            memory_events=config.memory_events,
            memory_bytes=config.memory_bytes,
        ).start()
        if services is not None:
            watchers.append(services)
        if config.stall_after is not None:
            watchers.append(StallWatch(pipeline, config.stall_after).start())
        if git is not None:
            git.flush_held()  # what the git sink recovered while it started (stale locks ...), now that it can be logged
        watcher = _watch_conflicts(git, pipeline, active_tasks, record_from_sink) if config.detect_conflicts else None
    except BaseException:
        _stop_all(watchers)
        _stop_all(started)
        raise
    return Assembly(log=log, dead_letters=dead, snapshots=snapshots, recovery=recovery, git=git, docker=docker,
                    effects=effects, pipeline=pipeline, started=started, conflicts=watcher, watchers=watchers,
                    services=services)


def _watch_conflicts(
    git: GitWorkspace | None, pipeline: Pipeline, active_tasks: Callable[[], list[str]] | None,
    record: Callable[[str, str | None, Mapping[str, Any]], object],
) -> ConflictWatcher | None:
    """A conflict watcher fed by the bus: boundaries of a task look at it, ends resolve its conflicts."""
    if git is None or active_tasks is None:
        return None
    watcher = ConflictWatcher(git, active_tasks, record, git.git_dir / "conflicts.json").start()
    pipeline.bus.subscribe(f"{BOUNDARY_KINDS},{END_KINDS}").subscribe(
        lambda event: watcher.notify(event.kind, event.task_id))
    return watcher


def _install_plan_hook(config: SessionConfig, state: StateDir, hooks: HookSet, log: EventLog, git: GitWorkspace | None) -> None:
    """(Re)place the session's plan-file hook: one made for this opening, over this log and workspace."""
    for old in hooks.list(stage="after"):
        if old.name == PLAN_HOOK and old.api == "operator" and old.point is None and old.priority == _PLAN_PRIORITY:
            hooks.remove(old)
    if config.plan_files == "off":
        return
    operator = plan_file_hook(
        state.path, worktree_of=git.worktree_path if git is not None else None,
        history=lambda task_id, start: log.read(start, task_id=task_id), git=(lambda: git) if git is not None else None,
        tasks="all" if config.plan_files == "all" else "requested", location=config.plan_location or "state",
        name=PLAN_HOOK)
    hooks.add(Hook(name=PLAN_HOOK, stage="after", operator=operator, priority=_PLAN_PRIORITY))


# Last of the after-hooks: it records what the others let through.
_PLAN_PRIORITY = -1_000_000


def _checkpoint_policy(config: SessionConfig, hooks: HookSet, git: GitWorkspace) -> TouchedFilesEffect:
    """Put the session's checkpoint policy in place (once), and return the effect that feeds it files touched.

    The policy hook is always there in a git session: a task started with a
    ``checkpoint_policy`` of its own needs it even when the session has no
    default (``checkpoint_when``). It runs last among the before-hooks, so a
    request another hook vetoes costs no checkpoint.
    """
    default = config.checkpoint_when or CheckpointTriggers()
    if not any(h.name == CHECKPOINT_POLICY for h in hooks.list()):
        policy = checkpoint_policy(default)
        hooks.add(Hook(name=CHECKPOINT_POLICY, stage="before", priority=-1_000_000, on_error="fail_open",
                       operator=isolated(policy, name=CHECKPOINT_POLICY, on_error="fail_open")))
        hooks.add(Hook(name=CHECKPOINT_POLICY, stage="after", priority=1_000_000, on_error="fail_open",
                       operator=isolated(policy.after, name=CHECKPOINT_POLICY, on_error="fail_open")))

    def wanted(payload: Mapping[str, Any]) -> bool:
        given = payload.get("checkpoint_policy")
        try:
            triggers = CheckpointTriggers.from_payload(given) if given is not None else default
        except ArmorError:
            return False
        return triggers.risk_threshold is not None

    return TouchedFilesEffect(_worktree_of(git), wanted)


def _bind_snapshots(git: GitWorkspace, docker: DockerEffect) -> None:
    """Checkpoints save the container part of a task through the docker effect, which reads them back to restore it."""
    git.outside = docker

    def part(task_id: str, checkpoint: str) -> Mapping[str, Any] | None:
        return git.checkpoints_store.find(task_id, checkpoint).container

    def refs(task_id: str) -> set[str]:
        return {str(cp.container["snapshot"]) for cp in git.checkpoints(task_id)
                if cp.container and cp.container.get("snapshot")}

    docker.checkpoint_part = part
    docker.snapshot_refs = refs
    docker.task_lock = git.task_lock


def _recorder(pipeline: Callable[[], Pipeline | None]
              ) -> Callable[[str, str, Mapping[str, Any], str | None], TaskEvent]:
    """How the service supervisor records its events (once the pipeline exists)."""

    def record(task_id: str, kind: str, payload: Mapping[str, Any], causation_id: str | None) -> TaskEvent:
        running = pipeline()
        if running is None:
            raise LogClosed("the session is not started")
        return running.record(TaskEvent.new(kind, task_id, payload, causation_id=causation_id)).result()

    return record


def _failer(pipeline: Callable[[], Pipeline | None]) -> Callable[[str, str, TaskEvent], object]:
    """How the service supervisor fails a task whose service it gave up on (not waiting for the outcome)."""

    def fail(task_id: str, reason: str, cause: TaskEvent) -> object:
        running = pipeline()
        if running is None:
            raise LogClosed("the session is not started")
        return running.submit(cause.caused("task.fail.requested", {"reason": reason}))

    return fail


def _state_reader(pipeline: Callable[[], Pipeline | None]) -> Callable[[str], State | None]:
    def state(task_id: str) -> State | None:
        running = pipeline()
        if running is None:
            return None
        try:
            return running.task(task_id).state
        except ArmorError:
            return None

    return state


def _worktree_of(git: GitWorkspace | None) -> Callable[[str], Path | None]:
    """The directory to mount in a task's container: its worktree, once it exists."""

    def worktree(task_id: str) -> Path | None:
        if git is None:
            return None
        path = git.worktree_path(task_id)
        return path if path.is_dir() else None

    return worktree
