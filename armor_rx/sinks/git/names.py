"""Task branch names: ``task/<slug>``, validated against git's ref rules.

A branch name ends up in a ref file path, in shell commands users type and in
event payloads, so it is kept to a narrow alphabet rather than everything git
would accept.
"""

from __future__ import annotations

import os
import re
import time

from armor_rx.errors import InvalidBranchName, InvalidTaskId
from armor_rx.model.ids import validate_task_id

BRANCH_PREFIX = "task/"
#: Longest branch name we create. Git allows more, but some filesystems cap a
#: path component at 255 bytes and ``refs/heads/`` plus lock suffixes add up.
BRANCH_MAX = 100
_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def validate_branch_name(name: object) -> str:
    """Return ``name`` if it is an acceptable task branch name.

    Raises :class:`InvalidBranchName` naming the rule that was broken. The
    checks mirror ``git check-ref-format`` (no ``..``, no ``@{``, no control
    characters, no leading ``-``, no ``.lock`` suffix...) and then narrow it to
    ``task/`` followed by a lowercase slug.
    """
    if not isinstance(name, str):
        raise InvalidBranchName(name, f"it is a {type(name).__name__}, not a string")
    if not name:
        raise InvalidBranchName(name, "it is empty")
    if len(name) > BRANCH_MAX:
        raise InvalidBranchName(name, f"it is {len(name)} characters long (limit {BRANCH_MAX})")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidBranchName(name, "it contains a control character")
    if ".." in name:
        raise InvalidBranchName(name, "it contains '..'")
    if "@{" in name:
        raise InvalidBranchName(name, "it contains '@{'")
    if name.startswith("-"):
        raise InvalidBranchName(name, "it starts with '-'")
    for bad in (" ", "~", "^", ":", "?", "*", "[", "\\"):
        if bad in name:
            raise InvalidBranchName(name, f"it contains {bad!r}")
    if name.endswith((".lock", "/", ".")) or "//" in name or "/." in name:
        raise InvalidBranchName(name, "it breaks git's ref rules (empty component, '.lock' or '.' ending)")
    if not name.startswith(BRANCH_PREFIX):
        raise InvalidBranchName(name, f"it does not start with {BRANCH_PREFIX!r}")
    slug = name[len(BRANCH_PREFIX):]
    if _SLUG.fullmatch(slug) is None:
        raise InvalidBranchName(name, "the part after 'task/' is not a lowercase slug")
    return name


def branch_for_task(task_id: str) -> str:
    """The preferred branch name for a task: ``task/<task_id>``.

    Raises :class:`armor_rx.errors.InvalidTaskId` if ``task_id`` is not a slug.
    """
    return validate_branch_name(BRANCH_PREFIX + validate_task_id(task_id))


def unique_branch_name(task_id: str, *, now: float | None = None) -> str:
    """A fallback name for when ``task/<task_id>`` is taken.

    The suffix is a UTC timestamp (so humans can tell attempts apart) and 24
    random bits (so two processes in the same second still differ). Long task
    ids are shortened to keep within :data:`BRANCH_MAX`.
    """
    validate_task_id(task_id)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() if now is None else now))
    suffix = f"-{stamp}-{os.urandom(3).hex()}"
    room = BRANCH_MAX - len(BRANCH_PREFIX) - len(suffix)
    slug = task_id[:room].rstrip("-")
    return validate_branch_name(BRANCH_PREFIX + slug + suffix)


def slug_of_branch(name: str) -> str:
    """The slug part of a task branch name (``task/x`` -> ``x``)."""
    return validate_branch_name(name)[len(BRANCH_PREFIX):]


__all__ = [
    "BRANCH_MAX",
    "BRANCH_PREFIX",
    "InvalidBranchName",
    "InvalidTaskId",
    "branch_for_task",
    "slug_of_branch",
    "unique_branch_name",
    "validate_branch_name",
]
