"""Dead letters: events whose effect failed for good, kept durably for re-driving.

The dead-letter log is an :class:`EventLog` of its own (``deadletter.added``
and ``deadletter.redriven`` events), so it has the same durability and crash
recovery as the main log; its current state is folded in memory on start.

    >>> import tempfile
    >>> from armor_rx.model import TaskEvent
    >>> with DeadLetterLog(tempfile.mkdtemp()) as letters:
    ...     letter = letters.add(TaskEvent.new("task.start.requested", "fix-login"), RuntimeError("boom"), attempts=3)
    ...     [(l.error_type, l.attempts) for l in letters.list()]
    [('RuntimeError', 3)]
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from armor_rx.errors import DeadLetterNotFound, LogClosed
from armor_rx.model import TaskEvent, to_plain
from armor_rx.sinks.eventlog import EventLog, FsyncPolicy

ADDED = "deadletter.added"
REDRIVEN = "deadletter.redriven"


@dataclass(frozen=True)
class DeadLetter:
    """One event that exhausted its attempts, with the last error.

    ``id`` is the id of the ``deadletter.added`` event; ``redriven_by`` is the
    id of the event that re-drove it, once it has been.
    """

    id: str
    event: TaskEvent
    error: str
    error_type: str
    attempts: int
    ts: float
    redriven_by: str | None = None


def _letter(added: TaskEvent) -> DeadLetter:
    payload = added.payload
    original = payload["event"]
    assert isinstance(original, Mapping)
    return DeadLetter(
        id=added.id,
        event=TaskEvent.from_dict(to_plain(original)),
        error=str(payload["error"]),
        error_type=str(payload["error_type"]),
        attempts=int(payload["attempts"]),  # type: ignore[arg-type]
        ts=added.ts,
    )


class DeadLetterLog:
    """The dead letters in ``directory``; use as a context manager or start()/stop().

    Thread-safe. Methods raise :class:`LogClosed` before start / after stop.
    """

    def __init__(self, directory: str | Path, *, fsync: FsyncPolicy = "batch", read_only: bool = False) -> None:
        self.directory = Path(directory)
        # read_only: for a second process (the CLI) while a session writes; it
        # never repairs or appends, and add/mark_redriven raise LogError.
        self._log = EventLog(self.directory, fsync=fsync, read_only=read_only)
        self._letters: dict[str, DeadLetter] = {}
        self._lock = threading.Lock()

    def start(self) -> DeadLetterLog:
        """Open the log (repairing a torn tail) and fold it; returns ``self``.

        Raises :class:`LogCorrupt` / :class:`LogError` like :meth:`EventLog.start`.
        """
        self._log.start()
        letters: dict[str, DeadLetter] = {}
        for event in self._log.read():
            self._fold(letters, event)
        with self._lock:
            self._letters = letters
        return self

    def stop(self) -> None:
        """Close the log (idempotent)."""
        self._log.stop()

    def __enter__(self) -> DeadLetterLog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def log(self) -> EventLog:
        """The underlying event log (for reading its history)."""
        return self._log

    def add(self, event: TaskEvent, error: BaseException, attempts: int) -> DeadLetter:
        """Record that ``event`` failed ``attempts`` times, last with ``error``; durable on return."""
        payload: dict[str, Any] = {
            "event": event.to_dict(),
            "error": str(error) or repr(error),
            "error_type": type(error).__name__,
            "attempts": attempts,
        }
        added = TaskEvent.new(ADDED, event.task_id, payload, causation_id=event.id)
        with self._lock:
            logged = self._log.append(added)
            letter = _letter(logged)
            self._letters[letter.id] = letter
        return letter

    def list(self, *, include_redriven: bool = False) -> list[DeadLetter]:
        """The letters in the order they were added; re-driven ones only if asked."""
        with self._lock:
            self._check_open()
            return [l for l in self._letters.values() if include_redriven or l.redriven_by is None]

    def get(self, letter_id: str) -> DeadLetter:
        """The letter with this id; raises :class:`DeadLetterNotFound`."""
        with self._lock:
            self._check_open()
            try:
                return self._letters[letter_id]
            except KeyError:
                raise DeadLetterNotFound(letter_id) from None

    def mark_redriven(self, letter_id: str, new_event_id: str) -> DeadLetter:
        """Record that the letter was re-driven as event ``new_event_id``; durable on return.

        Marking again with the same id changes nothing. Raises :class:`DeadLetterNotFound`.
        """
        with self._lock:
            self._check_open()
            letter = self._letters.get(letter_id)
            if letter is None:
                raise DeadLetterNotFound(letter_id)
            if letter.redriven_by == new_event_id:
                return letter
            event = TaskEvent.new(
                REDRIVEN, letter.event.task_id, {"letter_id": letter_id, "new_event_id": new_event_id}
            )
            self._fold(self._letters, self._log.append(event))
            return self._letters[letter_id]

    def _check_open(self) -> None:
        # Reads are served from memory; refuse them outside start/stop like writes.
        if not self._log.is_open:
            raise LogClosed(f"dead-letter log {self.directory} is not started (or was stopped); call start() first")

    @staticmethod
    def _fold(letters: dict[str, DeadLetter], event: TaskEvent) -> None:
        if event.kind == ADDED:
            letter = _letter(event)
            letters[letter.id] = letter
        elif event.kind == REDRIVEN:
            letter_id = str(event.payload.get("letter_id"))
            if letter_id in letters:
                letters[letter_id] = replace(letters[letter_id], redriven_by=str(event.payload.get("new_event_id")))
