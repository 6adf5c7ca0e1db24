"""The state directory: layout, git-ignoring itself, one holder at a time, where it is."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from armor_rx.errors import ConfigError, StateDirLocked
from armor_rx.sinks import StateDir


def test_acquire_creates_the_layout_and_ignores_itself(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "repo" / ".armor")
    assert not state.path.exists()
    with state as held:
        assert held is state and state.locked
        assert (state.path / ".gitignore").read_text() == "*\n"
        assert (state.path / "lock").exists()
        assert state.events_dir == state.path / "events"
        assert state.deadletter_dir == state.path / "deadletter"
        assert state.snapshot_path == state.path / "snapshot.json"
    assert not state.locked
    state.release()  # idempotent


def test_git_really_ignores_the_state_dir(tmp_path: Path) -> None:
    git = subprocess.run(["git", "--version"], capture_output=True, check=False)
    if git.returncode != 0:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with StateDir(tmp_path / ".armor"):
        (tmp_path / ".armor" / "snapshot.json").write_text("{}")
        status = subprocess.run(
            ["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True,
            text=True,
            check=True,
        )
    assert ".armor" not in status.stdout


def test_a_second_holder_in_this_process_is_refused(tmp_path: Path) -> None:
    first = StateDir(tmp_path / ".armor").acquire()
    second = StateDir(tmp_path / ".armor")
    with pytest.raises(StateDirLocked, match="in use by another armor_rx process") as caught:
        second.acquire()
    assert str(tmp_path / ".armor") in str(caught.value)
    with pytest.raises(StateDirLocked):
        StateDir(tmp_path / ".armor", lock_timeout=0.05).acquire()  # waits a little, then gives up
    first.release()
    with second:
        assert second.locked


def test_a_holder_in_another_process_is_refused(tmp_path: Path) -> None:
    holder = textwrap.dedent(
        f"""
        import sys, filelock
        lock = filelock.FileLock({str(tmp_path / ".armor" / "lock")!r})
        lock.acquire()
        print("held", flush=True)
        sys.stdin.readline()
        """
    )
    (tmp_path / ".armor").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(StateDirLocked):
            StateDir(tmp_path / ".armor").acquire()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    with StateDir(tmp_path / ".armor") as state:
        assert state.locked


def test_a_file_in_the_way_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    with pytest.raises(ConfigError, match="blocker"):
        StateDir(tmp_path / "blocker" / ".armor").acquire()


def test_resolve_explicit_state_dir_wins(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    assert StateDir.resolve(state_dir="elsewhere", repo=tmp_path, cwd=tmp_path) == (tmp_path / "elsewhere").resolve()
    assert StateDir.resolve(state_dir=tmp_path / "abs", cwd="/") == (tmp_path / "abs").resolve()


def test_resolve_walks_up_to_the_checkout_root(tmp_path: Path) -> None:
    root = tmp_path / "project"
    nested = root / "src" / "pkg"
    nested.mkdir(parents=True)
    (root / ".git").mkdir()
    (nested / "mod.py").write_text("")
    expected = root.resolve() / ".armor"
    assert StateDir.resolve(repo=nested) == expected
    assert StateDir.resolve(repo=nested / "mod.py") == expected
    assert StateDir.resolve(cwd=nested) == expected
    assert StateDir.resolve(repo="src", cwd=root) == expected


def test_resolve_accepts_a_git_file_for_linked_worktrees(tmp_path: Path) -> None:
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt" / ".git").write_text("gitdir: /somewhere/.git/worktrees/wt\n")
    assert StateDir.resolve(repo=tmp_path / "wt") == (tmp_path / "wt").resolve() / ".armor"


def test_resolve_outside_any_checkout(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    if any((p / ".git").exists() for p in (plain.resolve(), *plain.resolve().parents)):
        pytest.skip("the temporary directory sits inside a git checkout")
    assert StateDir.resolve(repo=plain) == plain.resolve() / ".armor"
    assert StateDir.resolve(cwd=plain) == plain.resolve() / ".armor"


def test_resolve_rejects_a_missing_repo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does-not-exist.*does not exist"):
        StateDir.resolve(repo=tmp_path / "does-not-exist")
