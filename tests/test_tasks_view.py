"""The tasks view: 'armor-rx tasks' answered from a file while the log has not moved, and only then."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

import armor_rx
from armor_rx import Armor, _taskview
from armor_rx._quick import quick
from armor_rx.cli import main as full_main
from armor_rx.sinks.eventlog import EventLog

_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "armor_rx", *args], capture_output=True, check=False, env=_ENV, timeout=120)


def _session(state: Path) -> None:
    """Tasks in several states, among them one with a reason; the session's close writes the view."""
    with Armor(state_dir=state, docker=False) as armor:
        for name in ("alpha", "beta", "gamma"):
            armor.create_task(name)
        armor.start("beta")
        armor.start("gamma")
        armor.fail("gamma", "the tests did not pass")


def _full(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = full_main(list(args))
    return code, capsys.readouterr().out


def test_the_view_answers_exactly_what_the_full_path_prints(tmp_path, capsys):
    state = tmp_path / "state"
    _session(state)
    assert (state / _taskview.NAME).is_file()
    for extra in ([], ["--json"]):
        fast = _cli("tasks", *extra, "--state-dir", str(state))
        code, slow = _full(capsys, "tasks", *extra, "--state-dir", str(state))  # cli.main always folds the log
        assert fast.returncode == code == 0, fast.stderr
        assert fast.stdout.decode() == slow
    rows = orjson.loads(_cli("tasks", "--json", "--state-dir", str(state)).stdout)
    assert {r["task_id"]: r["state"] for r in rows} == {"alpha": "pending", "beta": "running", "gamma": "failed"}
    assert quick(["tasks", "--state-dir", str(state)]) == 0  # it was the view that answered


def test_the_fast_path_loads_none_of_the_package_floors(tmp_path):
    state = tmp_path / "state"
    _session(state)
    probe = (
        "import sys, io\n"
        "sys.stdout = io.TextIOWrapper(io.BytesIO())\n"
        "from armor_rx._quick import quick\n"
        f"code = quick(['tasks', '--state-dir', {str(state)!r}])\n"
        "sys.stdout = sys.__stdout__\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('armor_rx')), 'typing' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=_ENV).stdout.split(" ", 1)
    assert out[0] == "0"
    assert out[1].strip() == "['armor_rx', 'armor_rx._quick', 'armor_rx._taskview'] False"


def test_a_moved_log_sends_tasks_down_the_full_path(tmp_path, capsys):
    state = tmp_path / "state"
    _session(state)
    # Another writer appends (a session that dies before it could refresh the view).
    with EventLog(state / "events") as log:
        from armor_rx.model import TaskEvent

        log.append(TaskEvent.new("task.start.requested", "alpha"))
        log.append(TaskEvent.new("task.started", "alpha"))
    assert quick(["tasks", "--state-dir", str(state)]) is None
    assert capsys.readouterr().out == ""  # nothing printed on the way to the hand-over
    rows = orjson.loads(_cli("tasks", "--json", "--state-dir", str(state)).stdout)
    assert {r["task_id"]: r["state"] for r in rows}["alpha"] == "running"


@pytest.mark.parametrize("harm", ["flip", "truncate", "foreign", "quarantine", "no-events"])
def test_a_damaged_view_or_a_log_a_read_must_warn_about_is_never_trusted(tmp_path, harm):
    state = tmp_path / "state"
    _session(state)
    view = state / _taskview.NAME
    if harm == "flip":
        data = bytearray(view.read_bytes())
        data[-20] ^= 0x01
        view.write_bytes(bytes(data))
    elif harm == "truncate":
        view.write_bytes(view.read_bytes()[:-10])
    elif harm == "foreign":
        (state / "events" / "events-000000000099.jsonl.bak").write_bytes(b"x")
    elif harm == "quarantine":
        (state / "events" / "quarantine").mkdir()
    else:
        os.rename(state / "events", state / "events-moved")
    assert _taskview.read(str(state)) is None
    assert quick(["tasks", "--state-dir", str(state)]) is None
    if harm == "foreign":  # the full path reads, and warns about what it did not read
        proc = _cli("tasks", "--state-dir", str(state))
        assert b"gamma" in proc.stdout and b"events-000000000099.jsonl.bak" in proc.stderr


@pytest.mark.parametrize("argv", [
    ["tasks", "--verbose"], ["tasks", "--json=1"], ["tasks", "--state-dir"], ["tasks", "--state-dir="],
    ["tasks", "extra"], ["events"], ["tasks", "--help"], ["--version"], ["tasks", "--", "x"], [],
])
def test_anything_the_fast_path_does_not_know_goes_to_the_full_cli(tmp_path, argv):
    state = tmp_path / "state"
    _session(state)
    assert quick([*argv, "--state-dir", str(state)] if "--state-dir" not in argv else argv) is None


def test_the_shared_options_are_understood_in_every_place(tmp_path, monkeypatch, capsysbinary):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "sub").mkdir()
    _session(repo / ".armor")
    expected = (repo / ".armor" / _taskview.NAME).read_bytes()
    monkeypatch.chdir(repo / "sub")
    for argv in (["tasks"], ["--repo", str(repo), "tasks"], [f"--state-dir={repo / '.armor'}", "tasks", "--log-level", "debug"],
                 ["tasks", "--json", "--log-json"]):
        assert quick(argv) == 0, argv
        assert capsysbinary.readouterr().out in expected
    assert quick(["tasks", "--state-dir", str(tmp_path / "missing")]) is None  # the full path says what is wrong


def test_no_view_while_the_log_is_not_at_the_registrys_seq(tmp_path):
    with EventLog(tmp_path / "events") as log:
        from armor_rx.model import TaskEvent

        log.append(TaskEvent.new("task.created", "a"))
        assert log.end_position(1) is not None
        assert log.end_position(0) is None and log.end_position(2) is None
    reader = EventLog(tmp_path / "events", read_only=True).start()
    try:
        assert reader.end_position(1) is None  # only the writer knows nothing is in flight
    finally:
        reader.stop()


def test_import_armor_rx_is_free_and_every_public_name_resolves():
    probe = "import sys, armor_rx; print(sorted(m for m in sys.modules if m.startswith('armor_rx')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "['armor_rx']"
    for name in armor_rx.__all__:
        assert getattr(armor_rx, name) is not None, name
    with pytest.raises(AttributeError):
        armor_rx.NoSuchThing  # noqa: B018


def _view_rows(state: Path, timeout: float = 30.0) -> list[dict]:
    """The view's rows once it is current (the session refreshes it from its event bus, just after the call returns)."""
    deadline = time.monotonic() + timeout
    while (view := _taskview.read(str(state))) is None:
        assert time.monotonic() < deadline, "the tasks view did not become current"
        time.sleep(0.01)
    return orjson.loads(view[1])


def test_an_open_session_keeps_the_view_current_as_rows_change(tmp_path, capsysbinary):
    """While an owner runs (the service), each row change refreshes the view; other events make it stale, never wrong."""
    state = tmp_path / "state"
    with Armor(state_dir=state, docker=False) as armor:
        armor.create_task("one")
        wait_for = time.monotonic() + 30
        while [r["task_id"] for r in _view_rows(state)] != ["one"]:
            assert time.monotonic() < wait_for
            time.sleep(0.01)
        armor.start("one")
        while _view_rows(state)[0]["state"] != "running":
            assert time.monotonic() < wait_for
            time.sleep(0.01)
        assert quick(["tasks", "--json", "--state-dir", str(state)]) == 0
        assert orjson.loads(capsysbinary.readouterr().out)[0]["state"] == "running"
        armor.emit("one", "exec.output", {"line": "hello"})  # not a row change: the log moved past the view
        assert quick(["tasks", "--state-dir", str(state)]) is None
        assert capsysbinary.readouterr().out == b""


def test_the_installed_command_takes_the_same_paths(tmp_path):
    """The console script (what users run) is the fast entry point, and it still reaches every other verb."""
    script = Path(sys.executable).parent / "armor-rx"
    assert script.is_file(), "armor-rx is installed next to the interpreter running the tests"
    state = tmp_path / "state"
    _session(state)
    fast = subprocess.run([str(script), "tasks", "--state-dir", str(state)], capture_output=True, env=_ENV, timeout=120)
    slow = _cli("tasks", "--state-dir", str(state))
    assert fast.returncode == 0 and fast.stdout == slow.stdout and b"gamma" in fast.stdout
    events = subprocess.run([str(script), "events", "--state-dir", str(state), "--kind", "task.failed"], capture_output=True,
                            env=_ENV, timeout=120)
    assert events.returncode == 0 and b"the tests did not pass" in events.stdout
    bad = subprocess.run([str(script), "tasks", "--state-dir", str(tmp_path / "nowhere")], capture_output=True, env=_ENV, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count(b"\n") == 1 and b"does not exist" in bad.stderr
