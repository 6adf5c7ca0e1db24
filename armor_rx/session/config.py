"""Every option of a session, in one frozen value.

A :class:`SessionConfig` is what the in-process API, the service and (later)
the fleet worker hand to the assembly, so all three build the same session
from the same description. It is frozen so a session cannot change under
its sinks once they are built; derive a variant with :func:`dataclasses.replace`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from armor_rx.errors import ConfigError
from armor_rx.pipeline.effect_runner import RetryPolicy
from armor_rx.pipeline.effects import Effect
from armor_rx.sinks.docker.spec import SandboxSpec
from armor_rx.session.space import DEFAULT_RESERVE
from armor_rx.sinks.docker.quota import DEFAULT_OUTPUT_QUOTA
from armor_rx.sinks.docker.sweep import DEFAULT_GRACE
from armor_rx.sinks.eventlog import FsyncPolicy
from armor_rx.sinks.git.checkpoints import CheckpointPolicy

# Long enough for a guard that asks a slow service, short enough that a hook
# that never returns cannot hold a task for good.
DEFAULT_HOOK_TIMEOUT = 30.0


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
    # Bytes of command output the log records per task; past it the output is only
    # streamed to whoever is attached (None: no limit). See sinks/docker/quota.py.
    output_quota: int | None = DEFAULT_OUTPUT_QUOTA
    # Free space kept on the state directory's disk, and a cap on armor's own records
    # there (None: none); past either, new work is refused (see session/space.py).
    disk_reserve: int = DEFAULT_RESERVE
    state_cap: int | None = None
    hook_timeout: float = DEFAULT_HOOK_TIMEOUT
    # How long closing the session (or the service's SIGTERM) may spend stopping the tasks it runs
    # containers for: their commands, a final checkpoint each, their containers (see session/interruption.py).
    stop_timeout: float = 30.0
    # A task that runs no command for this long is interrupted and its container removed (None: never).
    task_idle_timeout: float | None = None

    def __post_init__(self) -> None:
        # A tuple, so the frozen config cannot be changed through a list the caller still holds.
        object.__setattr__(self, "effects", tuple(self.effects))
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

    def git_enabled(self, repo: Path | None) -> bool:
        """Whether the session runs git: on with a repository unless ``git=False``.

        Raises ConfigError for ``git=True`` without a repository.
        """
        enabled = self.git if self.git is not None else repo is not None
        if enabled and repo is None:
            raise ConfigError("git=True needs a repository: Armor('path/to/repo', git=True)")
        return enabled


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
    output_quota: int | None
    disk_reserve: int
    state_cap: int | None
    hook_timeout: float
    stop_timeout: float
    task_idle_timeout: float | None


