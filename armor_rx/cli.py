"""The ``armor-rx`` command.

Every verb takes ``--state-dir`` (default: ``.armor/`` in the repository named
by ``--repo``, else in the repository of the current directory). Errors are
one line on stderr and a non-zero exit, never a traceback.

Exit codes: 0 success, 1 an error, 2 a usage error, 3 (``events``, ``tasks``)
what could be read was printed, but the event log has damaged lines that were
skipped (each named in a warning on stderr; copies are kept in
``.armor/events/quarantine/``), so the output may miss events. Once a person
has looked, ``armor-rx damage --acknowledge`` marks those stretches seen and
the read verbs exit 0 for them again (a new stretch is 3 again).

The read verbs (``tasks``, ``events``, ``damage``, ``dead-letters``) are run
often and from scripts, so they import only what they use: the other verbs'
modules (Docker, git, the service's client, MCP ...) are loaded only for
those verbs, and the service's client only when its socket is there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson

from armor_rx import __version__
from armor_rx._taskview import render_table
from armor_rx.errors import ArmorError, ConfigError
from armor_rx.model.events import TaskEvent, to_plain
from armor_rx.model.ids import validate_task_id
from armor_rx.model.patterns import kind_matcher
from armor_rx.model.registry import Registry

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DAMAGED = 3


class OneLineParser(argparse.ArgumentParser):
    """Usage errors are one line (the verb's --help has the rest), like every other armor-rx error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# Verbs defined in this module; any other verb is in armor_rx/commands/.
_CORE_VERBS = frozenset({"events", "damage", "tasks", "dead-letters", "redrive", "demo"})
_VALUED = frozenset({"--state-dir", "--repo", "--log-level"})  # the shared options that take a value


def _verb_of(argv: Sequence[str]) -> str | None:
    """The verb in ``argv`` (the first word that is not an option or an option's value), if any."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _VALUED:
            skip = True
        elif not token.startswith("-"):
            return token
    return None


def _parser(*, commands: bool = True) -> argparse.ArgumentParser:
    # The shared options are accepted before the verb and after it ("armor-rx --repo R tasks",
    # "armor-rx tasks --repo R"): the verb's copies default to SUPPRESS so they never
    # overwrite a value given before the verb.
    def add_common(p: argparse.ArgumentParser, suppress: bool) -> None:
        default = argparse.SUPPRESS if suppress else None
        p.add_argument("--state-dir", metavar="DIR", default=default, help="state directory (default: .armor/ in the repository)")
        p.add_argument("--repo", metavar="PATH", default=default,
                       help="repository whose .armor/ to use (default: the one containing the current directory)")
        p.add_argument("--log-json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                       help="write armor_rx's own log lines as JSON")
        p.add_argument("--log-level", default=argparse.SUPPRESS if suppress else "warning", choices=["debug", "info", "warning", "error"])

    common = argparse.ArgumentParser(add_help=False)
    add_common(common, suppress=True)

    parser = OneLineParser(prog="armor-rx", description="Run AI coding agents safely.")
    parser.add_argument("--version", action="version", version=f"armor-rx {__version__}")
    add_common(parser, suppress=False)
    verbs: Any = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    events = verbs.add_parser("events", parents=[common], help="print the event log")
    events.add_argument("--task", metavar="ID", help="only this task's events")
    events.add_argument("--kind", metavar="PATTERN", help="only kinds matching, e.g. 'task.*' or '*.failed'")
    events.add_argument("--since-seq", metavar="SEQ", type=int, default=1, help="start at this seq")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events (Ctrl-C stops)")
    events.add_argument("--json", action="store_true", help="one JSON object per line")

    damage = verbs.add_parser("damage", parents=[common], help="list the event log's damaged stretches (which reads skip)")
    damage.add_argument("--acknowledge", action="store_true", help="mark them seen: 'events' and 'tasks' stop exiting 3 for them")
    damage.add_argument("--json", action="store_true", help="one JSON array")

    tasks = verbs.add_parser("tasks", parents=[common], help="list tasks and their states")
    tasks.add_argument("--json", action="store_true", help="one JSON array")

    letters = verbs.add_parser("dead-letters", parents=[common], help="list requests whose effects gave up")
    letters.add_argument("--all", action="store_true", help="include re-driven ones")
    letters.add_argument("--json", action="store_true", help="one JSON array")

    redrive = verbs.add_parser("redrive", parents=[common], help="run a dead-lettered request again")
    redrive.add_argument("letter", metavar="LETTER_ID")

    demo = verbs.add_parser("demo", parents=[common], help="run a small example pipeline and print its events")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary directory")

    # Verb groups that live in their own modules (armor_rx/commands/*.py): each
    # has register(verbs, common) -> {verb: handler}. A core verb does without them.
    if commands:
        for module in _command_modules():
            COMMANDS.update(module.register(verbs, common))
    return parser


def _command_modules() -> list[Any]:
    import importlib
    import pkgutil

    import armor_rx.commands as package

    return [importlib.import_module(f"armor_rx.commands.{info.name}") for info in pkgutil.iter_modules(package.__path__) if not info.name.startswith("_")]


def _state_path(args: argparse.Namespace) -> Path:
    from armor_rx.sinks.statedir import StateDir

    path = StateDir.resolve(args.state_dir, args.repo)
    if args.state_dir is not None and not path.is_dir():
        # Named explicitly: a typo must not read as "no tasks".
        what = "is not a directory" if path.exists() else "does not exist"
        raise ConfigError(f"--state-dir {args.state_dir!r} {what} ({path}); nothing has run there")
    return path


def _read_log(state: Path) -> Any:
    from armor_rx.sinks.eventlog import EventLog

    if not (state / "events").is_dir():
        return None
    return EventLog(state / "events", read_only=True).start()


def _warn_damage(log: Any) -> int:
    """Warn on stderr about every damaged stretch a local read skipped; the exit code that says so
    (3, unless every stretch has been acknowledged with ``armor-rx damage --acknowledge``)."""
    from armor_rx.sinks._quarantine import acknowledged, damage_key

    for path in log.unexpected:
        print(f"armor-rx: warning: {path} is not an event log segment armor-rx wrote; it was not read", file=sys.stderr)
    done = acknowledged(log.quarantine_dir)
    fresh = [d for d in log.damage if damage_key(d.segment, d.offset) not in done]
    for damage in fresh:
        lost = (f"events {damage.missing[0]}-{damage.missing[1]} could not be read" if damage.missing
                else "an event may be missing")
        copy = f"; a copy is in {damage.quarantined}" if damage.quarantined else ""
        print(f"armor-rx: warning: the event log is damaged in {damage.segment} at byte {damage.offset} "
              f"({damage.reason}, {damage.length} bytes): skipped, {lost}{copy}", file=sys.stderr)
    if fresh:
        print("armor-rx: once you have looked at it, 'armor-rx damage --acknowledge' stops this warning and exit code 3",
              file=sys.stderr)
    elif log.damage:
        print(f"armor-rx: note: {len(log.damage)} acknowledged damaged stretch(es) skipped ('armor-rx damage' lists them)",
              file=sys.stderr)
    return EXIT_DAMAGED if fresh else 0


def cmd_damage(args: argparse.Namespace) -> int:
    """List the event log's damaged stretches (what readers skip); ``--acknowledge`` marks them seen."""
    from armor_rx.sinks._quarantine import acknowledge, acknowledged, damage_key, damaged_copies
    from armor_rx.sinks.statedir import StateDir

    state = _state_path(args)
    quarantine = StateDir(state).quarantine_dir
    found: dict[str, str] = {}
    log = _read_log(state)
    if log is not None:
        try:
            for _ in log.read():  # readers find damage as they pass it
                pass
            for d in log.damage:
                found[damage_key(d.segment, d.offset)] = f"{d.segment.name} at byte {d.offset}: {d.reason}, {d.length} bytes"
        finally:
            log.stop()
    for copy in damaged_copies(quarantine, include_acknowledged=True):
        found.setdefault(copy.name.removesuffix(".damaged"), f"copy {copy.name}")
    done = acknowledged(quarantine)
    if args.acknowledge and found:
        acknowledge(quarantine, set(found))
        done |= set(found)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps([{"key": k, "what": v, "acknowledged": k in done} for k, v in sorted(found.items())]) + b"\n")
    elif not found:
        print("the event log has no damaged stretches")
    else:
        for key, what in sorted(found.items()):
            print(f"{'acknowledged' if key in done else 'NEW':<13} {what}")
    return 0


