"""How risky is the next step? A pure scorer for exec requests.

The adaptive checkpoint policy (:func:`armor_rx.operators.checkpoint_policy`)
takes a checkpoint *before* a command that could destroy work, so the score
must come from the request alone, before anything runs: the command line
(parsed with :mod:`shlex`, through ``sh -c "..."`` and ``&&``/``||``/``;``/``|``
chains) and what is known of the previous step (how long it ran, how many
files it touched). Every point of the score has a reason a person can read,
because the reasons are logged with the decision (``checkpoint.risk.scored``).

The rules are a table (:data:`RULES`'s weights), not a model: a reviewer can
see why ``git reset --hard`` scores what it does and change it.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Points per finding; a score is their sum, capped at 100.
RULES: Mapping[str, int] = {
    "destructive": 60,        # rm -rf, git reset --hard, git clean -f, dd, mkfs, shred, find -delete
    "recursive_permissions": 35,  # chmod -R, chown -R, chgrp -R
    "truncate": 35,
    "remove": 15,             # rm of single files
    "overwrite": 20,          # `> file` (not >>, not /dev/null)
    "package_install": 30,    # apt, pip, npm, yarn, pnpm, cargo, gem, go install
    "migration": 40,          # alembic, rails db:migrate, manage.py migrate, prisma, flyway ...
    "long_previous_step": 20,  # the step before ran long: much work since the last checkpoint
    "many_files_touched": 25,  # the step before touched many files
}
MAX_SCORE = 100
# The previous step's facts that count as "long" and "many" unless the policy says otherwise.
LONG_STEP_SECONDS = 300.0
MANY_FILES = 50

_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ash", "ksh"})
# Words that run the command after them (their own options skipped).
_WRAPPERS = frozenset({"sudo", "env", "nice", "nohup", "time", "command", "exec", "doas", "xargs", "stdbuf", "ionice"})
# Options of wrappers that take a value (sudo -u USER): the value is not the program.
_OPTION_VALUES: Mapping[str, frozenset[str]] = {
    "sudo": frozenset({"-u", "-g", "-C", "-U", "-p", "-h", "-r", "-t", "-D"}),
    "doas": frozenset({"-u", "-C"}),
    "env": frozenset({"-u", "-C", "-S"}),
    "nice": frozenset({"-n"}),
    "ionice": frozenset({"-c", "-n", "-p"}),
    "xargs": frozenset({"-n", "-I", "-P", "-L", "-s", "-d", "-a", "-E"}),
}
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", ";;", "(", ")", "\n"})
_PACKAGE_MANAGERS: Mapping[str, frozenset[str]] = {
    "apt": frozenset({"install", "remove", "purge", "upgrade", "dist-upgrade", "full-upgrade", "autoremove"}),
    "apt-get": frozenset({"install", "remove", "purge", "upgrade", "dist-upgrade", "autoremove"}),
    "dnf": frozenset({"install", "remove", "upgrade", "erase"}),
    "yum": frozenset({"install", "remove", "upgrade", "erase"}),
    "apk": frozenset({"add", "del", "upgrade"}),
    "pip": frozenset({"install", "uninstall"}),
    "pip3": frozenset({"install", "uninstall"}),
    "uv": frozenset({"add", "remove", "sync"}),
    "poetry": frozenset({"add", "remove", "install", "update"}),
    "npm": frozenset({"install", "i", "ci", "uninstall", "add", "update", "remove"}),
    "yarn": frozenset({"add", "install", "remove", "upgrade"}),
    "pnpm": frozenset({"add", "install", "i", "remove", "update"}),
    "cargo": frozenset({"install", "add", "remove", "update"}),
    "gem": frozenset({"install", "uninstall", "update"}),
    "go": frozenset({"install", "get"}),
    "brew": frozenset({"install", "uninstall", "upgrade"}),
    "conda": frozenset({"install", "remove", "update"}),
}


# Programs a rule looks at (for lines shlex cannot split).
_KNOWN = frozenset({"rm", "git", "chmod", "chown", "chgrp", "dd", "shred", "wipefs", "truncate", "find", "mv",
                    "unlink", "rmdir", "python", "python3", "alembic", "rails", "rake", "manage.py", "prisma",
                    "flyway", "liquibase", "npx", *_SHELLS, *_WRAPPERS, *_PACKAGE_MANAGERS})


@dataclass(frozen=True)
class RiskReason:
    """One finding: which rule (``rule``), what in the command made it (``detail``), and its points."""

    rule: str
    detail: str
    points: int

    def to_payload(self) -> dict[str, Any]:
        return {"rule": self.rule, "detail": self.detail, "points": self.points}


@dataclass(frozen=True)
class RiskScore:
    """A score from 0 (nothing found) to 100, and the reasons that add up to it."""

    score: int
    reasons: tuple[RiskReason, ...] = field(default=())

    def to_payload(self) -> dict[str, Any]:
        return {"score": self.score, "reasons": [r.to_payload() for r in self.reasons]}


@dataclass(frozen=True)
class PreviousStep:
    """What is known of the step before: its run time (seconds) and files it touched (None: unknown)."""

    duration: float | None = None
    files_touched: int | None = None


def score_command(
    command: str | Sequence[str],
    previous: PreviousStep | None = None,
    *,
    long_step: float = LONG_STEP_SECONDS,
    many_files: int = MANY_FILES,
    weights: Mapping[str, int] = RULES,
) -> RiskScore:
    """Score ``command`` (an argv list, or one shell line) and the step before it.

    >>> score_command(["sh", "-c", "make && rm -rf build"]).score
    60
    >>> [r.rule for r in score_command("pip install requests; alembic upgrade head").reasons]
    ['migration', 'package_install']
    >>> score_command(["ls", "-l"]).score
    0

    A line shlex cannot split (an unclosed quote) is split on blanks and
    scored from every word that names a program the rules know, so a broken
    quote cannot hide ``rm -rf``. Each rule counts once per command (the
    strongest detail is kept); reasons come strongest first.
    """
    found: dict[str, RiskReason] = {}

    def add(rule: str, detail: str) -> None:
        points = int(weights.get(rule, 0))
        if points and (rule not in found or found[rule].points < points):
            found[rule] = RiskReason(rule, detail, points)

    for words, redirects in _simple_commands(command):
        for target in redirects:
            add("overwrite", f"> {target}")
        if words:
            _score_words(words, add)
    if previous is not None:
        if previous.duration is not None and previous.duration >= long_step:
            add("long_previous_step", f"the previous step ran {previous.duration:.0f}s (>= {long_step:g}s)")
        if previous.files_touched is not None and previous.files_touched >= many_files:
            add("many_files_touched", f"the previous step touched {previous.files_touched} files (>= {many_files})")
    reasons = tuple(sorted(found.values(), key=lambda r: -r.points))
    return RiskScore(min(MAX_SCORE, sum(r.points for r in reasons)), reasons)


def _split(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unclosed quote: do not let it hide what follows
        words = line.replace('"', " ").replace("'", " ").split()
        # Each known program starts a command of its own: where the quote ended is unknowable.
        out: list[str] = []
        for word in words:
            if _program(word) in _KNOWN and out:
                out.append(";")
            out.append(word)
        return out


def _simple_commands(command: str | Sequence[str], depth: int = 0) -> Iterator[tuple[list[str], list[str]]]:
    """Each simple command of ``command`` as (words, overwrite targets), shells' ``-c`` scripts opened."""
    tokens = _split(command) if isinstance(command, str) else [str(w) for w in command]
    words: list[str] = []
    redirects: list[str] = []
    i = 0
    while i <= len(tokens):
        token = tokens[i] if i < len(tokens) else None
        if token is None or token in _SEPARATORS:
            if words or redirects:
                script = _shell_script(words)
                if script is not None and depth < 4:
                    yield from _simple_commands(script, depth + 1)
                    # whatever the shell's own redirections overwrite still counts
                    if redirects:
                        yield [], redirects
                else:
                    yield words, redirects
            words, redirects = [], []
        elif token in (">", ">|") and i + 1 < len(tokens):
            target = tokens[i + 1]
            if target != "&" and not target.startswith("/dev/"):
                redirects.append(target)
            i += 1
        elif token in (">>", "<", "<<", "<<<", ">&", "<&") and i + 1 < len(tokens):
            i += 1  # appending or reading: nothing is lost
        elif token.isdigit() and i + 1 < len(tokens) and tokens[i + 1] in (">", ">>", "<"):
            pass  # a file descriptor number before a redirection (2>err.log)
        else:
            words.append(token)
        i += 1


