"""Values that must never be written to a log or the event log.

Secrets reach a task by reference (``env://VAR``, ``file://PATH``): the
reference may be recorded, the value is read by the process that makes the
request and lives only in memory until the command that needs it runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Union

from armor_rx.errors import ConfigError

REDACTED = "[redacted]"


class Secret:
    """Wraps a sensitive value so logs and events show ``[redacted]`` instead.

    >>> token = Secret("hunter2")
    >>> str(token), token.reveal()
    ('[redacted]', 'hunter2')
    """

    __slots__ = ("_value", "reference")

    def __init__(self, value: str, *, reference: str | None = None) -> None:
        self._value = value
        # Where the value was read from (``env://VAR``), when it was given by reference: that may be recorded.
        self.reference = reference

    def reveal(self) -> str:
        """The wrapped value; call it only where the value is really used."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('[redacted]')"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


# Keys whose values are redacted even when the caller forgot to wrap them. A key
# is split into words (``DB_PASS`` -> db, pass; ``apiKey`` -> api, key) so that
# ``pass`` and ``pwd`` count without catching ``bypass`` or ``compass``.
_SENSITIVE_WORDS = frozenset({"password", "passwd", "pass", "pwd", "passphrase", "secret", "token", "apikey",
                              "credential", "credentials", "privatekey", "auth", "authorization", "cookie"})
_SENSITIVE_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"),
                              ("session", "key"), ("signing", "key"), ("client", "secret")})
# Keys ending like this hold references to secrets (``secret_refs``), never values.
_REFERENCE_SUFFIXES = ("_ref", "_refs")
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def is_reference_key(key: str) -> bool:
    """Does ``key`` hold references to secrets (``secret_refs``: name -> ``env://VAR``), which may be recorded?"""
    return key.lower().endswith(_REFERENCE_SUFFIXES)


def is_sensitive_key(key: str) -> bool:
    """Does a value under ``key`` look like a secret?

    >>> [is_sensitive_key(k) for k in ("DB_PASS", "apiKey", "GITHUB_TOKEN", "bypass", "secret_refs", "path")]
    [True, True, True, False, False, False]
    """
    if is_reference_key(key):
        return False
    words = [w.lower() for w in _WORD.findall(key)]
    if any(w in _SENSITIVE_WORDS for w in words):
        return True
    if any(pair in _SENSITIVE_PAIRS for pair in zip(words, words[1:])):
        return True
    joined = "".join(words)
    return any(part in joined for part in ("password", "passwd", "apikey", "privatekey", "secretkey", "accesstoken"))


# Free text that carries a credential: a password in a URL, a bearer token, an
# Authorization header. Each pattern keeps the part that says what it was.
# Each pattern comes with a hint that any match must contain. Output is text at megabytes
# a second, and the patterns' word-boundary starts are tried at every word (and Python's
# case-insensitive search is slow even for a literal), so for ASCII text the hints are
# plain substring tests on one lower-cased copy (so is other text, unless it holds one of the
# few characters a case-insensitive pattern takes for an ASCII letter: then the patterns run).
_ASCII_FOLDING = "\u0130\u0131\u017f\u212a"  # İ ı ſ K (Kelvin): i, i, s, k to re.IGNORECASE
_TEXT_PATTERNS = (
    (("://", "@"), re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)([^\s/@]+)(@)"), r"\1" + REDACTED + r"\3"),
    (("bearer",), re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{8,})"), r"\1" + REDACTED),
    (("authorization",), re.compile(r"(?i)\b(authorization\s*[:=]\s*)(?!bearer\b)([^\s,;]+)"), r"\1" + REDACTED),
)


def redact_text(text: str) -> str:
    """``text`` with credentials written into it blanked out.

    >>> redact_text("clone https://bob:hunter2@example.com/r.git with Bearer abcdef123456")
    'clone https://bob:[redacted]@example.com/r.git with Bearer [redacted]'
    """
    lowered = text.lower() if text.isascii() or not any(c in text for c in _ASCII_FOLDING) else None
    for hints, pattern, replacement in _TEXT_PATTERNS:
        if lowered is None or all(hint in lowered for hint in hints):
            text = pattern.sub(replacement, text)
    return text


# -- secrets by reference ------------------------------------------------------
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Variables a secret must not silently replace: what finds and runs programs, and what armor sets
# for git inside the container (GIT_CONFIG_*, GIT_OPTIONAL_LOCKS).
_RESERVED_NAMES = frozenset({"PATH", "HOME", "USER", "SHELL", "PWD", "HOSTNAME", "TERM", "IFS", "ENV", "BASH_ENV"})
_RESERVED_PREFIXES = ("LD_", "GIT_CONFIG", "GIT_OPTIONAL_LOCKS", "GIT_DIR", "GIT_WORK_TREE")
SecretSource = Union[str, Secret]


