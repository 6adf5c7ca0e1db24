"""Kind patterns: ``task.*``, ``exec.*``, ``*.failed``."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from functools import lru_cache

from armor_rx.errors import ConfigError

_PATTERN = re.compile(r"[a-z0-9_.*?]+")


@lru_cache(maxsize=256)
def kind_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate for event kinds. ``*`` matches any run of characters, dots included.

    So ``task.*`` matches ``task.started`` and ``task.start.requested``, and
    ``*.failed`` matches ``task.failed`` and ``hook.failed``. Several patterns
    may be joined with commas: ``task.*,exec.exited``.

    >>> kind_matcher("*.failed")("hook.failed"), kind_matcher("task.*")("exec.output")
    (True, False)
    """
    parts = [p.strip() for p in pattern.split(",")]
    if not parts or any(not p or _PATTERN.fullmatch(p) is None for p in parts):
        raise ConfigError(
            f"invalid kind pattern {pattern!r}: use dotted lowercase names with '*' "
            "wildcards, comma-separated (for example 'task.*,exec.*' or '*.failed')"
        )
    if parts == ["*"]:
        return lambda kind: True
    regex = re.compile("|".join(fnmatch.translate(p) for p in parts))
    return lambda kind: regex.match(kind) is not None
