"""Identifiers: task ids (validated slugs) and event ids (time-ordered, unique)."""

from __future__ import annotations

import os
import random
import re
import threading
import time

from armor_rx.errors import InvalidTaskId

TASK_ID_MAX = 63
_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


_valid_ids: dict[str, None] = {}


def validate_task_id(value: object) -> str:
    """Return ``value`` if it is a valid task id, else raise :class:`InvalidTaskId`.

    A task id becomes a branch name, a directory name and a container label, so
    it is deliberately narrow: lowercase letters, digits and single hyphens,
    no leading or trailing hyphen, at most 63 characters.

    >>> validate_task_id("fix-login-bug")
    'fix-login-bug'
    """
    if value in _valid_ids:  # hot path: ids repeat on every event of a task
        return value  # type: ignore[return-value]
    if not isinstance(value, str):
        raise InvalidTaskId(value, f"it is a {type(value).__name__}, not a string")
    if not value:
        raise InvalidTaskId(value, "it is empty")
    if len(value) > TASK_ID_MAX:
        raise InvalidTaskId(value, f"it is {len(value)} characters long")
    if ".." in value or "/" in value or "\\" in value:
        raise InvalidTaskId(value, "it contains a path separator or '..'")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidTaskId(value, "it contains a control character")
    if value.startswith("-"):
        raise InvalidTaskId(value, "it starts with '-'")
    if _SLUG.fullmatch(value) is None:
        raise InvalidTaskId(value, "it has characters other than a-z, 0-9 and single inner hyphens")
    if len(_valid_ids) < 65536:
        _valid_ids[value] = None
    return value


# A private generator (not the random module's shared one, which callers and
# test tools may seed or watch), reseeded in a forked child so two processes
# never share a sequence.
_rng = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(16)))

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every pair of Crockford digits (10 bits), so an id is 13 lookups, not 26
# (Python 3.11's base64.b32encode is pure Python and slower still).
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]


class EventIdFactory:
    """Makes ULID-style ids: 48 bits of milliseconds then 80 bits that only grow.

    Ids sort by creation time; within one millisecond the random part is
    incremented, so ids made by one factory are strictly increasing even when
    the clock stands still or steps back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def new(self) -> str:
        with self._lock:
            ms = int(time.time() * 1000)
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
            else:
                # 79 random bits make a collision within one millisecond negligible.
                rand = _rng.getrandbits(79)  # one bit of room to increment
            self._last_ms, self._last_rand = ms, rand
        value = (ms << 80) | rand  # 128 bits, as 26 digits of 5 bits (2 leading zero bits)
        pairs = _PAIRS
        return "".join([pairs[(value >> shift) & 1023] for shift in range(120, -10, -10)])


# Ids only need to be unique and time-ordered; sharing one factory per process
# is what makes them strictly increasing across sessions in that process.
_default_factory = EventIdFactory()


def new_event_id() -> str:
    """A new unique, time-ordered event id (26 characters, Crockford base32)."""
    return _default_factory.new()
