"""Verbs that drive a task's whole life through the armor service.

Each verb is a client of the state directory's service (started in the
background when none runs), so any number of them can run at once from any
number of terminals on one repository.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from armor_rx.errors import ConfigError, ServiceError
from armor_rx.commands._secrets import add_secret_option, secrets_of
from armor_rx.model.events import TaskEvent
from armor_rx.model.ids import validate_task_id
from armor_rx.model.merge import MERGE_MODES


def register(verbs: Any, common: argparse.ArgumentParser) -> dict[str, Callable[[argparse.Namespace], int]]:
    serve = verbs.add_parser("serve", parents=[common], help="run the armor service for a state directory (normally auto-started)")
    serve.add_argument("--foreground", action="store_true", help="serve in this process (for supervisors); default: start it in the background")
    serve.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                       help="exit after this long with no client and no active task (default $ARMOR_RX_IDLE_TIMEOUT or 300; 0: never)")
    serve.add_argument("--listen", metavar="HOST:PORT", help="also listen on TCP (a token is then required; it is written to run/token)")
    serve.add_argument("--stop", action="store_true", help="stop the running service (SIGTERM) and wait for it")
    serve.add_argument("--plan-files", choices=["off", "requested", "all"],
                       help="plan files for every task, only those started with --plan, or none "
                            "(default $ARMOR_RX_PLAN_FILES or requested)")
    serve.add_argument("--plan-location", choices=["state", "worktree"],
                       help="where plans go by default (default $ARMOR_RX_PLAN_LOCATION or state)")
    serve.add_argument("--classic-hooks", choices=["on", "off"],
                       help="the classic hook API (armor.hook('before_start', fn)); default $ARMOR_RX_CLASSIC_HOOKS or on")
    serve.add_argument("--stall-after", type=float, metavar="SECONDS",
                       help="record task.stalled for an active task with no event for this long "
                            "(default $ARMOR_RX_STALL_AFTER; unset: never)")

    start = verbs.add_parser("start", parents=[common], help="create (if new) and start a task: its branch, worktree and container")
    start.add_argument("task", metavar="TASK")
    start.add_argument("--image", metavar="IMAGE", help="container image (default: $ARMOR_RX_IMAGE or debian:bookworm-slim)")
    start.add_argument("--base", metavar="REF", default="HEAD", help="branch the task from this ref (default HEAD)")
    start.add_argument("--keep", action="store_true", help="keep the container when the task ends")
    start.add_argument("--plan", nargs="?", const=True, choices=["state", "worktree"],
                       help="keep a plan file for the task: in the state directory (plans/TASK.md) or in its worktree "
                            "(.armor/plan.md, never committed); bare --plan: the service's default place")
    start.add_argument("--goal", metavar="TEXT", help="what the task is for (shown at the top of its plan file)")
    start.add_argument("--submodules", choices=["skip", "reset", "fail", "merge", "rebase"],
                       help="what to do with submodules not at their recorded commit (default: only report them)")
    start.add_argument("--checkpoint-policy", metavar="SPEC",
                       help="when to checkpoint this task: 'adaptive' or e.g. 'risk=40,every=10,interval=600,at=before_complete' "
                            "(see docs/checkpoints.md)")
    start.add_argument("--writable-root", action="store_true",
                       help="let commands change the container's root filesystem "
                            "(checkpoints then save it with docker commit)")
    start.add_argument("--volume", action="append", default=[], metavar="PATH",
                       help="a container path with a volume of its own, saved with each checkpoint (repeatable)")
    start.add_argument("--json", action="store_true", help="print the task as JSON")
    add_secret_option(start, "every command of the task")
    start.add_argument("--service", action="append", default=[], metavar="NAME=CMD",
                       help="a long-running process to start in the container and supervise (repeatable)")
    start.add_argument("--health", action="append", default=[], metavar="CMD|tcp:PORT",
                       help="the health check of the --service before it: a command run in the container, or tcp:PORT")
    start.add_argument("--services", metavar="FILE", help="services from a JSON or TOML file (see docs/services.md)")

    ex = verbs.add_parser("exec", parents=[common], help="run a command in a task's container (output streamed, its exit code passed through)")
    ex.add_argument("task", metavar="TASK")
    ex.add_argument("--timeout", type=float, metavar="SECONDS", help="kill the command after this long")
    ex.add_argument("--json", action="store_true", help="print the outcome event as JSON at the end")
    add_secret_option(ex, "this command")
    ex.add_argument("command", nargs="*", metavar="-- COMMAND...")

    cp = verbs.add_parser("checkpoint", parents=[common], help="checkpoint a task's worktree")
    cp.add_argument("task", metavar="TASK")
    cp.add_argument("-m", "--message", metavar="MSG")
    cp.add_argument("--tag", metavar="NAME", help="tag the checkpoint: retention keeps tagged checkpoints")
    cp.add_argument("--json", action="store_true", help="print the checkpoint as JSON")

    diff = verbs.add_parser("diff", parents=[common], help="what a task changed, against its base or a checkpoint")
    diff.add_argument("task", metavar="TASK")
    diff.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?")
    diff.add_argument("--stat", action="store_true", help="only the changed files")
    diff.add_argument("--json", action="store_true", help="the diff as one JSON object")

    complete = verbs.add_parser("complete", parents=[common], help="commit a task's work to its branch and end it")
    complete.add_argument("task", metavar="TASK")
    complete.add_argument("-m", "--message", metavar="MSG")
    complete.add_argument("--merge", choices=list(MERGE_MODES), default="none",
                          help="merge into the base branch: ff, merge/three-way (line-level), first-wins (refuse "
                               "a file the base changed meanwhile), rebase (replay onto the base's tip), manual "
                               "(leave the branch, print how); default none")
    complete.add_argument("--json", action="store_true")

    cancel = verbs.add_parser("cancel", parents=[common], help="cancel a task")
    cancel.add_argument("task", metavar="TASK")
    cancel.add_argument("--reason", default="cancelled by the user")
    cancel.add_argument("--json", action="store_true")

    fail = verbs.add_parser("fail", parents=[common], help="mark a task failed")
    fail.add_argument("task", metavar="TASK")
    fail.add_argument("reason", metavar="REASON")
    fail.add_argument("--json", action="store_true")

    interrupt = verbs.add_parser("interrupt", parents=[common], help="stop a task's command and mark it interrupted (resumable)")
    interrupt.add_argument("task", metavar="TASK")
    interrupt.add_argument("--reason", default="interrupted by the user")
    interrupt.add_argument("--json", action="store_true")
    return {"serve": cmd_serve, "start": cmd_start, "exec": cmd_exec, "checkpoint": cmd_checkpoint, "diff": cmd_diff,
            "complete": cmd_complete, "cancel": cmd_cancel, "fail": cmd_fail, "interrupt": cmd_interrupt}


def client(args: argparse.Namespace) -> Any:
    from armor_rx.client.sync import connect

    return connect(args.repo, state_dir=args.state_dir)


def print_outcome(event: TaskEvent, as_json: bool, text: str) -> None:
    if as_json:
        sys.stdout.buffer.write(event.to_json() + b"\n")
        sys.stdout.flush()
    else:
        print(text)


def cmd_serve(args: argparse.Namespace) -> int:
    import os
    import signal
    import time
    from pathlib import Path

    from armor_rx.client.autostart import ensure_service, probe
    from armor_rx.service.paths import ServicePaths
    from armor_rx.service.server import ServiceConfig, serve
    from armor_rx.sinks.docker.quota import DEFAULT_OUTPUT_QUOTA
    from armor_rx.sinks.docker.spec import parse_bytes
    from armor_rx.sinks.statedir import StateDir

    state = StateDir.resolve(args.state_dir, args.repo)
    repo = Path(args.repo).resolve() if args.repo else (state.parent if state.name == ".armor" and (state.parent / ".git").exists() else None)
    if args.stop:
        found = probe(ServicePaths.of(state))
        if found is None:
            print(f"no armor service runs for {state}")
            return 0
        pid = int(found["pid"])
        os.kill(pid, signal.SIGTERM)
        # Gone means the process is gone, not just its socket: until it exits it holds the state
        # directory's lock, and a 'serve' right after would be refused.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                with open(f"/proc/{pid}/stat") as stat:  # a zombie (a 'serve --foreground' child not yet reaped) is gone too
                    if stat.read().rsplit(")", 1)[-1].split()[0] == "Z":
                        break
            except ProcessLookupError:
                break
            except OSError:
                pass  # no /proc (not Linux): the signal probe alone decides
            time.sleep(0.05)
        else:
            raise ServiceError(f"the armor service for {state} (pid {pid}) is still running 60 s after SIGTERM; "
                               f"'kill -9 {pid}' stops it (nothing acknowledged is lost)")
        print(f"stopped the armor service for {state} (pid {pid})")
        return 0
    if args.foreground:
        listen = None
        if args.listen:
            host, _, port = args.listen.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"--listen wants HOST:PORT such as 127.0.0.1:8765, not {args.listen!r}")
            listen = (host.strip("[]"), int(port))
        idle = args.idle_timeout
        if idle is None:
            raw = os.environ.get("ARMOR_RX_IDLE_TIMEOUT", "300")
            try:
                idle = float(raw)
            except ValueError:
                raise ConfigError(f"ARMOR_RX_IDLE_TIMEOUT must be a number of seconds, not {raw!r}") from None
        docker_env = os.environ.get("ARMOR_RX_DOCKER", "auto").lower()
        if docker_env not in ("auto", "0", "1", "no", "yes", "false", "true"):
            raise ConfigError(f"ARMOR_RX_DOCKER must be auto, 1 or 0, not {docker_env!r}")
        docker = None if docker_env == "auto" else docker_env in ("1", "yes", "true")
        quota_env = os.environ.get("ARMOR_RX_OUTPUT_QUOTA", "").strip()
        try:
            quota = None if quota_env.lower() in ("0", "none", "off") else parse_bytes(quota_env) if quota_env else DEFAULT_OUTPUT_QUOTA
        except ConfigError:
            raise ConfigError(f"ARMOR_RX_OUTPUT_QUOTA must be a size such as 32m or 1g (or 'none'), not {quota_env!r}") from None
        from armor_rx.operators import CheckpointTriggers
        from armor_rx.sinks.git.checkpoints import CheckpointPolicy

        classic = None if args.classic_hooks is None else args.classic_hooks == "on"
        when_env = os.environ.get("ARMOR_RX_CHECKPOINT_POLICY", "").strip()
        keep_env = os.environ.get("ARMOR_RX_CHECKPOINT_RETENTION", "").strip()
        return serve(ServiceConfig(state_dir=state, repo=repo, idle_timeout=idle or None, listen=listen, docker=docker,
                                   output_quota=quota, classic_hooks=classic, plan_files=args.plan_files,
                                   plan_location=args.plan_location,
                                   checkpoint_when=CheckpointTriggers.parse(when_env) if when_env else None,
                                   checkpoint_retention=CheckpointPolicy.parse(keep_env) if keep_env else None,
                                   stall_after=stall_after_of(args),
                                   stop_timeout=_seconds_env("ARMOR_RX_STOP_TIMEOUT", 30.0) or 30.0,
                                   task_idle_timeout=_seconds_env("ARMOR_RX_TASK_IDLE_TIMEOUT", None)))
    if args.listen:
        raise ConfigError("--listen needs --foreground (a background service listens on its unix socket only)")
    # A background service is started by a launcher that passes it this environment.
    for option, variable in (("plan_files", "ARMOR_RX_PLAN_FILES"), ("plan_location", "ARMOR_RX_PLAN_LOCATION"),
                             ("classic_hooks", "ARMOR_RX_CLASSIC_HOOKS")):
        if getattr(args, option) is not None:
            os.environ[variable] = getattr(args, option)
    if args.stall_after is not None:
        os.environ["ARMOR_RX_STALL_AFTER"] = str(stall_after_of(args))
    info = ensure_service(state, repo, idle_timeout=args.idle_timeout)
    print(f"armor service for {state}: pid {info['pid']}, socket {info['socket']}" + ("" if info.get("docker") else
          f" (no Docker engine: {info.get('docker_reason')})"))
    return 0


def _seconds_env(name: str, default: float | None) -> float | None:
    """A number of seconds from the environment (0 or 'none': None); ConfigError naming the variable if it is not one."""
    import os

    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in ("0", "none", "off"):
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds (or 0 for none), not {raw!r}")
    return value


def cmd_start(args: argparse.Namespace) -> int:
    from armor_rx.errors import TaskExists

    task = validate_task_id(args.task)
    with client(args) as armor:
        try:
            armor.create_task(task, base_ref=args.base)
        except TaskExists:
            pass  # a task made earlier ('pending') starts now; any other state is refused by start itself
        extra: dict[str, Any] = {}
        if args.checkpoint_policy:
            from armor_rx.operators import CheckpointTriggers

            extra["checkpoint_policy"] = CheckpointTriggers.parse(args.checkpoint_policy).to_payload()
        services = services_of(args)
        if services:
            extra["services"] = services
        sandbox = {**({"read_only": False} if args.writable_root else {}),
                   **({"volumes": args.volume} if args.volume else {})}
        if sandbox:
            extra["sandbox"] = sandbox
        event = armor.start(task, image=args.image, keep=True if args.keep else None, submodules=args.submodules,
                            plan=args.plan, goal=args.goal, secrets=secrets_of(args), **extra)
        record = armor.task(task)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(record.to_dict()) + b"\n")
    else:
        container = event.payload.get("container")
        print(f"task {task} is {record.state.value}" + (f"; container {container}" if container else "")
              + f" (run a command: armor-rx exec {task} -- COMMAND)")
    return 0


def stall_after_of(args: argparse.Namespace) -> float | None:
    """``--stall-after`` or ``$ARMOR_RX_STALL_AFTER`` (unset, empty or 0: never flag)."""
    import os

    value = args.stall_after
    if value is None:
        raw = os.environ.get("ARMOR_RX_STALL_AFTER", "").strip()
        try:
            value = float(raw) if raw else None
        except ValueError:
            raise ConfigError(f"ARMOR_RX_STALL_AFTER must be a number of seconds, not {raw!r}") from None
    if value is not None and value < 0:
        raise ConfigError(f"--stall-after must be a positive number of seconds (0: never), not {value:g}")
    return value or None


def services_of(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The services ``start`` was given: ``--services FILE`` and each ``--service NAME=CMD [--health CHECK]``.

    A ``--health`` belongs to the ``--service`` given just before it, so the
    two lists pair up by position; more checks than services is an error.
    """
    from armor_rx.model.services import HealthCheck, ServiceSpec, parse_health, parse_service_option, services_payload

    found: list[Any] = []
    if args.services:
        found.extend(load_services_file(args.services))
    if len(args.health) > len(args.service):
        raise ConfigError("each --health follows the --service it checks: give --service NAME=CMD first")
    for index, option in enumerate(args.service):
        name, command = parse_service_option(option)
        health = args.health[index] if index < len(args.health) else None
        found.append(ServiceSpec(name, command, health=parse_health(health) if health else HealthCheck()))
    return services_payload(found)


