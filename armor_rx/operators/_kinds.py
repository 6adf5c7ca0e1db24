"""kinds: keep only events whose kind matches a pattern."""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable
from reactivex import operators as ops

from armor_rx.model.events import TaskEvent
from armor_rx.model.patterns import kind_matcher


def kinds_(pattern: str) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    matches = kind_matcher(pattern)  # a bad pattern is a ConfigError here, not mid-stream
    return ops.filter(lambda event: matches(event.kind))
