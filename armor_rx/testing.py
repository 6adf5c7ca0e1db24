"""Helpers for testing code that uses armor_rx, without mocks.

>>> import tempfile
>>> from armor_rx import Armor
>>> with Armor(state_dir=tempfile.mkdtemp()) as armor, capture_events(armor, "task.*") as events:
...     _ = armor.create_task("t1")
...     _ = armor.start("t1")
>>> [e.kind for e in events]
['task.created', 'task.start.requested', 'task.started']
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from armor_rx.model.events import TaskEvent

if TYPE_CHECKING:
    from armor_rx.session import Armor


class CapturedEvents(list[TaskEvent]):
    """A list of captured events with a couple of conveniences."""

    def kinds(self) -> list[str]:
        return [e.kind for e in self]

    def of(self, pattern: str) -> list[TaskEvent]:
        from armor_rx.model.patterns import kind_matcher

        match = kind_matcher(pattern)
        return [e for e in self if match(e.kind)]


@contextmanager
def capture_events(armor: Armor, pattern: str = "*", *, task_id: str | None = None) -> Iterator[CapturedEvents]:
    """Collect the session's events matching ``pattern`` while the block runs.

    On exit it waits until the pipeline is idle, so every event caused inside
    the block is in the list.
    """
    captured = CapturedEvents()
    lock = threading.Lock()

    def add(event: TaskEvent) -> None:
        with lock:
            captured.append(event)

    subscription = armor.events(pattern, task_id=task_id).subscribe(add)
    try:
        yield captured
    finally:
        armor.wait_idle()
        subscription.dispose()


def crash(armor: Armor) -> None:
    """Stop ``armor`` the way a killed process would, for recovery tests.

    What was acknowledged stays durable (it already is); no snapshot is
    written, no effect is told to clean up, nothing in flight is finished:
    requests whose outcome was not logged are exactly what the next
    :class:`~armor_rx.Armor` finds and marks ``interrupted``. The state
    directory's lock is released, as the kernel would on exit.
    """
    armor._abandon()
