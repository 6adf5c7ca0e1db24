"""Verbs on the Docker side: run a command in a task's container, sweep orphans, manage the image cache."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from armor_rx.commands._rows import add_json_option, print_rows
from armor_rx.commands._secrets import add_secret_option, secrets_of
from armor_rx.errors import ConfigError, StateDirLocked, TaskNotFound
from armor_rx.model.ids import validate_task_id


def register(verbs: Any, common: argparse.ArgumentParser) -> dict[str, Callable[[argparse.Namespace], int]]:
    run = verbs.add_parser("run", parents=[common], help="run a command for a new task in its own container, branch and worktree",
                           description="armor-rx run --repo PATH --task NAME [--image IMAGE] [--keep] -- COMMAND...")
    run.add_argument("--task", required=True, metavar="NAME", help="the new task's id (a slug such as fix-login)")
    run.add_argument("--image", metavar="IMAGE", help="container image (default: $ARMOR_RX_IMAGE or debian:bookworm-slim)")
    run.add_argument("--keep", action="store_true", help="keep the container afterwards")
    run.add_argument("--detach", action="store_true", help="the task goes on in the service if this terminal goes away")
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="kill the command after this long")
    run.add_argument("--memory", metavar="SIZE", help="memory limit, e.g. 512m (default 1g)")
    run.add_argument("--pids", type=int, metavar="N", help="process limit (default 256)")
    add_secret_option(run, "the command")
    run.add_argument("command", nargs="*", metavar="-- COMMAND...")

    gc = verbs.add_parser("gc", parents=[common], help="remove orphaned task containers")
    gc.add_argument("--now", action="store_true", help="ignore the grace period")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.add_argument("--grace", type=float, metavar="SECONDS", help="grace period (default 86400)")
    add_json_option(gc)

    from armor_rx.commands import _docker_image

    handlers: dict[str, Callable[[argparse.Namespace], int]] = {"run": cmd_run, "gc": cmd_gc}
    handlers.update(_docker_image.register(verbs, common))
    return handlers


def _state(args: argparse.Namespace) -> Path:
    from armor_rx.sinks.statedir import StateDir

    return StateDir.resolve(args.state_dir, args.repo)


def cmd_run(args: argparse.Namespace) -> int:
    """A task, its container and one command, through the repository's service.

    Any number of these run at once on one repository; a name that is taken
    gets a suffix (the chosen id is printed on stderr). Ctrl-C or a closed
    terminal interrupts the task (its worktree is kept) unless ``--detach``.
    """
    from armor_rx.client.sync import connect
    from armor_rx.commands.lifecycle import command_of

    command = command_of(args, "run")
    if not args.repo:
        raise ConfigError("armor-rx run needs --repo PATH (the git repository the task branches from)")
    task = validate_task_id(args.task)
    repo = Path(args.repo).resolve()
    if not (repo / ".git").exists():
        raise ConfigError(f"--repo {args.repo!r} is not a git repository (no .git in {repo})")
    sandbox: dict[str, Any] = {}
    if args.memory:
        sandbox["mem_limit"] = args.memory
    if args.pids:
        sandbox["pids_limit"] = args.pids
    if args.timeout:
        sandbox["exec_timeout"] = args.timeout
        sandbox["wall_clock"] = args.timeout + 60
    chosen: dict[str, str] = {}

    def on_line(key: str, value: Any) -> None:
        if key == "task":
            chosen["task"] = value["task_id"]
            if value["task_id"] != task:
                print(f"armor-rx: task {task} exists; this run is task {value['task_id']}", file=sys.stderr, flush=True)
        elif key == "event" and value.kind == "exec.output":
            stream = sys.stderr if value.payload.get("stream") == "stderr" else sys.stdout
            stream.write(str(value.payload.get("data", "")))
            stream.flush()
        elif key == "outcome":
            payload = value.get("payload", {})
            if payload.get("reason") in ("timeout", "wall_clock") and payload.get("message"):
                print(f"armor-rx: {payload['message']}", file=sys.stderr)
            elif payload.get("reason") == "oom":
                print("armor-rx: the command was killed for using more memory than its limit (see container.oom in the log)", file=sys.stderr)
            if payload.get("not_recorded_bytes"):
                print(f"armor-rx: {payload['not_recorded_bytes']} bytes of output were shown but not recorded "
                      "(the task's output quota, $ARMOR_RX_OUTPUT_QUOTA, was used up)", file=sys.stderr)

    ended_by = _end_on_signals()
    with connect(repo, state_dir=args.state_dir) as armor:
        try:
            result = armor.run(task, command, on_line=on_line, detach=args.detach, image=args.image,
                               keep=True if args.keep else None, sandbox=sandbox or None,
                               timeout=args.timeout, secrets=secrets_of(args))
        except KeyboardInterrupt:
            name = chosen.get("task", task)
            if not args.detach and "task" in chosen:
                _wait_interrupted(armor, name)
            if args.detach:
                print(f"armor-rx: detached; task {name} goes on in the service ('armor-rx events --task {name} -f' follows it)", file=sys.stderr)
            else:
                print(f"armor-rx: interrupted; task {name} is interrupted (its worktree is kept; 'armor-rx resume {name}' continues it)",
                      file=sys.stderr)
            return 128 + ended_by.get("signal", signal.SIGINT)
    return int(result["exit_code"])


def _end_on_signals() -> dict[str, int]:
    """SIGTERM and SIGHUP (a closed terminal) end the command as Ctrl-C does: its task is interrupted
    and its container removed, within a bound, before the process exits."""
    ended_by: dict[str, int] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        ended_by["signal"] = signum
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    return ended_by


def _wait_interrupted(armor: Any, task: str, timeout: float = 60.0) -> None:
    """Wait until the service has interrupted the task (so what we print is already true)."""
    import time

    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:  # a second Ctrl-C (or SIGTERM) must not cut this short
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if armor.task(task).state.value not in ("pending", "starting", "running"):
                return
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_gc(args: argparse.Namespace) -> int:
    from armor_rx.session import Armor
    from armor_rx.sinks.docker import Engine
    from armor_rx.sinks.docker.sweep import DEFAULT_GRACE, Sweeper

    from armor_rx.cli import live_service

    remote = live_service(args)
    if remote is not None:
        # The service owns the state directory: it sweeps, knowing which of its tasks are active.
        with remote:
            return _print_sweep(args, [d.to_payload() for d in remote.sweep(now=args.now, dry_run=args.dry_run, grace=args.grace)])
    engine = Engine.connect()
    grace = DEFAULT_GRACE if args.grace is None else args.grace
    armor = None
    spare: set[str] = set()
    try:
        state = _state(args)
    except Exception:
        state = None
    if state is not None and (state / "events").is_dir():
        repo = args.repo or (str(state.parent) if args.state_dir is None else None)
        try:
            armor = Armor(repo, state_dir=state, git=repo is not None and (Path(repo) / ".git").exists()).open()
        except StateDirLocked as exc:
            # The live session there may have adopted containers of a dead one;
            # it sweeps its own, so they are left to it.
            print(f"armor-rx: warning: {exc}; leaving its containers to that session, sweeping only "
                  "containers of dead sessions elsewhere, without logging events", file=sys.stderr)
            armor = None
            spare.add(str(state))
    try:
        sweeper = Sweeper(engine, grace=grace, spare_states=spare, **(_session_hooks(armor) if armor is not None else {}))
        decisions = sweeper.sweep(now=args.now, dry_run=args.dry_run)
    finally:
        if armor is not None:
            armor.close()
        engine.close()
    return _print_sweep(args, [d.to_payload() for d in decisions])


def _print_sweep(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    return print_rows(rows, as_json=args.json, line=_sweep_line, empty="no armor containers")


def _sweep_line(row: dict[str, Any]) -> str:
    why = row["orphan"] or "in use"
    return f"{row['action']:<13} {row['container']}  {row['task']:<24} age {row['age']:>9.0f}s  {why}"


def _session_hooks(armor: Any) -> dict[str, Any]:
    from armor_rx.model.lifecycle import ACTIVE, State

    def is_active(task_id: str) -> bool:
        try:
            return bool(armor.task(task_id).state in ACTIVE)
        except (TaskNotFound, ValueError):
            return False

    def known(task_id: str | None) -> bool:
        try:
            return task_id is not None and armor.task(task_id) is not None
        except (TaskNotFound, ValueError):
            return False

    def checkpoint(task_id: str, labels: Mapping[str, str]) -> Any:
        if armor.assembly.git is None or not known(task_id) or not Path(labels.get("armor.worktree", "")).is_dir():
            return None
        return armor.checkpoint(task_id, "saved by the orphan sweep before removing the task's container").payload.get("checkpoint")

    def emit(kind: str, task_id: str | None, payload: Mapping[str, Any]) -> None:
        armor.emit(task_id if known(task_id) else None, kind, payload)

    def resumable(task_id: str) -> bool:
        # An interrupted task comes back with 'resume', maybe at a checkpoint whose snapshot it needs.
        try:
            return is_active(task_id) or armor.task(task_id).state is State.INTERRUPTED
        except (TaskNotFound, ValueError):
            return False

    return {"is_active": is_active, "state_dir": str(Path(armor.state.path).resolve()), "checkpoint": checkpoint,
            "emit": emit, "snapshots": _snapshot_sweep(armor, resumable)}


def _snapshot_sweep(armor: Any, is_active: Callable[[str], bool]) -> Callable[[bool], list[Any]]:
    """The container snapshots no checkpoint of this state directory names (see armor_rx.sinks.docker.snapshots)."""
    from armor_rx.sinks.docker import Engine
    from armor_rx.sinks.docker.containers import SessionIdentity
    from armor_rx.sinks.docker.snapshots import ContainerSnapshots

    git = armor.assembly.git

    def refs(task_id: str) -> set[str]:
        if git is None:
            return set()
        return {str(cp.container["snapshot"]) for cp in git.checkpoints(task_id)
                if cp.container and cp.container.get("snapshot")}

    def sweep(dry_run: bool) -> list[Any]:
        if git is None:
            return []  # without the checkpoints' records, nothing can be known to be unnamed
        engine = Engine.connect()
        try:
            store = ContainerSnapshots(lambda: engine, Path(armor.state.path).resolve(), SessionIdentity.current())
            return store.sweep(is_active=is_active, referenced=refs, lock=git.task_lock, dry_run=dry_run)
        finally:
            engine.close()

    return sweep
