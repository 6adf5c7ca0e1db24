"""Who the agent is in its container: a fixed unprivileged uid, the host user's group, never root by default.

The policy (docs/security.md, "Ownership"):

* The agent runs as uid :data:`AGENT_UID` whatever the image says, even when
  the image has no such user: Docker accepts a numeric ``uid:gid`` without an
  ``/etc/passwd`` entry. It is neither root (a root agent could leave a
  setuid-root binary in its worktree) nor the host user (files the agent makes
  are the agent's, so git's ``safe.directory`` check refuses a repository the
  agent made when a person runs git on the host).
* Its group is the *shared group*: the group armor runs as (the host user's),
  or :data:`AGENT_GID` when that is root's group 0. The worktree is
  group-writable with setgid directories (see :mod:`.access`), so the host
  user and the agent can both read, write and remove each other's files.
* Root only when the spec says so twice: ``user="root"`` (or ``"0"``) *and*
  ``allow_root=True``; it is logged and stated in ``container.started``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import structlog

from armor_rx.errors import ConfigError
from armor_rx.sinks.docker.spec import SandboxSpec

# Above Debian's range for people (1000-59999), below systemd's dynamic users
# (61184-65519) and inside the 65536 ids a rootless engine maps.
AGENT_UID = 61000
AGENT_GID = 61000

_log = structlog.get_logger("armor_rx.docker")


@dataclass(frozen=True)
class AgentIdentity:
    """The uid and gid a task's commands run as, and the group its worktree is shared through."""

    uid: int | None  # None: a named user the engine resolves in the image
    gid: int | None
    user: str  # what the engine gets ("61000:1000", or the spec's own string)
    root: bool = False

    def to_payload(self) -> dict[str, object]:
        return {"user": self.user, "uid": self.uid, "gid": self.gid, "root": self.root}


def shared_gid() -> int:
    """The group the worktree is shared through: armor's own, unless that is root's."""
    gid = os.getegid()
    return gid if gid != 0 else AGENT_GID


def _numeric(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes other scripts' digits, which the engine reads as a name."""
    return text.isascii() and text.isdigit()


def _is_root(user: str) -> bool:
    # The engine reads "00" or "0000" as uid 0: compare numbers, not spellings.
    name = user.partition(":")[0].strip()
    return name in ("", "root") or (_numeric(name) and int(name) == 0)


def resolve_identity(spec: SandboxSpec) -> AgentIdentity:
    """The identity for ``spec.user``; ConfigError for root without ``allow_root``.

    ``"auto"`` is ``AGENT_UID:<shared group>``. A numeric ``"uid"`` or
    ``"uid:gid"`` is taken as is (a missing gid is the shared group); a name is
    passed to the engine, which looks it up in the image.
    """
    if spec.user == "auto":
        return AgentIdentity(AGENT_UID, shared_gid(), f"{AGENT_UID}:{shared_gid()}")
    if _is_root(spec.user):
        if not spec.allow_root:
            raise ConfigError(
                f"sandbox user {spec.user!r} is root; tasks never run as root unless the spec also says "
                "allow_root=True (or use user='auto', an unprivileged uid)"
            )
        _log.warning("sandbox runs as root by explicit opt-in (allow_root=True)", user=spec.user)
        return AgentIdentity(0, 0, spec.user or "0:0", root=True)
    uid_text, _, gid_text = spec.user.partition(":")
    if _numeric(uid_text) and (not gid_text or _numeric(gid_text)):
        gid = int(gid_text) if gid_text else shared_gid()
        if gid == 0 and not spec.allow_root:
            raise ConfigError(f"sandbox user {spec.user!r} has root's group 0; use another gid, or allow_root=True")
        return AgentIdentity(int(uid_text), gid, f"{uid_text}:{gid}")
    return AgentIdentity(None, None, spec.user)


def check_exec_user(spec: SandboxSpec, user: str | None) -> None:
    """A command's own ``user`` follows the same rule: root (or root's group) only with ``allow_root``.

    Without ``allow_root`` it must be numeric: a name could mean uid 0 in the
    image, and a command's user cannot be checked before it runs.
    """
    if user is None or spec.allow_root:
        return
    uid_text, _, gid_text = user.partition(":")
    numeric = _numeric(uid_text) and (not gid_text or _numeric(gid_text))
    if _is_root(user) or gid_text.strip() == "root" or (numeric and gid_text and int(gid_text) == 0) or not numeric:
        raise ConfigError(
            f"cannot run a command as {user!r}: the task's sandbox does not allow root; give a numeric, "
            "non-root 'uid' or 'uid:gid' (or set allow_root=True in its spec)"
        )
