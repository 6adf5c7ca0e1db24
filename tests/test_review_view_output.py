"""Review of the fast path's output: a failed write ends the way the full CLI's does (one line, exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from armor_rx import Armor, _taskview

_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
_FULL = "import sys; from armor_rx.cli import main; sys.exit(main())"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("rows", [1, 2000])  # within one buffer, and far past it
def test_a_full_disk_on_stdout_is_one_error_line_as_on_the_full_path(tmp_path, rows):
    state = tmp_path / "state"
    with Armor(state_dir=state, docker=False) as armor:
        for i in range(rows):
            armor.create_task(f"task-{i}")
    assert _taskview.read(str(state)) is not None
    results = []
    for command in ([sys.executable, "-m", "armor_rx"], [sys.executable, "-c", _FULL]):
        with open("/dev/full", "wb") as full:
            proc = subprocess.run([*command, "tasks", "--state-dir", str(state)], stdout=full, stderr=subprocess.PIPE,
                                  env=_ENV, check=False, timeout=120)
        results.append((proc.returncode, proc.stderr.decode()))
    (fast_code, fast_err), (full_code, full_err) = results
    assert full_code == 1 and full_err.startswith("armor-rx: error: ") and "Traceback" not in full_err
    assert (fast_code, fast_err) == (full_code, full_err)


def test_a_reader_that_stops_early_is_not_an_error(tmp_path):
    state = tmp_path / "state"
    with Armor(state_dir=state, docker=False) as armor:
        for i in range(2000):
            armor.create_task(f"task-{i}")
    for extra in ([], ["--json"]):
        proc = subprocess.run(f"{sys.executable} -m armor_rx tasks {' '.join(extra)} --state-dir {state} | head -c 10; "
                              "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True, env=_ENV,
                              check=False, timeout=120)
        assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
        assert len(proc.stdout) == 10


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8"])
def test_the_table_is_written_in_stdouts_encoding_as_on_the_full_path(tmp_path, encoding):
    """The view holds the table as UTF-8; a stdout set to another encoding (PYTHONIOENCODING, a locale) gets its own."""
    state = tmp_path / "state"
    with Armor(state_dir=state, docker=False) as armor:
        armor.create_task("alpha")
        armor.start("alpha")
        armor.fail("alpha", "café au lait")
    assert _taskview.read(str(state)) is not None
    env = {**_ENV, "PYTHONIOENCODING": encoding}
    outputs = []
    for command in ([sys.executable, "-m", "armor_rx"], [sys.executable, "-c", _FULL]):
        proc = subprocess.run([*command, "tasks", "--state-dir", str(state)], capture_output=True, env=env, check=False,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert "café".encode(encoding) in outputs[1]
    assert outputs[0] == outputs[1]


def test_a_deleted_current_directory_is_the_full_paths_one_line_error(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    results = []
    for options in ("", "--state-dir rel/.armor", "--repo rel"):
        for command in (f"{sys.executable} -m armor_rx", f"{sys.executable} -c '{_FULL}'"):
            proc = subprocess.run(f"cd {gone} && rmdir {gone} && exec {command} tasks {options}", shell=True,
                                  executable="/bin/bash", capture_output=True, env=_ENV, check=False, timeout=120)
            results.append((proc.returncode, proc.stderr.decode()))
            gone.mkdir()
        assert results[-1][0] == 1 and results[-1][1].startswith("armor-rx: error: "), results[-1]
        assert results[-2] == results[-1]
