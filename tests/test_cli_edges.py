"""Command lines and terminals the review found giving tracebacks: each is now one line and an exit code."""

from __future__ import annotations

import os
import subprocess
import sys

from armor_rx import Armor


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "armor_rx", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_a_home_that_cannot_be_found_is_one_line(tmp_path):
    for option in ("--state-dir", "--repo"):
        proc = _run("tasks", option, "~no-such-user-armor/x")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "cannot find that home directory" in proc.stderr and "Traceback" not in proc.stderr


def test_output_stdout_cannot_encode_is_one_line_not_a_traceback(tmp_path):
    state = tmp_path / "state"
    with Armor(state_dir=state, docker=False) as armor:
        armor.create_task("t")
        armor.start("t")
        armor.fail("t", "café crème did not build")
    for verb in (["tasks"], ["events", "--kind", "task.failed"], ["events", "--task", "t"]):
        proc = _run(*verb, "--state-dir", str(state), env={"PYTHONIOENCODING": "ascii"})
        assert proc.returncode == 1, (verb, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and "PYTHONIOENCODING=utf-8" in proc.stderr
        fixed = _run(*verb, "--state-dir", str(state), env={"PYTHONIOENCODING": "utf-8"})
        assert fixed.returncode == 0 and "café crème" in fixed.stdout