def load_services_file(path: str) -> list[Any]:
    """Services from a JSON file (a list, or ``{"services": [...]}``) or a TOML file (``[[services]]`` tables)."""
    from pathlib import Path

    file = Path(path)
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the services file {path!r}: {exc.strerror or exc}") from None
    try:
        if file.suffix == ".toml":
            import importlib

            try:
                toml: Any = importlib.import_module("tomllib")
            except ImportError:  # Python 3.10
                raise ConfigError(f"reading TOML needs Python 3.11 or later; give {path!r} as JSON") from None
            data: Any = toml.loads(text.decode("utf-8"))
        else:
            data = orjson.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        form = "TOML" if file.suffix == ".toml" else "JSON"
        raise ConfigError(f"the services file {path!r} is not valid {form}: {exc}") from None
    if isinstance(data, dict):
        data = data.get("services", data)
    if isinstance(data, dict):
        data = [{"name": name, **spec} if isinstance(spec, dict) else {"name": name, "command": spec}
                for name, spec in data.items()]
    if not isinstance(data, list):
        raise ConfigError(f"the services file {path!r} must hold a list of services (or a 'services' table)")
    return data


def _write_output(event: TaskEvent) -> None:
    stream = sys.stderr if event.payload.get("stream") == "stderr" else sys.stdout
    stream.write(str(event.payload.get("data", "")))
    stream.flush()


