"""Plan files on disk: the plan's state in the state directory, its Markdown where the task asked.

Each task's plan is kept as JSON in ``<state dir>/plans/<task>.json`` — armor's
own copy, the one a restarted session rebuilds from — and drawn as Markdown
either next to it (``<task>.md``, location ``state``) or in the task's
worktree (location ``worktree``, by default ``.armor/plan.md``: a reserved
name, so it is never checkpointed, committed or merged into the user's branch).

Every file is written whole under a temporary name and renamed into place,
so a reader (or a crash) sees the old plan or the new one, never half of one.
The worktree belongs to the agent, so there every directory is opened one
component at a time without following symlinks, and the file is renamed over
whatever stands at its name: a plan file the agent replaced by a symlink is
replaced in turn, never followed, and a directory replaced by a symlink makes
the write fail (:class:`~armor_rx.errors.PathEscape`) without writing anywhere.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import orjson

from armor_rx.errors import ConfigError, PathEscape
from armor_rx.model.ids import validate_task_id
from armor_rx.model.plan import Plan, render
from armor_rx.sinks._atomic import write_atomic_in
from armor_rx.sinks.git.beneath import TEMP_PREFIX, refused_name

#: Where a worktree's plan goes unless told otherwise (under the reserved '.armor/').
WORKTREE_PLAN = ".armor/plan.md"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PlanFiles:
    """Reads and writes plans for the tasks of one state directory.

    ``worktree_of(task_id)`` gives a task's worktree (None: it has none, and
    its plan is drawn in the state directory); ``worktree_path`` is where in
    the worktree the Markdown goes, relative and without ``..`` or ``.git``.
    """

    def __init__(self, state_dir: str | Path, *, worktree_of: Callable[[str], Path | None] | None = None,
                 worktree_path: str = WORKTREE_PLAN) -> None:
        parts = worktree_path.split("/")
        if worktree_path.startswith("/") or any(refused_name(p) for p in parts):
            raise ConfigError(f"plan file path {worktree_path!r} must be relative, without '', '.', '..' or '.git' "
                              "components, such as '.armor/plan.md'")
        self.directory = Path(state_dir) / "plans"
        self.worktree_of = worktree_of
        self.worktree_parts = parts

    def state_path(self, task_id: str) -> Path:
        return self.directory / f"{validate_task_id(task_id)}.json"

    def markdown_path(self, plan: Plan) -> Path | None:
        """Where ``plan``'s Markdown is written; None while its worktree does not exist yet (or any more).

        A session without worktrees (no git) draws every plan in the state directory.
        """
        target = self._target(plan)
        return target[0].joinpath(*target[1]) if target is not None else None

    def _target(self, plan: Plan) -> tuple[Path, list[str]] | None:
        """The directory to write beneath and the path in it."""
        here = (self.directory, [f"{validate_task_id(plan.task_id)}.md"])
        if plan.location != "worktree" or self.worktree_of is None:
            return here
        worktree = self.worktree_of(plan.task_id)
        if worktree is None:
            return here
        return (worktree, self.worktree_parts) if os.path.isdir(worktree) else None

    def load(self, task_id: str) -> Plan | None:
        """The last plan written for ``task_id``; None if there is none.

        A damaged file gives a blank plan (nothing folded in, ``last_seq`` 0):
        the task is tracked, and the hook rebuilds it from the log.
        """
        try:
            raw = self.state_path(task_id).read_bytes()
        except FileNotFoundError:
            return None
        try:
            plan = Plan.from_dict(orjson.loads(raw))
        except (ValueError, KeyError, TypeError):
            return Plan(task_id=task_id)
        return plan if plan.task_id == task_id else Plan(task_id=task_id)

    def write(self, plan: Plan) -> None:
        """Write ``plan``'s state, then its Markdown; each file atomically. Raises PathEscape (worktree) or OSError."""
        self.directory.mkdir(parents=True, exist_ok=True)
        state = orjson.dumps(plan.to_dict(), option=orjson.OPT_INDENT_2)
        _replace(self.directory, self.state_path(plan.task_id).name, state)
        target = self._target(plan)
        if target is None:
            return  # the worktree is made by the start's effect: the next update draws the plan there
        write_beneath(target[0], target[1], render(plan).encode())


def _replace(directory: Path, name: str, data: bytes) -> None:
    fd = os.open(directory, _DIR_FLAGS)
    try:
        _replace_in(fd, name, data, str(directory))
    finally:
        os.close(fd)


def write_beneath(root: Path, parts: list[str], data: bytes) -> None:
    """Write ``data`` to ``root/parts...`` without following any symlink, making missing directories.

    Raises :class:`PathEscape` when a directory on the way is a symlink or
    not a directory (the agent put it there): nothing is written then.
    """
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise PathEscape(f"refused to write a plan file in {root}: it is not a directory ({exc.strerror})") from None
    try:
        for name in parts[:-1]:
            try:
                next_fd = _open_dir(fd, name)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise PathEscape(
                    f"refused to write the plan file {'/'.join(parts)!r} in {root}: {name!r} is a symlink or a file, "
                    "not a directory (something in the worktree put it there); remove it and the next update "
                    "writes the plan"
                ) from None
            os.close(fd)
            fd = next_fd
        _replace_in(fd, parts[-1], data, str(root))
    finally:
        os.close(fd)


def _open_dir(parent: int, name: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            pass  # made meanwhile: open what is there (still without following it)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _replace_in(dir_fd: int, name: str, data: bytes, where: str) -> None:
    try:
        # rename() replaces a symlink at ``name`` itself; it never writes through it.
        write_atomic_in(dir_fd, name, data, temp_prefix=f"{TEMP_PREFIX}plan-")
    except IsADirectoryError:
        raise PathEscape(f"refused to write the plan file {name!r} in {where}: a directory stands at its name; "
                         "remove it and the next update writes the plan") from None
