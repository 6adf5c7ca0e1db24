"""Paths a task's tree may not hold: armor's own state directory, reserved like ``.git``.

The state directory usually sits in the repository (``.armor/``), and a task's
worktree mirrors the repository, so a ``.armor/`` the agent makes in its
worktree would, once committed and merged, be written into the user's
checkout — into the real state directory, planting files and forged log
segments. Reserving the name in every scan, restore, completion and merge
closes that door whatever the state directory holds; moving the state
directory out of the working tree would need a migration of every existing
one and leave older checkpoints that still hold ``.armor/`` trees, which
the reservation refuses anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from armor_rx.sinks.statedir import RESERVED_IN_TREES

#: Why a reserved path is left out; recorded with the checkpoint or completion.
REASON = "reserved for armor's state directory"


@dataclass(frozen=True)
class Reserved:
    """Reserved names (any depth, any letter case) and reserved relative paths.

    ``paths`` holds the state directory's place when it sits in the
    repository under another name (``--state-dir build/armor``).
    """

    names: frozenset[str] = frozenset(n.casefold() for n in RESERVED_IN_TREES)
    paths: frozenset[str] = field(default_factory=frozenset)
    _firsts: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())

    def __post_init__(self) -> None:
        # The scan asks about every name; most names are ruled out by their first letter.
        firsts = {n[:1].lower() for n in self.names} | {n[:1].upper() for n in self.names}
        object.__setattr__(self, "_firsts", frozenset(firsts))

    def name(self, name: str) -> bool:
        """Whether ``name`` is reserved wherever it stands."""
        return name[:1] in self._firsts and name.casefold() in self.names

    def path(self, path: str) -> bool:
        """Whether ``path`` (``/``-separated, relative) is or lies under a reserved path."""
        parts = path.split("/")
        if any(self.name(part) for part in parts):
            return True
        return any(path == p or path.startswith(p + "/") for p in self.paths)

    def entry(self, prefix: str, name: str) -> bool:
        """Whether the entry ``name`` of directory ``prefix`` (``""`` or ending in ``/``) is reserved."""
        return self.name(name) or (bool(self.paths) and (prefix + name) in self.paths)


DEFAULT = Reserved()

__all__ = ["DEFAULT", "REASON", "Reserved"]