def parse_secret_option(text: str) -> tuple[str, str]:
    """``"NAME=env://VAR"`` or ``"NAME=file://PATH"`` (a command-line ``--secret``) -> (name, reference).

    >>> parse_secret_option("API_TOKEN=env://GITHUB_TOKEN")
    ('API_TOKEN', 'env://GITHUB_TOKEN')
    """
    name, sep, reference = text.partition("=")
    if not sep:
        raise ConfigError(f"--secret {text!r:.60}: write NAME=env://VARIABLE or NAME=file://PATH")
    check_reference(name, reference)
    return name, reference


def check_reference(name: str, reference: SecretSource) -> None:
    """Raise ConfigError unless ``name`` can be an environment variable and ``reference`` is a known kind."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigError(f"secret name {name!r:.60} must be an environment variable name (letters, digits, _; not first a digit)")
    if name.upper() in _RESERVED_NAMES or name.upper().startswith(_RESERVED_PREFIXES):
        raise ConfigError(f"secret name {name!r} would replace a variable the command or armor relies on "
                          f"({name}); choose another name, e.g. MY_{name}")
    if isinstance(reference, Secret):
        return
    scheme, sep, rest = reference.partition("://") if isinstance(reference, str) else ("", "", "")
    if scheme not in ("env", "file") or not sep or not rest:
        raise ConfigError(f"secret {name}: {str(reference)[:60]!r} is not a reference; use env://VARIABLE or file://PATH "
                          "(values are never given on the command line, where other users and the shell history see them)")


def describe(reference: SecretSource) -> str:
    """What may be recorded about a secret: its reference, or ``value`` for one given directly."""
    if isinstance(reference, Secret):
        return reference.reference or "value"
    return reference


def resolve(name: str, reference: SecretSource, environ: Mapping[str, str] | None = None) -> Secret:
    """The secret's value, read now: from this process's environment, a file, or a :class:`Secret` given directly.

    Raises ConfigError naming the reference when it cannot be read.
    """
    check_reference(name, reference)
    if isinstance(reference, Secret):
        return reference
    if reference.startswith("env://"):
        variable = reference[len("env://"):]
        value = (os.environ if environ is None else environ).get(variable)
        if value is None:
            raise ConfigError(f"secret {name}: environment variable {variable!r} is not set in this process")
        return Secret(value, reference=reference)
    path = reference[len("file://"):]
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            value = handle.read(1024 * 1024 + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"secret {name}: cannot read {path!r}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(value) > 1024 * 1024:
        raise ConfigError(f"secret {name}: {path!r} is over 1 MiB; a secret is a token or key, not a file to copy")
    return Secret(value.rstrip("\n"), reference=reference)


def resolve_all(secrets: Mapping[str, SecretSource] | None, environ: Mapping[str, str] | None = None) -> dict[str, Secret]:
    """Every secret of ``secrets`` resolved (an empty dict for None)."""
    return {name: resolve(name, reference, environ) for name, reference in (secrets or {}).items()}


class Masker:
    """Replaces secret values in a stream of text with ``[secret:NAME]``.

    A value split across two chunks is still caught: the end of a chunk that
    could be the start of a secret is held back until the next chunk (or
    :meth:`flush`) shows whether it is one.

    >>> m = Masker({"TOKEN": Secret("hunter2")})
    >>> m.feed("pass=hun") + m.feed("ter2 ok") + m.flush()
    'pass=[secret:TOKEN] ok'
    """

    def __init__(self, secrets: Mapping[str, Secret]) -> None:
        # Longest first, so a secret that contains another is replaced whole. Very
        # short values (one or two characters) would mask ordinary text everywhere.
        self._values = sorted(((s.reveal(), name) for name, s in secrets.items() if len(s.reveal()) >= 3),
                              key=lambda item: -len(item[0]))
        self._pattern = re.compile("|".join(re.escape(v) for v, _ in self._values)) if self._values else None
        self._names = dict(self._values)
        self._held = ""

    def __bool__(self) -> bool:
        return self._pattern is not None

    def feed(self, text: str) -> str:
        if self._pattern is None:
            return text
        text = self._held + text
        # Hold back from the first place whose rest could still grow into a secret, but never
        # split a whole match that starts before it: a value whose start recurs at its end
        # ("hunter2h") would otherwise be cut there, and neither piece matches.
        hold = len(text) - self._partial_tail(text)
        out: list[str] = []
        pos = 0
        for match in self._pattern.finditer(text):
            if match.start() >= hold:
                break
            out.append(text[pos:match.start()])
            out.append(f"[secret:{self._names[match.group(0)]}]")
            pos = match.end()
        end = max(pos, hold)
        out.append(text[pos:end])
        self._held = text[end:]
        return "".join(out)

    def flush(self) -> str:
        rest, self._held = self._held, ""
        return self._pattern.sub(lambda m: f"[secret:{self._names[m.group(0)]}]", rest) if self._pattern and rest else rest

    def _partial_tail(self, text: str) -> int:
        """How many characters at the end of ``text`` could begin a secret (0: none)."""
        best = 0
        for value, _ in self._values:
            for size in range(min(len(value) - 1, len(text)), best, -1):
                if text.endswith(value[:size]):
                    best = size
                    break
        return best
