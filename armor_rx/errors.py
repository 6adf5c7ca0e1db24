"""The one hierarchy of errors armor_rx raises.

Every message says what was wrong, with the offending value, and what the
caller can do about it. The CLI prints ``str(error)`` as one line.
"""

from __future__ import annotations


class ArmorError(Exception):
    """Base class of every error armor_rx raises on purpose."""


class InvalidTaskId(ArmorError, ValueError):
    """A task id is not a valid slug."""

    def __init__(self, value: object, why: str) -> None:
        self.value = value
        super().__init__(
            f"invalid task id {value!r}: {why}; a task id is 1-63 characters of "
            "lowercase letters, digits and single hyphens, starting with a letter "
            "or digit (for example 'fix-login-bug')"
        )


class InvalidEventKind(ArmorError, ValueError):
    """An event kind is not a dotted lowercase name."""

    def __init__(self, value: object) -> None:
        self.value = value
        super().__init__(
            f"invalid event kind {value!r}: a kind is dotted lowercase words, "
            "for example 'task.started' or 'exec.output'"
        )


class InvalidPayload(ArmorError, ValueError):
    """An event payload is not JSON-safe."""


class TaskNotRunning(ArmorError):
    """A command was asked of a task that is not running (interrupted, not started, or over)."""

    def __init__(self, task_id: str, state: str) -> None:
        self.task_id = task_id
        self.state = state
        hint = f"; 'armor-rx resume {task_id}' brings it back" if state == "interrupted" else ""
        super().__init__(f"task {task_id!r} is {state}, so no command can run in it{hint}")


class IllegalTransition(ArmorError):
    """A task was asked to move between two states the lifecycle forbids."""

    def __init__(self, task_id: str, current: str, target: str, allowed: frozenset[str]) -> None:
        self.task_id = task_id
        self.current = current
        self.target = target
        allowed_text = ", ".join(sorted(allowed)) or "nothing (it is final)"
        super().__init__(
            f"task {task_id!r} cannot go from {current!r} to {target!r}; "
            f"from {current!r} it may go to: {allowed_text}"
        )


class TaskNotFound(ArmorError, KeyError):
    """No task with this id is known to the session."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(task_id)

    def __str__(self) -> str:
        return f"no task {self.task_id!r} in this state directory; 'armor-rx tasks' lists them"


class TaskExists(ArmorError):
    """A task with this id already exists."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id!r} already exists; pick another name")


class ForkNameTaken(TaskExists):
    """A fork's task name was taken by another client while the fork was making its tasks.

    The fork's tasks registered by then were cancelled (none had started:
    no branch, worktree or container was made); ``cancelled`` lists them.
    """

    def __init__(self, task_id: str, source: str, cancelled: list[str]) -> None:
        self.source = source
        self.cancelled = list(cancelled)
        ArmorError.__init__(
            self,
            f"fork of {source!r} stopped: task {task_id!r} was created by another client meanwhile; "
            + (f"the fork's tasks registered so far ({', '.join(cancelled)}) were cancelled before they started; "
               if cancelled else "no task of the fork was made; ")
            + "fork again with other names",
        )
        self.task_id = task_id


class Vetoed(ArmorError):
    """A guard refused a step. Raise it from a guard to veto with a reason."""

    def __init__(self, reason: str, *, hook: str | None = None, task_id: str | None = None) -> None:
        self.reason = reason
        self.hook = hook
        self.task_id = task_id
        where = f" by hook {hook!r}" if hook else ""
        subject = f"task {task_id!r}: " if task_id else ""
        super().__init__(f"{subject}vetoed{where}: {reason}")


class HookTimeout(ArmorError):
    """A hook took longer than its time limit."""

    def __init__(self, hook: str, seconds: float, *, still_running: bool = False) -> None:
        self.hook = hook
        self.seconds = seconds
        self.still_running = still_running
        if still_running:
            super().__init__(f"hook {hook!r} is still running earlier calls that overran its {seconds:g}s limit; "
                             "not called again until one of them returns")
        else:
            super().__init__(f"hook {hook!r} did not finish within {seconds:g}s")


