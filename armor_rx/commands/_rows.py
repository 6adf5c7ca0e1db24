"""How the listing verbs print: one JSON document with ``--json``, else a line per row.

Every listing verb offers ``--json`` (one document on stdout, for scripts and
``jq``) and otherwise prints a line a row, or one line saying there is
nothing, so that an empty listing is never mistaken for a hung command.
Kept here once so the verbs cannot drift in how they do it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import orjson

_R = TypeVar("_R")

JSON_ARRAY = "one JSON array"


def add_json_option(parser: argparse.ArgumentParser, help: str = JSON_ARRAY) -> None:
    """Give ``parser`` the ``--json`` switch (``args.json``)."""
    parser.add_argument("--json", action="store_true", help=help)


def print_json(value: object) -> None:
    """``value`` as one line of JSON on stdout."""
    sys.stdout.buffer.write(orjson.dumps(value) + b"\n")


def print_rows(rows: Sequence[_R], *, as_json: bool, line: Callable[[_R], str], empty: str,
               json_rows: Sequence[object] | None = None) -> int:
    """Print ``rows``: as one JSON array when ``as_json``, else ``line(row)`` for each, or ``empty`` when none.

    ``json_rows`` is what the array holds when it is not ``rows`` themselves
    (rows that are objects, printed from their payloads). Returns 0, the
    verb's exit code.
    """
    if as_json:
        print_json(list(rows if json_rows is None else json_rows))
    elif not rows:
        print(empty)
    else:
        for row in rows:
            print(line(row))
    return 0
