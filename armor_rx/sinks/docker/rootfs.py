"""A tiny local image for machines that cannot reach a registry.

``import_busybox_image`` builds ``armor-rx/busybox`` by ``docker import`` of a
root filesystem made from the host's static busybox (Debian: ``busybox-static``),
with a non-root ``agent`` user (armor's fixed agent uid, 61000); the demo and the tests use it. With
``git=True`` the host's ``git`` binary and the shared libraries ``ldd`` lists
for it are copied in too, so git can be tried inside a sandbox offline.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import docker.errors

from armor_rx.errors import DockerError
from armor_rx.sinks.docker.engine import Engine

BUSYBOX_IMAGE = "armor-rx/busybox:latest"
# Bumped whenever the root filesystem changes (2: the agent user is uid 61000).
ROOTFS_LAYOUT = "2"
APPLETS = ("sh", "ls", "cat", "echo", "true", "false", "sleep", "dd", "head", "yes", "wc", "nc", "wget", "id", "touch",
           "mkdir", "rm", "seq", "env", "kill", "pwd", "test", "printf", "tr", "grep", "sed", "date", "uname", "chmod",
           "stat", "ln", "mv", "cp")


def find_busybox() -> Path:
    """The host's static busybox, or DockerError saying how to get one."""
    found = shutil.which("busybox") or ("/bin/busybox" if Path("/bin/busybox").exists() else None)
    if found is None:
        raise DockerError("no busybox on this machine to build a local image from; install it (apt-get install busybox-static)")
    return Path(found)


def shared_libraries(binary: Path) -> list[Path]:
    """The shared libraries ``ldd`` lists for ``binary`` (the dynamic loader included)."""
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise DockerError(f"cannot list the libraries of {binary} with ldd: {exc}") from None
    found = [Path(m) for m in re.findall(r"(/\S+) \(0x", out)]
    return [p for p in found if p.exists()]


def busybox_rootfs(busybox: Path | None = None, *, git: bool = False) -> bytes:
    """A tar of a tiny root filesystem: busybox, applet symlinks, a non-root user (and git if asked)."""
    binary = busybox or find_busybox()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_dir(name: str, mode: int = 0o755, uid: int = 0) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, uid, uid
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "tmp", "workspace", "home", "proc", "sys", "dev"):
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        # The agent's name for armor's fixed uid (armor_rx.sinks.docker.identity.AGENT_UID), so 'id -un' says "agent".
        add_dir("home/agent", 0o755, uid=61000)
        add_file("bin/busybox", binary.read_bytes(), 0o755)
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nagent:x:61000:61000:agent:/home/agent:/bin/sh\n")
        add_file("etc/group", b"root:x:0:\nagent:x:61000:\n")
        if git:
            _add_git(tar, add_file)
    return buf.getvalue()


def _add_git(tar: tarfile.TarFile, add_file: Callable[[str, bytes, int], None]) -> None:
    """The host's git (builtins only: status, diff, log, show, commit ...) and its libraries."""
    found = shutil.which("git")
    if found is None:
        raise DockerError("no git on this machine to copy into the image; install it (apt-get install git)")
    git = Path(os.path.realpath(found))
    made: set[str] = set()
    for path in [git, *shared_libraries(git)]:
        real = Path(os.path.realpath(path))
        parts = path.parts[1:-1]
        for i in range(1, len(parts) + 1):
            name = "/".join(parts[:i])
            if name not in made and name not in ("bin", "etc", "tmp", "home", "proc", "sys", "dev"):
                made.add(name)
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
        add_file(str(path).lstrip("/"), real.read_bytes(), 0o755)
    if str(git) != "/usr/bin/git":
        info = tarfile.TarInfo("usr/bin/git")
        info.type, info.linkname = tarfile.SYMTYPE, str(git)
        tar.addfile(info)


def import_busybox_image(engine: Engine, tag: str = BUSYBOX_IMAGE, *, git: bool = False) -> str:
    """Import the busybox image into ``engine`` as ``tag`` (once; later calls reuse it).

    An image imported by an older armor (another layout, another agent uid) is
    imported again: the ``armor.rootfs`` label says which layout an image has.
    """
    layout = f"{ROOTFS_LAYOUT}{'+git' if git else ''}"
    try:
        found = engine.client.images.get(tag)
        if (found.labels or {}).get("armor.rootfs") == layout:
            return tag
    except Exception:  # not there yet (docker.errors.ImageNotFound)
        pass
    import_rootfs(engine, busybox_rootfs(git=git), tag, changes=[f"LABEL armor.rootfs={layout}"])
    return tag


def import_rootfs(engine: Engine, data: bytes, tag: str, *, changes: list[str] | None = None) -> None:
    """``docker import`` of a root filesystem tar as ``tag``.

    Podman 4.3's Docker API ignores the tag of an import (the image is named
    ``:latest``): the tag is then set afterwards, so both engines end with ``tag``.
    """
    repository, _, version = tag.partition(":")
    reply = engine.api.import_image_from_data(data, repository=repository, tag=version or "latest", changes=changes)
    try:
        engine.client.images.get(tag)
        return
    except docker.errors.ImageNotFound:
        pass
    image_id = next((str(m["status"]) for m in _json_lines(reply) if str(m.get("status", "")).startswith("sha256:")), None)
    image = engine.client.images.get(image_id or f"{repository}:latest")
    image.tag(repository, version or "latest")


def _json_lines(reply: object) -> list[dict[str, object]]:
    import json

    out = []
    for line in str(reply or "").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def local_image(timeout: float = 10.0) -> str:
    """Make sure the engine ``DOCKER_HOST`` names has the local busybox image; returns its tag.

    What ``armor-rx image local``, the demo and the examples use on a machine
    with no registry. Raises DockerUnavailable when no engine answers.
    """
    from armor_rx.sinks.docker.engine import Engine

    engine = Engine.connect(timeout=timeout)
    try:
        return import_busybox_image(engine)
    finally:
        engine.close()
