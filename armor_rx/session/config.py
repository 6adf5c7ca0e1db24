"""Every option of a session, in one frozen value.

A :class:`SessionConfig` is what the in-process API, the service and (later)
the fleet worker hand to the assembly, so all three build the same session
from the same description. It is frozen so a session cannot change under
its sinks once they are built; derive a variant with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypedDict

from armor_rx.errors import ConfigError
from armor_rx.operators import CheckpointTriggers
from armor_rx.pipeline.effect_runner import RetryPolicy
from armor_rx.pipeline.effects import Effect
from armor_rx.sinks.docker.spec import SandboxSpec
from armor_rx.session.space import DEFAULT_RESERVE
from armor_rx.sinks.docker.quota import DEFAULT_OUTPUT_QUOTA
from armor_rx.sinks.docker.sweep import DEFAULT_GRACE
from armor_rx.sinks.eventlog import FsyncPolicy
from armor_rx.sinks.git.checkpoints import CheckpointPolicy

PlanFileMode = Literal["off", "requested", "all"]
PlanLocation = Literal["state", "worktree"]
_PLAN_FILES: tuple[str, ...] = ("off", "requested", "all")
_PLAN_LOCATIONS: tuple[str, ...] = ("state", "worktree")

# Long enough for a guard that asks a slow service, short enough that a hook
# that never returns cannot hold a task for good.
DEFAULT_HOOK_TIMEOUT = 30.0
MAX_STOP_TIMEOUT = 86400.0


@dataclass(frozen=True)
class SessionConfig:
    """How to open a session; every field has the default ``Armor(...)`` always had.

    >>> SessionConfig(docker=True).fsync
    'batch'

    ``state_dir`` defaults to ``.armor/`` in the repository; ``git`` to "on
    when the session has a repository". ``hook_timeout`` is how long any hook
    may take per call unless it sets its own ``timeout=`` (``math.inf``: no
    limit); a guard that overruns it vetoes, an observer is reported and skipped. ``effects`` are extra sinks the
    pipeline runs after git (and before docker); one with ``start``/``stop``
    (see :class:`armor_rx.pipeline.effects.Lifecycle`) lives as long as the
    session.
    """

    state_dir: str | Path | None = None
    fsync: FsyncPolicy = "batch"
    effects: Sequence[Effect] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lock_timeout: float = 0.0
    max_workers: int = 8
    max_pending: int = 10_000
    memory_events: int = 10_000
    memory_bytes: int = 32 * 1024 * 1024
    snapshot_every: int = 1000
    segment_bytes: int = 64 * 1024 * 1024
    git: bool | None = None
    docker: bool = False
    sandbox: SandboxSpec | None = None
    sweep_interval: float | None = 300.0
    sweep_grace: float = DEFAULT_GRACE
    git_author: str = "armor-rx <armor-rx@localhost>"
    checkpoint_policy: CheckpointPolicy | None = None
    # conflict.detected / conflict.resolved between active tasks (see sinks/git/conflicts.py).
    detect_conflicts: bool = True
    # Bytes of command output the log records per task; past it the output is only
    # streamed to whoever is attached (None: no limit). See sinks/docker/quota.py.
    output_quota: int | None = DEFAULT_OUTPUT_QUOTA
    # Free space kept on the state directory's disk, and a cap on armor's own records
    # there (None: none); past either, new work is refused (see session/space.py).
    disk_reserve: int = DEFAULT_RESERVE
    state_cap: int | None = None
    hook_timeout: float = DEFAULT_HOOK_TIMEOUT
    # The classic hook API (armor.hook("before_start", fn) ...) and its hook.registered
    # records; off, registering one raises ClassicHooksOff (see docs/hooks.md, migration).
    # None: $ARMOR_RX_CLASSIC_HOOKS (1/0), else on.
    classic_hooks: bool | None = None
    # Plan files (docs/hooks.md): "requested" keeps one for tasks started with plan=True,
    # "all" for every task, "off" runs no plan hook. None: $ARMOR_RX_PLAN_FILES, else "requested".
    plan_files: PlanFileMode | None = None
    # Where a plan's Markdown goes unless the start asks: "state" (<state dir>/plans/) or
    # "worktree" (.armor/plan.md in the task's worktree). None: $ARMOR_RX_PLAN_LOCATION, else "state".
    plan_location: PlanLocation | None = None
    # When to checkpoint a task that was not started with a checkpoint_policy of its own
    # (None: only when asked). See armor_rx.operators.checkpoint_policy and docs/checkpoints.md.
    checkpoint_when: CheckpointTriggers | None = None
    # Seconds an active task may go without an event before it is flagged ``task.stalled``
    # (None: never); see armor_rx.operators.stalled and pipeline/stalls.py.
    stall_after: float | None = None
    # How long closing the session (or the service's SIGTERM) may spend stopping the tasks it runs
    # containers for: their commands, a final checkpoint each, their containers (see session/interruption.py).
    stop_timeout: float = 30.0
    # A task that runs no command for this long is interrupted and its container removed (None: never).
    task_idle_timeout: float | None = None

    def __post_init__(self) -> None:
        # A tuple, so the frozen config cannot be changed through a list the caller still holds.
        object.__setattr__(self, "effects", tuple(self.effects))
        if self.classic_hooks is None:
            object.__setattr__(self, "classic_hooks", classic_hooks_from_env())
        elif not isinstance(self.classic_hooks, bool):
            raise ConfigError(f"classic_hooks must be True, False or None (from $ARMOR_RX_CLASSIC_HOOKS), not {self.classic_hooks!r}")
        plans = self.plan_files if self.plan_files is not None else _env_choice("ARMOR_RX_PLAN_FILES", "requested", _PLAN_FILES)
        if plans not in _PLAN_FILES:
            raise ConfigError(f"plan_files must be one of {', '.join(_PLAN_FILES)}, not {plans!r}")
        where = self.plan_location if self.plan_location is not None else _env_choice("ARMOR_RX_PLAN_LOCATION", "state", _PLAN_LOCATIONS)
        if where not in _PLAN_LOCATIONS:
            raise ConfigError(f"plan_location must be one of {', '.join(_PLAN_LOCATIONS)}, not {where!r}")
        object.__setattr__(self, "plan_files", plans)
        object.__setattr__(self, "plan_location", where)
        timeout = self.hook_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(
                f"hook_timeout must be a positive number of seconds (math.inf for no limit), not {timeout!r}"
            )
        for name in ("stop_timeout", "task_idle_timeout"):
            value = getattr(self, name)
            if value is None and name == "task_idle_timeout":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
            if name == "stop_timeout" and not value <= MAX_STOP_TIMEOUT:
                # A graceful stop waits this out for the final checkpoint: past it the wait itself overflows.
                raise ConfigError(f"stop_timeout must be at most {MAX_STOP_TIMEOUT} seconds (a day), not {value!r}")

        stall = self.stall_after
        if stall is not None and (isinstance(stall, bool) or not isinstance(stall, (int, float)) or not stall > 0):
            raise ConfigError(f"stall_after must be a positive number of seconds (or None: never flag), not {stall!r}")

    def git_enabled(self, repo: Path | None) -> bool:
        """Whether the session runs git: on with a repository unless ``git=False``.

        Raises ConfigError for ``git=True`` without a repository.
        """
        enabled = self.git if self.git is not None else repo is not None
        if enabled and repo is None:
            raise ConfigError("git=True needs a repository: Armor('path/to/repo', git=True)")
        return enabled


def _env_choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {raw!r}")
    return raw


def classic_hooks_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``$ARMOR_RX_CLASSIC_HOOKS`` leaves the classic hook API on (unset: on).

    Raises ConfigError for a value that is not 1/0, yes/no, true/false or on/off.
    """
    raw = (os.environ if environ is None else environ).get("ARMOR_RX_CLASSIC_HOOKS", "").strip().lower()
    if raw in ("", "1", "yes", "true", "on"):
        return True
    if raw in ("0", "no", "false", "off"):
        return False
    raise ConfigError(f"ARMOR_RX_CLASSIC_HOOKS must be 1 or 0 (on or off), not {raw!r}")


class SessionOptions(TypedDict, total=False):
    """The keywords ``Armor(repo, **options)`` takes: the fields of :class:`SessionConfig`.

    Kept so every ``Armor(...)`` call written before :class:`SessionConfig`
    existed still type-checks; ``test_session_config`` checks the two agree.
    """

    state_dir: str | Path | None
    fsync: FsyncPolicy
    effects: Sequence[Effect]
    retry: RetryPolicy
    lock_timeout: float
    max_workers: int
    max_pending: int
    memory_events: int
    memory_bytes: int
    snapshot_every: int
    segment_bytes: int
    git: bool | None
    docker: bool
    sandbox: SandboxSpec | None
    sweep_interval: float | None
    sweep_grace: float
    git_author: str
    checkpoint_policy: CheckpointPolicy | None
    detect_conflicts: bool
    output_quota: int | None
    disk_reserve: int
    state_cap: int | None
    hook_timeout: float
    classic_hooks: bool | None
    plan_files: PlanFileMode | None
    plan_location: PlanLocation | None
    checkpoint_when: CheckpointTriggers | None
    stall_after: float | None
    stop_timeout: float
    task_idle_timeout: float | None


