"""Verbs for parallel attempts: fork a checkpoint into new tasks, compare tasks' diffs, list live conflicts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import orjson

from armor_rx.commands._rows import add_json_option, print_json, print_rows
from armor_rx.model.ids import validate_task_id


def register(verbs: Any, common: argparse.ArgumentParser) -> dict[str, Callable[[argparse.Namespace], int]]:
    fork = verbs.add_parser("fork", parents=[common], help="start new tasks from one checkpoint of a task")
    fork.add_argument("task", metavar="TASK")
    fork.add_argument("checkpoint", metavar="CHECKPOINT",
                      help="a checkpoint id such as cp-3 (see 'armor-rx checkpoints TASK')")
    how = fork.add_mutually_exclusive_group(required=True)
    how.add_argument("--into", type=int, metavar="N", help="make N tasks named TASK-1, TASK-2 ... (first free numbers)")
    how.add_argument("--name", action="append", metavar="NAME", help="make a task with this name (repeatable)")
    fork.add_argument("--json", action="store_true", help="the new tasks' start outcomes as one JSON array")

    compare = verbs.add_parser("compare", parents=[common], help="tasks' changes side by side (files, lines +/-)")
    compare.add_argument("tasks", metavar="TASK", nargs="+")
    add_json_option(compare, "the comparison as one JSON object")

    conflicts = verbs.add_parser("conflicts", parents=[common], help="paths two active tasks both changed, now")
    add_json_option(conflicts, "one JSON array, as conflict.detected says")
    return {"fork": cmd_fork, "compare": cmd_compare, "conflicts": cmd_conflicts}


def _client(args: argparse.Namespace) -> Any:
    from armor_rx.client.sync import connect

    return connect(args.repo, state_dir=args.state_dir)


def cmd_fork(args: argparse.Namespace) -> int:
    task = validate_task_id(args.task)
    with _client(args) as armor:
        started = armor.fork(task, args.checkpoint, into=args.into, names=args.name)
    if args.json:
        from armor_rx.service import wire

        sys.stdout.buffer.write(orjson.dumps([wire.event_out(e) for e in started]) + b"\n")
    else:
        for event in started:
            print(f"{event.task_id}  {event.payload.get('branch')}  {event.payload.get('worktree')}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    tasks = [validate_task_id(t) for t in args.tasks]
    with _client(args) as armor:
        found = armor.compare(tasks)
    if args.json:
        print_json(found.to_payload())
    else:
        print(found.table())
    return 0


def cmd_conflicts(args: argparse.Namespace) -> int:
    with _client(args) as armor:
        found = armor.conflicts()
    return print_rows(found, as_json=args.json, line=_conflict_line, empty="no conflicts between active tasks")


def _conflict_line(conflict: dict[str, Any]) -> str:
    files = ", ".join(f"{f['path']} ({'overlapping lines' if f['overlap'] else 'different lines'})"
                      for f in conflict["files"])
    return f"{' and '.join(conflict['tasks'])}: {files}"
