"""Naming the tasks a fork makes: given names checked, or ``<task>-<n>`` counted from the first free number."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from armor_rx.errors import ConfigError, TaskExists
from armor_rx.model.ids import validate_task_id

#: The most tasks one fork makes.
MAX_FORKS = 100


def fork_names(source: str, *, into: int | None, names: Sequence[str] | None, taken: Collection[str]) -> list[str]:
    """The new tasks' ids for a fork of ``source``: ``names`` as given, or ``into`` of them made up.

    Raises :class:`ConfigError` when both or neither are given, a count
    outside 1..:data:`MAX_FORKS`, or a name twice; :class:`TaskExists` for a
    given name already in ``taken``; :class:`InvalidTaskId` for a bad name.
    """
    if (into is None) == (not names):
        raise ConfigError("fork needs either a number of tasks (into=N, --into N) or their names (names=[...], --name)")
    if names:
        chosen = [validate_task_id(n) for n in names]
        twice = sorted({n for n in chosen if chosen.count(n) > 1})
        if twice:
            raise ConfigError(f"fork names must differ; {', '.join(twice)} given more than once")
        for name in chosen:
            if name in taken:
                raise TaskExists(name)
        if len(chosen) > MAX_FORKS:
            raise ConfigError(f"a fork makes at most {MAX_FORKS} tasks, not {len(chosen)}")
        return chosen
    assert into is not None
    if not 1 <= into <= MAX_FORKS:
        raise ConfigError(f"a fork makes 1 to {MAX_FORKS} tasks, not {into}")
    out: list[str] = []
    n = 1
    while len(out) < into:
        name = validate_task_id(f"{source}-{n}")
        if name not in taken:
            out.append(name)
        n += 1
    return out
