"""The directories armor checked out into a worktree become the agent's, so host git distrusts them.

Why: git on the host takes a directory for a bare repository when it holds
``HEAD``, ``objects/`` and ``refs/``, and then trusts its ``config`` (say a
``core.fsmonitor`` command) if the directory is owned by the person running
git (``safe.directory``). A directory the agent made is owned by the agent's
uid, so git refuses it. The directories armor itself checked out were the host
user's: an agent that planted a bare repository in one of them (``src/``)
made ``cd <worktree>/src && git status`` run its command as that person.
So every directory *below* the worktree root is given to the agent's uid
(the root stays the person's, so plain git works there through the ``.git``
link, which git finds before it considers the root a bare repository):

* armor as root chowns them on the host, in the share walk
  (:func:`armor_rx.sinks.docker.access.share_worktree` with ``owner=``);
* armor as a plain user cannot give a file away, so the agent does it itself,
  as its own uid, in its container (:data:`ADOPT_SCRIPT`): each directory that
  is not yet its own is replaced by a new one of the same name and mode, with
  the entries moved in. That runs nothing with more rights than the agent
  already has. The shared group, the setgid bit and the default ACL are
  inherited from the parent, so the person keeps read, write and remove.

A pass cut short (the container killed mid-way) leaves ``<dir>.armor-adopt.XXXXXX``
beside or instead of a directory: the next pass puts it back first. The
random tail is why: with a fixed name, an entry the agent put there first (a
file ``src.armor-adopt``, say in a checkpoint a rollback brings back) made the
pass fail on ``src`` and leave it the person's; and a repository's own
``notes.armor-adopt/`` was taken for a killed pass's and renamed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import docker.errors
from docker.types import Mount as DockerMount

#: Infix of the directory a pass moves entries into, ``<dir>.armor-adopt.XXXXXX`` (a killed pass may leave one).
SUFFIX = ".armor-adopt"

# POSIX sh with find, xargs -0, stat -c, mkdir, mv, rmdir, chmod (busybox has them all).
# $1: the agent's uid. Directories are listed first (find runs to the end before anything moves),
# parents before children, so a child's path is still right once its parent was replaced.
ADOPT_SCRIPT = r"""
set -u
uid=$1
list=$(mktemp) || { echo "armor-adopt: no temporary file"; exit 70; }
trap 'rm -f "$list"' EXIT
# A pass that was killed: put its directories back.
find . -xdev -mindepth 1 -type d -user "$uid" -name '*.armor-adopt.??????' -print0 > "$list"
xargs -0 -r sh -c '
  bad=0
  for t do
    d=${t%.armor-adopt.??????}
    if [ -e "$d" ] || [ -L "$d" ]; then
      for e in "$t"/* "$t"/.[!.]* "$t"/..?*; do
        if [ -e "$e" ] || [ -L "$e" ]; then mv -- "$e" "$d"/ || bad=1; fi
      done
      rmdir -- "$t" || bad=1
    else
      mv -- "$t" "$d" || bad=1
    fi
  done
  exit $bad' sh < "$list" || echo "armor-adopt: could not put back every directory a killed pass moved aside"
find . -xdev -mindepth 1 -type d ! -user "$uid" -print0 > "$list"
export uid
xargs -0 -r sh -c '
  moveall() {
    _from=$1 _to=$2
    set --
    for _e in "$_from"/* "$_from"/.[!.]* "$_from"/..?*; do
      if [ -e "$_e" ] || [ -L "$_e" ]; then
        set -- "$@" "$_e"
        if [ $# -ge 200 ]; then mv -- "$@" "$_to"/ || return 1; set --; fi
      fi
    done
    [ $# -eq 0 ] || mv -- "$@" "$_to"/
  }
  ok=0 failed=0
  for d do
    # A fresh name each time: one the agent made first cannot make the pass fail. It gets the
    # mode at once (mktemp makes it 0700): a pass killed now leaves the files readable to the person (no quote marks in here: this is inside sh -c '...').
    t=
    if ! { mode=$(stat -c %a "$d") && t=$(mktemp -d "$d.armor-adopt.XXXXXX") && chmod "$mode" "$t"; }; then
      [ -z "$t" ] || rmdir -- "$t"
      failed=$((failed + 1)); continue
    fi
    if moveall "$d" "$t" && rmdir -- "$d" && mv -- "$t" "$d"; then
      chmod "$mode" "$d"
      ok=$((ok + 1))
    else
      # Put back what moved; the directory stays as it was.
      [ -d "$d" ] || mv -- "$t" "$d"
      [ -d "$t" ] && { moveall "$t" "$d"; rmdir -- "$t"; }
      failed=$((failed + 1))
    fi
  done
  echo "armor-adopt: adopted $ok failed $failed"' sh < "$list"
"""

_RESULT = re.compile(r"armor-adopt: adopted (\d+) failed (\d+)")


@dataclass
class AdoptStats:
    """What one in-container pass did: directories handed to the agent, and ones it could not take."""

    adopted: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)

    def to_payload(self) -> dict[str, Any]:
        return {"adopted": self.adopted, "failed": self.failed, "notes": list(self.notes)}


def adopt_in_container(container: Any, uid: int, workdir: str) -> AdoptStats:
    """Run :data:`ADOPT_SCRIPT` in ``container`` as its own (the agent's) user, in ``workdir``.

    Never raises for what the image lacks (no shell, no find): the stats say
    so, and the caller reports it as a degraded protection. Used at start,
    before the agent's first command, when nothing of the agent's runs yet.
    """
    try:
        code, output = container.exec_run(["sh", "-c", ADOPT_SCRIPT, "sh", str(uid)], workdir=workdir,
                                          environment={"LC_ALL": "C"}, demux=False)
    except docker.errors.APIError as exc:
        return AdoptStats(notes=[f"the agent could not take over the worktree's directories: {exc.explanation or exc}"])
    return _outcome(code, output)


def adopt_beside(container: Any, uid: int, workdir: str, worktree: str, *, timeout: float = 300.0) -> AdoptStats:
    """Run :data:`ADOPT_SCRIPT` in a short-lived container beside the task's (which the caller keeps paused).

    After a rollback the agent may have processes running in its container:
    run there, the pass would race them (a directory renamed after it was
    listed, one made unmovable), and a restored directory would stay the
    person's. So the pass runs in a fresh container of the same image, as the
    same user, with only the worktree mounted, no network and no capabilities,
    while every process of the task's own container is frozen.
    """
    client = container.client
    try:
        container.reload()
        user = (container.attrs.get("Config") or {}).get("User") or str(uid)
        helper = client.containers.create(
            container.image.id, ["sh", "-c", ADOPT_SCRIPT, "sh", str(uid)], user=user, working_dir=workdir,
            environment={"LC_ALL": "C"}, network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
            read_only=True, tmpfs={"/tmp": "rw,nosuid,nodev,size=16m"}, pids_limit=64, mem_limit=128 * 1024 * 1024,
            mounts=[DockerMount(target=workdir, source=worktree, type="bind")],
            labels={"armor.adopt-for": str(container.id)})
    except docker.errors.APIError as exc:
        return AdoptStats(notes=[f"the agent could not take over the worktree's directories: {exc.explanation or exc}"])
    try:
        helper.start()
        code = helper.wait(timeout=timeout).get("StatusCode")
        output = helper.logs(stdout=True, stderr=True)
    except Exception as exc:  # the engine's error or a timeout from the HTTP client: reported, never raised
        return AdoptStats(notes=[f"the agent could not take over the worktree's directories: {exc}"])
    finally:
        try:
            helper.remove(force=True)
        except docker.errors.APIError:
            pass
    return _outcome(code, output)


def _outcome(code: int | None, output: bytes | None) -> AdoptStats:
    stats = AdoptStats()
    text = (output or b"").decode("utf-8", "replace")
    found = _RESULT.findall(text)
    for done, failed in found:
        stats.adopted += int(done)
        stats.failed += int(failed)
    if not found:
        if code in (0, None):
            return stats  # nothing to adopt: xargs -r ran no shell
        stats.notes.append(f"the agent could not take over the worktree's directories (exit {code}): {text.strip()[-300:]}")
    elif stats.failed:
        stats.notes.append(f"{stats.failed} directories armor made stay yours (the agent could not take them over): "
                           "git on the host would trust a repository planted in them")
    return stats
