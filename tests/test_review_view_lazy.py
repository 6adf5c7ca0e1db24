"""Review of the lazy 'import armor_rx': what worked with the eager package still works, typos are still caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import armor_rx

ROOT = Path(__file__).resolve().parents[1]


def test_the_submodules_import_armor_rx_used_to_bring_are_still_attributes():
    """'except armor_rx.errors.ArmorError' (docs/mcp.md) worked after a bare 'import armor_rx'."""
    probe = ("import armor_rx\n"
             "assert armor_rx.errors.ArmorError is armor_rx.ArmorError\n"
             "assert armor_rx.model.State is armor_rx.State\n"
             "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_dir_lists_every_public_name_before_it_is_used():
    probe = "import armor_rx; missing = set(armor_rx.__all__) - set(dir(armor_rx)); print(sorted(missing))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert proc.stdout.strip() == "[]"
    assert "errors" in dir(armor_rx)


def test_import_armor_rx_still_loads_nothing_else():
    probe = "import sys, armor_rx; dir(armor_rx); print(sorted(m for m in sys.modules if m.startswith('armor_rx')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "['armor_rx']"


@pytest.mark.slow
def test_mypy_still_reports_a_misspelt_public_name(tmp_path):
    """The module's __getattr__ must be invisible to type checkers, or every misspelt name is an 'object'."""
    user = tmp_path / "user.py"
    user.write_text("import armor_rx\nfrom armor_rx import Armr\nfrom armor_rx import Armor, TaskNotFound\n"
                    "x = armor_rx.Sesion\ny: type[Exception] = armor_rx.errors.ArmorError\n")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental", str(user)],
                          cwd=tmp_path, env={"MYPYPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=600, check=False)
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert any("user.py:2:" in line and "Armr" in line for line in errors), proc.stdout
    assert any("user.py:4:" in line and "Sesion" in line for line in errors), proc.stdout
    assert not any("user.py:3:" in line or "user.py:5:" in line for line in errors), proc.stdout
