"""The package ships py.typed, so it must pass mypy --strict (configured in setup.cfg)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_package_is_mypy_strict_clean():
    if shutil.which("mypy") is None and subprocess.run([sys.executable, "-m", "mypy", "--version"], capture_output=True).returncode != 0:
        pytest.fail("mypy is a test dependency (pip install -e '.[test]')")
    proc = subprocess.run([sys.executable, "-m", "mypy", "armor_rx"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_py_typed_is_shipped():
    assert (ROOT / "armor_rx" / "py.typed").exists()


def test_docs_diagram_is_drawn_from_the_table():
    from armor_rx.model.lifecycle import mermaid

    doc = (ROOT / "docs" / "architecture.md").read_text()
    block = doc.split("```mermaid\n", 1)[1].split("```", 1)[0].strip()
    assert block == mermaid().strip()
