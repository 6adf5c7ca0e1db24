"""A tiny local image for machines that cannot reach a registry.

``import_busybox_image`` builds ``armor-rx/busybox`` by ``docker import`` of a
root filesystem made from the host's static busybox (Debian: ``busybox-static``),
with a non-root ``agent`` user; the demo and the tests use it.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

from armor_rx.errors import DockerError
from armor_rx.sinks.docker.engine import Engine

BUSYBOX_IMAGE = "armor-rx/busybox:latest"
APPLETS = ("sh", "ls", "cat", "echo", "true", "false", "sleep", "dd", "head", "yes", "wc", "nc", "wget", "id", "touch",
           "mkdir", "rm", "seq", "env", "kill", "pwd", "test", "printf", "tr", "grep", "sed", "date", "uname")


def find_busybox() -> Path:
    """The host's static busybox, or DockerError saying how to get one."""
    found = shutil.which("busybox") or ("/bin/busybox" if Path("/bin/busybox").exists() else None)
    if found is None:
        raise DockerError("no busybox on this machine to build a local image from; install it (apt-get install busybox-static)")
    return Path(found)


def busybox_rootfs(busybox: Path | None = None) -> bytes:
    """A tar of a tiny root filesystem: busybox, applet symlinks, a non-root user."""
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
        add_dir("home/agent", 0o755, uid=1000)
        add_file("bin/busybox", binary.read_bytes(), 0o755)
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/home/agent:/bin/sh\n")
        add_file("etc/group", b"root:x:0:\nagent:x:1000:\n")
    return buf.getvalue()


def import_busybox_image(engine: Engine, tag: str = BUSYBOX_IMAGE) -> str:
    """Import the busybox image into ``engine`` as ``tag`` (once; later calls reuse it)."""
    try:
        engine.client.images.get(tag)
        return tag
    except Exception:  # not there yet (docker.errors.ImageNotFound)
        pass
    repository, _, version = tag.partition(":")
    engine.api.import_image_from_data(busybox_rootfs(), repository=repository, tag=version or "latest")
    return tag
