"""Which checkpoints to keep: the retention rules, as a pure plan over a task's history.

Kept is the union of what each rule keeps: the newest ``keep_last``; the
newest of each hour for the last ``keep_hourly`` hours and of each day for the
last ``keep_daily`` days (hours and days counted back from now, UTC); every
tagged checkpoint (``keep_tagged``); and always the newest checkpoint, the one
a rollback would reach for first. Byte limits then drop the oldest
checkpoints no rule *protects* (the newest and the tagged) until the bytes
they added fit. Nothing here touches git: :class:`~.checkpoints.CheckpointStore`
rewrites the ref from the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

HOUR = 3600.0
DAY = 86400.0


class _Checkpoint(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def created_at(self) -> float: ...

    @property
    def bytes_added(self) -> int: ...

    @property
    def tags(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class RetentionPlan:
    """The seqs to keep, the seqs to drop (oldest first), and why each dropped one goes."""

    keep: frozenset[int]
    drop: tuple[int, ...]
    why: dict[int, str]

    @property
    def due(self) -> bool:
        return bool(self.drop)


def _newest_per_bucket(history: Sequence[_Checkpoint], width: float, count: int, now: float) -> set[int]:
    kept: dict[int, int] = {}
    oldest_bucket = int(now // width) - count + 1
    for cp in history:  # oldest first: a later one in the same bucket replaces an earlier
        bucket = int(cp.created_at // width)
        if bucket >= oldest_bucket:
            kept[bucket] = cp.seq
    return set(kept.values())


def plan_retention(
    history: Sequence[_Checkpoint],
    *,
    now: float,
    keep_last: int | None,
    keep_hourly: int | None = None,
    keep_daily: int | None = None,
    keep_tagged: bool = True,
    max_bytes: int | None = None,
    batch: int = 1,
) -> RetentionPlan:
    """The retention plan for ``history`` (oldest first) at time ``now`` (seconds since the epoch).

    Nothing is dropped by the count rules until at least ``batch`` can go
    together (dropping rewrites every newer checkpoint, see
    :class:`~.checkpoints.CheckpointPolicy`); ``max_bytes`` is applied exactly.
    """
    if not history:
        return RetentionPlan(frozenset(), (), {})
    protected = {history[-1].seq} | ({cp.seq for cp in history if cp.tags} if keep_tagged else set())
    if keep_last is None and keep_hourly is None and keep_daily is None:
        keep = {cp.seq for cp in history}
    else:
        keep = set(protected)
        if keep_last is not None:
            keep |= {cp.seq for cp in history[-max(1, keep_last):]}
        if keep_hourly:
            keep |= _newest_per_bucket(history, HOUR, keep_hourly, now)
        if keep_daily:
            keep |= _newest_per_bucket(history, DAY, keep_daily, now)
    why = {cp.seq: "retention" for cp in history if cp.seq not in keep}
    if len(why) < max(1, batch):
        why = {}  # not due yet: kept until a batch can go together
        keep = {cp.seq for cp in history}
    if max_bytes is not None:
        total = sum(cp.bytes_added for cp in history if cp.seq in keep)
        for cp in history:  # oldest first
            if total <= max_bytes:
                break
            if cp.seq in keep and cp.seq not in protected:
                keep.discard(cp.seq)
                why[cp.seq] = "max_bytes"
                total -= cp.bytes_added
    drop = tuple(cp.seq for cp in history if cp.seq not in keep)
    return RetentionPlan(frozenset(keep), drop, {s: why[s] for s in drop})


def plan_total(
    histories: Mapping[str, Sequence[_Checkpoint]], *, max_total_bytes: int, keep_tagged: bool = True,
) -> dict[str, list[int]]:
    """Which checkpoints to drop, across tasks, so that all of them together fit ``max_total_bytes``.

    The oldest go first, whatever their task; each task's newest checkpoint
    (and its tagged ones) are never dropped, even if the total cannot fit then.
    """
    candidates: list[tuple[float, int, str, int]] = []
    total = 0
    for task_id, history in histories.items():
        for i, cp in enumerate(history):
            total += cp.bytes_added
            newest = i == len(history) - 1
            if not newest and not (keep_tagged and cp.tags):
                candidates.append((cp.created_at, cp.seq, task_id, cp.bytes_added))
    drops: dict[str, list[int]] = {}
    for _, seq, task_id, size in sorted(candidates):
        if total <= max_total_bytes:
            break
        drops.setdefault(task_id, []).append(seq)
        total -= size
    return drops
