"""The task registry saved at a log position, and recovery that decides whether to trust it.

The event log is the truth; a snapshot only saves replaying it from the
start. So a snapshot that is missing, damaged, or ahead of the log is never
an error at startup: :func:`recover_registry` rebuilds from the log instead
and says so. Besides the tasks, a snapshot holds the requests still in flight
at its seq (:class:`~armor_rx.model.requests.OpenRequests`), so reconciling
after a crash needs only the log after it; a snapshot from before they were
kept (schema 1) still lists tasks, and a session rebuilds from the log once.

    >>> import tempfile, pathlib
    >>> from armor_rx.model import Registry
    >>> store = SnapshotStore(pathlib.Path(tempfile.mkdtemp()) / "snapshot.json")
    >>> store.save(Registry(seq=0))
    >>> store.load().seq
    0
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from armor_rx.errors import ArmorError, SnapshotError
from armor_rx.model import Registry, TaskEvent, TaskRecord
from armor_rx.model.requests import OpenRequests
from armor_rx.sinks._atomic import write_atomic
from armor_rx.sinks.eventlog import EventLog
from armor_rx.sinks._log import LazyLogger

SCHEMA = 2
_SCHEMAS = (1, 2)  # 1: tasks only (before the open requests were kept)
SNAPSHOT_PLUS_TAIL = "snapshot + log tail"
REBUILD = "rebuild from log"
_logger = LazyLogger("armor_rx.snapshot")


def _canonical(schema: Any, seq: Any, tasks: Any, requests: Any = None) -> bytes:
    fields = {"schema": schema, "seq": seq, "tasks": tasks}
    if schema != 1:
        fields["requests"] = requests
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def _digest_suffix(digest: str) -> bytes:
    return b',"sha256":"%s"}' % digest.encode("ascii")


def _digest_matches(raw: bytes, digest: Any) -> bool:
    """Whether ``raw`` ends with ``digest`` and it is the hash of the bytes before it (and ``}``)."""
    if not isinstance(digest, str) or not digest.isascii():
        return False
    suffix = _digest_suffix(digest)
    return raw.endswith(suffix) and hashlib.sha256(raw[: -len(suffix)] + b"}").hexdigest() == digest


class _Unusable(Exception):
    """Why a snapshot cannot be used, in a few words (for reports)."""


class SnapshotStore:
    """Saves and loads one snapshot file (``snapshot.json`` in the state directory)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def save(self, registry: Registry) -> None:
        """Write ``registry`` atomically: a crash leaves the old snapshot or the new one, whole.

        The file is ``{"requests":{..},"schema":2,"seq":..,"tasks":[...],"sha256":..}``:
        the canonical (sorted-key) JSON of the other four fields, byte for byte as
        written, then the hash of those bytes (with the closing brace). The hash
        covers bytes on disk, never a re-serialisation, so a snapshot stays valid
        when the JSON library that reads it spells a number differently (orjson
        3.8 writes ``1e16`` where later releases write ``1e+16``).
        Raises :class:`SnapshotError` on an I/O error.
        """
        body = _canonical(SCHEMA, registry.seq, registry.to_list(), registry.requests.to_dict())
        data = body[:-1] + _digest_suffix(hashlib.sha256(body).hexdigest())
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, data)
        except OSError as exc:
            raise SnapshotError(
                f"cannot write the snapshot {self.path}: {exc}; the event log still has every event"
            ) from exc

    def load(self) -> Registry:
        """The saved registry. Raises :class:`SnapshotError` saying what is wrong.

        Missing, unreadable, not JSON, an unknown schema, a checksum mismatch
        or a task record that does not parse are all errors; none of them
        loses data, since the registry can be rebuilt from the event log.
        """
        try:
            return self._load()[0]
        except _Unusable as exc:
            raise SnapshotError(
                f"{exc} ({self.path}); delete it to have it rebuilt from the event log, "
                "which happens on its own when a session starts"
            ) from None

    def _load(self) -> tuple[Registry, bool]:
        """The registry, and whether the file held its open requests (schema 2) or only its tasks."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise _Unusable("no snapshot") from None
        except OSError as exc:
            raise _Unusable(f"snapshot unreadable: {exc.strerror or exc}") from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Unusable("snapshot is not valid JSON (truncated or damaged)") from None
        if not isinstance(data, dict):
            raise _Unusable("snapshot is not a JSON object")
        schema = data.get("schema")
        if schema not in _SCHEMAS:
            raise _Unusable(f"snapshot schema {schema!r} is not {SCHEMA}")
        seq, tasks, digest, requests = data.get("seq"), data.get("tasks"), data.get("sha256"), data.get("requests")
        if not _digest_matches(raw, digest) and hashlib.sha256(_canonical(schema, seq, tasks, requests)).hexdigest() != digest:
            # (The second check reads snapshots saved before the hash covered the
            # file's bytes: it holds while the JSON library spells numbers as it did.)
            raise _Unusable("snapshot checksum mismatch")
        if not isinstance(seq, int) or seq < 0 or not isinstance(tasks, list):
            raise _Unusable("snapshot has no valid seq or task list")
        try:
            records = [TaskRecord.from_dict(task) for task in tasks]
        except (KeyError, TypeError, ValueError) as exc:
            raise _Unusable(f"snapshot has a task record that does not parse ({exc!r})") from None
        for record in records:
            # armor_rx only ever saves records folded from events up to the snapshot's seq.
            if not 0 <= record.created_seq <= record.updated_seq <= seq:
                raise _Unusable(
                    f"snapshot does not chain: task {record.task_id!r} has seqs "
                    f"{record.created_seq}..{record.updated_seq} but the snapshot is at seq {seq}"
                )
        if len({record.task_id for record in records}) != len(records):
            raise _Unusable("snapshot does not chain: it lists a task twice")
        listed = {record.task_id for record in records}
        open_requests = None
        if schema != 1:
            try:
                if not isinstance(requests, dict):
                    raise TypeError("requests is not an object")
                open_requests = OpenRequests.from_dict(requests)
            except (KeyError, TypeError, ValueError) as exc:
                raise _Unusable(f"snapshot has open requests that do not parse ({exc!r})") from None
            for request in [*open_requests.open.values(), *open_requests.dead.values()]:
                if request.seq is None or not 0 < request.seq <= seq:
                    raise _Unusable(f"snapshot does not chain: a request at seq {request.seq} but the snapshot is at seq {seq}")
                if request.task_id not in listed:
                    # Reconciliation looks the task up: a request for no task listed would stop every open.
                    raise _Unusable(f"snapshot does not chain: a request for task {request.task_id!r}, which it does not list")
        return Registry({record.task_id: record for record in records}, seq, open_requests), open_requests is not None


@dataclass(frozen=True)
class RecoveryReport:
    """What :func:`recover_registry` considered, what it chose, and why."""

    options: tuple[str, ...]
    chosen: str
    reason: str
    snapshot_seq: int | None
    log_seq: int
    replayed: int
    forced: int = 0  # events folded in past a lifecycle check that damaged log lines broke


def recover_registry(store: SnapshotStore, log: EventLog, *, requests: bool = True) -> tuple[Registry, RecoveryReport]:
    """The registry as of the log's last event, from the snapshot if it can be trusted.

    The snapshot is used when it loads, its checksum verifies and its seq is
    not past the log's end; then only the events after it are replayed.
    Otherwise the registry is rebuilt from the whole log. ``requests=False``
    (a reader that lists tasks) also trusts a snapshot that holds only tasks
    (schema 1); its :attr:`Registry.requests` is then incomplete. The report names the
    options, the choice and the reason. Damaged log lines are skipped (see
    :attr:`EventLog.damage`) and do not make a good snapshot unusable; an event
    that no longer applies because the events lost with them are missing is
    folded in regardless and counted in ``forced``. Raises what the log raises
    (:class:`LogCorrupt`) or a lifecycle error if an undamaged log does not fold.
    """
    options = (SNAPSHOT_PLUS_TAIL, REBUILD)
    log_seq = log.last_seq
    snapshot_seq: int | None = None
    try:
        registry, has_requests = store._load()
        snapshot_seq = registry.seq
        if requests and not has_requests:
            raise _Unusable("snapshot schema 1 does not hold the requests in flight")
        if registry.seq > log_seq:
            raise _Unusable(f"snapshot at seq {registry.seq} is ahead of the log (seq {log_seq})")
        replayed, forced = _fold(registry, log.read(registry.seq + 1, log_seq), log)
    except _Unusable as exc:
        reason = str(exc)
    except Exception as exc:
        if snapshot_seq is None:
            raise
        reason = f"the log after the snapshot (seq {snapshot_seq}) does not apply to it: {exc}"
    else:
        reason = f"snapshot at seq {snapshot_seq} verified; replayed {replayed} later event(s)"
        report = RecoveryReport(options, SNAPSHOT_PLUS_TAIL, reason, snapshot_seq, log_seq, replayed, forced)
        if forced:
            _warn_forced(report)
        # The healthy path stays quiet (the report is returned for whoever asks).
        return registry, report
    registry = Registry()
    replayed, forced = _fold(registry, log.read(1, log_seq), log)
    report = RecoveryReport(options, REBUILD, reason, snapshot_seq, log_seq, replayed, forced)
    if forced:
        _warn_forced(report)
    if reason == "no snapshot" and log_seq == 0:
        return registry, report  # a new state directory: nothing to say
    log_choice = _logger.info if reason == "no snapshot" else _logger.warning
    log_choice(
        "registry recovered",
        chosen=report.chosen,
        reason=reason,
        snapshot_seq=snapshot_seq,
        log_seq=log_seq,
        replayed=replayed,
    )
    return registry, report


def _fold(registry: Registry, events: Iterable[TaskEvent], log: EventLog) -> tuple[int, int]:
    """Apply ``events``; returns how many, and how many only past the lifecycle check.

    An event that does not apply is folded in regardless only when the log
    has damage (events lost with it explain why); otherwise it raises.
    """
    replayed = forced = 0
    for event in events:
        try:
            registry.apply(event)
        except ArmorError:
            if not log.damage:
                raise
            registry.apply(event, strict=False)
            forced += 1
        replayed += 1
    return replayed, forced


def _warn_forced(report: RecoveryReport) -> None:
    _logger.warning(
        "registry recovered past damaged log lines: some events no longer follow the lifecycle",
        chosen=report.chosen,
        forced=report.forced,
        log_seq=report.log_seq,
    )