def exit_code_of(outcome: TaskEvent) -> int:
    result = outcome.payload
    code = result.get("exit_code")
    if result.get("reason") in ("timeout", "wall_clock") and result.get("message"):
        print(f"armor-rx: {result.get('message')}", file=sys.stderr)
    elif result.get("reason") == "oom":
        print("armor-rx: the command was killed for using more memory than its limit (see container.oom in the log)", file=sys.stderr)
    if result.get("not_recorded_bytes"):
        print(f"armor-rx: {result['not_recorded_bytes']} bytes of output were shown but not recorded "
              "(the task's output quota, $ARMOR_RX_OUTPUT_QUOTA, was used up)", file=sys.stderr)
    return code if isinstance(code, int) else 1


def command_of(args: argparse.Namespace, verb: str) -> list[str]:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError(f"armor-rx {verb} needs a command after '--', e.g. armor-rx {verb} TASK -- make test")
    return command


def cmd_exec(args: argparse.Namespace) -> int:
    task = validate_task_id(args.task)
    command = command_of(args, "exec")
    with client(args) as armor:
        try:
            outcome = armor.exec(task, command, timeout=args.timeout, on_output=_write_output, secrets=secrets_of(args))
        except KeyboardInterrupt:
            # Leaving the stream closes the connection: the service stops this command only.
            print(f"armor-rx: interrupted; the command was stopped (task {task} goes on)", file=sys.stderr)
            return 130
    if args.json:
        sys.stdout.buffer.write(outcome.to_json() + b"\n")
    return exit_code_of(outcome)