class BackpressureOverflow(ArmorError):
    """A bounded buffer with policy 'error' was full."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        super().__init__(
            f"backpressure buffer full ({max_items} items) under policy 'error'; "
            "use policy 'block' to slow the producer or a larger max_items"
        )


class EffectFailed(ArmorError):
    """A side effect failed for good (not transient, or retries exhausted)."""

    def __init__(self, kind: str, cause: BaseException, attempts: int) -> None:
        self.kind = kind
        self.cause = cause
        self.attempts = attempts
        super().__init__(f"effect for {kind!r} failed after {attempts} attempt(s): {readable(cause)}")


def readable(error: object) -> str:
    """One line a person can read, also for exceptions whose ``str()`` is a raw tuple.

    The docker SDK (through requests) and dulwich raise errors such as
    ``ConnectionError(ProtocolError('Connection aborted.', FileNotFoundError(2, ...)))``
    whose text is ``('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))``.
    """
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f" ({error.filename})" if error.filename else "")
    if not isinstance(error, BaseException):
        return str(error)
    if type(error).__name__ == "FileLocked" and len(error.args) == 2:
        return f"{error.args[0]} is locked ({error.args[1]} exists); if no git or armor_rx process is running, remove it"
    if len(error.args) == 1 and isinstance(error.args[0], BaseException):
        return readable(error.args[0])
    if len(error.args) > 1 and str(error).startswith("("):
        return ": ".join(readable(arg).rstrip(".") for arg in error.args)
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


class LogError(ArmorError):
    """The durable event log cannot be used."""


class LogCorrupt(LogError):
    """The event log is damaged somewhere other than its tail."""


class LogClosed(LogError):
    """An append was attempted on a log that is not started."""


class SnapshotError(ArmorError):
    """A state snapshot could not be read or written."""


class ConcurrencyConflict(ArmorError):
    """An optimistic update saw a different version than expected; re-read and retry."""

    def __init__(self, task_id: str, expected: int, actual: int) -> None:
        self.task_id = task_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"task {task_id!r} is at version {actual}, not {expected}: "
            "someone else changed it; re-read the task and retry"
        )


class StateDirLocked(ArmorError):
    """Another process holds the state directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"state directory {path} is in use by another armor_rx process; "
            "wait for it to finish or pass a different --state-dir"
        )


class DeadLetterNotFound(ArmorError, KeyError):
    """No dead letter with this id."""

    def __init__(self, letter_id: str) -> None:
        self.letter_id = letter_id
        super().__init__(letter_id)

    def __str__(self) -> str:
        return f"no dead letter {self.letter_id!r}; list them with Armor.dead_letters()"


class ConfigError(ArmorError, ValueError):
    """An option has a value armor_rx does not accept."""


class ClassicHooksOff(ConfigError):
    """A classic hook (``armor.hook("before_start", fn)``) was registered with the classic hook API off."""

    def __init__(self, point: str | None, hook: str, instead: str) -> None:
        self.point = point
        self.hook = hook
        super().__init__(
            f"classic hook {hook!r} at {point!r} refused: the classic hook API is off (classic_hooks=False or "
            f"ARMOR_RX_CLASSIC_HOOKS=0); write it as an operator: from armor_rx.operators import guard, observe; "
            f"{instead} (see docs/hooks.md)"
        )


class TransientError(ArmorError):
    """Raise from an effect to say "this may work if tried again" (retried with backoff)."""


class StateDirFull(ArmorError):
    """New work was refused: the state directory's disk is below its reserve, or armor's records are over their cap."""


class PathEscape(ArmorError, ValueError):
    """A path would resolve outside the directory it must stay in."""


class GitError(ArmorError):
    """A git operation could not be done; the message says which and why."""


class InvalidBranchName(ArmorError, ValueError):
    """A branch name breaks git's ref rules or armor_rx's task branch rules."""

    def __init__(self, value: object, why: str) -> None:
        self.value = value
        super().__init__(
            f"invalid branch name {value!r}: {why}; task branches are 'task/<slug>' where the "
            "slug is lowercase letters, digits and single hyphens (for example 'task/fix-login')"
        )


class BranchConflict(GitError):
    """No free branch name was found within the retry budget."""

    def __init__(self, name: str, attempts: int) -> None:
        self.name = name
        self.attempts = attempts
        super().__init__(
            f"could not create a branch for {name!r}: every candidate name was taken "
            f"({attempts} attempts); delete unused 'task/*' branches or pick another task name"
        )


class WorktreeLinkChanged(GitError):
    """A task worktree's ``.git`` link, or the admin directory it names, is not what armor made."""

    def __init__(self, task_id: str, path: str, why: str) -> None:
        self.task_id = task_id
        self.path = path
        self.why = why
        super().__init__(
            f"task {task_id!r}: the git link of its worktree {path} was changed ({why}); armor runs no git "
            "there, and neither should you: copy out what you need without git, then delete the directory by hand"
        )


class WorktreeDirty(GitError):
    """Removing a worktree would lose uncommitted work."""

    def __init__(self, task_id: str, path: str, changes: int) -> None:
        self.task_id = task_id
        self.path = path
        self.changes = changes
        super().__init__(
            f"task {task_id!r}: worktree {path} has uncommitted work ({changes} changed path(s)); "
            "checkpoint or complete the task first, or remove it with on_dirty='checkpoint'"
        )


class CheckpointNotFound(GitError, KeyError):
    """No checkpoint with this id for this task."""

    def __init__(self, task_id: str, checkpoint: str) -> None:
        self.task_id = task_id
        self.checkpoint = checkpoint
        super().__init__(checkpoint)

    def __str__(self) -> str:
        return (
            f"task {self.task_id!r} has no checkpoint {self.checkpoint!r}; "
            f"'armor-rx checkpoints {self.task_id}' lists them"
        )


