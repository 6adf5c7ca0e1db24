"""Review of the tasks view's key: whatever a full read would warn about must also make the view stale."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from armor_rx import Armor, _taskview
from armor_rx._quick import quick
from armor_rx.sinks._logfile import unexpected_files

_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _session(state: Path, segment_bytes: int = 64 * 1024 * 1024) -> None:
    with Armor(state_dir=state, docker=False, segment_bytes=segment_bytes) as armor:
        for name in ("alpha", "beta", "gamma"):
            armor.create_task(name)
        armor.start("beta")
        armor.fail("beta", "boom")
    if segment_bytes < 1024:
        # A segment sealed in the clock tick of the view can only be vouched for by a CRC the owner
        # no longer holds, so no view is written then: let the older segments age, then end on the last one.
        time.sleep(0.05)
        with Armor(state_dir=state, docker=False) as armor:
            armor.create_task("delta")


def _full(state: Path) -> subprocess.CompletedProcess[bytes]:
    """The full path, whatever the entry point would do."""
    code = "import sys; from armor_rx.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, "tasks", "--state-dir", str(state)], capture_output=True, check=False,
                          env=_ENV, timeout=120)


def _flip(path: Path, needle: bytes, *, keep_mtime: bool = False) -> None:
    """Change one byte of ``path`` in place (same size, same inode), optionally putting its mtime back as it was."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    at = data.index(needle) + 1
    data[at] ^= 0x20
    with open(path, "r+b") as f:
        f.write(data)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _assert_full_warns_and_fast_declines(state: Path) -> None:
    proc = _full(state)
    assert proc.returncode == 3 or b"warning" in proc.stderr, proc.stderr  # the full path has something to say ...
    assert _taskview.read(str(state)) is None  # ... so the view must not answer in its place
    assert quick(["tasks", "--state-dir", str(state)]) is None


def test_damage_in_an_older_segment_makes_the_view_stale(tmp_path):
    state = tmp_path / "state"
    _session(state, segment_bytes=300)  # several segments; the view names the last
    segments = sorted((state / "events").glob("events-*.jsonl"))
    assert len(segments) > 2 and _taskview.read(str(state)) is not None
    _flip(segments[0], b'"alpha"')
    _assert_full_warns_and_fast_declines(state)


def test_a_missing_older_segment_makes_the_view_stale(tmp_path):
    state = tmp_path / "state"
    _session(state, segment_bytes=300)
    segments = sorted((state / "events").glob("events-*.jsonl"))
    assert len(segments) > 2 and _taskview.read(str(state)) is not None
    os.rename(segments[1], tmp_path / segments[1].name)
    assert _taskview.read(str(state)) is None


def test_a_rewrite_that_puts_the_mtime_back_makes_the_view_stale(tmp_path):
    """touch -r, cp -p over the file, rsync -t: the mtime is restored, the ctime cannot be."""
    state = tmp_path / "state"
    _session(state)
    assert _taskview.read(str(state)) is not None
    _flip(next((state / "events").glob("events-*.jsonl")), b'"boom"', keep_mtime=True)
    _assert_full_warns_and_fast_declines(state)


@pytest.mark.parametrize("name", [".verified.json.evil.tmp", ".verified.json..tmp", ".verified.json.0123456789ABCDEF0123456789abcdef.tmp"])
def test_a_file_the_event_log_calls_foreign_makes_the_view_stale(tmp_path, name):
    state = tmp_path / "state"
    _session(state)
    (state / "events" / name).write_bytes(b"x")
    assert unexpected_files(state / "events")  # the full path warns about it ...
    _assert_full_warns_and_fast_declines(state)


def test_the_index_temporary_file_the_log_writes_is_not_foreign(tmp_path):
    state = tmp_path / "state"
    _session(state)
    name = ".verified.json.0123456789abcdef0123456789abcdef.tmp"
    (state / "events" / name).write_bytes(b"x")
    assert not unexpected_files(state / "events")
    assert _taskview.read(str(state)) is not None  # ... and what it does not warn about leaves the view standing


def test_the_view_and_the_log_agree_on_which_names_are_the_logs_own():
    """_taskview keeps its own copy (standard library only); this fails when the log's list changes without it."""
    import uuid

    from armor_rx.sinks import _logfile

    assert _taskview._LOG_FILES == _logfile._OURS
    names = [f".verified.json.{uuid.uuid4().hex}.tmp", ".verified.json.x.tmp", "verified.json.tmp", "events-1.jsonl",
             "events-000000000001.jsonl", "events-0000000000001.jsonl", "events-00000000000١.jsonl", "quarantine",
             "events-000000000001.idx", f".events-000000000001.idx.{uuid.uuid4().hex}.tmp", "events-1.idx", "x.idx"]
    for name in names:
        ours_to_log = (bool(_logfile._SEGMENT.fullmatch(name)) or name in _logfile._OURS or bool(_logfile._OURS_TMP.fullmatch(name))
                       or _logfile.is_index(name))
        ours_to_view = (_taskview._is_segment(name) or name in _taskview._LOG_FILES or _taskview._is_verified_tmp(name)
                        or _taskview._is_index(name))
        assert ours_to_view <= ours_to_log, name  # never more lenient than the log; stricter only costs speed
