"""Container snapshots: the part of a checkpoint that lives outside the worktree.

A task whose container can change files a new container would not have — a
writable root filesystem (``read_only=False``: package installs, files under
``/etc`` or ``/usr/local``) or declared ``volumes`` — gets, with each
checkpoint, a snapshot of them:

* an image of the container made with ``docker commit`` (writable root only),
  labelled ``armor.snapshot`` with the task, session, state directory and
  checkpoint ids, tagged ``armor-rx-snapshot/<task>:<snapshot>``, never pushed;
* each volume's contents as a tar (the engine's archive API) in
  ``<state_dir>/docker/snapshots/<task>/<snapshot>/<n>.tar``.

Write-ahead: the snapshot is made first and the git checkpoint commit that
names it (its ``Armor-Container`` trailer) is written after, so a checkpoint
never names a part it does not have. A crash in between leaves a snapshot
that no checkpoint names; :meth:`ContainerSnapshots.sweep_task` removes those
(after each checkpoint and restore of the task, and in ``gc``) holding the
task's checkpoint lock, so one being made is never taken for an orphan. The
snapshots of pruned checkpoints go the same way; those of a task that ended
are removed with its container.

What is not saved: ``tmpfs`` mounts (``/tmp``) and running processes — a
restore starts a new container from the snapshot.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
from docker.models.containers import Container
from docker.models.images import Image

from armor_rx.errors import DockerError
from armor_rx.sinks.docker.containers import (
    LABEL_SESSION,
    LABEL_STATE,
    LABEL_TASK,
    SessionIdentity,
    create_task_container,
    remove_container,
)
from armor_rx.sinks.docker.engine import Engine
from armor_rx.sinks.docker.spec import SandboxSpec

LABEL_SNAPSHOT = "armor.snapshot"
LABEL_CHECKPOINT = "armor.checkpoint"
REPOSITORY = "armor-rx-snapshot"
_SNAPSHOT_ID = re.compile(r"snap-[0-9a-f]{12}")


@dataclass(frozen=True)
class SnapshotRemoval:
    """One snapshot a sweep removed (or kept, and why)."""

    task_id: str
    snapshot: str
    image: str | None
    removed: bool
    why: str

    def to_payload(self) -> dict[str, Any]:
        return {"task": self.task_id, "snapshot": self.snapshot, "image": self.image, "removed": self.removed,
                "why": self.why}


class ContainerSnapshots:
    """Makes, restores and removes the snapshots of one state directory's task containers.

    ``engine`` gives the engine (connected lazily by the Docker effect);
    without a ``state_dir`` volumes cannot be saved and a task that declares
    them fails its checkpoint with a DockerError.
    """

    def __init__(self, engine: Callable[[], Engine], state_dir: Path | None, session: SessionIdentity) -> None:
        self._engine = engine
        self.state_dir = state_dir
        self.session = session

    @property
    def engine(self) -> Engine:
        return self._engine()

    def _dir(self, task_id: str, snapshot: str | None = None) -> Path:
        if self.state_dir is None:
            raise DockerError("volumes can only be saved by a session with a state directory")
        base = self.state_dir / "docker" / "snapshots" / task_id
        return base / snapshot if snapshot is not None else base

    # -- making ------------------------------------------------------------------
    def capture(self, task_id: str, checkpoint_id: str, container: Container, spec: SandboxSpec) -> dict[str, Any]:
        """Save what ``container`` holds outside the worktree; the record for the checkpoint.

        The caller has frozen the container (so the image and the volumes are
        of one moment). Raises DockerError when the engine refuses.
        """
        snapshot = f"snap-{uuid.uuid4().hex[:12]}"
        labels = {LABEL_SNAPSHOT: snapshot, LABEL_CHECKPOINT: checkpoint_id, LABEL_TASK: task_id,
                  LABEL_SESSION: self.session.id, **({LABEL_STATE: str(self.state_dir)} if self.state_dir else {})}
        volumes: dict[str, str] = {}
        if spec.volumes:
            target = self._dir(task_id, snapshot)
            target.mkdir(parents=True, exist_ok=True)
            for index, path in enumerate(spec.volumes):
                name = f"{index}.tar"
                try:
                    chunks, _stat = container.get_archive(f"{path}/.")
                    tmp = target / f"{name}.tmp"
                    with open(tmp, "wb") as out:
                        for chunk in chunks:
                            out.write(chunk)
                        out.flush()
                        os.fsync(out.fileno())
                    os.replace(tmp, target / name)
                except docker.errors.APIError as exc:
                    why = exc.explanation or exc
                    raise DockerError(f"task {task_id!r}: could not save volume {path}: {why}") from None
                volumes[path] = name
        image: str | None = None
        if not spec.read_only:
            try:
                # Frozen by the caller: docker's own pause would fail on a paused container.
                made = self.engine.client.api.commit(container.id, repository=f"{REPOSITORY}/{task_id}", tag=snapshot,
                                                     pause=False, conf={"Labels": labels})
            except docker.errors.APIError as exc:
                why = exc.explanation or exc
                raise DockerError(f"task {task_id!r}: docker commit of its container failed: {why}") from None
            image = str(made["Id"])
        return {"snapshot": snapshot, "image": image, "volumes": volumes, "container": container.id,
                "taken_at": round(time.time(), 3)}

    # -- restoring ---------------------------------------------------------------
    def restore_volumes(self, task_id: str, part: Mapping[str, Any], container: Container) -> list[str]:
        """Fill ``container``'s (empty) volumes from the snapshot; the paths restored.

        Raises DockerError when an archive is missing (the snapshot was removed).
        """
        restored: list[str] = []
        snapshot = str(part.get("snapshot"))
        for path, name in dict(part.get("volumes") or {}).items():
            archive = self._dir(task_id, _checked(snapshot)) / _checked_name(str(name))
            try:
                data = open(archive, "rb")
            except OSError as exc:
                raise DockerError(f"task {task_id!r}: the saved contents of volume {path} are gone ({exc.strerror}); "
                                  "the checkpoint's volumes cannot be restored") from None
            try:
                with data:
                    container.put_archive(str(path), data)  # streamed, never whole in memory
            except docker.errors.APIError as exc:
                why = exc.explanation or exc
                raise DockerError(f"task {task_id!r}: could not restore volume {path}: {why}") from None
            restored.append(str(path))
        return restored

    def start_from(self, task_id: str, part: Mapping[str, Any], spec: SandboxSpec, *, labels: dict[str, str],
                   worktree: Path | None) -> tuple[Container, dict[str, Any], list[str]]:
        """A new task container made from the snapshot ``part``: its image (else the spec's), its volumes refilled.

        Returns the container, its effective settings and the volumes restored;
        a container that could not be filled is removed again.
        """
        image = str(part.get("image") or spec.image)
        container, effective = create_task_container(self.engine, spec.with_overrides({"image": image}),
                                                     task_id=task_id, labels=labels, worktree=worktree,
                                                     fresh_volumes=True)
        try:
            volumes = self.restore_volumes(task_id, part, container)
        except BaseException:
            remove_container(container, timeout=spec.stop_timeout)
            raise
        return container, effective, volumes

    def changes(self, container: Container, checkpoint: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``container``'s changes outside its mounts, as ``docker diff`` lists them.

        They are against the image the container was made from: the task's
        image, or the snapshot of the checkpoint it was last restored to
        (``against`` says which); the engine compares a container with its
        own image only. ``checkpoint`` is the record of a checkpoint asked
        about: when the container was not made from its snapshot, ``note``
        says that the changes are not relative to it.
        """
        kinds = {0: "modified", 1: "added", 2: "deleted"}
        changes = [{"path": str(c["Path"]), "kind": kinds.get(int(c["Kind"]), "changed")}
                   for c in container.diff() or []]
        image_id = str(container.attrs.get("Image", ""))
        try:
            labels = self.engine.client.images.get(image_id).labels or {}
        except docker.errors.ImageNotFound:
            labels = {}
        made_from = labels.get(LABEL_CHECKPOINT) if labels.get(LABEL_SNAPSHOT) else None
        out: dict[str, Any] = {"container": container.id, "image": image_id,
                               "against": f"snapshot of {made_from}" if made_from else "image", "changes": changes}
        if checkpoint is not None and checkpoint.get("image") != image_id:
            out["note"] = ("the container was not made from this checkpoint's snapshot, so its changes are listed "
                           "against the image it was made from")
        return out

    def exists(self, task_id: str, part: Mapping[str, Any]) -> bool:
        """Whether everything the checkpoint record ``part`` names is still there."""
        return not self.missing(task_id, part)

    def missing(self, task_id: str, part: Mapping[str, Any]) -> list[str]:
        """What the checkpoint record ``part`` names that is gone, each said for a person (empty: all there).

        Read before a restore changes anything, so a snapshot image removed by
        hand (``docker rmi``, a prune) or a deleted volume archive refuses the
        rollback whole instead of leaving it half done.
        """
        gone: list[str] = []
        image = part.get("image")
        if image:
            try:
                self.engine.client.images.get(str(image))
            except docker.errors.ImageNotFound:
                gone.append(f"snapshot image {str(image).removeprefix('sha256:')[:12]}")
        volumes = dict(part.get("volumes") or {})
        if volumes:
            saved = self._dir(task_id, _checked(str(part.get("snapshot"))))
            gone += [f"the saved contents of volume {path} ({saved / _checked_name(str(name))})"
                     for path, name in volumes.items() if not (saved / _checked_name(str(name))).is_file()]
        return gone

    # -- removing ----------------------------------------------------------------
    def images(self, task_id: str | None = None) -> list[Image]:
        """The snapshot images of this state directory (of one task, if given)."""
        filters = [LABEL_SNAPSHOT] + ([f"{LABEL_TASK}={task_id}"] if task_id is not None else [])
        if self.state_dir is not None:
            filters.append(f"{LABEL_STATE}={self.state_dir}")
        found: list[Image] = self.engine.client.images.list(filters={"label": filters})
        return found

    def _saved_dirs(self, task_id: str) -> Iterator[Path]:
        if self.state_dir is None:
            return
        base = self._dir(task_id)
        if base.is_dir():
            yield from (p for p in base.iterdir() if _SNAPSHOT_ID.fullmatch(p.name))

    def tasks(self) -> set[str]:
        """The tasks that have snapshots (images or saved volumes) here."""
        found = {str(image.labels.get(LABEL_TASK)) for image in self.images()}
        if self.state_dir is not None and (self.state_dir / "docker" / "snapshots").is_dir():
            found.update(p.name for p in (self.state_dir / "docker" / "snapshots").iterdir() if p.is_dir())
        return found

    def sweep_task(self, task_id: str, keep: Collection[str], *, dry_run: bool = False) -> list[SnapshotRemoval]:
        """Remove the task's snapshots whose id is not in ``keep`` (all of them with an empty ``keep``).

        The caller holds the task's checkpoint lock (or the task is over). An
        image still in use (a container or a newer snapshot is made from it)
        stays, and the next sweep tries again.
        """
        out: list[SnapshotRemoval] = []
        for image in self.images(task_id):
            snapshot = str(image.labels.get(LABEL_SNAPSHOT))
            if snapshot in keep:
                continue
            if dry_run:
                out.append(SnapshotRemoval(task_id, snapshot, image.id, False, "would remove: no checkpoint names it"))
                continue
            try:
                for tag in image.tags:
                    self.engine.client.images.remove(tag, noprune=False)
                if not image.tags:
                    self.engine.client.images.remove(image.id)
                out.append(SnapshotRemoval(task_id, snapshot, image.id, True, "no checkpoint names it"))
            except docker.errors.ImageNotFound:
                out.append(SnapshotRemoval(task_id, snapshot, image.id, True, "already gone"))
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    why = exc.explanation or exc
                    raise DockerError(f"cannot remove snapshot image {image.short_id}: {why}") from None
                out.append(SnapshotRemoval(task_id, snapshot, image.id, False, f"in use: {exc.explanation or exc}"))
        for saved in list(self._saved_dirs(task_id)):
            if saved.name in keep:
                continue
            if not dry_run:
                shutil.rmtree(saved, ignore_errors=True)
            if not any(r.snapshot == saved.name for r in out):
                out.append(SnapshotRemoval(task_id, saved.name, None, not dry_run, "no checkpoint names its volumes"))
        if not dry_run and self.state_dir is not None:
            try:
                self._dir(task_id).rmdir()  # only when empty
            except OSError:
                pass
        return out

    def sweep(self, *, is_active: Callable[[str], bool], referenced: Callable[[str], Collection[str]],
              lock: Callable[[str], AbstractContextManager[object]], dry_run: bool = False) -> list[SnapshotRemoval]:
        """Every task's snapshots that no checkpoint names, and all of those of tasks that are over (``gc``)."""
        out: list[SnapshotRemoval] = []
        for task_id in sorted(self.tasks()):
            if not is_active(task_id):
                out += self.sweep_task(task_id, (), dry_run=dry_run)
                continue
            with lock(task_id):
                out += self.sweep_task(task_id, set(referenced(task_id)), dry_run=dry_run)
        return out


def _checked(snapshot: str) -> str:
    if _SNAPSHOT_ID.fullmatch(snapshot) is None:
        raise DockerError(f"{snapshot!r} is not a snapshot id (snap-<12 hex digits>); the checkpoint record is damaged")
    return snapshot


def _checked_name(name: str) -> str:
    if re.fullmatch(r"[0-9]{1,2}\.tar", name) is None:
        raise DockerError(f"{name!r} is not a saved volume's name; the checkpoint record is damaged")
    return name
