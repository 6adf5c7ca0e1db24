"""Sinks: everything that touches the disk or the world.

The durable floor is here: :class:`EventLog` (segmented, checksummed JSONL
with group commit), :class:`SnapshotStore` and :func:`recover_registry` (the
task registry materialised at a log position), :class:`StateDir` (where they
live, and the lock that keeps one writer) and :class:`DeadLetterLog` (events
whose effects failed for good, kept for re-driving).
"""

from armor_rx.sinks.eventlog import EventLog, FsyncPolicy, LogStats, TailRepair

__all__ = ["EventLog", "FsyncPolicy", "LogStats", "TailRepair"]
