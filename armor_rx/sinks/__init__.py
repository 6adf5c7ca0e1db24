"""Sinks: everything that touches the disk or the world.

The durable floor is here: :class:`EventLog` (segmented, checksummed JSONL
with group commit), :class:`SnapshotStore` and :func:`recover_registry` (the
task registry materialised at a log position), :class:`StateDir` (where they
live, and the lock that keeps one writer) and :class:`DeadLetterLog` (events
whose effects failed for good, kept for re-driving).
"""

from armor_rx.sinks.deadletter import DeadLetter, DeadLetterLog
from armor_rx.sinks.eventlog import Damage, EventLog, FsyncPolicy, LogStats, TailRepair
from armor_rx.sinks.snapshot import RecoveryReport, SnapshotStore, recover_registry
from armor_rx.sinks.statedir import StateDir

__all__ = [
    "Damage",
    "DeadLetter",
    "DeadLetterLog",
    "EventLog",
    "FsyncPolicy",
    "LogStats",
    "RecoveryReport",
    "SnapshotStore",
    "StateDir",
    "TailRepair",
    "recover_registry",
]
