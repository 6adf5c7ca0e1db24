"""Dead letters for a session: list the requests that failed for good, and run one again.

A re-drive is logged as ``deadletter.redriven`` (caused by the original
request) before the request runs again, and a letter is re-driven at most once.
"""

from __future__ import annotations

from typing import Protocol

from armor_rx.errors import ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.session.assembly import Assembly
from armor_rx.sinks.deadletter import DeadLetter


class DeadLetterSession(Protocol):
    """What the dead-letter operations need: the open session's sinks (LogClosed when it is not open)."""

    @property
    def assembly(self) -> Assembly: ...


class DeadLetterOperations:
    """The dead-letter half of :class:`armor_rx.Armor`; ``self`` is a :class:`DeadLetterSession`."""

    def dead_letters(self: DeadLetterSession, *, include_redriven: bool = False) -> list[DeadLetter]:
        return self.assembly.dead_letters.list(include_redriven=include_redriven)

    def redrive(self: DeadLetterSession, letter_id: str, *, timeout: float | None = None) -> TaskEvent:
        """Run a dead-lettered request again; returns its outcome (or raises again)."""
        dead, pipeline = self.assembly.dead_letters, self.assembly.pipeline
        letter = dead.get(letter_id)
        if letter.redriven_by is not None:
            raise ConfigError(f"dead letter {letter_id} was already re-driven; "
                              "'armor-rx dead-letters --all' shows its history")
        pipeline.record(letter.event.caused("deadletter.redriven", {"letter_id": letter_id})).result()
        dead.mark_redriven(letter_id, letter.event.id)
        return pipeline.redrive(letter.event).result(timeout)
