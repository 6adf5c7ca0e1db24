"""The ``armor-rx`` entry point: the read verbs scripts run often, answered before the package loads.

``armor-rx tasks`` and ``armor-rx events --task X`` are run in loops by
scripts and prompts; the first's answer is usually already written down
(:mod:`armor_rx._taskview`), the second's lines are indexed by task
(:mod:`armor_rx._eventview`), yet the full CLI
would first import argparse, orjson, the model and the event log, several times
Python's own start-up. So the entry point looks at the command line with the
standard library alone: if it is a read verb in a form this module knows and
the cached answer is current, it prints it; in every other case (an option
it does not know, a stale or missing view, help, an error to report) it hands
the unchanged command line to :func:`armor_rx.cli.main`, which is always right.
Nothing is printed on the way to that hand-over.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself is not imported: see armor_rx/__init__.py
if TYPE_CHECKING:
    from collections.abc import Sequence

# The options every verb shares: (takes a value?). The fast path ignores the logging ones (it logs nothing),
# but not their validity: a line the full CLI rejects must be rejected by it (see armor_rx.cli._parser).
_SHARED = {"--state-dir": True, "--repo": True, "--log-level": True, "--log-json": False}
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _options(argv: Sequence[str], verb_flags: dict[str, bool]) -> tuple[str | None, dict[str, str | bool]] | None:
    """``(verb, options)`` if every token is one this module knows, in a place argparse accepts it, else None."""
    verb: str | None = None
    found: dict[str, str | bool] = {}
    tokens = iter(argv)
    for token in tokens:
        if not token.startswith("-"):
            if verb is not None:
                return None
            verb = token
            continue
        known = _SHARED if verb is None else {**_SHARED, **verb_flags}  # a verb's own options only after it
        name, eq, value = token.partition("=")
        if name not in known or name in found:
            return None
        if known[name]:
            if not eq:
                value = next(tokens, "")
                if value.startswith("-"):
                    return None  # argparse takes it for an option, and the option for one missing its value
            if not value or (name == "--log-level" and value not in _LOG_LEVELS):
                return None
            found[name] = value
        elif eq:
            return None
        else:
            found[name] = True
    return verb, found


def _state_dir(options: dict[str, str | bool]) -> str | None:
    """The state directory these options name, if it exists (else the full path explains what is wrong)."""
    explicit, repo = options.get("--state-dir"), options.get("--repo")
    for value in (explicit, repo):
        if isinstance(value, str) and value.startswith("~") and os.path.expanduser(value) == value:
            return None  # a home the full path's pathlib cannot find: it errors, it does not read './~user'
    try:  # os.getcwd(), here or in realpath, fails in a deleted current directory: the full path says so in one line
        if isinstance(explicit, str):
            path = os.path.realpath(os.path.expanduser(explicit))
        else:
            from armor_rx._paths import state_dir_in

            start = os.path.realpath(os.path.expanduser(repo) if isinstance(repo, str) else os.getcwd())
            if not os.path.isdir(start):
                return None
            path = state_dir_in(start)
    except OSError:
        return None
    return path if os.path.isdir(path) else None


def _utf8(stream: object) -> bool:
    import codecs  # loaded at start-up already

    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "").name == "utf-8"
    except LookupError:
        return False


def quick(argv: Sequence[str]) -> int | None:
    """The exit code if the fast path answered ``argv`` (its output written), None to take the full path."""
    parsed = _options(argv, {"--json": False})
    if parsed is None or parsed[0] != "tasks":
        return _events(argv)
    state = _state_dir(parsed[1])
    if state is None:
        return None
    as_json = bool(parsed[1].get("--json"))
    if not as_json and not _utf8(sys.stdout):
        return None  # the view holds UTF-8; the full path writes the table in stdout's own encoding
    from armor_rx import _taskview

    view = _taskview.read(state)
    if view is None:
        return None
    return _write(view[1] if parsed[1].get("--json") else view[0])


def _events(argv: Sequence[str]) -> int | None:
    """``events --task ID [--kind P] [--since-seq N] [--json]`` from the task indexes (see :mod:`armor_rx._eventview`)."""
    parsed = _options(argv, {"--json": False, "--task": True, "--kind": True, "--since-seq": True})
    if parsed is None or parsed[0] != "events":
        return None
    options = parsed[1]
    if options.get("--json") is not True and not _utf8(sys.stdout):
        return None  # text the stream's encoding may not spell: the full path says so in one line
    task, kind, since = options.get("--task"), options.get("--kind"), options.get("--since-seq", "1")
    if not isinstance(task, str) or not isinstance(since, str) or not (since.isascii() and since.isdigit()):
        return None
    from armor_rx import _eventview

    kinds = _eventview.kind_filter(kind) if isinstance(kind, str) else None
    if not _eventview.valid_task_id(task) or (kind is not None and kinds is None) or int(since) < 1:
        return None  # the full path reports what is wrong with them
    state = _state_dir(options)
    if state is None:
        return None
    out = _eventview.read(state, task, kinds, int(since), options.get("--json") is True)
    if out is None:
        return None
    return _write(out)


def _write(out: bytes | str) -> int:
    try:
        if isinstance(out, str):
            sys.stdout.write(out)  # text as print() writes it, in the stream's encoding
            sys.stdout.flush()
        else:
            sys.stdout.buffer.write(out)
            sys.stdout.buffer.flush()
    except BrokenPipeError:
        # Like the full CLI: a reader that stopped early (| head) is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:  # a full disk ...: one line and exit 1, as armor_rx.cli.main says it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is left unwritten goes nowhere at exit
        print(f"armor-rx: error: cannot use: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    """``armor-rx``: the fast path when it can answer, else :func:`armor_rx.cli.main`."""
    code = quick(sys.argv[1:])
    if code is not None:
        return code
    from armor_rx.cli import main as full

    return full()
