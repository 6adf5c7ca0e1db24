"""``--secret NAME=env://VAR`` (or ``file://PATH``), shared by the verbs that give a task secrets.

Only references are accepted on a command line: a value there would be seen
by other users (``ps``) and kept in the shell's history.
"""

from __future__ import annotations

import argparse

from armor_rx.errors import ConfigError
from armor_rx.model.secrets import parse_secret_option


def _option(text: str) -> tuple[str, str]:
    try:
        return parse_secret_option(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_secret_option(parser: argparse.ArgumentParser, scope: str) -> None:
    parser.add_argument("--secret", dest="secrets", action="append", type=_option, default=[], metavar="NAME=env://VAR",
                        help=f"give {scope} a secret in the environment variable NAME, read from this shell's "
                             "environment (env://VAR) or a file (file://PATH); never logged, masked in output (repeatable)")


def secrets_of(args: argparse.Namespace) -> dict[str, str] | None:
    return dict(args.secrets) or None