def _shell_script(words: list[str]) -> str | None:
    """The script of ``sh -c SCRIPT`` (any shell, ``-lc`` and friends), else None."""
    words = _strip_wrappers(words)
    if not words or _program(words[0]) not in _SHELLS:
        return None
    for j, word in enumerate(words[1:], start=1):
        if word.startswith("-") and not word.startswith("--") and "c" in word[1:]:
            return words[j + 1] if j + 1 < len(words) else None
    return None


def _program(word: str) -> str:
    return word.rsplit("/", 1)[-1]


def _strip_wrappers(words: list[str]) -> list[str]:
    """``words`` without leading ``VAR=value`` assignments and wrappers such as ``sudo -u x`` or ``timeout 10``."""
    i = 0
    while i < len(words):
        word = words[i]
        name = _program(word)
        if "=" in word and not word.startswith("-") and word.split("=", 1)[0].isidentifier():
            i += 1
        elif name in _WRAPPERS:
            i += 1
            while i < len(words) and words[i].startswith("-"):
                # sudo -u USER, env -u NAME ...: the option's value is not the program
                takes_value = _OPTION_VALUES.get(name, frozenset())
                i += 2 if words[i] in takes_value else 1
        elif name == "timeout":
            i += 1
            while i < len(words) and (words[i].startswith("-") or words[i][:1].isdigit()):
                i += 1
        else:
            break
    return words[i:]


