"""structlog loggers that import structlog when they first log, not when their module loads.

structlog pulls in asyncio; the CLI's read verbs (``armor-rx tasks``,
``events``) open the event log and usually log nothing, so they should not pay
for that import on every run. A program that configures logging can defer its
configuration until the first line is logged (:func:`defer_configuration`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

_pending: list[Callable[[], None]] = []


def defer_configuration(configure: Callable[[], None]) -> None:
    """Run ``configure`` before the first line a :class:`LazyLogger` logs (now, if structlog is loaded already)."""
    if "structlog" in sys.modules:
        configure()
    else:
        _pending[:] = [configure]


def configure_now() -> None:
    """Run a deferred configuration now (before handing control to code that logs with structlog directly)."""
    while _pending:
        _pending.pop()()


class LazyLogger:
    """``structlog.get_logger(name)``, looked up on each use (the module of a log line pays, not its importer)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        configure_now()
        import structlog

        return getattr(structlog.get_logger(self._name), method)
