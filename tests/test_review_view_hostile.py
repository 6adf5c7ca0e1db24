"""Review of the tasks view's reader: a view file that is huge, endless or not a file costs nothing."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from armor_rx import Armor, _taskview

_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _session(state: Path) -> None:
    with Armor(state_dir=state, docker=False) as armor:
        armor.create_task("alpha")


def _tasks(state: Path, *, memory: int | None = None) -> subprocess.CompletedProcess[bytes]:
    def limit() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([sys.executable, "-m", "armor_rx", "tasks", "--state-dir", str(state)], capture_output=True,
                          env=_ENV, check=False, timeout=60, preexec_fn=limit)


@pytest.mark.parametrize("header", [b"", b"armor-rx tasks view 2 "])
def test_a_huge_view_is_not_read_into_memory(tmp_path, header):
    """A damaged view (here 3 GiB, sparse) is declined from its header, not loaded: it once took seconds and gigabytes."""
    state = tmp_path / "state"
    _session(state)
    view = state / _taskview.NAME
    good = view.read_bytes()
    with open(view, "r+b") as f:
        f.write(header or good)  # a valid header, or the whole valid view, followed by gigabytes of zeros
        f.truncate(3 << 30)
    proc = _tasks(state, memory=1 << 30)  # a full read of the view would not fit
    assert proc.returncode == 0 and b"alpha" in proc.stdout, proc.stderr[-500:]


@pytest.mark.parametrize("kind", ["fifo", "endless"])
def test_a_view_that_is_not_a_regular_file_is_declined(tmp_path, kind):
    state = tmp_path / "state"
    _session(state)
    view = state / _taskview.NAME
    view.unlink()
    if kind == "fifo":
        os.mkfifo(view)  # opening it to read would wait for a writer forever
    else:
        view.symlink_to("/dev/zero")
    proc = _tasks(state, memory=1 << 30)  # first in a child: a reader that waits must not hang the suite
    assert proc.returncode == 0 and b"alpha" in proc.stdout, proc.stderr[-500:]
    assert _taskview.read(str(state)) is None


_OWNER = """
import sys
from armor_rx import Armor
with Armor(state_dir=sys.argv[1], docker=False) as armor:
    armor.create_task("beta")
"""


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_leftover_temporary_file_that_is_not_a_file_neither_blocks_nor_redirects_the_writer(tmp_path, kind):
    state = tmp_path / "state"
    _session(state)
    tmp = state / f"{_taskview.NAME}.tmp"
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("keep me\n")
    if kind == "symlink":
        tmp.symlink_to(elsewhere)
    else:
        os.mkfifo(tmp)
    proc = subprocess.run([sys.executable, "-c", _OWNER, str(state)], capture_output=True, env=_ENV, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert elsewhere.read_text() == "keep me\n"
    view = _taskview.read(str(state))
    assert view is not None and b"beta" in view[0]


@pytest.mark.parametrize("check", [b"events-000000000001.jsonl:zz", b"events-000000000001.jsonl", b"x:1", b":"])
def test_a_damaged_check_field_is_declined_not_raised(tmp_path, check):
    state = tmp_path / "state"
    _session(state)
    view = state / _taskview.NAME
    header, _, body = view.read_bytes().partition(b"\n")
    fields = header.split(b" ")
    fields[-2] = check
    view.write_bytes(b" ".join(fields) + b"\n" + body)
    assert _taskview.read(str(state)) is None
