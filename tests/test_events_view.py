"""'armor-rx events --task' answered from the sealed segments' task indexes, byte for byte as the full path, and only then."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from armor_rx import _eventview, _taskview
from armor_rx._quick import quick
from armor_rx.cli import main as full_main
from armor_rx.model import TaskEvent
from armor_rx.model.events import SCHEMA_VERSION
from armor_rx.sinks import _taskindex, _verified
from armor_rx.sinks import eventlog as eventlog_module
from armor_rx.sinks._logfile import SUFFIX_LEN, list_segments, unexpected_files
from armor_rx.sinks.eventlog import EventLog

_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
TASKS = ("alpha", "beta", "gam-ma")
QUERIES = (
    ["--task", "alpha"],
    ["--task", "alpha", "--json"],
    ["--task", "beta", "--kind", "exec.*"],
    ["--task", "gam-ma", "--since-seq", "100", "--json"],
    ["--task", "gam-ma", "--kind", " task.* ,*.output", "--since-seq=57"],
    ["--task", "alpha", "--kind", "t?sk.n*e", "--json"],
    ["--task", "nobody"],
)


def _write(events: Path, count: int = 200, first: int = 0, segment_bytes: int = 4000) -> None:
    """Events of three tasks (and one of none) over many small segments; payloads that mention other tasks."""
    with EventLog(events, segment_bytes=segment_bytes) as log:
        for i in range(first, first + count):
            task = TASKS[i % 3]
            payload = {"i": i, "f": i / 7, "u": "é\u2603\n\x01\"\\", "ref": {"task_id": "alpha"}, "long": "x" * (i % 5 * 50),
                       "l": [1, [2.5, None], True, 1e-7, -0.0, 2**62, {"k": []}]}
            log.append(TaskEvent.new("exec.output" if i % 2 else "task.note", task, payload,
                                     causation_id=None if i % 4 else "01ABC"))
        log.append(TaskEvent.new("task.created", None, {"task_id": "alpha"}))


@pytest.fixture()
def state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    _write(state / "events")
    segments = list_segments(state / "events")
    assert len(segments) > 5
    # The writer indexed every segment it sealed before it stopped.
    for _, path in segments[:-1]:
        assert _taskindex.path_of(path).is_file()
    return state


def _full(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    code = full_main(args)
    return code, capsys.readouterr().out


def _fast(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int | None, str]:
    code = quick(args)
    return code, capsys.readouterr().out


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "armor_rx", *args], capture_output=True, check=False, env=_ENV, timeout=120)


def test_the_fast_path_prints_exactly_what_the_full_path_prints(state, capsys):
    for query in QUERIES:
        args = ["events", *query, "--state-dir", str(state)]
        fast_code, fast = _fast(capsys, args)
        code, slow = _full(capsys, args)
        assert fast_code == code == 0, query
        assert fast == slow, query
        if query[1] != "nobody":
            assert slow, query
        # And through the installed entry point, as a script runs it (bytes, not text).
        assert _cli(*args[0:1], *args[1:]).stdout == slow.encode()
    lines = _fast(capsys, ["events", "--task", "alpha", "--json", "--state-dir", str(state)])[1].splitlines()
    assert len(lines) == 67  # every event of the task, and none that only mentions it


def test_options_it_does_not_handle_go_the_full_path(state, capsys):
    for query in (["--task", "alpha", "--follow"], ["--task", "alpha", "-f"], ["--kind", "task.*"], ["--task", "Alpha"],
                  ["--task", "alpha", "--kind", "Task.*"], ["--task", "alpha", "--since-seq", "0"],
                  ["--task", "alpha", "--since-seq", "-3"], ["--task", "alpha", "--js"], ["--task"]):
        assert _fast(capsys, ["events", *query, "--state-dir", str(state)]) == (None, ""), query


def test_a_running_service_or_anything_extra_in_the_log_directory_goes_the_full_path(state, capsys):
    args = ["events", "--task", "alpha", "--state-dir", str(state)]
    (state / "run").mkdir()
    (state / "run" / "armor.sock").touch()
    assert _fast(capsys, args) == (None, "")
    (state / "run" / "armor.sock").unlink()
    (state / "events" / "notes.txt").write_text("mine\n")
    assert _fast(capsys, args) == (None, "")
    (state / "events" / "notes.txt").unlink()
    (state / "events" / "quarantine").mkdir()
    assert _fast(capsys, args) == (None, "")


def _line_of(path: Path, task: str) -> int:
    data = path.read_bytes()
    return data.index(b',"task_id":"%s","ts":' % task.encode())  # the task's own line, not one whose payload names it


def test_a_byte_flipped_in_a_sealed_segment_is_never_printed(state, capsys):
    args = ["events", "--task", "alpha", "--state-dir", str(state)]
    _, before = _full(capsys, args)
    path = list_segments(state / "events")[2][1]
    data = bytearray(path.read_bytes())
    at = _line_of(path, "alpha") + 40  # inside the task's own line
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    assert _fast(capsys, args) == (None, "")
    code, after = _full(capsys, args)
    assert code == 3  # the full path reads it, warns and exits 3
    assert len(after.splitlines()) == len(before.splitlines()) - 1


def test_a_line_appended_by_hand_to_a_sealed_segment_goes_the_full_path(state, capsys):
    args = ["events", "--task", "alpha", "--json", "--state-dir", str(state)]
    path = list_segments(state / "events")[1][1]
    with open(path, "ab") as f:
        f.write(path.read_bytes().splitlines(keepends=True)[0])
    assert _fast(capsys, args) == (None, "")
    assert _full(capsys, args)[0] != 0


def test_the_open_segment_is_checked_line_by_line_past_its_verified_bytes(state, capsys):
    args = ["events", "--task", "beta", "--state-dir", str(state)]
    last = list_segments(state / "events")[-1][1]
    # Another writer appended after the index of verified bytes was written (and died before recording it).
    entries = _verified.load(state / "events")
    _write(state / "events", count=3, first=1000, segment_bytes=1 << 30)
    _verified.save(state / "events", entries.values())
    assert last.stat().st_size > entries[last.name].size and list_segments(state / "events")[-1][1] == last
    fast_code, fast = _fast(capsys, args)
    code, slow = _full(capsys, args)
    assert fast_code == code == 0 and fast == slow
    assert '{"i":1000,' in fast
    # A damaged line in that unverified stretch: the fast path cannot be sure, the full path warns.
    last = list_segments(state / "events")[-1][1]
    data = bytearray(last.read_bytes())
    data[-30] ^= 0x01
    last.write_bytes(bytes(data))
    assert _fast(capsys, args) == (None, "")
    assert _full(capsys, args)[0] == 3


@pytest.mark.parametrize("damage", ["flipped", "directory", "truncated", "foreign", "empty", "header"])
def test_a_damaged_or_foreign_index_is_never_trusted(state, capsys, damage):
    args = ["events", "--task", "alpha", "--json", "--state-dir", str(state)]
    _, before = _full(capsys, args)
    segments = list_segments(state / "events")
    index = _taskindex.path_of(segments[1][1])
    data = bytearray(index.read_bytes())
    header_end = data.index(b"\n") + 1
    if damage == "flipped":  # a digit of the task's own record: one offset now points elsewhere
        listing = bytes(data[header_end : header_end + int(data[:header_end].split()[6])])
        start = int(listing[listing.index(b"alpha ") :].split(b" ")[1])
        at = header_end + len(listing) + start + 1
        data[at] = ord("1") if data[at] != ord("1") else ord("2")
    elif damage == "directory":
        data[header_end + 2] ^= 0x01
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "foreign":
        data = bytearray(_taskindex.path_of(segments[2][1]).read_bytes())
    elif damage == "empty":
        data = bytearray()
    else:
        data[:7] = b"garbage"
    index.write_bytes(bytes(data))
    assert _fast(capsys, args) == (None, "")
    assert _full(capsys, args) == (0, before)  # the full path searches that segment instead
    # A writer replaces it with a current one (in the background, done when it stops). A writer checks only
    # the header and directory (an index is fsynced before its rename, so a crash cannot tear a record):
    # a record damaged by hand is left to index_sealed, which checks every part.
    EventLog(state / "events").start().stop()
    if damage == "flipped":
        assert _fast(capsys, args) == (None, "")
        assert _taskindex.index_sealed(state / "events") == 1
    assert _fast(capsys, args) == (0, before)


def test_the_full_read_uses_the_index_of_sealed_segments(state, monkeypatch):
    log = EventLog(state / "events", read_only=True).start()
    expected = [e for e in log.read() if e.task_id == "beta" and e.seq is not None and e.seq >= 30]
    searched: list[str] = []
    real = eventlog_module.grep_lines

    def spy(path, *rest):  # type: ignore[no-untyped-def]
        searched.append(path.name)
        return real(path, *rest)

    monkeypatch.setattr(eventlog_module, "grep_lines", spy)
    log = EventLog(state / "events", read_only=True).start()
    assert list(log.read(30, task_id="beta")) == expected
    assert set(searched) <= {list_segments(state / "events")[-1][1].name}  # only the open one is searched


def test_the_fast_path_loads_none_of_the_package_floors(state):
    probe = (
        "import sys, io\n"
        "sys.stdout = io.TextIOWrapper(io.BytesIO())\n"
        "from armor_rx._quick import quick\n"
        f"code = quick(['events', '--task', 'alpha', '--kind', 'task.*', '--state-dir', {str(state)!r}])\n"
        "sys.stdout = sys.__stdout__\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('armor_rx')), 'typing' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=_ENV).stdout.split(" ", 1)
    assert out[0] == "0"
    assert out[1].strip() == "['armor_rx', 'armor_rx._eventview', 'armor_rx._quick'] False"


def test_the_line_format_the_reader_assumes_is_the_logs():
    assert SUFFIX_LEN == _eventview.SUFFIX_LEN
    assert _eventview._PREFIX == b'{"v":%d,"seq":' % SCHEMA_VERSION


def test_indexes_are_the_logs_own_files(state):
    events = state / "events"
    (events / ".events-000000000001.idx.0123abcd.tmp").write_bytes(b"torn")
    assert unexpected_files(events) == []
    assert _taskview.log_end(str(events)) is not None  # the tasks view stands beside them
    EventLog(events).start().stop()
    assert not (events / ".events-000000000001.idx.0123abcd.tmp").exists()  # a crash's leftover is removed


_WRITER = """
import sys
from armor_rx.model import TaskEvent
from armor_rx.sinks.eventlog import EventLog
log = EventLog(sys.argv[1], segment_bytes=20000, fsync="none").start()
i = 0
while True:
    log.append_many([TaskEvent.new("exec.output", ("alpha", "beta")[j % 2], {"n": i + j, "pad": "y" * 200}) for j in range(50)])
    i += 50
