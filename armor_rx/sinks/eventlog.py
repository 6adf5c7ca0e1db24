"""The durable event log: segmented, checksummed JSONL with group commit.

Acknowledged means durable: ``append`` returns only once the event is on disk
under the chosen fsync policy, and every event gets the next seq (1, 2, 3, ...
with no gaps).

Damage is never a reason to lose what is intact. Readers skip bytes that are
not intact lines in seq order, in every segment, and go on with the next
intact line; what they skipped is in :attr:`EventLog.damage` and logged as a
warning. The writer copies such bytes into the quarantine directory and
leaves them in place (nothing it cannot prove is torn is deleted). Only a
torn final line, a write a crash cut short, is cut when the log starts, and a
copy of it is kept in quarantine too (:attr:`EventLog.repairs`).

Opening does not read what was already verified: the writer records which
bytes of each segment it checked or wrote itself (``verified.json``, see
:mod:`armor_rx.sinks._verified`), and only segments that changed since are
read again, so opening costs the tail, not the log.

    >>> import tempfile
    >>> from armor_rx.model import TaskEvent
    >>> with EventLog(tempfile.mkdtemp()) as log:
    ...     log.append(TaskEvent.new("task.created", "fix-login")).seq
    1
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from armor_rx import _taskview
from armor_rx.errors import ConfigError, LogClosed, LogError
from armor_rx.model import TaskEvent, kind_matcher
from armor_rx.sinks._future import new_future
from armor_rx.sinks._groupcommit import Entry, GroupCommit
from armor_rx.sinks import _taskindex, _verified
from armor_rx.sinks._cursor import Cursor, Damage, matching, placed
from armor_rx.sinks._logfile import (
    Segment,
    TailRepair,
    check_line,
    check_sealed,
    event_line,
    find_line,
    grep_lines,
    list_segments,
    number_event,
    unexpected_files,
)
from armor_rx.sinks._verified import Verified
from armor_rx.sinks._quarantine import DamageLedger, cut_torn, whole_line
from armor_rx.sinks._log import LazyLogger
from armor_rx.sinks._segwriter import SegmentWriter

__all__ = ["Damage", "EventLog", "FsyncPolicy", "LogStats", "TailRepair"]

FsyncPolicy = Literal["always", "batch", "none"]
_POLICIES = ("always", "batch", "none")
_logger = LazyLogger("armor_rx.eventlog")

OnAppend = Callable[[TaskEvent], None]


@dataclass(frozen=True)
class LogStats:
    """Counters since ``start``: events written, group commits (flushes) and fsyncs."""

    events: int
    flushes: int
    fsyncs: int
    bytes: int

    @property
    def mean_batch(self) -> float:
        return self.events / self.flushes if self.flushes else 0.0


class EventLog:
    """An append-only log of :class:`TaskEvent` in ``directory``; see the module docs.

    Use it as a context manager or call :meth:`start` / :meth:`stop`. One
    writer per directory (take :class:`armor_rx.sinks.StateDir`'s lock); any
    number of ``read_only`` readers may read while it appends.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        fsync: FsyncPolicy = "batch",
        batch_delay: float = 0.001,
        batch_max: int = 1024,
        segment_bytes: int = 64 * 1024 * 1024,
        read_only: bool = False,
        quarantine_dir: str | Path | None = None,
    ) -> None:
        if fsync not in _POLICIES:
            raise ConfigError(f"fsync policy {fsync!r} is not one of {', '.join(_POLICIES)}")
        if batch_delay < 0 or batch_max < 1 or segment_bytes < 1:
            raise ConfigError(
                "the event log needs batch_delay >= 0, batch_max >= 1 and segment_bytes >= 1 "
                f"(got {batch_delay!r}, {batch_max!r}, {segment_bytes!r})"
            )
        self.directory = Path(directory)
        self.fsync: FsyncPolicy = fsync
        self.read_only = read_only
        self.quarantine_dir = Path(quarantine_dir) if quarantine_dir is not None else self.directory / "quarantine"
        self.repairs: list[TailRepair] = []
        self.unexpected: list[Path] = []
        self._ledger = DamageLedger(None if read_only else self.quarantine_dir)
        self._saw_damage = self._ledger.saw
        self._batch = (batch_delay, batch_max)
        self._writer = SegmentWriter(self.directory, segment_bytes, fsync != "none")
        self._lock = threading.Lock()  # guards seq assignment, pending, state
        self._durable = threading.Condition()  # appenders and followers wait here
        self._state: Literal["new", "open", "stopping", "closed", "failed"] = "new"
        self._failure: LogError | None = None
        self._next_seq = 1
        self._durable_seq = 0
        self._committer: GroupCommit | None = None
        self._tail: Cursor | None = None
        self._events = self._flushes = 0
        # Segment name -> its verified bytes (None until known): for skipping them when opening and seeking in them.
        self._verified: dict[str, Verified] | None = None
        self._saved: dict[str, Verified] = {}  # what the index file holds now (the writer's)
        self._opened: tuple[int, tuple[int, int, int, int]] | None = None  # the open segment's size and stat at start
        self._writer.on_seal = self._sealed
        self._indexer = _taskindex.IndexBuilder()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> EventLog:
        """Open the log, set damage aside, cut a torn final line, and get ready to append.

        Returns ``self``. The writer reads every segment that changed since it
        was last verified (all of them the first time): damaged bytes
        are copied to :attr:`quarantine_dir` and listed in :attr:`damage`; a
        torn final line is cut (after a copy) and listed in :attr:`repairs`.
        Raises :class:`LogCorrupt` when events are missing that no damaged
        bytes explain (a lost segment), :class:`LogError` on an I/O error. A
        ``read_only`` log only checks, never writes.
        """
        with self._lock:
            if self._state != "new":
                raise LogError(f"event log {self.directory} was already started; make a new EventLog to reopen it")
            segments = list_segments(self.directory)
            self.unexpected = unexpected_files(self.directory, self.quarantine_dir)
            if self.unexpected:
                _logger.warning(
                    "event log directory holds files armor_rx did not write; they are not read",
                    directory=str(self.directory),
                    files=[p.name for p in self.unexpected],
                )
            check_sealed(segments)
            if not self.read_only:
                try:
                    self._open_for_append(segments)
                except OSError as exc:
                    raise LogError(f"cannot open the event log in {self.directory}: {exc}") from exc
                if self.fsync == "batch":
                    delay, most = self._batch
                    name = f"armor-eventlog-commit:{self.directory}"
                    self._committer = GroupCommit(self._lock, self._flush, batch_delay=delay, batch_max=most, name=name)
                    self._committer.start()
            self._state = "open"
        return self

    def _open_for_append(self, segments: list[tuple[int, Path]]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not segments:
            self._verified = {}
            self._writer.create(1)
            return
        first, path = segments[-1]
        # Every segment not verified before is read once now: all damage is
        # known (and set aside) before the first append, whichever segment it is in.
        known = _verified.load(self.directory)
        cursor = self._verify(segments, known, record=True)
        size = os.stat(path).st_size
        torn_at = cursor.torn_at
        if torn_at is not None and cursor.segment == path:
            if whole_line(path, torn_at, cursor.expected or 1):
                # Only its newline is damaged: a line armor_rx wrote whole, so it is
                # not torn and stays; ending it makes it an ordinary damaged line.
                with open(path, "ab") as f:
                    f.write(b"\n")
                    os.fsync(f.fileno())
                cursor = Cursor(self.directory, segments[-1][0], self._saw_damage)
                for _ in cursor.lines():
                    pass
                size += 1
            else:
                self.repairs.append(cut_torn(self.quarantine_dir, path, torn_at, size))
                size = torn_at
        last = (cursor.expected or 1) - 1 + cursor.tail_gap
        self._next_seq = last + 1
        self._durable_seq = last
        assert self._verified is not None
        entry = self._verified.get(path.name)
        if entry is None or entry.size != size or entry.end != self._next_seq:
            crc = _verified.crc_of(path, size, entry.size, entry.crc) if entry is not None and entry.size < size else None
            if crc is None:
                crc = _verified.crc_of(path, size)
            entry = Verified(path.name, first, size, crc or 0, self._next_seq, self._damage_in(path), None)
            self._verified[path.name] = entry
        self._writer.open(path, size, entry.crc)
        self._opened = (size, _verified.stat_of(os.stat(path)))
        if self._verified != known:
            _verified.save(self.directory, self._verified.values())
        self._saved = dict(self._verified)
        # Sealed segments without a current task index (a log from before indexes, a crash before one was
        # written) get one in the background; the builder skips those that have one.
        _taskindex.clean_temporaries(self.directory)
        sealed = [(p, self._verified.get(p.name)) for _, p in segments[:-1]]
        self._indexer.add([(p, e.size, e.crc) for p, e in sealed if e is not None and e.clean and e.size == p.stat().st_size])

    def _verify(self, segments: list[Segment], known: dict[str, Verified], *, record: bool) -> Cursor:
        """Read what ``known`` does not vouch for; returns a cursor at the end of the last segment.

        Fills :attr:`_verified` with every segment known to be verified now
        (``record``: with the CRC of a sealed one it had to read, for the index).
        """
        verified: dict[str, Verified] = {}
        cursor = Cursor(self.directory, 1, self._saw_damage)
        for i, (first, path) in enumerate(segments):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue  # gone meanwhile: the cursor will say what that means
            entry = _verified.vouched(path, first, known.get(path.name), st)
            last = i == len(segments) - 1
            if entry is not None:
                for damage in entry.damage:
                    self._saw_damage(damage)
                verified[path.name] = _verified.recorded(entry, st) if record else entry
                if not last and entry.size == st.st_size:
                    continue
            start = (entry.size, entry.end) if entry is not None else None
            cursor = Cursor(self.directory, first, self._saw_damage, seek=placed(start),
                            stop_before=None if last else segments[i + 1][0])
            for _ in cursor.lines():
                pass
            if not last and cursor.expected is not None:
                crc = (_verified.crc_of(path, st.st_size) if record else None) or 0
                entry = Verified(path.name, first, st.st_size, crc, cursor.expected, self._damage_in(path), None)
                verified[path.name] = _verified.recorded(entry, os.stat(path)) if record else entry
        self._verified = verified
        return cursor

    def _damage_in(self, path: Path) -> tuple[Damage, ...]:
        return tuple(d for d in self._ledger.damage if d.segment.name == path.name)

    def _sealed(self, path: Path, size: int, crc: int | None, next_first: int) -> None:
        """The writer filled ``path``: record what it wrote (its CRC is checked at the next open, not now)."""
        verified = self._verified
        if verified is None:
            return
        try:
            first = int(path.name[len("events-") : -len(".jsonl")])
            if crc is None:
                verified.pop(path.name, None)
            else:
                verified[path.name] = Verified(path.name, first, size, crc, next_first, self._damage_in(path), None)
                self._indexer.add([(path, size, crc)])
            _verified.save(self.directory, list(verified.values()))
            self._saved = dict(verified)
        except Exception as exc:  # noqa: BLE001 - only speed is at stake; never fail a write for it
            _logger.warning("could not record a sealed segment as verified", segment=str(path), error=repr(exc))

    def _record_stop(self) -> None:
        """After the last write: record the open segment as verified, if it holds exactly what was written."""
        verified, path, crc = self._verified, self._writer.path, self._writer.crc
        if verified is None or self.read_only or not path.name.startswith("events-"):
            return
        try:
            before = os.stat(path)
            entry = verified.get(path.name)
            if entry is not None and entry.size == before.st_size and self._opened == (entry.size, _verified.stat_of(before)):
                verified[path.name] = _verified.recorded(entry, before)  # not written to since it was verified
            elif crc is not None and self._failure is None and before.st_size == self._writer.size:
                # Its times must be past the clock tick of the last write before they can vouch for it (see
                # _verified.RACY_NS): wait that out (a few ms), then check the bytes are what was written.
                wait = max(before.st_mtime_ns, before.st_ctime_ns) + _verified.RACY_NS - time.time_ns()
                if 0 < wait <= _verified.RACY_NS:
                    time.sleep(wait / 1e9)
                    before = os.stat(path)
                first = int(path.name[len("events-") : -len(".jsonl")])
                if _verified.crc_of(path, before.st_size) == crc and _verified.stat_of(os.stat(path)) == _verified.stat_of(before):
                    entry = Verified(path.name, first, before.st_size, crc, self._next_seq, self._damage_in(path), None)
                    verified[path.name] = _verified.recorded(entry, before)
                else:  # changed by someone else while it was open: read it all next time
                    verified.pop(path.name, None)
            else:
                verified.pop(path.name, None)
            if verified != self._saved:
                _verified.save(self.directory, list(verified.values()))
        except OSError as exc:
            _logger.warning("could not record the event log as verified", directory=str(self.directory), error=str(exc))

    # -- damage -------------------------------------------------------------

    @property
    def damage(self) -> list[Damage]:
        """Damaged stretches readers of this log skipped (or the writer found at start), in the order found.

        Each is reported once as a warning; on the writer, ``quarantined``
        names its copy in :attr:`quarantine_dir`.
        """
        return self._ledger.damage

    def take_new_damage(self) -> list[Damage]:
        """Damage set aside (copied to quarantine) for the first time by this log since the last call.

        A session records each as a ``log.corruption.quarantined`` event;
        damage copied by an earlier run is not new.
        """
        return self._ledger.take_new()

    def stop(self) -> None:
        """Write and fsync everything pending, end the commit thread, close. Idempotent.

        Raises :class:`LogError` if the final fsync fails.
        """
        with self._lock:
            if self._state in ("new", "closed"):
                return
            if self._state == "open":
                self._state = "stopping"
        if self._committer is not None:
            self._committer.close()
        self._indexer.close()
        with self._lock:
            try:
                # After a failed write, an fsync that "succeeds" proves nothing.
                self._writer.close(sync=self._failure is None)
                self._record_stop()
            except OSError as exc:
                raise LogError(f"closing the event log segment {self._writer.path} failed: {exc}") from exc
            finally:
                self._state = "closed"
                with self._durable:
                    self._durable.notify_all()

    def __enter__(self) -> EventLog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- appending ---------------------------------------------------------

    def append(self, event: TaskEvent, *, on_append: OnAppend | None = None) -> TaskEvent:
        """Append ``event`` and return it numbered, once durable under the policy.

        ``on_append(numbered)`` runs under the append lock, in seq order, before
        the write; if it raises, the exception propagates, nothing is written
        and the seq is not used. Raises :class:`LogClosed` when the log is not
        started, :class:`LogError` when it is read-only or the write failed.
        """
        if self.fsync != "batch":
            return self._append_now([event], on_append)[0]
        if self._committer is not None and self._committer.on_thread():
            raise LogError(
                "append() on the log's commit thread (from a future callback) would wait forever; use append_async()"
            )
        numbered = self._enqueue(event, on_append, None)
        self._wait_durable(numbered.seq or 0)
        return numbered

    def append_async(self, event: TaskEvent, *, on_append: OnAppend | None = None) -> Future[TaskEvent]:
        """Like :meth:`append`, but returns at once a future of the numbered event.

        A closed log and errors from ``on_append`` raise here; a failed write
        fails the future with :class:`LogError`. Future callbacks run on the
        commit thread: keep them short and do not ``append`` from them.
        """
        future: Future[TaskEvent] = new_future()
        if self.fsync != "batch":
            future.set_result(self._append_now([event], on_append)[0])
        else:
            self._enqueue(event, on_append, future)
        return future

    def append_many(self, events: Sequence[TaskEvent]) -> list[TaskEvent]:
        """Append ``events`` with consecutive seqs in one write; returns them numbered, once durable."""
        if not events:
            return []
        if self.fsync != "batch":
            return self._append_now(list(events), None)
        with self._lock:
            if self._state != "open" or self.read_only:
                raise self._not_open()
            first = self._next_seq
            numbered = [number_event(event, first + i) for i, event in enumerate(events)]
            lines = [event_line(event) for event in numbered]
            self._next_seq = first + len(numbered)
            assert self._committer is not None
            for event, line in zip(numbered, lines):
                self._committer.push((event.seq or 0, line, event, None))
        self._wait_durable(first + len(numbered) - 1)
        return numbered

    def _enqueue(self, event: TaskEvent, on_append: OnAppend | None, future: Future[TaskEvent] | None) -> TaskEvent:
        with self._lock:
            if self._state != "open" or self.read_only:
                raise self._not_open()
            seq = self._next_seq
            numbered = number_event(event, seq)
            line = event_line(numbered)
            if on_append is not None:
                on_append(numbered)
            self._next_seq = seq + 1
            assert self._committer is not None
            self._committer.push((seq, line, numbered, future))
        return numbered

    def _wait_durable(self, seq: int) -> None:
        with self._durable:
            while self._durable_seq < seq:
                if self._failure is not None:
                    raise self._failure
                self._durable.wait()

    def _append_now(self, events: list[TaskEvent], on_append: OnAppend | None) -> list[TaskEvent]:
        """The ``always`` / ``none`` path: write (and fsync) in the caller's thread."""
        with self._lock:
            if self._state != "open" or self.read_only:
                raise self._not_open()
            first = self._next_seq
            numbered = [number_event(event, first + i) for i, event in enumerate(events)]
            lines = [event_line(event) for event in numbered]
            if on_append is not None:
                on_append(numbered[0])
            try:
                self._writer.write(range(first, first + len(lines)), lines)
            except OSError as exc:
                raise self._fail(exc, first) from exc
            last = self._next_seq = first + len(numbered)
            self._events += len(numbered)
            self._flushes += 1
        # Safe outside the lock: seqs are written in order and _publish keeps the maximum.
        self._publish(last - 1)
        return numbered

    def _not_open(self) -> LogError:
        if self.read_only:
            return LogError(f"event log {self.directory} was opened read-only; it cannot append")
        if self._failure is not None:
            return self._failure
        return LogClosed(f"event log {self.directory} is not started (or was stopped); call start() before appending")

    def _fail(self, exc: OSError, first_seq: int) -> LogError:
        self._failure = LogError(
            f"writing the event log segment {self._writer.path} failed ({exc}); events from seq {first_seq} "
            "on were not acknowledged; fix the disk, then restart to recover the log"
        )
        if self._state != "closed":
            self._state = "failed"
        with self._durable:
            self._durable.notify_all()
        return self._failure

    def _flush(self, batch: list[Entry]) -> None:
        """Write one group commit and resolve its appenders (on the commit thread)."""
        error = self._failure
        if error is None:
            try:
                self._writer.write([entry[0] for entry in batch], [entry[1] for entry in batch])
            except OSError as exc:
                error = self._fail(exc, batch[0][0])
            except BaseException as exc:  # noqa: BLE001 - never leave an appender waiting forever
                error = self._fail(OSError(repr(exc)), batch[0][0])
        if error is not None:
            for entry in batch:
                if entry[3] is not None:
                    entry[3].set_exception(error)
            return
        last = batch[-1][0]
        self._events += last - batch[0][0] + 1
        self._flushes += 1
        self._publish(last)
        for _, _, result, future in batch:
            if future is not None:
                future.set_result(result)

    def _publish(self, seq: int) -> None:
        with self._durable:
            if seq > self._durable_seq:
                self._durable_seq = seq
                self._durable.notify_all()

    def end_position(self, seq: int, *, settle: bool = False) -> _taskview.Position | None:
        """The state of the log's files (:data:`armor_rx._taskview.Position`) if its last event is ``seq``, all of it written.

        For caches keyed on the log's files (the tasks view): None when anything
        is still being appended, the log is not this process's writer, or it
        has damage or foreign files a read would warn about. ``settle`` (at
        close, when nothing more is appended) waits out the clock tick of the
        last write, so the position needs no CRC check by every reader.
        """
        with self._lock:  # no seq is handed out meanwhile
            if self.read_only or self._state != "open" or self._next_seq - 1 != seq:
                return None
            with self._durable:
                if self._durable_seq != seq:
                    return None  # assigned but not yet written
            if self.damage or self.unexpected:
                return None
            key = _taskview.log_end(self.directory)  # under the lock: no append moves it meanwhile
            if key is None:
                return None
            racy = _taskview.changed_since(key, time.time_ns() - _verified.RACY_NS)
            if racy and settle:
                time.sleep(_verified.RACY_NS / 1e9)
                key = _taskview.log_end(self.directory)
                if key is None:
                    return None
                racy = _taskview.changed_since(key, time.time_ns() - _verified.RACY_NS)
            if not racy:
                return key, "-"
            writer = self._writer
            if racy != [writer.path.name] or writer.crc is None:
                return None  # only the open segment's CRC is at hand
            return key, f"{writer.path.name}:{writer.crc:08x}"

    # -- reading -----------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the last acknowledged event (0 when empty).

        For a read-only (or not yet started) log: the last intact event on disk now.
        """
        if not self.read_only and self._state != "new":
            return self._durable_seq
        if self._tail is None:
            # Only what the writer has not verified is read (and checked for damage).
            segments = list_segments(self.directory)
            if segments:
                self._tail = self._verify(segments, _verified.load(self.directory), record=False)
            else:
                self._tail = Cursor(self.directory, 1, self._saw_damage)
        for _ in self._tail.lines():
            pass
        return self._tail.position - 1 + self._tail.tail_gap if self._tail.expected is not None else 0

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop` (and while no write has failed)."""
        return self._state == "open"

    @property
    def stats(self) -> LogStats:
        """Counters since start, e.g. ``stats.mean_batch`` (events per group commit)."""
        return LogStats(self._events, self._flushes, self._writer.fsyncs, self._writer.bytes)

    def segments(self) -> list[Path]:
        """The segment files, oldest first."""
        return [path for _, path in list_segments(self.directory)]

    def read(
        self, start_seq: int = 1, end_seq: int | None = None, *, task_id: str | None = None, kind: str | None = None
    ) -> Iterator[TaskEvent]:
        """Stream the events with ``start_seq <= seq <= end_seq`` that match the filters.

        ``kind`` is a pattern such as ``"task.*"`` (see :func:`kind_matcher`;
        a bad one raises ConfigError at once). On the writer, only
        acknowledged events are seen. Damaged bytes are skipped and added to
        :attr:`damage`; iterating raises :class:`LogCorrupt` only when events
        are missing that no damaged bytes explain (a lost segment).
        """
        match = kind_matcher(kind) if kind is not None else None
        if task_id is not None:
            return self._read_task(start_seq, self._limit(end_seq), task_id, match)
        return matching(self._cursor(start_seq), self._limit(end_seq), task_id, match)

    def _read_task(
        self, start_seq: int, limit: int | None, task_id: str, match: Callable[[str], bool] | None
    ) -> Iterator[TaskEvent]:
        """One task's events: searched for in bulk where the lines were verified, read line by line elsewhere."""
        needle = b'"task_id":"%s"' % task_id.encode()
        trusted = self._trusted()
        segments = list_segments(self.directory)
        firsts = [first for first, _ in segments]
        for i in range(max(0, bisect.bisect_right(firsts, start_seq) - 1), len(segments)):
            first, path = segments[i]
            if limit is not None and first > limit:
                return
            entry = trusted.get(path.name)
            resume: tuple[int, int] | None = None
            if entry is not None and entry.clean:
                begin = 0
                if start_seq > first:
                    begin = entry.size if start_seq >= entry.end else find_line(path, entry.size, start_seq) or 0
                lines = _indexed_lines(path, entry, task_id, begin)
                for offset, raw in lines if lines is not None else grep_lines(path, begin, entry.size, needle):
                    seq = check_line(raw)
                    if not isinstance(seq, int):  # changed since it was verified (by hand): damage like any other
                        self._saw_damage(Damage(path, offset, len(raw), seq, 1, True))
                        continue
                    if seq < start_seq or (limit is not None and seq > limit):
                        continue
                    data = orjson.loads(raw)
                    if data.get("task_id") == task_id and (match is None or match(data.get("kind", ""))):
                        yield TaskEvent.from_logged(data)
                if limit is not None and entry.end > limit:
                    return
                resume = (entry.size, entry.end)
            # The rest of the segment (what was not verified), line by line.
            cursor = Cursor(self.directory, max(start_seq, first), self._saw_damage,
                            seek=placed(resume) if resume else self._seek,
                            stop_before=segments[i + 1][0] if i + 1 < len(segments) else None)
            yield from matching(cursor, limit, task_id, match)

    def _cursor(self, start_seq: int) -> Cursor:
        return Cursor(self.directory, start_seq, self._saw_damage, seek=self._seek if start_seq > 1 else None)

    def _trusted(self) -> dict[str, Verified]:
        """The segments' verified bytes (a reader that has not looked yet asks the index now)."""
        if self._verified is None:
            if not self.read_only:
                return {}
            known = _verified.load(self.directory)
            trusted: dict[str, Verified] = {}
            for first, path in list_segments(self.directory):
                try:
                    entry = _verified.vouched(path, first, known.get(path.name), os.stat(path))
                except OSError:
                    continue
                if entry is not None:
                    trusted[path.name] = entry
            self._verified = trusted
        return self._verified

    def _seek(self, segment: Segment, want: int) -> tuple[int, int] | None:
        """Where the line of seq ``want`` is in ``segment``, found without reading the lines before it
        when they were verified and hold no damage (None: read the segment from its start)."""
        first, path = segment
        entry = self._trusted().get(path.name)
        if entry is None or not entry.clean or want <= first:
            return None
        if want >= entry.end:
            return entry.size, entry.end
        offset = find_line(path, entry.size, want)
        return None if offset is None else (offset, want)

    def pages(self, start_seq: int = 1, *, task_id: str | None = None, kind: str | None = None) -> Callable[[int], Iterator[TaskEvent]]:
        """A reader for paging through the log: each call ``page(end_seq)`` goes on from where the last stopped.

        Calling :meth:`read` per page would scan its segment from the start each
        time (quadratic over a long log); a page reader reads every line once.
        """
        cursor = self._cursor(start_seq)
        match = kind_matcher(kind) if kind is not None else None
        return lambda end_seq: matching(cursor, self._limit(end_seq), task_id, match)

    def follow(
        self,
        start_seq: int = 1,
        *,
        task_id: str | None = None,
        kind: str | None = None,
        poll_interval: float = 0.1,
        stop: threading.Event | None = None,
    ) -> Iterator[TaskEvent]:
        """Yield the matching events from ``start_seq`` on, then new ones as they become durable.

        Ends when ``stop`` is set (noticed within ``poll_interval`` seconds)
        or when the caller stops iterating.
        """
        match = kind_matcher(kind) if kind is not None else None
        return self._follow(self._cursor(start_seq), task_id, match, poll_interval, stop)

    def verify(self) -> int:
        """Check every line of every segment; returns how many events can be read.

        Damage found on the way is in :attr:`damage`; raises :class:`LogCorrupt`
        when events are missing that no damaged bytes explain.
        """
        return sum(1 for _ in Cursor(self.directory, 1, self._saw_damage).lines(self._limit(None)))

    def _follow(
        self,
        cursor: Cursor,
        task_id: str | None,
        match: Callable[[str], bool] | None,
        poll: float,
        stop: threading.Event | None,
    ) -> Iterator[TaskEvent]:
        while stop is None or not stop.is_set():
            for event in matching(cursor, self._limit(None), task_id, match):
                yield event
                if stop is not None and stop.is_set():
                    return
            if self._is_writer():
                with self._durable:
                    if self._durable_seq < cursor.position and self._is_writer():
                        self._durable.wait(poll)
            elif stop is not None:
                stop.wait(poll)
            else:
                time.sleep(poll)

    def _is_writer(self) -> bool:
        return not self.read_only and self._state in ("open", "stopping")

    def _limit(self, end_seq: int | None) -> int | None:
        if not self._is_writer():
            return end_seq
        return self._durable_seq if end_seq is None else min(end_seq, self._durable_seq)


def _indexed_lines(path: Path, entry: Verified, task_id: str, begin: int) -> Iterator[tuple[int, bytes]] | None:
    """``(offset, line)`` of ``task_id``'s lines from ``begin`` on by the segment's task index (None: no usable index).

    The index is only used when it describes exactly the verified bytes (their size and CRC).
    """
    found = _taskindex.offsets(path, entry.size, entry.crc, task_id)
    if found is None:
        return None
    wanted = [(offset, length) for offset, length in found if begin <= offset and offset + length <= entry.size]

    def lines() -> Iterator[tuple[int, bytes]]:
        if not wanted:
            return
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for offset, length in wanted:
                yield offset, os.pread(fd, length, offset)
        finally:
            os.close(fd)

    return lines()