class CheckpointsOwnedElsewhere(GitError):
    """The task id's checkpoint ref in this repository was written by another state directory."""

    def __init__(self, task_id: str, owner: str, ref: str) -> None:
        self.task_id = task_id
        self.owner = owner
        self.ref = ref
        super().__init__(
            f"task {task_id!r} already has checkpoints in this repository from another armor_rx state "
            f"directory (id {owner}); two sessions must not share a task id's checkpoints. Pick another "
            f"task id, or, if that state directory is gone for good, delete them with "
            f"'git update-ref -d {ref}'"
        )


class SubmoduleConflict(GitError):
    """A submodule is not at its recorded commit and the task's strategy cannot settle it (nothing was changed).

    ``problems`` maps each submodule path to what is wrong; ``hint`` says what to do.
    """

    def __init__(self, task_id: str, problems: dict[str, str], *, hint: str | None = None) -> None:
        self.task_id = task_id
        self.problems = dict(problems)
        listed = ", ".join(f"{path} ({state})" for path, state in sorted(problems.items()))
        super().__init__(
            f"task {task_id!r}: submodule(s) not clean: {listed}; "
            + (hint or "fix them, or choose the submodule strategy 'skip', 'reset', 'merge' or 'rebase'")
        )


class DockerError(ArmorError):
    """A Docker operation could not be done; the message says which and why."""


class DockerUnavailable(DockerError):
    """No Docker engine answered (or it is too old to use)."""

    def __init__(self, tried: str, reason: str) -> None:
        self.tried = tried
        self.reason = reason
        super().__init__(
            f"cannot use the Docker engine at {tried}: {reason}; start a daemon "
            "(for a private one: eval \"$(bash scripts/dockerd.sh)\") or point DOCKER_HOST at a running engine"
        )


class EngineLost(DockerError, TransientError):
    """The connection to the Docker engine was lost (it stopped, restarted, or its socket went away).

    Transient: the pipeline retries the request with backoff, then dead-letters it
    for ``armor-rx redrive`` once the engine is back.
    """

    def __init__(self, doing: str, why: str) -> None:
        super().__init__(f"lost the Docker engine while {doing} ({why}); it is retried, then kept for "
                         "'armor-rx redrive' once the engine answers again")


class ImageNotFound(DockerError, ValueError):
    """An image is not on the engine and could not be got."""

    def __init__(self, image: str, why: str = "") -> None:
        self.image = image
        extra = f" ({why})" if why else ""
        super().__init__(
            f"image {image!r} is not present on the Docker engine{extra}; build or load it "
            "('armor-rx image ensure' / 'armor-rx image import') or pass another --image "
            "(with no registry: 'armor-rx image local' makes armor-rx/busybox:latest)"
        )


class ImageBuildFailed(DockerError):
    """Building an image failed; the message carries the builder's last words."""


class ContainerNotFound(DockerError, KeyError):
    """A task has no container."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(task_id)

    def __str__(self) -> str:
        return f"task {self.task_id!r} has no container; start the task first (its container is made on start)"


class CheckpointIncomplete(DockerError):
    """A checkpoint cannot be restored whole: part of what it saved outside the worktree is gone.

    Raised before anything changes (worktree, container and log stay as they
    were); ``missing`` lists what is gone.
    """

    def __init__(self, task_id: str, checkpoint: str, missing: list[str]) -> None:
        self.task_id = task_id
        self.checkpoint = checkpoint
        self.missing = list(missing)
        super().__init__(
            f"cannot restore checkpoint {checkpoint} of task {task_id!r}: {'; '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} gone (removed by 'docker rmi', a prune or by hand); "
            f"nothing was changed; pick another checkpoint ('armor-rx checkpoints {task_id}' lists them)"
        )


class NestedRepositoryAtRisk(WorktreeDirty):
    """Removing a worktree would destroy a nested repository or a submodule's unsaved work.

    Checkpoints hold files, not the history of repositories inside the
    worktree, so these are never removed automatically. ``problems`` maps each
    path (relative to the worktree) to what is at risk.
    """

    def __init__(self, task_id: str, path: str, problems: dict[str, str]) -> None:
        self.task_id = task_id
        self.path = path
        self.changes = len(problems)
        self.problems = dict(problems)
        listing = "; ".join(f"{p}: {why}" for p, why in sorted(problems.items()))
        GitError.__init__(
            self,
            f"task {task_id!r}: worktree {path} holds repositories a checkpoint cannot save ({listing}); "
            "commit and push their work, or move them out of the worktree, then remove it again",
        )


class BadRequest(ArmorError, ValueError):
    """A request to the service is malformed (not JSON, wrong types, unknown route)."""


class PermissionDenied(ArmorError):
    """The service refused a client: another user, or a missing or wrong token."""


class ServiceError(ArmorError):
    """The service failed in a way that is not one of armor_rx's own errors (its log has the details)."""


class ServiceUnavailable(ArmorError):
    """No service answers for this state directory, and none could be started."""


class ServiceLost(ServiceUnavailable):
    """The service went away in the middle of a call (killed, crashed, or its socket removed)."""


class UsageError(ArmorError, ValueError):
    """A command typed into an interface (the monitor's command line) is malformed: unknown verb, missing argument."""