def cmd_checkpoint(args: argparse.Namespace) -> int:
    task = validate_task_id(args.task)
    with client(args) as armor:
        event = armor.checkpoint(task, args.message, tag=args.tag)
        if args.json:
            wanted = event.payload.get("checkpoint")
            found = [cp for cp in armor.checkpoints(task) if cp.id == wanted]
            from armor_rx.service import wire

            out = wire.checkpoint_out(found[0]) if found else dict(event.payload)
            sys.stdout.buffer.write(orjson.dumps(out) + b"\n")
            return 0
    print(f"task {task}: checkpoint {event.payload.get('checkpoint')} ({event.payload.get('files', '?')} files)")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    task = validate_task_id(args.task)
    with client(args) as armor:
        found = armor.diff(task, args.checkpoint)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(found.to_payload()) + b"\n")
    elif args.stat:
        for change in found.files:
            print(f"{change.status:<13} {change.path}")
        _print_container_changes(found.container)
    else:
        sys.stdout.write(found.patch)
        _print_container_changes(found.container)
        if getattr(found, "truncated", False):
            print(f"armor-rx: the diff was cut at its size limit; 'armor-rx diff {task} --stat' lists every file", file=sys.stderr)
    return 0


def _print_container_changes(part: Any) -> None:
    """The container's changes outside the worktree, after the patch, as 'docker diff' shows them."""
    if not part or not part.get("changes"):
        return
    print(f"# container {str(part.get('container', ''))[:12]}: changes against the {part.get('against')}"
          f" ({str(part.get('image', ''))[7:19]})" + (f"; {part['note']}" if part.get("note") else ""))
    marks = {"added": "A", "modified": "C", "deleted": "D"}
    for change in part["changes"]:
        print(f"{marks.get(change['kind'], '?')} {change['path']}")


