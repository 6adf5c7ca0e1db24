"""The examples in examples/ run and say what they promise."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_hooks_as_operators_example():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "hooks_as_operators.py")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "vetoed: no tasks against prod" in proc.stdout
    assert "outputs: ['fixed 3 typos']" in proc.stdout
    assert "completed: docs-typo" in proc.stdout
    assert "prod-migration task.failed" in proc.stdout
