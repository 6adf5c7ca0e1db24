"""Logging with structlog: readable console lines by default, JSON on request.

Values wrapped in :class:`armor_rx.Secret`, and values under keys that look
sensitive (``password``, ``token`` ...), and credentials written into text (a
password in a URL, a bearer token) are replaced by ``[redacted]`` before any
renderer sees them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from armor_rx.model.secrets import REDACTED, Secret, is_sensitive_key, redact_text


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if key and is_sensitive_key(key) and value is not None:
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A structlog processor that blanks secrets anywhere in the event dict."""
    return {k: _redact(v, k) for k, v in event_dict.items()}


def processors(*, json: bool = False) -> list[Processor]:
    """The processor chain armor_rx uses; a plain list you can read and extend."""
    chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
        structlog.processors.format_exc_info,
    ]
    chain.append(structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False))
    return chain


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(*, json: bool = False, level: str = "warning", stream: TextIO | None = None) -> None:
    """Configure structlog for a program (the CLI calls this; libraries should not)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.WARNING
    structlog.configure(
        processors=processors(json=json),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or _CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