def _simple(args: argparse.Namespace, call: Callable[[Any, str], TaskEvent], done: str) -> int:
    task = validate_task_id(args.task)
    with client(args) as armor:
        event = call(armor, task)
        state = armor.task(task).state.value
    print_outcome(event, args.json, f"task {task} {done} (now {state})")
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    outcome: list[TaskEvent] = []

    def complete(armor: Any, task: str) -> TaskEvent:
        outcome.append(armor.complete(task, message=args.message, merge=args.merge))
        return outcome[0]

    _simple(args, complete, "completed")
    payload = outcome[0].payload if outcome else {}
    if args.merge == "manual" and outcome and not args.json:
        how = payload.get("how")
        if isinstance(how, Mapping):
            print(f"the task's branch is left for you; to merge it: {how.get('merge')}\n"
                  f"  or replay it: {how.get('rebase')}\n  look first: {how.get('inspect')}")
        return 0
    if args.merge not in ("none", "manual") and outcome and payload.get("merged") is False:
        # The task is over and its work committed, but not where the caller asked: a script must not go on.
        conflicts = payload.get("conflicts")
        paths = ", ".join(str(p) for p in conflicts[:5]) if isinstance(conflicts, (list, tuple)) else ""
        print(f"armor-rx: not merged into the base branch ({payload.get('reason') or 'refused'}"
              f"{': ' + paths if paths else ''}); the work is committed as {str(payload.get('commit') or '')[:12]} "
              "on the task's branch: merge it by hand", file=sys.stderr)
        return 1
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    return _simple(args, lambda a, t: a.cancel(t, args.reason), "cancelled")


def cmd_fail(args: argparse.Namespace) -> int:
    return _simple(args, lambda a, t: a.fail(t, args.reason), "failed")


def cmd_interrupt(args: argparse.Namespace) -> int:
    return _simple(args, lambda a, t: a.interrupt(t, args.reason), "interrupted")