"""


def test_indexes_survive_kill_9_of_the_writer(tmp_path, capsys):
    state = tmp_path / "state"
    events = state / "events"
    events.mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(events)], env=_ENV)
    try:
        deadline = time.monotonic() + 120
        while len(list(events.glob("*.idx"))) < 5:
            assert time.monotonic() < deadline, "the writer indexed no sealed segment"
            time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    # Whatever the kill left (a torn tail, an index not yet written, a temporary file), readers are right
    # and a new writer makes every sealed segment's index current.
    args = ["events", "--task", "beta", "--json", "--state-dir", str(state)]
    EventLog(events).start().stop()
    shutil.rmtree(events / "quarantine", ignore_errors=True)  # a torn tail the kill may have left, cut and kept there
    for _, path in list_segments(events)[:-1]:
        entry = _verified.load(events)[path.name]
        assert _taskindex.current(path, entry.size, entry.crc), path
    assert not list(events.glob(".events-*.idx.*.tmp"))
    code, slow = _full(capsys, args)
    assert (code, slow) == _fast(capsys, args) and code == 0 and slow
    # A torn index (a crash of the machine, not of the process: no fsync) is ignored, then rebuilt.
    index = _taskindex.path_of(list_segments(events)[0][1])
    index.write_bytes(index.read_bytes()[:100])
    assert _fast(capsys, args) == (None, "")
    assert _full(capsys, args) == (0, slow)
    EventLog(events).start().stop()
    assert _fast(capsys, args) == (0, slow)


def test_the_reader_takes_verified_json_as_the_log_does_and_never_one_recording_damage(state):
    events = state / "events"
    entries = _verified.load(events)
    mine = _eventview._load_verified(str(events))
    assert mine is not None and set(mine) == set(entries)
    for name, entry in entries.items():
        assert mine[name] == {"first": entry.first, "size": entry.size, "crc": entry.crc, "end": entry.end,
                              "stat": list(entry.stat) if entry.stat else None}
    data = (events / "verified.json").read_bytes()
    (events / "verified.json").write_bytes(data.replace(b'"crc":', b'"crc":1', 1))
    assert _eventview._load_verified(str(events)) is None  # its checksum fails
    damaged = next(iter(entries.values()))
    from armor_rx.sinks._cursor import Damage

    _verified.save(events, [*entries.values()][1:] + [replace(damaged, damage=(Damage(events / damaged.name, 0, 9, "x", 1, True),))])
    assert _eventview._load_verified(str(events)) is None


def test_an_index_out_of_the_logs_order_is_not_followed(state, capsys):
    args = ["events", "--task", "alpha", "--state-dir", str(state)]
    segment = list_segments(state / "events")[1][1]
    entry = _verified.load(state / "events")[segment.name]
    lines = _taskindex.offsets(segment, entry.size, entry.crc, "alpha")
    assert lines is not None and len(lines) > 1
    # A well-formed index (every checksum right) whose lines are out of order: never printed as the log.
    data = segment.read_bytes()
    from armor_rx._eventview import encode_index

    _taskindex.path_of(segment).write_bytes(encode_index(entry.size, entry.crc, {"alpha": lines[::-1]}))
    assert len(data) == entry.size
    assert _fast(capsys, args) == (None, "")
