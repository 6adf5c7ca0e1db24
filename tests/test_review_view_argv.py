"""Review of the fast path: a command line the full CLI rejects must never be answered from the view."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from armor_rx import Armor, _taskview
from armor_rx._quick import quick

_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _session(state: Path) -> None:
    with Armor(state_dir=state, docker=False) as armor:
        armor.create_task("alpha")


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "armor_rx", *args], cwd=cwd, capture_output=True, check=False, env=_ENV,
                          timeout=120)


@pytest.mark.parametrize("argv", [
    ["--json", "tasks"],  # --json belongs to the verb: argparse rejects it before the verb
    ["tasks", "--log-level", "bogus"],  # not one of the levels
    ["tasks", "--log-level=loud"],
    ["--log-level", "verbose", "tasks"],
    ["tasks", "--repo", "-x"],  # a separate value that looks like an option is not a value to argparse
    ["tasks", "--state-dir", "-x/.armor"],
])
def test_a_command_line_the_full_cli_rejects_is_rejected_the_same_way(tmp_path, argv):
    # The state directory is where each line points (some through a directory named '-x'), and its view is current.
    _session(tmp_path / ".armor")
    (tmp_path / "-x").mkdir()
    _session(tmp_path / "-x" / ".armor")
    assert _taskview.read(str(tmp_path / ".armor")) is not None
    assert _taskview.read(str(tmp_path / "-x" / ".armor")) is not None
    proc = _run(tmp_path, *argv)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == b"" and b"error" in proc.stderr
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert quick(argv) is None
    finally:
        os.chdir(cwd)


def test_the_forms_argparse_accepts_are_still_answered_fast(tmp_path, monkeypatch, capsysbinary):
    _session(tmp_path / ".armor")
    monkeypatch.chdir(tmp_path)
    for argv in (["tasks", "--log-level", "error"], ["--log-level=info", "tasks", "--json"], ["tasks", "--state-dir=.armor"]):
        assert quick(argv) == 0, argv
        assert b"alpha" in capsysbinary.readouterr().out


@pytest.mark.parametrize("option", ["--state-dir", "--repo"])
def test_a_tilde_path_pathlib_cannot_expand_is_not_read_as_a_relative_directory(tmp_path, monkeypatch, option):
    """'~nosuchuser/x': os.path.expanduser leaves it as it is, the full path's pathlib refuses it; a directory
    that happens to be named '~nosuchuser' must not answer in its place."""
    user = "~armor-rx-no-such-user"
    _session(tmp_path / user / ".armor")
    monkeypatch.chdir(tmp_path)
    value = f"{user}/.armor" if option == "--state-dir" else user
    assert _taskview.read(str(tmp_path / user / ".armor")) is not None
    assert quick(["tasks", option, value]) is None
