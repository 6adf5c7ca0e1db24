"""Verbs on a task's git side: checkpoints, rollback, resume."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from armor_rx.commands._rows import add_json_option, print_rows
from armor_rx.commands._secrets import add_secret_option, secrets_of
from armor_rx.model.ids import validate_task_id


def register(verbs: Any, common: argparse.ArgumentParser) -> dict[str, Callable[[argparse.Namespace], int]]:
    checkpoints = verbs.add_parser("checkpoints", parents=[common], help="list a task's checkpoints")
    checkpoints.add_argument("task", metavar="TASK")
    add_json_option(checkpoints)

    rollback = verbs.add_parser("rollback", parents=[common], help="restore a task's worktree to a checkpoint")
    rollback.add_argument("task", metavar="TASK")
    rollback.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint id such as cp-3 (see 'armor-rx checkpoints TASK')")

    resume = verbs.add_parser("resume", parents=[common], help="resume an interrupted task")
    resume.add_argument("task", metavar="TASK")
    resume.add_argument("--checkpoint", metavar="CHECKPOINT", help="restore this checkpoint while resuming")
    add_secret_option(resume, "the task (again, if the service that held its secrets has restarted)")
    return {"checkpoints": cmd_checkpoints, "rollback": cmd_rollback, "resume": cmd_resume}


def _client(args: argparse.Namespace) -> Any:
    from armor_rx.client.sync import connect

    return connect(args.repo, state_dir=args.state_dir)


def cmd_checkpoints(args: argparse.Namespace) -> int:
    validate_task_id(args.task)
    with _client(args) as armor:
        armor.task(args.task)
        found = armor.checkpoints(args.task)
    return print_rows(found, as_json=args.json, json_rows=[cp.to_payload() for cp in found], line=_checkpoint_line,
                      empty=f"task {args.task} has no checkpoints")


def _checkpoint_line(cp: Any) -> str:
    return f"{cp.id:<8} {cp.commit[:12]}  {cp.files:>6} files  {'+'.join(cp.holds):<23} {cp.message}"


def cmd_rollback(args: argparse.Namespace) -> int:
    validate_task_id(args.task)
    with _client(args) as armor:
        outcome = armor.rollback(args.task, args.checkpoint)
    print(f"task {args.task} restored to {outcome.payload.get('checkpoint')}"
          + (" (worktree and container)" if outcome.payload.get("container_restored") else ""))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    validate_task_id(args.task)
    with _client(args) as armor:
        payload = {"checkpoint": args.checkpoint} if args.checkpoint else {}
        armor.resume(args.task, secrets=secrets_of(args), **payload)
        state = armor.task(args.task).state.value
    print(f"task {args.task} is {state}")
    return 0
