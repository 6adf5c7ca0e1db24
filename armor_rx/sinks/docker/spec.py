"""The sandbox spec: what a task's container may do, hardened by default.

Every field can be changed per task: ``SandboxSpec().with_overrides(...)`` or a
``sandbox`` mapping in the task's start request payload.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from armor_rx.errors import ConfigError

DEFAULT_IMAGE = os.environ.get("ARMOR_RX_IMAGE", "debian:bookworm-slim")
WORKSPACE = "/workspace"


def parse_bytes(value: int | str) -> int:
    """``"512m"`` -> 536870912; ints pass through."""
    if isinstance(value, bool):
        raise ConfigError(f"a size must be bytes or a string like '512m', not {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower().rstrip("b")
    units = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise ConfigError(f"cannot read size {value!r}; use bytes or a string like '512m' or '2g'") from None


@dataclass(frozen=True)
class SandboxSpec:
    """A task container's settings. The defaults are the hardened ones.

    ``user="auto"`` runs as a fixed unprivileged uid (61000) in the group the
    worktree is shared through, whatever users the image has (see
    :mod:`armor_rx.sinks.docker.identity`); a numeric ``"uid:gid"`` or a name
    in the image may be given instead. Root (``user="root"`` or ``"0"``, and
    an exec's ``user``) is refused unless ``allow_root=True``, an opt-in that
    is logged and stated in ``container.started``. ``git_data`` mounts the
    repository's git data read-only where the worktree's ``.git`` link points,
    so git works inside. ``wall_clock`` bounds the
    container's whole life: its keep-alive process ends then and the engine
    stops the container. ``exec_timeout`` (None: the remaining wall clock)
    bounds each command. ``volumes`` are container paths that get a volume
    of their own (writable even with a read-only root, not part of the
    image); with them, or with ``read_only=False``, checkpoints also save
    what changed outside the worktree (see :mod:`armor_rx.sinks.docker.snapshots`).
    """

    image: str = DEFAULT_IMAGE
    network: str = "none"
    cap_drop: tuple[str, ...] = ("ALL",)
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = True
    pids_limit: int = 256
    mem_limit: int = 1024**3
    nano_cpus: int = 2_000_000_000  # 2 CPUs
    read_only: bool = True
    tmpfs: Mapping[str, str] = field(default_factory=lambda: {"/tmp": "rw,nosuid,nodev,size=256m"})
    user: str = "auto"
    allow_root: bool = False
    git_data: bool = True
    wall_clock: float = 3600.0
    exec_timeout: float | None = None
    workdir: str = WORKSPACE
    environment: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    init: bool = True
    # No core dumps (a crashing tool would write them into the worktree) and a
    # bounded number of open files, whatever dockerd's own limits are.
    ulimits: Mapping[str, tuple[int, int]] = field(default_factory=lambda: {"core": (0, 0), "nofile": (1024, 4096)})
    keep: bool = False
    stop_timeout: int = 5
    volumes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.pids_limit is not None and self.pids_limit < 1:
            raise ConfigError(f"pids_limit must be at least 1, not {self.pids_limit!r}")
        if self.wall_clock <= 0:
            raise ConfigError(f"wall_clock must be positive seconds, not {self.wall_clock!r}")
        if self.exec_timeout is not None and self.exec_timeout <= 0:
            raise ConfigError(f"exec_timeout must be positive seconds or None, not {self.exec_timeout!r}")
        if not self.workdir.startswith("/"):
            raise ConfigError(f"workdir must be an absolute path in the container, not {self.workdir!r}")
        object.__setattr__(self, "volumes", check_volumes(self.volumes, self.workdir, self.tmpfs))

    @property
    def outside_changes(self) -> bool:
        """Whether a command can change files outside the worktree that a new container would not have."""
        return not self.read_only or bool(self.volumes)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> SandboxSpec:
        """A copy with ``overrides`` applied; unknown names raise ConfigError."""
        if not overrides:
            return self
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown sandbox setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        values = dict(overrides)
        if "mem_limit" in values:
            values["mem_limit"] = parse_bytes(values["mem_limit"])
        for name in ("cap_drop", "cap_add", "volumes"):
            if name in values:
                values[name] = tuple(values[name])
        if "ulimits" in values:
            values["ulimits"] = {str(k): (int(v[0]), int(v[1])) for k, v in dict(values["ulimits"]).items()}
        return dataclasses.replace(self, **values)

    def to_payload(self) -> dict[str, Any]:
        """JSON-safe settings, as recorded in ``container.started``."""
        out = dataclasses.asdict(self)
        out["tmpfs"] = dict(self.tmpfs)
        out["environment"] = sorted(self.environment)  # names only: values may be secrets
        out["labels"] = dict(self.labels)
        out["cap_drop"] = list(self.cap_drop)
        out["cap_add"] = list(self.cap_add)
        out["ulimits"] = {name: list(limits) for name, limits in self.ulimits.items()}
        out["volumes"] = list(self.volumes)
        return out


MAX_VOLUMES = 16
# Where a volume would hide or shadow what the engine or armor mounts itself.
_SYSTEM_PATHS = ("/proc", "/sys", "/dev", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def check_volumes(volumes: Any, workdir: str, tmpfs: Mapping[str, str]) -> tuple[str, ...]:
    """The declared volume paths, checked: absolute, normal, not ``/``, not over the worktree, a tmpfs or the engine's.

    Raises ConfigError naming the offending path.
    """
    if isinstance(volumes, str) or not isinstance(volumes, (list, tuple)):
        raise ConfigError(f"volumes must be a list of absolute container paths, not {volumes!r}")
    if len(volumes) > MAX_VOLUMES:
        raise ConfigError(f"at most {MAX_VOLUMES} volumes may be declared, not {len(volumes)}")
    checked: list[str] = []
    work = workdir.rstrip("/") or "/"
    for raw in volumes:
        if not isinstance(raw, str) or not raw.startswith("/") or any(c in raw for c in "\0\n:,") \
                or posixpath.normpath(raw) != raw.rstrip("/") or raw.startswith("//") or raw.rstrip("/") == "":
            raise ConfigError(f"volume path {raw!r} must be a normal absolute container path like '/var/cache/data' "
                              "(no '..', '.', '//', ':' or ',', not '/')")
        path = raw.rstrip("/")
        for other in (work, *tmpfs, *_SYSTEM_PATHS):
            if _within(path, other) or _within(other, path):
                raise ConfigError(f"volume path {path!r} overlaps {other!r} (the worktree, a tmpfs or the engine's "
                                  "own); choose a path outside them")
        if path in checked:
            raise ConfigError(f"volume path {path!r} is declared twice")
        checked.append(path)
    return tuple(checked)
