"""The orphan sweep: armor-labelled containers nobody will clean up.

A container is an orphan when the session that made it is dead (its process
is gone from this host) and no live session adopted it (a reopened session
that goes on using its task's container records that under
``<state_dir>/docker/adopted/``), or when it belongs to this state directory
and its task is no longer active in the registry. An orphan is removed once it is
older than the grace period (default 24 h). Before removal the task's
worktree is checkpointed (through the ``checkpoint`` callback), and every
removal is reported through ``emit`` as ``container.swept``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import docker.errors
import structlog

from armor_rx.errors import ConfigError
from armor_rx.sinks.docker.containers import (
    LABEL_CREATED,
    LABEL_SESSION,
    LABEL_STATE,
    LABEL_TASK,
    LABEL_WORKTREE,
    adopted_by_live_session,
    find_containers,
    remove_container,
    session_alive,
)
from armor_rx.sinks.docker.engine import Engine
from armor_rx.sinks.docker.snapshots import SnapshotRemoval

_log = structlog.get_logger("armor_rx.docker.sweep")

DEFAULT_GRACE = 24 * 3600.0
DEFAULT_INTERVAL = 300.0

SweepEmit = Callable[[str, "str | None", Mapping[str, Any]], object]


@dataclass(frozen=True)
class SweepDecision:
    """What the sweep did (or would do) with one labelled container."""

    container: str
    name: str
    task_id: str
    session: str
    age: float
    orphan: str | None  # why it is an orphan; None: it is in use
    action: str  # "kept" | "waiting" (orphan within grace) | "removed" | "would_remove" | "failed"
    checkpoint: Any = None

    def to_payload(self) -> dict[str, Any]:
        return {"container": self.container, "name": self.name, "task": self.task_id, "session": self.session,
                "age": round(self.age, 1), "orphan": self.orphan, "action": self.action, "checkpoint": self.checkpoint}


class Sweeper:
    """Finds and removes orphaned task containers, once (:meth:`sweep`) or every ``interval`` seconds (:meth:`start`).

    ``is_active(task_id)`` answers from this session's registry;
    ``state_dir`` says which containers that registry speaks for.
    ``in_use(container_id)`` says whether this process is using a container
    (one a reopened session adopted still carries its dead session's label);
    containers of the ``spare_states`` directories are left to the live
    sessions that hold them. ``snapshots(dry_run)``, when given, then removes
    the container snapshots no checkpoint names (see :mod:`.snapshots`); each
    is reported as a decision too.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        grace: float = DEFAULT_GRACE,
        interval: float = DEFAULT_INTERVAL,
        is_active: Callable[[str], bool] | None = None,
        state_dir: str | None = None,
        checkpoint: Callable[[str, Mapping[str, str]], Any] | None = None,
        emit: SweepEmit | None = None,
        clock: Callable[[], float] = time.time,
        in_use: Callable[[str], bool] | None = None,
        spare_states: Collection[str] = (),
        snapshots: Callable[[bool], list[SnapshotRemoval]] | None = None,
    ) -> None:
        if grace < 0 or interval <= 0:
            raise ConfigError(f"the sweep needs grace >= 0 and interval > 0 seconds, not grace={grace!r} interval={interval!r}")
        self.engine = engine
        self.grace = grace
        self.interval = interval
        self.is_active = is_active
        self.state_dir = state_dir
        self.checkpoint = checkpoint
        self.emit = emit
        self.clock = clock
        self.in_use = in_use
        self.spare_states = frozenset(spare_states)
        self.snapshots = snapshots
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def orphan_reason(self, labels: Mapping[str, str], container_id: str = "") -> str | None:
        task = labels.get(LABEL_TASK, "?")
        if container_id and self.in_use is not None and self.in_use(container_id):
            return None  # this session runs the task in it, whatever its label says
        if labels.get(LABEL_STATE) in self.spare_states:
            return None  # a live session holds that state directory and sweeps its own
        alive = session_alive(dict(labels))
        if alive is False and not (container_id and adopted_by_live_session(dict(labels), container_id)):
            return f"its session {labels.get(LABEL_SESSION, '?')} is gone"
        if self.is_active is not None and self.state_dir is not None and labels.get(LABEL_STATE) == self.state_dir:
            if not self.is_active(task):
                return f"its task {task!r} is not active"
        return None

    def sweep(self, *, now: bool = False, dry_run: bool = False) -> list[SweepDecision]:
        """One pass. ``now`` ignores the grace period; ``dry_run`` removes nothing."""
        decisions = []
        for container in find_containers(self.engine):
            labels = dict(container.labels)
            try:
                age = self.clock() - float(labels.get(LABEL_CREATED, "0"))
            except ValueError:
                age = float("inf")
            reason = self.orphan_reason(labels, container.id)
            base = {"container": container.short_id, "name": container.name, "task_id": labels.get(LABEL_TASK, "?"),
                    "session": labels.get(LABEL_SESSION, "?"), "age": age, "orphan": reason}
            if reason is None:
                decisions.append(SweepDecision(**base, action="kept"))
                continue
            if not now and age < self.grace:
                decisions.append(SweepDecision(**base, action="waiting"))
                continue
            if dry_run:
                decisions.append(SweepDecision(**base, action="would_remove"))
                continue
            decisions.append(self._remove(container, labels, base))
        if self.snapshots is not None:
            decisions += self._sweep_snapshots(self.snapshots, dry_run)
        return decisions

    def _sweep_snapshots(self, snapshots: Callable[[bool], list[SnapshotRemoval]],
                         dry_run: bool) -> list[SweepDecision]:
        try:
            found = snapshots(dry_run)
        except Exception as exc:  # noqa: BLE001 - the container sweep's decisions stand; the next pass tries again
            _log.warning("sweep: snapshot sweep failed", error=str(exc))
            return []
        out = []
        for r in found:
            action = "would_remove" if dry_run else ("removed" if r.removed else "kept")
            decision = SweepDecision(container=(r.image or "")[7:19] or r.snapshot, name=r.snapshot, task_id=r.task_id,
                                     session="-", age=0.0, orphan=r.why, action=action)
            if r.removed:
                self._report("snapshot.swept", r.task_id, decision)
            out.append(decision)
        return out

    def _remove(self, container: Any, labels: dict[str, str], base: dict[str, Any]) -> SweepDecision:
        task = labels.get(LABEL_TASK)
        saved: Any = None
        if self.checkpoint is not None and task and labels.get(LABEL_WORKTREE):
            try:
                saved = self.checkpoint(task, labels)
            except Exception as exc:  # never remove what we could not save
                _log.warning("sweep: checkpoint failed, container kept", task=task, error=str(exc))
                decision = SweepDecision(**base, action="failed", checkpoint=f"checkpoint failed: {exc}")
                self._report("container.sweep_failed", task, decision)
                return decision
        try:
            remove_container(container)
        except (docker.errors.DockerException, Exception) as exc:
            decision = SweepDecision(**base, action="failed", checkpoint=saved)
            _log.warning("sweep: removal failed", container=container.short_id, error=str(exc))
            self._report("container.sweep_failed", task, decision)
            return decision
        decision = SweepDecision(**base, action="removed", checkpoint=saved)
        self._report("container.swept", task, decision)
        return decision

    def _report(self, kind: str, task: str | None, decision: SweepDecision) -> None:
        if self.emit is not None:
            try:
                self.emit(kind, task, decision.to_payload())
            except Exception as exc:  # the sweep must go on; the log line says what was lost
                _log.warning("sweep: could not record event", kind=kind, error=str(exc))

    # -- periodic ----------------------------------------------------------------
    def start(self) -> Sweeper:
        """Sweep every ``interval`` seconds on a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="armor-docker-sweep", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception as exc:
                _log.warning("sweep pass failed", error=str(exc))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Sweeper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
