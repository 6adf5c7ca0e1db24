"""Verbs on the Docker side: run a command in a task's container, sweep orphans, manage the image cache."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from armor_rx.errors import ConfigError, StateDirLocked, TaskNotFound
from armor_rx.model.ids import validate_task_id


def register(verbs: Any, common: argparse.ArgumentParser) -> dict[str, Callable[[argparse.Namespace], int]]:
    run = verbs.add_parser("run", parents=[common], help="run a command for a new task in its own container, branch and worktree",
                           description="armor-rx run --repo PATH --task NAME [--image IMAGE] [--keep] -- COMMAND...")
    run.add_argument("--task", required=True, metavar="NAME", help="the new task's id (a slug such as fix-login)")
    run.add_argument("--image", metavar="IMAGE", help="container image (default: $ARMOR_RX_IMAGE or debian:bookworm-slim)")
    run.add_argument("--keep", action="store_true", help="keep the container afterwards")
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="kill the command after this long")
    run.add_argument("--memory", metavar="SIZE", help="memory limit, e.g. 512m (default 1g)")
    run.add_argument("--pids", type=int, metavar="N", help="process limit (default 256)")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND...")

    gc = verbs.add_parser("gc", parents=[common], help="remove orphaned task containers")
    gc.add_argument("--now", action="store_true", help="ignore the grace period")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.add_argument("--grace", type=float, metavar="SECONDS", help="grace period (default 86400)")
    gc.add_argument("--json", action="store_true", help="one JSON array")

    from armor_rx.commands import _docker_image

    handlers: dict[str, Callable[[argparse.Namespace], int]] = {"run": cmd_run, "gc": cmd_gc}
    handlers.update(_docker_image.register(verbs, common))
    return handlers


def _state(args: argparse.Namespace) -> Path:
    from armor_rx.sinks.statedir import StateDir

    return StateDir.resolve(args.state_dir, args.repo)


def cmd_run(args: argparse.Namespace) -> int:
    from armor_rx.session import Armor
    from armor_rx.sinks.docker import DockerEffect, Engine, SandboxSpec

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("armor-rx run needs a command after '--', e.g. armor-rx run --repo . --task t1 -- make test")
    if not args.repo:
        raise ConfigError("armor-rx run needs --repo PATH (the git repository the task branches from)")
    task = validate_task_id(args.task)
    repo = Path(args.repo).resolve()
    if not (repo / ".git").exists():
        raise ConfigError(f"--repo {args.repo!r} is not a git repository (no .git in {repo})")
    engine = Engine.connect()  # before anything is made: a dead daemon leaves no half-made task
    spec = SandboxSpec()
    overrides: dict[str, Any] = {"keep": args.keep}
    if args.image:
        overrides["image"] = args.image
    if args.timeout:
        overrides["exec_timeout"] = args.timeout
        overrides["wall_clock"] = max(spec.wall_clock, args.timeout + 60)
    if args.memory:
        overrides["mem_limit"] = args.memory
    if args.pids:
        overrides["pids_limit"] = args.pids
    spec = spec.with_overrides(overrides)
    from armor_rx.sinks.docker.containers import ensure_image

    ensure_image(engine, spec.image)  # an unknown image is refused before the task exists
    state = _state(args)
    holder: dict[str, Any] = {}
    effect = DockerEffect(engine, spec=spec, worktree_of=lambda t: holder["armor"].worktree(t), state_dir=state)
    # A small replay window: exec.output events are up to 32 KB each, and the bus keeps
    # the last memory_events of them in memory.
    with Armor(repo, state_dir=state, effects=[effect], memory_events=256) as armor, effect:
        holder["armor"] = armor
        return _run_task(armor, effect, task, command)


def _write_output(event: Any) -> None:
    stream = sys.stderr if event.payload.get("stream") == "stderr" else sys.stdout
    stream.write(str(event.payload.get("data", "")))
    stream.flush()


def _run_task(armor: Any, effect: Any, task: str, command: list[str]) -> int:
    request = None
    subscription = None
    try:
        armor.create_task(task)
        # Held as a future so that a Ctrl-C during a slow start can wait for the
        # container the start is still making, and remove it.
        request = armor.request(task, "task.start.requested")
        request.result()
        subscription = armor.events("exec.output", task_id=task).subscribe(_write_output)
        request = armor.request(task, "exec.requested", {"command": command})
        outcome = request.result()
        armor.wait_idle()
    except KeyboardInterrupt:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        try:
            return _interrupted(armor, effect, task, request)
        finally:
            signal.signal(signal.SIGINT, previous)
    finally:
        if subscription is not None:
            subscription.dispose()
    result = outcome.payload
    code = result.get("exit_code")
    code = 1 if code is None else int(code)
    if result.get("reason") == "timeout":
        print(f"armor-rx: {result.get('message')}", file=sys.stderr)
    elif result.get("reason") == "oom":
        print("armor-rx: the command was killed for using more memory than its limit (see container.oom in the log)", file=sys.stderr)
    if code == 0:
        armor.complete(task)
    else:
        armor.fail(task, f"the command exited with {code} ({result.get('reason')}, limit hit: {result.get('limit_hit')})")
    return code


def _interrupted(armor: Any, effect: Any, task: str, request: Any) -> int:
    effect.kill(task, "interrupted")
    if request is not None and not request.done():
        # A start still in flight would otherwise create its container after we
        # looked for it, and leave it running.
        print("armor-rx: interrupted; waiting for the task's container to be made so it can be removed ...", file=sys.stderr)
        try:
            request.result(300)
        except Exception:
            pass
    try:
        record = armor.task(task)
    except TaskNotFound:
        print("armor-rx: interrupted before the task was made", file=sys.stderr)
        return 130
    armor.wait_idle()
    if record.state.value not in ("interrupted", "completed", "failed", "cancelled", "pending"):
        armor.interrupt(task, "interrupted by the user (Ctrl-C)")
    if not effect.spec_for(task).keep:
        effect.remove(task, lambda kind, payload: armor.emit(task, kind, payload), reason="interrupted")
    print(f"armor-rx: interrupted; task {task} is interrupted (its worktree is kept; 'armor-rx resume {task}' continues it)", file=sys.stderr)
    return 130


def cmd_gc(args: argparse.Namespace) -> int:
    from armor_rx.session import Armor
    from armor_rx.sinks.docker import Engine
    from armor_rx.sinks.docker.sweep import DEFAULT_GRACE, Sweeper

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
    rows = [d.to_payload() for d in decisions]
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(rows) + b"\n")
    elif not rows:
        print("no armor containers")
    else:
        for row in rows:
            why = row["orphan"] or "in use"
            print(f"{row['action']:<13} {row['container']}  {row['task']:<24} age {row['age']:>9.0f}s  {why}")
    return 0


def _session_hooks(armor: Any) -> dict[str, Any]:
    from armor_rx.model.lifecycle import ACTIVE

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
        git = getattr(armor, "_git", None)
        if git is None or not known(task_id) or not Path(labels.get("armor.worktree", "")).is_dir():
            return None
        return armor.checkpoint(task_id, "saved by the orphan sweep before removing the task's container").payload.get("checkpoint")

    def emit(kind: str, task_id: str | None, payload: Mapping[str, Any]) -> None:
        armor.emit(task_id if known(task_id) else None, kind, payload)

    return {"is_active": is_active, "state_dir": str(Path(armor.state.path).resolve()), "checkpoint": checkpoint, "emit": emit}
