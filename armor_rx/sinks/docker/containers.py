"""Task containers: labels, hardened creation, lookup and removal."""

from __future__ import annotations

import getpass
import io
import json
import os
import socket
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
from docker.models.containers import Container

from armor_rx.errors import ArmorError, ConfigError, DockerError, ImageNotFound
from armor_rx.sinks._atomic import write_atomic
from armor_rx.sinks.docker.access import ShareStats, share_worktree
from armor_rx.sinks.docker.adopt import AdoptStats, adopt_in_container
from armor_rx.sinks.docker.engine import Engine
from armor_rx.sinks.docker.identity import resolve_identity
from armor_rx.sinks.docker.mounts import (
    GIT_ENVIRONMENT,
    MountPlan,
    git_data,
    harden_worktree_mount,
    plan_mounts,
    process_ids,
)
from armor_rx.sinks.docker.spec import SandboxSpec

LABEL_TASK = "armor.task"
LABEL_SESSION = "armor.session"
LABEL_CREATED = "armor.created"
LABEL_OWNER = "armor.owner"
LABEL_HOST = "armor.host"
LABEL_PID = "armor.pid"
LABEL_REQUEST = "armor.request"
LABEL_WORKTREE = "armor.worktree"
LABEL_STATE = "armor.state"
LABEL_PIDNS = "armor.pidns"

# The nproc limit given on Podman (see create_task_container).
PODMAN_NPROC = 4096


