"""write_atomic: a file replaced whole, or not at all, with nothing left behind."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from armor_rx.sinks import _atomic
from armor_rx.sinks._atomic import write_atomic, write_atomic_in


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _failing_os(monkeypatch: pytest.MonkeyPatch, name: str, after: int = 0) -> list[str]:
    """Make ``_atomic``'s ``os.<name>`` raise EIO (after ``after`` good calls); returns the calls seen."""
    calls: list[str] = []
    real = getattr(os, name)

    def broken(*args: object, **kwargs: object) -> object:
        calls.append(name)
        if len(calls) > after:
            raise OSError(5, f"injected {name} failure")
        return real(*args, **kwargs)

    fake = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    setattr(fake, name, broken)
    monkeypatch.setattr(_atomic, "os", fake)
    return calls


def _partial_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first write lands 10 bytes, the next fails: a file torn half way, as a full disk leaves it."""
    state = {"calls": 0}

    def write(fd: int, data: object) -> int:
        state["calls"] += 1
        if state["calls"] > 1:
            raise OSError(28, "No space left on device")
        return os.write(fd, bytes(data)[:10])  # type: ignore[call-overload]

    fake = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    fake.write = write
    monkeypatch.setattr(_atomic, "os", fake)


def test_writes_the_bytes_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "state.json"
    write_atomic(target, b'{"a": 1}')
    write_atomic(target, b'{"a": 2}')
    assert target.read_bytes() == b'{"a": 2}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.mark.parametrize("failure", ["write", "fsync", "replace", "partial"])
def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary_file(tmp_path, monkeypatch, failure):
    target = tmp_path / "snapshot.json"
    target.write_bytes(b"old contents, whole")
    if failure == "partial":
        _partial_write(monkeypatch)
    else:
        _failing_os(monkeypatch, failure)
    with pytest.raises(OSError):
        write_atomic(target, b"new contents " * 1000)
    assert target.read_bytes() == b"old contents, whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.json"]


def test_a_failed_first_write_leaves_no_file_at_all(tmp_path, monkeypatch):
    _failing_os(monkeypatch, "fsync")
    with pytest.raises(OSError, match="injected fsync"):
        write_atomic(tmp_path / "new.json", b"x")
    assert list(tmp_path.iterdir()) == []


def test_only_a_failed_directory_fsync_leaves_the_new_file_in_place(tmp_path, monkeypatch):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    calls = _failing_os(monkeypatch, "fsync", after=1)  # the file's fsync passes, the directory's fails
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert calls == ["fsync", "fsync"]
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_durable_fsyncs_the_file_and_the_directory_and_not_durable_neither(tmp_path, monkeypatch):
    calls = _failing_os(monkeypatch, "fsync", after=100)
    write_atomic(tmp_path / "a", b"1")
    assert calls == ["fsync", "fsync"]
    calls.clear()
    write_atomic(tmp_path / "b", b"2", durable=False)
    assert calls == [] and (tmp_path / "b").read_bytes() == b"2"


def test_the_mode_given_is_the_new_files_mode_whatever_the_old_one_had(tmp_path, umask_022):
    target = tmp_path / "copy.damaged"
    target.write_bytes(b"old")
    target.chmod(0o666)
    write_atomic(target, b"new", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    write_atomic(target, b"newer")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # the default, less the umask


def test_the_umask_still_applies(tmp_path):
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "private", b"x", mode=0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600


def test_a_symlink_at_the_name_is_replaced_not_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / "plan.md").symlink_to(outside)
    fd = os.open(worktree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_atomic_in(fd, "plan.md", b"# plan", temp_prefix=".armor-tmp-")
    finally:
        os.close(fd)
    assert outside.read_bytes() == b"not yours"
    assert not (worktree / "plan.md").is_symlink() and (worktree / "plan.md").read_bytes() == b"# plan"


def test_a_directory_at_the_name_raises_and_leaves_nothing(tmp_path):
    (tmp_path / "plan.md").mkdir()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(IsADirectoryError):
            write_atomic_in(fd, "plan.md", b"x")
    finally:
        os.close(fd)
    assert [p.name for p in tmp_path.iterdir()] == ["plan.md"]


_WRITER = """
import hashlib, sys
from armor_rx.sinks._atomic import write_atomic
target = sys.argv[1]
i = 0
print("ready", flush=True)
while True:
    i += 1
    body = (b"%08d" % i) * 100_000  # 800 kB, so a kill often lands mid-write
    write_atomic(target, body + hashlib.sha256(body).hexdigest().encode())
"""


def _whole(raw: bytes) -> bool:
    body, digest = raw[:-64], raw[-64:]
    return len(body) == 800_000 and hashlib.sha256(body).hexdigest().encode() == digest


def test_a_killed_writer_leaves_a_whole_file(tmp_path):
    target = tmp_path / "state.json"
    body = b"00000000" * 100_000
    target.write_bytes(body + hashlib.sha256(body).hexdigest().encode())
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        assert _whole(target.read_bytes())
        # A kill mid-write may leave its temporary file; it never stands at the target's name.
        leftovers = [p.name for p in tmp_path.iterdir() if p != target]
        assert all(name.startswith(".state.json.") and name.endswith(".tmp") for name in leftovers)


def test_the_path_may_be_a_string(tmp_path):
    write_atomic(str(tmp_path / "s"), b"ok")
    assert Path(tmp_path / "s").read_bytes() == b"ok"
