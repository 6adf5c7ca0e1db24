"""Stopping tasks gracefully: the one procedure every interruption goes through.

A task is interrupted when whatever held it stops: the user (``interrupt``),
the session closing (``Armor.close``, the service on SIGTERM/SIGINT/SIGHUP),
the client of an ``armor-rx run`` going away, its idle or wall-clock time
running out. Whatever the cause, the same steps run, in this order, within a
bound:

1. the task is *held*: its running command is stopped and no queued command
   of it starts any more (a command queued behind the stopped one must not
   run after the user was told the task stopped);
2. a **final checkpoint** of its worktree, queued in the task's lane so it
   sees the worktree after the command ended;
3. its container is removed (``resume`` makes a new one on the same worktree,
   so a stopped container would only be litter);
4. ``task.interrupted`` with ``reason``, ``cause`` and what was saved
   (``checkpoint``, or ``checkpoint_error`` saying why there is none).

Causes are short words a program can match: see :data:`CAUSES`. An
interruption nobody could stop gracefully (the process killed, the Docker
engine gone) is recorded afterwards with cause ``crash`` or ``engine gone``,
without a final checkpoint: the worktree is on the host, as it was left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

import structlog

from armor_rx.errors import ArmorError, TaskNotFound
from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import State
from armor_rx.sinks.docker.effect import WALL_CLOCK_HELD

if TYPE_CHECKING:
    from armor_rx.session.armor import Armor

_log = structlog.get_logger("armor_rx.session.interruption")

# What stopped a task, as recorded in ``task.interrupted``'s ``cause``.
CAUSES = frozenset({
    "user",            # armor-rx interrupt / Armor.interrupt
    "session closed",  # Armor.close() with tasks running in its containers
    "SIGTERM", "SIGINT", "SIGHUP",  # the service was told to stop
    "client gone",     # the client of an attached 'armor-rx run' went away
    "idle timeout",    # no command for the task's idle timeout
    "wall clock",      # the container's wall-clock limit passed
    "engine gone",     # the Docker engine went away (or the container was removed) under the task
    "crash",           # the process that held the task died without stopping it (found on the next open)
})

DEFAULT_STOP_TIMEOUT = 30.0


def interrupt_task(armor: Armor, task_id: str, reason: str, *, cause: str = "user", checkpoint: bool = True,
                   deadline: float | None = None) -> TaskEvent:
    """Stop ``task_id`` gracefully (see the module's steps) and record ``task.interrupted``.

    ``deadline`` (a ``time.monotonic()`` value) bounds the wait for the
    stopped command and the final checkpoint; past it the task is
    interrupted without one, and the event says so. Raises IllegalTransition
    when the task is not in a state that can be interrupted (nothing is done
    then, apart from holding its commands).
    """
    if deadline is None:
        deadline = time.monotonic() + armor.config.stop_timeout
    record = armor.task(task_id)
    if record.state not in (State.RUNNING, State.STARTING, State.RESUMING, State.COMPLETING, State.FAILING):
        # Let the lifecycle's own error say what is wrong (interrupted already, completed ...).
        return armor.pipeline.record(TaskEvent.new("task.interrupted", task_id, {"reason": reason, "cause": cause})).result()
    docker = armor.docker
    if docker is not None:
        docker.hold(task_id, f"the task was interrupted ({cause}): {reason}")
    payload: dict[str, Any] = {"reason": reason, "cause": cause}
    if checkpoint and armor.assembly.git is not None and _has_worktree(armor, task_id):
        payload.update(_final_checkpoint(armor, task_id, reason, cause, deadline))
    services = armor.assembly.services
    if services is not None:  # before the container goes, so each is stopped and said to be
        services.halt(task_id, "interrupted", lambda kind, data: armor.emit(task_id, kind, data))
    if docker is not None:
        try:
            removed = docker.remove(task_id, lambda kind, data: armor.emit(task_id, kind, data), reason=f"interrupted ({cause})")
            if removed.get("container"):
                payload["container_removed"] = bool(removed.get("removed", True))
        except ArmorError as exc:
            payload["container_error"] = str(exc)
    return armor.pipeline.record(TaskEvent.new("task.interrupted", task_id, payload)).result()


def _has_worktree(armor: Armor, task_id: str) -> bool:
    try:
        return armor.worktree(task_id).is_dir()
    except ArmorError:
        return False


def _final_checkpoint(armor: Armor, task_id: str, reason: str, cause: str, deadline: float) -> Mapping[str, Any]:
    message = f"final checkpoint ({cause}): {reason}"
    try:
        # Queued in the task's lane: it runs once the stopped command has ended.
        future = armor.request(task_id, "checkpoint.requested", {"message": message, "final": True})
        outcome = future.result(max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        return {"checkpoint": None, "checkpoint_error": "the final checkpoint did not finish within the stop bound "
                                                        f"({armor.config.stop_timeout:g}s); it is still taken once the task's command ends"}
    except ArmorError as exc:
        return {"checkpoint": None, "checkpoint_error": str(exc)}
    return {"checkpoint": outcome.payload.get("checkpoint")}


def interrupt_all(armor: Armor, cause: str, reason: str, *, timeout: float | None = None,
                  which: Callable[[str], bool] | None = None) -> list[TaskEvent]:
    """Interrupt every task this session runs a container for (all within ``timeout``, default the session's ``stop_timeout``).

    Used when the session closes: the commands are stopped first, all at once,
    so the bound is shared rather than spent task by task. ``which`` narrows
    the tasks further. Tasks without a container in this session are left as
    they are: nothing of theirs stops when the session does.
    """
    docker = armor.docker
    if docker is None:
        return []
    deadline = time.monotonic() + (armor.config.stop_timeout if timeout is None else timeout)
    tasks = [t for t in docker.tasks_with_containers() if which is None or which(t)]
    for task_id in tasks:
        docker.hold(task_id, f"the task was interrupted ({cause}): {reason}")
    # Starts and resumes in flight finish (or fail) first: a task must not turn 'running' after this.
    armor.pipeline.wait_idle(max(0.0, deadline - time.monotonic()))
    done: list[TaskEvent] = []
    for task_id in tasks:
        try:
            state = armor.task(task_id).state
        except TaskNotFound:
            continue
        if state not in (State.RUNNING, State.STARTING, State.RESUMING):
            continue
        try:
            done.append(interrupt_task(armor, task_id, reason, cause=cause, deadline=deadline))
        except ArmorError as exc:
            _log.warning("could not interrupt a task while stopping", task_id=task_id, cause=cause, error=str(exc))
    return done


class TaskWatch:
    """Interrupts tasks whose wall clock has passed, or that ran no command for ``idle_timeout`` seconds.

    A thread of its session (started and stopped with it) that looks every
    ``interval`` seconds at the tasks the session runs containers for. A
    wall-clock limit is the container's own (its spec's ``wall_clock``): the
    engine ends the container then, so the task is interrupted — its work
    checkpointed, resumable with a fresh clock — rather than left running in
    a container that is gone. The idle timeout (off unless configured) frees
    a container nobody is using; the task resumes as it was. Every
    ``liveness_every`` seconds it also asks the engine whether the containers
    of idle tasks still run: one that died with the engine (a restart) while
    no command ran interrupts its task with cause ``engine gone``.
    """

    def __init__(self, armor: Armor, *, idle_timeout: float | None, interval: float = 1.0, liveness_every: float = 5.0) -> None:
        import threading

        self.armor = armor
        self.idle_timeout = idle_timeout
        self.interval = interval
        self.liveness_every = liveness_every
        self._last_liveness = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="armor-task-watch", daemon=True)

    def start(self) -> TaskWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the watch must outlive one bad pass
                _log.warning("task watch pass failed", error=repr(exc))

    def check(self, now: float | None = None) -> list[TaskEvent]:
        """One pass; the interruptions it recorded."""
        docker = self.armor.docker if self.armor.is_open else None
        if docker is None:
            return []
        now = time.monotonic() if now is None else now
        probe = now - self._last_liveness >= self.liveness_every
        if probe:
            self._last_liveness = now
        done = []
        for task_id, clock in docker.clocks().items():
            if clock.held is not None and clock.held != WALL_CLOCK_HELD:
                continue  # being interrupted (or ended) by someone else
            cause = reason = None
            if now - clock.started >= clock.wall_clock:
                cause, reason = "wall clock", f"its wall-clock limit of {clock.wall_clock:g}s passed"
            elif self.idle_timeout is not None and not clock.busy and now - clock.last_used >= self.idle_timeout:
                cause, reason = "idle timeout", f"no command ran for {self.idle_timeout:g}s"
            elif probe and not clock.busy and docker.container_died(task_id):
                if now - clock.started >= clock.wall_clock - 2 * self.liveness_every:
                    # The container's own clock (its first process) started a moment before ours.
                    cause, reason = "wall clock", f"its wall-clock limit of {clock.wall_clock:g}s passed"
                else:
                    cause = "engine gone"
                    reason = "its container stopped while no command ran (the Docker engine restarted, or it was removed)"
            if cause is None or reason is None or self._stop.is_set():
                continue
            try:
                if self.armor.task(task_id).state is not State.RUNNING:
                    continue
                done.append(interrupt_task(self.armor, task_id, f"{reason}; 'armor-rx resume {task_id}' continues it", cause=cause))
            except ArmorError as exc:
                _log.warning("could not interrupt a task", task_id=task_id, cause=cause, error=str(exc))
        return done
