"""What the git sink remembers about each task, as small JSON files.

The record is a cache of facts git also knows (branch, worktree); it exists so
that a re-delivered request finds its earlier result instead of repeating the
effect, and so completion knows which base branch to merge into.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from armor_rx.errors import GitError, TaskNotFound
from armor_rx.model.ids import validate_task_id
from armor_rx.sinks._atomic import write_atomic


@dataclass
class TaskGitRecord:
    """A task's branch, base and worktree, and the results of requests applied to it."""

    task_id: str
    branch: str
    base_ref: str
    base_branch: str | None  # full ref ("refs/heads/main") when the base was a branch
    base_commit: str
    worktree: str | None = None
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)


class RecordStore:
    """One JSON file per task under ``<state_dir>/git/tasks``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, task_id: str) -> Path:
        return self.directory / f"{validate_task_id(task_id)}.json"

    def get(self, task_id: str) -> TaskGitRecord | None:
        try:
            data = orjson.loads(self._path(task_id).read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError as exc:
            raise GitError(
                f"git record for task {task_id!r} at {self._path(task_id)} is corrupt ({exc}); "
                "delete it and the task's worktree will be rediscovered from git"
            ) from None
        return TaskGitRecord(**data)

    def require(self, task_id: str) -> TaskGitRecord:
        record = self.get(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        return record

    def put(self, record: TaskGitRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(record.task_id)
        write_atomic(path, orjson.dumps(asdict(record)))

    def delete(self, task_id: str) -> None:
        self._path(task_id).unlink(missing_ok=True)

    def all(self) -> list[TaskGitRecord]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            record = self.get(path.stem)
            if record is not None:
                found.append(record)
        return found