def _flags(args: list[str]) -> tuple[set[str], set[str]]:
    """Short flag letters and long options among ``args``."""
    short: set[str] = set()
    long: set[str] = set()
    for arg in args:
        if arg.startswith("--"):
            long.add(arg.split("=", 1)[0])
        elif arg.startswith("-") and len(arg) > 1:
            short.update(arg[1:])
    return short, long


def _score_words(raw: list[str], add: Any) -> None:
    words = _strip_wrappers(raw)
    if not words:
        return
    name, args = _program(words[0]), words[1:]
    short, long = _flags(args)
    line = " ".join(words)
    if name == "rm":
        if {"r", "R"} & short or "--recursive" in long:
            add("destructive", line)
        else:
            add("remove", line)
    elif name == "git" and args:
        sub = next((a for a in args if not a.startswith("-")), "")
        rest = args[args.index(sub) + 1:] if sub in args else []
        if sub == "reset" and "--hard" in rest:
            add("destructive", line)
        elif sub == "clean" and ({"f"} & _flags(rest)[0] or "--force" in _flags(rest)[1]):
            add("destructive", line)
        elif sub in ("checkout", "restore") and ("." in rest or "--" in rest):
            add("overwrite", line)
        elif sub == "push" and ({"f"} & _flags(rest)[0] or "--force" in _flags(rest)[1]):
            add("destructive", line)
    elif name in ("chmod", "chown", "chgrp") and ("R" in short or "--recursive" in long):
        add("recursive_permissions", line)
    elif name == "dd" and any(a.startswith("of=") for a in args):
        add("destructive", line)
    elif name.startswith("mkfs") or name in ("shred", "wipefs"):
        add("destructive", line)
    elif name == "truncate":
        add("truncate", line)
    elif name == "find" and ("-delete" in args or any(a in ("rm", "/bin/rm") for a in args)):
        add("destructive", line)
    elif name in ("mv", "unlink", "rmdir") and args:
        add("remove", line)
    elif name in _PACKAGE_MANAGERS and any(a in _PACKAGE_MANAGERS[name] for a in args if not a.startswith("-")):
        add("package_install", line)
    elif name in ("python", "python3") and args[:2] in (["-m", "pip"], ["-m", "pip3"]) and \
            any(a in ("install", "uninstall") for a in args[2:]):
        add("package_install", line)
    else:
        _score_migration(name, args, line, add)


def _score_migration(name: str, args: list[str], line: str, add: Any) -> None:
    tasks = [a for a in args if not a.startswith("-")]
    if name == "alembic" and any(t in ("upgrade", "downgrade", "stamp") for t in tasks):
        add("migration", line)
    elif name in ("rails", "rake", "bin/rails") and any(t.startswith("db:") and t != "db:version" for t in tasks):
        add("migration", line)
    elif (name in ("manage.py", "django-admin") or (name in ("python", "python3") and tasks[:1] == ["manage.py"])) \
            and "migrate" in tasks:
        add("migration", line)
    elif name == "prisma" or (name in ("npx", "pnpx", "bunx") and tasks[:1] == ["prisma"]):
        if "migrate" in tasks or "db" in tasks:
            add("migration", line)
    elif name in ("flyway", "liquibase") and any(t in ("migrate", "update", "clean", "repair", "undo") for t in tasks):
        add("migration", line)
    elif name in ("knex", "sequelize", "typeorm", "diesel", "sqlx", "goose", "migrate", "dbmate") and \
            any("migrat" in t or t in ("up", "down", "run", "db:migrate") for t in tasks):
        add("migration", line)
    elif name in ("npx", "pnpx", "bunx") and tasks[:1] and tasks[0] in ("knex", "sequelize", "typeorm") and \
            any("migrat" in t for t in tasks[1:]):
        add("migration", line)


def score_request(payload: Mapping[str, Any], previous: PreviousStep | None = None, **options: Any) -> RiskScore:
    """The score of an ``exec.requested`` payload (its ``command``, argv or string)."""
    command = payload.get("command") or ()
    if isinstance(command, (list, tuple)):
        return score_command([str(w) for w in command], previous, **options)
    return score_command(str(command), previous, **options)
