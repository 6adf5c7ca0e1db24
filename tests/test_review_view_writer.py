"""Review of the tasks view's writer: crashes mid-write and concurrent writers in one owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import structlog

from armor_rx import Armor, _taskview

_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

_KILLED_MID_WRITE = """
import os, signal, sys
from armor_rx import _taskview
os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # die after the temporary file is written
_taskview.write(sys.argv[1], b"partial")
"""


def test_owners_killed_while_writing_the_view_leave_at_most_one_temporary_file(tmp_path):
    state = tmp_path / "state"
    with Armor(state_dir=state, docker=False) as armor:
        armor.create_task("alpha")
    for _ in range(3):  # three owners, three pids, each killed -9 between writing and renaming
        proc = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(state)], env=_ENV, check=False, timeout=60)
        assert proc.returncode == -signal.SIGKILL
    leftovers = [p.name for p in state.iterdir() if p.name.startswith(_taskview.NAME) and p.name != _taskview.NAME]
    assert len(leftovers) <= 1, leftovers
    assert _taskview.read(str(state)) is not None  # the view itself was never touched
    with Armor(state_dir=state, docker=False) as armor:  # the next owner writes over the leftover
        armor.create_task("beta")
    assert [p.name for p in state.iterdir() if p.name.startswith(_taskview.NAME)] == [_taskview.NAME]


def test_threads_of_one_owner_writing_the_view_at_once_never_fail_or_regress(tmp_path):
    """snapshot() from the caller's thread and the row-change refresh from the bus's thread write the same file."""
    state = tmp_path / "state"
    with Armor(state_dir=state, docker=False) as armor:
        armor.create_task("alpha")
        armor.wait_idle()
        with armor.pipeline._registry_lock:
            old = armor.pipeline.registry.copy()
        armor.create_task("beta")
        armor.wait_idle()
        with armor.pipeline._registry_lock:
            new = armor.pipeline.registry.copy()
        armor.snapshot()
        start = threading.Barrier(4)

        def writer(registry: object) -> None:
            start.wait()
            for _ in range(200):
                armor.assembly.save_view(registry)  # type: ignore[arg-type]

        with structlog.testing.capture_logs() as logs:
            threads = [threading.Thread(target=writer, args=(r,)) for r in (new, new, old, new)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert [e for e in logs if e["log_level"] == "warning"] == []
        view = _taskview.read(str(state))
        assert view is not None and b"beta" in view[0]  # a view for an older seq never replaces the current one
