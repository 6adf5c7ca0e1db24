"""Dead letters for a session: list the requests that failed for good, and run one again.

A re-drive is logged as ``deadletter.redriven`` (caused by the original
request) before the request runs again, and a letter is re-driven at most once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from armor_rx.errors import ConfigError, LogClosed
from armor_rx.model.events import TaskEvent
from armor_rx.pipeline.core import Pipeline
from armor_rx.sinks.deadletter import DeadLetter, DeadLetterLog


class DeadLetterOperations:
    """The dead-letter half of :class:`armor_rx.Armor`."""

    _dead: DeadLetterLog | None

    if TYPE_CHECKING:
        # Provided by Armor; declared here only so the checker knows it.
        @property
        def pipeline(self) -> Pipeline: ...

    def dead_letters(self, *, include_redriven: bool = False) -> list[DeadLetter]:
        if self._dead is None:
            raise LogClosed("the session is not started")
        return self._dead.list(include_redriven=include_redriven)

    def redrive(self, letter_id: str, *, timeout: float | None = None) -> TaskEvent:
        """Run a dead-lettered request again; returns its outcome (or raises again)."""
        if self._dead is None:
            raise LogClosed("the session is not started")
        letter = self._dead.get(letter_id)
        if letter.redriven_by is not None:
            raise ConfigError(f"dead letter {letter_id} was already re-driven; 'armor-rx dead-letters --all' shows its history")
        self.pipeline.record(letter.event.caused("deadletter.redriven", {"letter_id": letter_id})).result()
        self._dead.mark_redriven(letter_id, letter.event.id)
        return self.pipeline.redrive(letter.event).result(timeout)
