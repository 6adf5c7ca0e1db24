"""What each tool returns: typed dicts, so a framework gets a JSON schema of the output too.

Every result has ``cli``: the ``armor-rx`` command a person can run to see
the same thing (the agent can quote it to its user).
"""

from __future__ import annotations

from typing_extensions import TypedDict  # pydantic derives schemas from these only on Python < 3.12


class TaskInfo(TypedDict):
    task: str
    state: str
    branch: str | None
    worktree: str | None
    base_ref: str | None
    reason: str | None
    cli: str


class TaskList(TypedDict):
    tasks: list[TaskInfo]
    cli: str


class EventLine(TypedDict):
    seq: int
    kind: str
    summary: str


class TaskStatus(TypedDict):
    task: str
    state: str
    branch: str | None
    worktree: str | None
    reason: str | None
    recent_events: list[EventLine]
    cli: str


class CommandResult(TypedDict):
    task: str
    command: str
    running: bool
    exit_code: int | None
    reason: str | None
    message: str | None
    output: str
    output_bytes: int
    truncated: bool
    cli: str


class BackgroundJob(TypedDict):
    job: str
    task: str
    command: str
    cli: str


class FileContent(TypedDict):
    path: str
    start_line: int
    end_line: int
    total_lines: int
    content: str
    cli: str


class FileChanged(TypedDict):
    path: str
    action: str
    detail: str
    cli: str


class FileEntry(TypedDict):
    path: str
    kind: str
    size: int


class FileListing(TypedDict):
    path: str
    entries: list[FileEntry]
    truncated: bool
    cli: str


class CheckpointInfo(TypedDict):
    task: str
    checkpoint: str
    message: str | None
    files: int | None
    commit: str | None
    cli: str


class CheckpointList(TypedDict):
    task: str
    checkpoints: list[CheckpointInfo]
    cli: str


class DiffFile(TypedDict):
    path: str
    status: str


class DiffResult(TypedDict):
    task: str
    against: str
    files: list[DiffFile]
    patch: str
    truncated: bool
    cli: str


class Outcome(TypedDict):
    task: str
    state: str
    event: str
    detail: dict[str, object]
    cli: str


class Completion(TypedDict):
    """What ``complete`` did: the task is over either way; ``merged`` says whether the base has its work.

    ``commit`` is the task branch's tip (the work, always committed there);
    ``merge_commit`` the base branch's new tip when merged. When a merge was
    asked for and refused, ``reason`` says why, ``conflicts`` lists the files
    and nothing on the base changed. ``how`` (mode ``manual``) holds the git
    commands a person runs; ``landed`` (``first-wins``) the base commit that
    changed each conflicting file first. ``summary`` says it all in a sentence.
    """

    task: str
    state: str
    event: str
    merge: str
    merged: bool
    branch: str | None
    base_branch: str | None
    commit: str | None
    merge_commit: str | None
    reason: str | None
    conflicts: list[str]
    landed: dict[str, dict[str, str]]
    how: dict[str, str]
    summary: str
    detail: dict[str, object]
    cli: str
