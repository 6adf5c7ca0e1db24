#!/usr/bin/env python3
"""Print pip constraints pinning every dependency to the lower bound pyproject.toml declares.

    python3 scripts/lowest.py [EXTRA...] > lowest.txt    # default extras: test
    pip install -e '.[test]' -c lowest.txt

Reads ``[project] dependencies`` and the named ``[project.optional-dependencies]``
(following ``armor-rx[extra]`` self-references) and turns each ``NAME>=X`` into
``NAME==X``, so the lowest-bounds CI run can never drift from pyproject.toml.
A requirement without a ``>=`` lower bound is an error: every dependency must
declare the oldest release it is tested with.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's own copy of tomli (every venv has pip)
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(project: dict, extras: list[str]) -> list[str]:
    own = _normalize(project["name"])
    optional = project.get("optional-dependencies", {})
    out: list[str] = []
    seen_extras: set[str] = set()

    def add(reqs: list[str]) -> None:
        for req in reqs:
            m = REQ.match(req)
            if not m:
                raise SystemExit(f"lowest.py: cannot parse requirement {req!r}")
            name, bracket, spec, _marker = m.groups()
            if _normalize(name) == own:
                for extra in (bracket or "[]")[1:-1].split(","):
                    if extra.strip():
                        add_extra(extra.strip())
                continue
            out.append(req)

    def add_extra(extra: str) -> None:
        if extra in seen_extras:
            return
        if extra not in optional:
            raise SystemExit(f"lowest.py: no optional-dependencies group {extra!r} in pyproject.toml")
        seen_extras.add(extra)
        add(optional[extra])

    add(project.get("dependencies", []))
    for extra in extras:
        add_extra(extra)
    return out


def pin(req: str) -> str:
    m = REQ.match(req)
    assert m is not None
    name, _bracket, spec, marker = m.groups()
    lows = [c.strip()[2:].strip() for c in spec.split(",") if c.strip().startswith(">=")]
    if len(lows) != 1:
        raise SystemExit(f"lowest.py: {req!r} needs exactly one '>=' lower bound")
    return f"{name}=={lows[0]}" + (f" {marker}" if marker else "")


def main(argv: list[str]) -> int:
    extras = argv or ["test"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in requirements(project, extras):
        print(pin(req))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
