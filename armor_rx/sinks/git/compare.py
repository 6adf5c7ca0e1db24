"""Several tasks' diffs side by side: which files each changed, lines added and removed, what they share.

Competing attempts at one problem (tasks forked from one checkpoint, see
:meth:`armor_rx.Armor.fork`) are judged by what they changed. This module
only reads :class:`~.diffs.TaskDiff` values, so the same comparison is made
in-process and from the service's diffs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from armor_rx.sinks.git.diffs import TaskDiff


@dataclass(frozen=True)
class FileStat:
    """One changed file of one task; ``added``/``removed`` are None when not counted (binary, past the patch cap)."""

    path: str
    status: str
    added: int | None
    removed: int | None

    def to_payload(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "added": self.added, "removed": self.removed}


@dataclass(frozen=True)
class TaskStat:
    """What one task changed against its base (or the checkpoint named in ``against``)."""

    task_id: str
    against: str
    files: tuple[FileStat, ...]
    truncated: bool = False

    @property
    def added(self) -> int:
        return sum(f.added or 0 for f in self.files)

    @property
    def removed(self) -> int:
        return sum(f.removed or 0 for f in self.files)

    def to_payload(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "against": self.against, "files": [f.to_payload() for f in self.files],
                "added": self.added, "removed": self.removed, "truncated": self.truncated}


@dataclass(frozen=True)
class Comparison:
    """Tasks side by side: each one's :class:`TaskStat`, and the paths changed by more than one (``shared``)."""

    tasks: tuple[TaskStat, ...]
    shared: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return {"tasks": [t.to_payload() for t in self.tasks],
                "shared": {path: list(ids) for path, ids in sorted(self.shared.items())}}

    def table(self) -> str:
        """A plain-text table: one row per path, one ``+added -removed`` column per task."""
        ids = [t.task_id for t in self.tasks]
        paths = sorted({f.path for t in self.tasks for f in t.files})
        cells = {(t.task_id, f.path): _cell(f) for t in self.tasks for f in t.files}
        width = max([len("path"), *(len(p) for p in paths)])
        cols = [max(len(i), 12) for i in ids]
        lines = ["  ".join(["path".ljust(width), *(i.ljust(c) for i, c in zip(ids, cols))]).rstrip()]
        for path in paths:
            row = [path.ljust(width), *(cells.get((i, path), "").ljust(c) for i, c in zip(ids, cols))]
            lines.append("  ".join(row).rstrip() + ("  *" if path in self.shared else ""))
        totals = [f"{len(t.files)} files +{t.added} -{t.removed}" + (" (cut)" if t.truncated else "")
                  for t in self.tasks]
        lines.append("  ".join(["total".ljust(width), *(s.ljust(c) for s, c in zip(totals, cols))]).rstrip())
        if self.shared:
            lines.append("* changed by more than one task")
        return "\n".join(lines)


def _cell(stat: FileStat) -> str:
    if stat.added is None or stat.removed is None:
        return stat.status
    mark = {"added": "new ", "deleted": "gone "}.get(stat.status, "")
    return f"{mark}+{stat.added} -{stat.removed}"


def task_stat(diff: TaskDiff) -> TaskStat:
    """Count each file's added and removed lines in ``diff``'s patch."""
    sections = _sections(diff.patch)
    stats: list[FileStat] = []
    for change in diff.files:
        # A type change is written as two sections (the old path deleted, the new one added).
        take = 2 if change.status == "type-changed" else 1
        mine, sections = sections[:take], sections[take:]
        counted = len(mine) == take and not any(binary for _, _, binary in mine)
        added = sum(a for a, _, _ in mine) if counted else None
        removed = sum(r for _, r, _ in mine) if counted else None
        stats.append(FileStat(change.path, change.status, added, removed))
    return TaskStat(diff.task_id, diff.against, tuple(stats), diff.truncated)


def _sections(patch: str) -> list[tuple[int, int, bool]]:
    """``(added, removed, binary)`` per ``diff --git`` section, in order."""
    out: list[tuple[int, int, bool]] = []
    added = removed = 0
    binary = in_hunk = False
    started = False
    for line in patch.split("\n"):
        if line.startswith("diff --git "):
            if started:
                out.append((added, removed, binary))
            started, added, removed, binary, in_hunk = True, 0, 0, False, False
        elif line.startswith("@@"):
            in_hunk = True
        elif not in_hunk:
            binary = binary or line.startswith("Binary files ")
        elif line.startswith("+"):
            added += 1
        elif line.startswith("-"):
            removed += 1
    if started:
        out.append((added, removed, binary))
    return out


def compare(diffs: Sequence[TaskDiff]) -> Comparison:
    """The tasks of ``diffs`` side by side, in the order given."""
    stats = tuple(task_stat(d) for d in diffs)
    owners: dict[str, list[str]] = {}
    for stat in stats:
        for f in stat.files:
            owners.setdefault(f.path, []).append(stat.task_id)
    return Comparison(stats, {p: tuple(ids) for p, ids in owners.items() if len(ids) > 1})
