"""The monitor's command line as data: its verbs, their arguments, the keys, and parsing.

What each verb does is :mod:`armor_rx.monitor.engine`; what Tab offers is
:mod:`armor_rx.monitor.completion`; both read :data:`VERBS`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from armor_rx.errors import UsageError
from armor_rx.model.ids import validate_task_id

# Argument kinds (for parsing and completion): a trailing "?" makes one optional.
TASK, CHECKPOINT, PATTERN, NAME, TEXT, VERB = "task", "checkpoint", "pattern", "name", "text", "verb"


@dataclass(frozen=True)
class Verb:
    """One command: its arguments (kinds, see above), whether it takes ``-- CMD``, whether it asks first."""

    name: str
    args: tuple[str, ...]
    summary: str
    command: bool = False
    destructive: bool = False

    @property
    def usage(self) -> str:
        shown = {TASK: "TASK", CHECKPOINT: "CHECKPOINT", PATTERN: "PATTERN", NAME: "NAME", TEXT: "MESSAGE...", VERB: "VERB"}
        parts = [self.name]
        for arg in self.args:
            label = shown[arg.rstrip("?")]
            parts.append(f"[{label}]" if arg.endswith("?") else label)
        if self.command:
            parts.append("-- CMD...")
        return " ".join(parts)


VERBS: dict[str, Verb] = {v.name: v for v in (
    Verb("tasks", (), "re-read every task from the service"),
    Verb("show", (TASK,), "select a task and show its details (recent output, checkpoints)"),
    Verb("events", (f"{TASK}?",), "show only this task's events (no task: all tasks)"),
    Verb("filter", (f"{PATTERN}?",), "show only kinds matching PATTERN, e.g. 'exec.*', '*.failed' (none: all)"),
    Verb("pause", (), "freeze the event pane (new events are counted, not shown)"),
    Verb("follow", (), "unfreeze the event pane and follow the newest events"),
    Verb("checkpoints", (TASK,), "list a task's checkpoints"),
    Verb("diff", (TASK, f"{CHECKPOINT}?"), "what a task changed, against its base or a checkpoint"),
    Verb("checkpoint", (TASK, f"{TEXT}?"), "checkpoint a task's worktree now"),
    Verb("rollback", (TASK, CHECKPOINT), "restore a task's worktree to a checkpoint (asks first)", destructive=True),
    Verb("resume", (TASK,), "resume an interrupted task"),
    Verb("cancel", (TASK,), "cancel a task (asks first)", destructive=True),
    Verb("exec", (TASK,), "run a command in a task's container; output goes to the detail pane", command=True),
    Verb("shell", (TASK,), "an interactive shell in a task's container (the monitor returns when it exits)"),
    Verb("run", (NAME,), "a new task's whole life: create, start, run CMD, complete or fail", command=True),
    Verb("gc", (), "remove orphaned task containers (shows them, then asks)", destructive=True),
    Verb("stats", (), "events/s, tasks by state, image-cache hit rate, dead letters, dropped events"),
    Verb("help", (f"{VERB}?",), "list the commands and keys"),
    Verb("quit", (), "leave the monitor (tasks are not touched)"),
)}

KEYS = [
    ("up/down, j/k", "select a task"),
    ("Enter", "show the selected task"),
    (":", "type a command (Tab completes; Up/Down for history)"),
    ("/", "filter the event pane by kind pattern"),
    ("c", "checkpoint the selected task"),
    ("r", "roll the selected task back (asks which checkpoint)"),
    ("x", "cancel the selected task (asks first)"),
    ("s", "a shell in the selected task's container"),
    ("p / f", "pause / follow the event pane"),
    ("PgUp/PgDn", "scroll the event pane (scrolling back pauses it)"),
    ("J/K", "scroll the detail pane"),
    ("?", "this help"),
    ("q", "quit"),
]


@dataclass(frozen=True)
class Parsed:
    verb: Verb
    args: list[str]
    command: list[str]


def parse(line: str) -> Parsed:
    """``line`` as a verb, its arguments and (for exec/run) the command after ``--``; UsageError if malformed."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot read {line!r}: {exc}") from None
    if not words:
        raise UsageError("type a command ('help' lists them)")
    name, rest = words[0], words[1:]
    verb = VERBS.get(name)
    if verb is None:
        close = [v for v in VERBS if v.startswith(name[:2])]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown command {name!r}{hint} ('help' lists them)")
    command: list[str] = []
    if verb.command:
        if "--" in rest:
            cut = rest.index("--")
            rest, command = rest[:cut], rest[cut + 1:]
        else:  # 'exec t1 make test' reads as 'exec t1 -- make test'
            fixed = len(verb.args)
            rest, command = rest[:fixed], rest[fixed:]
        if not command:
            raise UsageError(f"{verb.name} needs a command: {verb.usage}")
    elif "--" in rest:
        raise UsageError(f"{verb.name} takes no command after '--': {verb.usage}")
    required = [a for a in verb.args if not a.endswith("?")]
    if len(rest) < len(required):
        raise UsageError(f"{verb.name} needs {len(required)} argument{'s' if len(required) > 1 else ''}: {verb.usage}")
    if len(rest) > len(verb.args) and not (verb.args and verb.args[-1].rstrip("?") == TEXT):
        raise UsageError(f"too many arguments for {verb.name}: {verb.usage}")
    for kind, value in zip(verb.args, rest):
        if kind.rstrip("?") in (TASK, NAME):
            validate_task_id(value)
    return Parsed(verb, rest, command)
