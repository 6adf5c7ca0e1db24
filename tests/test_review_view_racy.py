"""Review of the tasks view's key: a segment changed in the clock tick of its last write keeps its times."""

from __future__ import annotations

from pathlib import Path

from armor_rx import Armor, _taskview


def _same_tick_rewrite(state: Path) -> None:
    """Flip a byte of the last segment in place and leave its stat as the view recorded it.

    A file's times move in clock ticks, so a write in the tick of the last append (the moment the
    owner wrote the view) leaves size, inode, mtime and ctime as they were; the times cannot be put
    back by hand (ctime), so the view's record of them is brought forward instead, which the
    reader cannot tell apart.
    """
    segment = sorted((state / "events").glob("events-*.jsonl"))[-1]
    data = bytearray(segment.read_bytes())
    data[data.rindex(b'"beta"') + 1] ^= 0x20
    with open(segment, "r+b") as f:
        f.write(data)
    view = state / _taskview.NAME
    header, _, body = view.read_bytes().partition(b"\n")
    fields = header.split(b" ")
    key = _taskview.log_end(state / "events")
    assert key is not None
    view.write_bytes(b" ".join([*fields[:-1], key.encode()]) + b"\n" + body)


def test_a_view_written_in_the_tick_of_the_last_append_is_checked_against_the_bytes(tmp_path, monkeypatch):
    state = tmp_path / "state"
    # The view is written microseconds after the last append, so it is racy; made certain on a slow machine too.
    monkeypatch.setattr(_taskview, "changed_since", lambda key, since: [p.split(":")[0] for p in key.split(",")])
    with Armor(state_dir=state, docker=False) as armor:
        armor.create_task("alpha")
        armor.create_task("beta")
    header = (state / _taskview.NAME).read_bytes().split(b"\n", 1)[0]
    assert header.split(b" ")[-2] != b"-"  # it carries the segment's CRC
    assert _taskview.read(str(state)) is not None  # and is current
    _same_tick_rewrite(state)
    assert _taskview.read(str(state)) is None


def test_which_segments_changed_in_the_racy_window():
    key = "events-000000000001.jsonl:10:5:100:200,events-000000000003.jsonl:20:6:300:250"
    assert _taskview.changed_since(key, 201) == ["events-000000000003.jsonl"]
    assert _taskview.changed_since(key, 200) == ["events-000000000001.jsonl", "events-000000000003.jsonl"]
    assert _taskview.changed_since(key, 301) == []


def test_a_segment_sealed_in_the_racy_window_writes_no_view_rather_than_an_unchecked_one(tmp_path, monkeypatch):
    from armor_rx.sinks.eventlog import EventLog
    from armor_rx.model import TaskEvent

    monkeypatch.setattr(_taskview, "changed_since", lambda key, since: [p.split(":")[0] for p in key.split(",")])
    with EventLog(tmp_path / "events", segment_bytes=100) as log:
        log.append(TaskEvent.new("task.created", "a"))
        log.append(TaskEvent.new("task.created", "b"))
        assert len(list((tmp_path / "events").glob("events-*.jsonl"))) == 2
        assert log.end_position(2) is None  # the sealed one would need its CRC


def test_the_view_a_closed_session_leaves_needs_no_crc(tmp_path):
    """A reader of the view a session leaves behind (the common case) does not read the segment."""
    state = tmp_path / "state"
    with Armor(state_dir=state, docker=False) as armor:
        armor.create_task("alpha")
    header = (state / _taskview.NAME).read_bytes().split(b"\n", 1)[0]
    assert header.split(b" ")[-2] == b"-"
    assert _taskview.read(str(state)) is not None
