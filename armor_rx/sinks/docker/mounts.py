"""What a task's container sees of the host: its worktree, its ``.git`` link, the repository's git data.

* The worktree at the workdir, read-write, then remounted ``nosuid,nodev`` in
  the container's mount namespace (:func:`harden_worktree_mount`). Docker 20.10
  (API 1.41) has no bind option for this, and a ``local`` volume with
  ``o=bind,nosuid,nodev`` does not work either: the kernel ignores those flags
  on a new bind mount and the volume driver only remounts for ``ro``. So armor,
  when it is root, enters the container's mount namespace once after start and
  remounts the bind; the result is read back from ``/proc/<pid>/mountinfo`` and
  reported. When it cannot (armor is not root, a remote or rootless engine)
  the report says so, and ``no-new-privileges``, no capabilities and a non-root
  uid still keep a set-id program from gaining anything in the container.
* The worktree's ``.git`` file, bound read-only over itself: the agent can
  neither rewrite it (EROFS) nor rename or delete it (EBUSY on a mount point).
* The repository's common git directory, read-only at its host path (the path
  the ``.git`` link names), with a tmpfs over its ``worktrees/`` directory
  (other tasks' admin data) and over armor's state directory if it lies inside,
  and this task's admin directory bound read-only again on top. So ``git
  status``, ``diff``, ``log`` and ``show`` work inside, and nothing inside can
  write refs, objects, hooks, config or the index.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from armor_rx.errors import DockerError

# Git inside the container: no optional locks (``git status`` would refresh and
# write the read-only index), and a repository owned by another uid (the host
# user's checkout) is trusted there, since the agent cannot change its config.
GIT_ENVIRONMENT = {
    "GIT_OPTIONAL_LOCKS": "0",
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "safe.directory",
    "GIT_CONFIG_VALUE_0": "*",
}


@dataclass(frozen=True)
class GitData:
    """Where a linked worktree's git data lives on the host."""

    link: Path  # <worktree>/.git, the file
    admin: Path  # <common>/worktrees/<name>
    common: Path  # the repository's .git directory
    hide: tuple[Path, ...] = ()  # directories under ``common`` the agent must not see


@dataclass
class MountPlan:
    """The binds and tmpfs mounts of one container, and what they mean (for ``container.started``)."""

    binds: dict[str, dict[str, str]] = field(default_factory=dict)
    tmpfs: dict[str, str] = field(default_factory=dict)
    described: dict[str, str] = field(default_factory=dict)


def git_data(worktree: Path, state_dir: Path | None) -> GitData | None:
    """The git data a linked worktree's ``.git`` file names, or None (not a linked worktree).

    Read on the host before the container exists, so the agent has not had a
    chance to change it; the git sink verifies it again before its own work.
    """
    link = worktree / ".git"
    try:
        if not link.is_file() or link.is_symlink():
            return None
        text = link.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("gitdir: "):
        return None
    admin = Path(text[len("gitdir: "):].strip())
    if not admin.is_absolute() or admin.is_symlink() or not admin.is_dir():
        return None
    try:
        common = (admin / (admin / "commondir").read_text().strip()).resolve()
    except OSError:
        return None
    if admin.parent.resolve() != common / "worktrees":
        return None
    hide = [common / "worktrees"]
    if state_dir is not None and state_dir.resolve().is_relative_to(common):
        hide.append(state_dir.resolve())
    return GitData(link=link, admin=admin.resolve(), common=common, hide=tuple(hide))


def plan_mounts(worktree: Path, workdir: str, data: GitData | None, *, with_data: bool = True) -> MountPlan:
    """The worktree read-write at ``workdir``, its ``.git`` link and git data read-only (see module docs).

    The link is bound even when ``with_data`` is False (no git inside): the
    worktree root stays the person's, and without its link an agent could make
    the root itself a bare repository that git on the host trusts.
    """
    plan = MountPlan()
    plan.binds[str(worktree)] = {"bind": workdir, "mode": "rw"}
    plan.described[workdir] = f"{worktree} (rw)"
    if data is None:
        return plan
    link_in = f"{workdir.rstrip('/')}/.git"
    plan.binds[str(data.link)] = {"bind": link_in, "mode": "ro"}
    plan.described[link_in] = f"{data.link} (ro)"
    if not with_data:
        return plan
    plan.binds[str(data.common)] = {"bind": str(data.common), "mode": "ro"}
    plan.described[str(data.common)] = f"{data.common} (ro)"
    for hidden in data.hide:
        plan.tmpfs[str(hidden)] = "ro,nosuid,nodev,noexec,size=64k"
        plan.described[str(hidden)] = "hidden (empty tmpfs)"
    plan.binds[str(data.admin)] = {"bind": str(data.admin), "mode": "ro"}
    plan.described[str(data.admin)] = f"{data.admin} (ro)"
    return plan


_REMOUNT = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/proc/%s/ns/mnt" % sys.argv[1], os.O_RDONLY)
if libc.setns(fd, 0x00020000) != 0:
    sys.exit("setns: " + os.strerror(ctypes.get_errno()))
MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND = 2, 4, 32, 4096
if libc.mount(None, sys.argv[2].encode(), None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, None) != 0:
    sys.exit("mount: " + os.strerror(ctypes.get_errno()))
"""


def mount_options(pid: int, target: str) -> set[str] | None:
    """The per-mount options of ``target`` in process ``pid``'s mount namespace (None: cannot read)."""
    try:
        text = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return None
    found: set[str] | None = None
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) > 5 and parts[4] == target:
            found = set(parts[5].split(","))  # the last mount on a path is the one in effect
    return found


def process_ids(pid: int) -> tuple[int, int] | None:
    """The effective (uid, gid) of process ``pid`` as the host sees it, or None when it cannot be read."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    ids: dict[str, int] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Uid", "Gid") and len(rest.split()) > 1:
            ids[key] = int(rest.split()[1])
    return (ids["Uid"], ids["Gid"]) if len(ids) == 2 else None


def harden_worktree_mount(pid: int, target: str) -> str | None:
    """Remount ``target`` nosuid,nodev inside process ``pid``'s mount namespace; None, or why it could not.

    Needs root in the engine's PID namespace (a fresh interpreter does the
    ``setns``: a threaded process may not change its mount namespace).
    """
    options = mount_options(pid, target)
    if options is not None and {"nosuid", "nodev"} <= options:
        return None
    if os.geteuid() != 0:
        return "armor is not root, so it cannot remount the worktree nosuid,nodev"
    if options is None:
        return f"the container's process {pid} is not visible here (a remote or rootless engine)"
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _REMOUNT, str(pid), target],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"the remount could not run: {exc}"
    if done.returncode != 0:
        return f"the remount failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    options = mount_options(pid, target) or set()
    if not {"nosuid", "nodev"} <= options:
        raise DockerError(f"the worktree mount at {target} is still {','.join(sorted(options))} after a nosuid,nodev remount")
    return None