def _warn_quarantined(args: argparse.Namespace) -> int:
    """Through the service: the damaged stretches its log skips, as recorded in quarantine."""
    from armor_rx.sinks._quarantine import damaged_copies
    from armor_rx.sinks.statedir import StateDir

    copies = damaged_copies(StateDir(_state_path(args)).quarantine_dir)
    if copies:
        print(f"armor-rx: warning: the event log has {len(copies)} damaged stretch(es) that were skipped, so events "
              f"may be missing ('log.corruption.quarantined' events name them; copies in {copies[0].parent})",
              file=sys.stderr)
    return EXIT_DAMAGED if copies else 0


def _format(event: TaskEvent) -> str:
    payload = orjson.dumps(to_plain(event.payload)).decode()
    if len(payload) > 160:
        payload = payload[:157] + "..."
    task = event.task_id or "-"
    return f"{event.seq:>6}  {task:<24} {event.kind:<26} {payload}"


def _print_event(event: TaskEvent, as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(event.to_json() + b"\n")
        sys.stdout.flush()
    else:
        print(_format(event), flush=True)


def live_service(args: argparse.Namespace) -> Any:
    """A client of the state directory's service if one is running (read-only verbs never start one)."""
    from armor_rx.service.paths import ServicePaths
    from armor_rx.sinks.statedir import StateDir

    paths = ServicePaths.of(StateDir.resolve(args.state_dir, args.repo))
    if not paths.socket.exists():
        return None  # no service: not worth importing its client to ask
    from armor_rx.sinks._log import configure_now

    configure_now()  # the client logs with structlog directly
    from armor_rx.client.autostart import probe
    from armor_rx.client.sync import RemoteArmor

    if probe(paths) is None:
        return None
    try:
        return RemoteArmor(args.repo, state_dir=args.state_dir, autostart=False)
    except ArmorError:
        return None


def _events_from_service(args: argparse.Namespace, remote: Any) -> int:
    with remote:
        if not args.follow:
            for event in remote.history(task_id=args.task, kind=args.kind, start_seq=args.since_seq):
                _print_event(event, args.json)
            return _warn_quarantined(args)
        try:
            for key, value in remote.follow(args.kind or "*", task_id=args.task, from_seq=args.since_seq):
                if key == "lagged":
                    print(f"armor-rx: too slow: skipped {value['count']} events (seq {value['from_seq']}-{value['to_seq']}); "
                          f"'armor-rx events --since-seq {value['from_seq']}' shows them", file=sys.stderr, flush=True)
                else:
                    _print_event(value, args.json)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    if args.task is not None:
        validate_task_id(args.task)
    if args.kind is not None:
        kind_matcher(args.kind)
    _state_path(args)
    remote = live_service(args)
    if remote is not None:
        return _events_from_service(args, remote)
    state = _state_path(args)
    log = _read_log(state)
    if log is None and not args.follow:
        return 0
    if log is None:
        from armor_rx.sinks.eventlog import EventLog

        (state / "events").mkdir(parents=True, exist_ok=True)
        log = EventLog(state / "events", read_only=True).start()
    try:
        if args.follow:
            import threading

            stop = threading.Event()
            try:
                for event in log.follow(args.since_seq, task_id=args.task, kind=args.kind, stop=stop):
                    _print_event(event, args.json)
            except KeyboardInterrupt:
                stop.set()
        else:
            for event in log.read(args.since_seq, task_id=args.task, kind=args.kind):
                _print_event(event, args.json)
    finally:
        log.stop()
    return _warn_damage(log)


def _registry(state: Path) -> tuple[Registry, int]:
    """The registry as the log has it, and the exit code its damage (if any) calls for."""
    from armor_rx.sinks.snapshot import SnapshotStore, recover_registry

    log = _read_log(state)
    if log is None:
        return Registry(), 0
    try:
        # Listing tasks needs no requests in flight: a snapshot from before they were kept does.
        registry, _report = recover_registry(SnapshotStore(state / "snapshot.json"), log, requests=False)
    finally:
        log.stop()
    return registry, _warn_damage(log)


def cmd_tasks(args: argparse.Namespace) -> int:
    _state_path(args)  # an explicit --state-dir that is not there is an error, not "no tasks"
    remote = live_service(args)
    if remote is not None:
        with remote:
            rows = [record.to_dict() for record in remote.tasks()]
        code = _warn_quarantined(args)
    else:
        registry, code = _registry(_state_path(args))
        rows = registry.to_list()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(rows) + b"\n")
    else:
        sys.stdout.write(render_table(rows))
    return code


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from armor_rx.sinks.deadletter import DeadLetterLog

    directory = _state_path(args) / "deadletter"
    if not directory.is_dir():
        letters = []
    else:
        with DeadLetterLog(directory, read_only=True) as dead:
            letters = dead.list(include_redriven=args.all)
    rows = [
        {"id": d.id, "task_id": d.event.task_id, "kind": d.event.kind, "error": d.error, "error_type": d.error_type, "attempts": d.attempts, "redriven_by": d.redriven_by}
        for d in letters
    ]
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(rows) + b"\n")
    elif not rows:
        print("no dead letters")
    else:
        for row in rows:
            print(f"{row['id']}  {row['task_id'] or '-':<24} {row['kind']:<24} after {row['attempts']} attempts: {row['error']}")
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    from armor_rx.client.sync import connect

    with connect(args.repo, state_dir=args.state_dir) as armor:
        outcome = armor.redrive(args.letter)
    print(_format(outcome))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from armor_rx.demo import run_demo

    return run_demo(state_dir=args.state_dir, keep=args.keep)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"events": cmd_events, "tasks": cmd_tasks, "damage": cmd_damage, "dead-letters": cmd_dead_letters, "redrive": cmd_redrive, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is the command of 'run' / 'exec', never options of
    # ours, so options like --repo may come anywhere before it.
    tail: list[str] | None = None
    if "--" in argv:
        cut = argv.index("--")
        argv, tail = argv[:cut], argv[cut + 1:]
    args = _parser(commands=_verb_of(argv) not in _CORE_VERBS).parse_args(argv)
    if tail is not None:
        if not hasattr(args, "command"):
            print(f"armor-rx: error: 'armor-rx {args.verb}' takes no command after '--'", file=sys.stderr)
            return EXIT_USAGE
        args.command = [*args.command, *tail]
    def configure() -> None:
        from armor_rx.logs import configure_logging

        configure_logging(json=args.log_json, level=args.log_level)

    if args.verb in _CORE_VERBS:
        from armor_rx.sinks._log import defer_configuration

        defer_configuration(configure)  # structlog (and asyncio with it) only once something logs
    else:
        configure()
    try:
        return COMMANDS[args.verb](args)
    except ArmorError as exc:
        print(f"armor-rx: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_ERROR
    except KeyboardInterrupt:
        print("armor-rx: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except UnicodeEncodeError as exc:  # a task's reason or an event's text stdout's encoding cannot spell
        print(f"armor-rx: error: the output cannot be written in stdout's encoding ({exc.encoding}); "
              "set PYTHONIOENCODING=utf-8", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # a state directory that is a file, unreadable, on a full disk ...
        where = f" {exc.filename}" if exc.filename else ""
        print(f"armor-rx: error: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
