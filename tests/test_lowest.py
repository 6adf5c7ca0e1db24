"""scripts/lowest.py: the lowest-bounds CI run pins exactly what pyproject.toml declares."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("armor_lowest", ROOT / "scripts" / "lowest.py")
assert _spec is not None and _spec.loader is not None
lowest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lowest)


def _lowest(*extras: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "lowest.py"), *extras], capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()


def test_every_runtime_and_test_dependency_is_pinned_at_its_lower_bound():
    project = lowest.tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    expected = [re.sub(r"\s*>=\s*", "==", req) for req in declared]
    assert _lowest() == _lowest("test") == expected
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][0-9A-Za-z.]*", pin) for pin in expected), expected


def test_extras_that_name_the_project_are_followed():
    pins = _lowest("dev")
    assert any(pin.startswith("ruff==") for pin in pins) and any(pin.startswith("pytest==") for pin in pins)


def test_a_dependency_without_a_lower_bound_is_an_error():
    assert lowest.pin("aiohttp>=3.9") == "aiohttp==3.9"
    assert lowest.pin('tomli>=2.0; python_version < "3.11"') == 'tomli==2.0 ; python_version < "3.11"'
    for bad in ("docker", "docker<8", "docker>=7,>=7.1"):
        try:
            lowest.pin(bad)
        except SystemExit as exc:
            assert "lower bound" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was pinned")