def _pid_namespace() -> str:
    """This boot and PID namespace: a pid label means something only where both match."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    try:
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        ns = "?"
    return f"{boot}:{ns}"


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' if unknown): pid reuse cannot fake it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class SessionIdentity:
    """Who owns a container: this process on this host (the ``armor.session`` label)."""

    host: str
    pid: int
    started: str
    owner: str

    @classmethod
    def current(cls) -> SessionIdentity:
        pid = os.getpid()
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        host = socket.gethostname()
        return cls(host=host, pid=pid, started=_proc_start(pid), owner=f"{user}@{host}")

    @property
    def id(self) -> str:
        return f"{self.host}-{self.pid}-{self.started}"


def session_alive(labels: dict[str, str]) -> bool | None:
    """Is the session that made a container still running? None when that cannot be known.

    Unknown (keep the container) when it was made on another host, in another
    boot or PID namespace (a session in a container or under ``unshare`` has
    pids that mean nothing here), or when its ``/proc`` entry is hidden from us.
    """
    if labels.get(LABEL_HOST) != socket.gethostname():
        return None
    if labels.get(LABEL_PIDNS, _pid_namespace()) != _pid_namespace():
        return None
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return False
    try:
        os.stat(f"/proc/{pid}")
    except FileNotFoundError:
        return False
    except OSError:
        return None  # e.g. /proc mounted with hidepid: we cannot tell
    started = _proc_start(pid)
    if not started or _zombie(pid):
        # A killed session whose parent has not reaped it yet (an auto-started
        # service's client, or a container's pid 1 that never reaps) is dead.
        return False
    return labels.get(LABEL_SESSION, "").endswith(f"-{pid}-{started}")


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def task_labels(task_id: str, session: SessionIdentity, *, request_id: str, worktree: Path | None, state_dir: Path | None) -> dict[str, str]:
    labels = {
        LABEL_TASK: task_id,
        LABEL_SESSION: session.id,
        LABEL_CREATED: f"{time.time():.3f}",
        LABEL_OWNER: session.owner,
        LABEL_HOST: session.host,
        LABEL_PID: str(session.pid),
        LABEL_PIDNS: _pid_namespace(),
        LABEL_REQUEST: request_id,
    }
    if worktree is not None:
        labels[LABEL_WORKTREE] = str(worktree)
    if state_dir is not None:
        labels[LABEL_STATE] = str(state_dir)
    return labels


def _adoption_marker(state_dir: str, container_id: str) -> Path:
    return Path(state_dir) / "docker" / "adopted" / container_id


def mark_adopted(state_dir: Path, container_id: str, session: SessionIdentity) -> None:
    """Record that ``session`` now runs a task in a container another (dead) session made.

    Labels cannot change on a container, so its label still names the dead
    session; a sweep in any process reads this marker before taking the
    container for an orphan.
    """
    marker = _adoption_marker(str(state_dir), container_id)
    marker.parent.mkdir(parents=True, exist_ok=True)
    identity = task_labels("-", session, request_id="", worktree=None, state_dir=None)
    marked = {k: identity[k] for k in (LABEL_SESSION, LABEL_HOST, LABEL_PID, LABEL_PIDNS)}
    write_atomic(marker, json.dumps(marked).encode(), durable=False)


def adopted_by_live_session(labels: dict[str, str], container_id: str) -> bool:
    """Whether a live session (or one we cannot rule out) adopted this container."""
    state = labels.get(LABEL_STATE)
    if not state:
        return False
    try:
        adopter = json.loads(_adoption_marker(state, container_id).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(adopter, dict) and session_alive({str(k): str(v) for k, v in adopter.items()}) is not False


def ensure_image(engine: Engine, name: str) -> Any:
    """The image, pulled if missing. Raises ImageNotFound (one line) when it cannot be had."""
    try:
        return engine.client.images.get(name)
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as exc:
        raise DockerError(f"cannot inspect image {name!r}: {exc.explanation or exc}") from None
    try:
        return engine.client.images.pull(name)
    except docker.errors.DockerException as exc:
        why = str(getattr(exc, "explanation", None) or str(exc).splitlines()[0])
        raise ImageNotFound(name, f"pull failed: {why[:200]}") from None


def create_task_container(
    engine: Engine,
    spec: SandboxSpec,
    *,
    task_id: str,
    labels: dict[str, str],
    worktree: Path | None,
    fresh_volumes: bool = False,
) -> tuple[Container, dict[str, Any]]:
    """Create and start the task's container; returns it and the effective settings.

    Options the engine does not support are left out and listed under
    ``degraded`` in the settings, never silently dropped. The spec's
    ``volumes`` are anonymous volumes, removed with the container; they start
    with the image's files at their path, or empty with ``fresh_volumes``
    (a restore fills them from a checkpoint).
    """
    identity = resolve_identity(spec)
    image = ensure_image(engine, spec.image)
    plan = MountPlan()
    shared: ShareStats | None = None
    if worktree is not None:
        data = git_data(worktree, Path(labels[LABEL_STATE]) if LABEL_STATE in labels else None)
        plan = plan_mounts(worktree, spec.workdir, data, with_data=spec.git_data)
        if identity.gid is not None and not identity.root:
            try:
                shared = share_worktree(worktree, identity.gid, owner=identity.uid)
            except OSError as exc:
                shared = ShareStats(acl=False, notes=[f"the worktree could not be shared with the agent's group: {exc}"])
    # A numeric uid has no home in the image: /tmp is the one writable place.
    home = {"HOME": "/tmp"} if identity.uid is not None else {}
    environment = {**(GIT_ENVIRONMENT if spec.git_data else {}), **home, **spec.environment}
    supported = engine.info.supported
    degraded: list[str] = list(engine.info.notes)
    security_opt = ["no-new-privileges:true"] if spec.no_new_privileges and supported.get("no_new_privileges", True) else []
    kwargs: dict[str, Any] = {
        "command": ["sleep", str(int(spec.wall_clock))],
        "detach": True,
        "network_mode": spec.network,
        "cap_drop": list(spec.cap_drop) or None,
        "cap_add": list(spec.cap_add) or None,
        "security_opt": security_opt or None,
        "read_only": spec.read_only,
        "tmpfs": {**spec.tmpfs, **plan.tmpfs} or None,
        "working_dir": spec.workdir,
        "environment": environment,
        "labels": {**spec.labels, **labels},
        "init": spec.init if supported.get("init", True) else None,
        "stop_signal": "SIGKILL",
        "ulimits": [docker.types.Ulimit(name=name, soft=soft, hard=hard) for name, (soft, hard) in spec.ulimits.items()] or None,
    }
    kwargs["user"] = identity.user
    if supported.get("pids_limit", True):
        kwargs["pids_limit"] = spec.pids_limit
    if supported.get("memory_limit", True):
        kwargs["mem_limit"] = spec.mem_limit
        if supported.get("swap_limit", True):
            kwargs["memswap_limit"] = spec.mem_limit  # no swap on top of the limit
    if supported.get("cpu_quota", True):
        if supported.get("nano_cpus", True):
            kwargs["nano_cpus"] = spec.nano_cpus
        else:
            kwargs["cpu_period"], kwargs["cpu_quota"] = 100_000, spec.nano_cpus // 10_000
    if plan.binds:
        # Mount objects, not "src:dst:mode" strings: a path with a ':' in it stays one path.
        kwargs["mounts"] = [docker.types.Mount(target=bind["bind"], source=source, type="bind", read_only=bind["mode"] == "ro")
                            for source, bind in plan.binds.items()]
    if spec.volumes:
        kwargs["mounts"] = [*kwargs.get("mounts", []), *(
            docker.types.Mount(target=path, source=None, type="volume", no_copy=fresh_volumes)
            for path in spec.volumes)]
        plan.described.update({path: "volume (rw, removed with the container)" for path in spec.volumes})
    if engine.info.flavour == "Podman" and "nproc" not in spec.ulimits:
        # Podman's default nproc limit is above what it may set ("error setting rlimit type 6");
        # an explicit one it can set is needed. pids_limit stays the container's real bound.
        kwargs["ulimits"] = [*(kwargs["ulimits"] or []), docker.types.Ulimit(name="nproc", soft=PODMAN_NPROC, hard=PODMAN_NPROC)]
        degraded.append(f"nproc ulimit set to {PODMAN_NPROC}: Podman needs it explicit")
    name = f"armor-{task_id}-{labels.get(LABEL_REQUEST, '')[-8:].lower()}".rstrip("-")
    kwargs.pop("detach")
    try:
        try:
            container = engine.client.containers.create(image.id, name=name, **kwargs)
        except docker.errors.APIError as exc:
            if not (kwargs.get("init") and "container-init binary not found" in str(exc.explanation or exc)):
                raise
            # Podman without its init (catatonit): run without one rather than not at all, and say so.
            kwargs["init"] = None
            degraded.append("init: the engine has no init binary (for Podman: apt-get install catatonit); "
                            "the container runs without one, so zombie processes are not reaped")
            container = engine.client.containers.create(image.id, name=name, **kwargs)
    except docker.errors.APIError as exc:
        raise DockerError(f"task {task_id!r}: the engine refused the container: {exc.explanation or exc}") from None
    try:
        container.start()
    except docker.errors.APIError as exc:
        # Created but not started (unknown user, no 'sleep' in the image ...):
        # remove it now rather than leave a labelled husk for the sweep.
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass
        raise DockerError(f"task {task_id!r}: the container would not start: {exc.explanation or exc}") from None
    mount_note = None
    running_as: tuple[int, int] | None = None
    volume_notes: list[str] = []
    try:
        volume_notes = _hand_volumes(container, spec, identity.uid, identity.gid)
        container.reload()
        pid = int(container.attrs["State"]["Pid"])
        running_as = process_ids(pid)
        if running_as is not None and running_as[0] == 0 and not identity.root:
            # A user name the image maps to uid 0: refused like 'root' itself.
            raise ConfigError(f"task {task_id!r}: sandbox user {identity.user!r} is root in image {spec.image}; "
                              "use user='auto' (uid 61000), or allow_root=True")
        if worktree is not None:
            mount_note = harden_worktree_mount(pid, spec.workdir)
    except (docker.errors.APIError, ArmorError, KeyError, ValueError) as exc:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass
        if isinstance(exc, ConfigError):
            raise
        raise DockerError(f"task {task_id!r}: could not make the worktree mount nosuid,nodev: {exc}") from None
    adopted: AdoptStats | None = None
    if worktree is not None and os.geteuid() != 0 and identity.uid is not None and not identity.root:
        # A plain user cannot chown: the agent takes armor's directories over itself, before its first command.
        adopted = adopt_in_container(container, identity.uid, spec.workdir)
    effective = spec.to_payload()
    effective.update(
        {
            "image_id": image.id,
            **identity.to_payload(),
            # What the kernel says the container's first process runs as (None: not visible from here).
            "running_as": {"uid": running_as[0], "gid": running_as[1]} if running_as is not None else None,
            "security_opt": security_opt,
            "mounts": plan.described,
            "worktree_mount": "nosuid,nodev" if worktree is not None and mount_note is None else None,
            "shared": shared.to_payload() if shared is not None else None,
            "adopted": adopted.to_payload() if adopted is not None else None,
            "degraded": degraded + ([f"worktree mount not nosuid,nodev: {mount_note}"] if mount_note else [])
            + (adopted.notes if adopted is not None else []),
            "notes": (["runs as root by explicit opt-in (allow_root=True)"] if identity.root else [])
            + (shared.notes if shared is not None else []) + volume_notes,
        }
    )
    return container, effective


def _hand_volumes(container: Container, spec: SandboxSpec, uid: int | None, gid: int | None) -> list[str]:
    """Give each declared volume's top directory to the agent's uid and group (a new volume's is root's).

    The engine's archive API does it (no capability is given to anything in
    the container); it writes through the root filesystem, so with a
    read-only root it cannot, and the note says so.
    """
    if not spec.volumes or uid is None:
        return []
    if spec.read_only:
        return [f"volume {path} keeps the owner of the image's directory there (root if none): with a read-only "
                "root armor cannot hand it to the agent" for path in spec.volumes]
    for path in spec.volumes:
        parent, _, name = path.rpartition("/")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            entry = tarfile.TarInfo(name)
            entry.type, entry.uid, entry.gid, entry.mode = tarfile.DIRTYPE, uid, gid if gid is not None else uid, 0o2770
            tar.addfile(entry)
        try:
            container.put_archive(parent or "/", buffer.getvalue())
        except docker.errors.APIError as exc:
            raise DockerError(f"could not hand volume {path} to the agent: {exc.explanation or exc}") from None
    return []


def find_containers(engine: Engine, *, task_id: str | None = None, request_id: str | None = None) -> list[Container]:
    """Armor-labelled containers (running or not), optionally for one task or start request."""
    filters = [LABEL_TASK if task_id is None else f"{LABEL_TASK}={task_id}"]
    if request_id is not None:
        filters.append(f"{LABEL_REQUEST}={request_id}")
    # A container removed between the listing and docker-py's inspect of it (a completion, a sweep,
    # another client of a shared daemon) is simply not there any more, not an error.
    found: list[Container] = engine.client.containers.list(all=True, filters={"label": filters}, ignore_removed=True)
    return found


def containers_by_task(engine: Engine) -> dict[str, list[dict[str, str]]]:
    """``{task id: [{"id", "status"}]}`` of every armor-labelled container, from one listing.

    :func:`find_containers` per task costs a listing and an inspect of each
    container (docker-py's list inspects them); reconciling a hundred tasks
    after a crash needs only the ids and states, which the listing has.
    """
    rows = engine.client.api.containers(all=True, filters={"label": [LABEL_TASK]})
    found: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        task = (row.get("Labels") or {}).get(LABEL_TASK)
        if task:
            found.setdefault(task, []).append({"id": str(row["Id"])[:12], "status": str(row.get("State", ""))})
    return found


def remove_container(container: Container, *, timeout: int = 5) -> bool:
    """Stop and remove; True if it was there. Missing containers are not an error (idempotent)."""
    state = (container.labels or {}).get(LABEL_STATE)
    if state:
        _adoption_marker(state, container.id).unlink(missing_ok=True)
    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if exc.status_code == 409:  # removal already in progress
            return True
        raise DockerError(f"cannot remove container {container.short_id}: {exc.explanation or exc}") from None
    return True
