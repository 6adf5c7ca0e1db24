"""Dead letters: durable, survive a restart, re-drivable, built on the event log."""

from __future__ import annotations

from pathlib import Path

import pytest

from armor_rx.errors import DeadLetterNotFound, LogClosed, LogError
from armor_rx.model import TaskEvent
from armor_rx.sinks import DeadLetterLog, EventLog


class Flaky(RuntimeError):
    pass


def test_add_list_get_and_redrive_survive_a_restart(tmp_path: Path) -> None:
    first = TaskEvent.new("task.start.requested", "fix-login", {"image": "python:3.11"})
    second = TaskEvent.new("checkpoint.create.requested", "other")
    with DeadLetterLog(tmp_path) as letters:
        a = letters.add(first, Flaky("daemon went away"), attempts=5)
        b = letters.add(second, TimeoutError(), attempts=1)
        assert (a.event, a.error, a.error_type, a.attempts, a.redriven_by) == (
            first,
            "daemon went away",
            "Flaky",
            5,
            None,
        )
        assert b.error == "TimeoutError()" and b.error_type == "TimeoutError"
        assert [l.id for l in letters.list()] == [a.id, b.id]
        assert letters.get(a.id) == a
        marked = letters.mark_redriven(a.id, "01NEWEVENT")
        assert marked.redriven_by == "01NEWEVENT"
        assert letters.mark_redriven(a.id, "01NEWEVENT") == marked  # idempotent

    with DeadLetterLog(tmp_path) as reopened:
        assert [l.id for l in reopened.list()] == [b.id]
        assert [l.id for l in reopened.list(include_redriven=True)] == [a.id, b.id]
        assert reopened.get(a.id) == marked
        assert reopened.get(b.id) == b
        assert reopened.get(a.id).event.payload["image"] == "python:3.11"

    # It is an ordinary event log underneath: two added, one redriven (not repeated).
    kinds = [e.kind for e in EventLog(tmp_path, read_only=True).read()]
    assert kinds == ["deadletter.added", "deadletter.added", "deadletter.redriven"]


def test_unknown_letters_are_not_found(tmp_path: Path) -> None:
    with DeadLetterLog(tmp_path, fsync="always") as letters:
        with pytest.raises(DeadLetterNotFound, match="nope"):
            letters.get("nope")
        with pytest.raises(DeadLetterNotFound):
            letters.mark_redriven("nope", "x")
        assert letters.list() == []


def test_a_torn_tail_loses_only_the_unacknowledged_letter(tmp_path: Path) -> None:
    with DeadLetterLog(tmp_path) as letters:
        kept = letters.add(TaskEvent.new("task.start.requested", "a"), ValueError("bad"), attempts=2)
    segment = max(tmp_path.glob("events-*.jsonl"))
    with segment.open("ab") as f:
        f.write(b'{"v":1,"seq":2,"id":"01TORN')
    with DeadLetterLog(tmp_path) as letters:
        assert letters.list() == [kept]
        assert letters.log.repairs and letters.log.repairs[0].dropped_lines == 1


def test_use_outside_start_stop_raises_log_closed(tmp_path: Path) -> None:
    letters = DeadLetterLog(tmp_path)
    with pytest.raises(LogClosed):
        letters.list()
    with pytest.raises(LogClosed):
        letters.add(TaskEvent.new("exec.output", "a"), RuntimeError("x"), attempts=1)
    letters.start()
    letters.stop()
    with pytest.raises(LogClosed):
        letters.get("anything")


def test_a_read_only_reader_lists_while_a_writer_adds(tmp_path: Path) -> None:
    with DeadLetterLog(tmp_path) as writer:
        letter = writer.add(TaskEvent.new("task.start.requested", "a"), RuntimeError("x"), attempts=3)
        with DeadLetterLog(tmp_path, read_only=True) as reader:
            assert reader.list() == [letter]
            with pytest.raises(LogError, match="read-only"):
                reader.add(TaskEvent.new("exec.output", "a"), RuntimeError("y"), attempts=1)
            with pytest.raises(LogError, match="read-only"):
                reader.mark_redriven(letter.id, "01NEW")
        writer.mark_redriven(letter.id, "01NEW")
    assert [l.redriven_by for l in DeadLetterLog(tmp_path, read_only=True).start().list(include_redriven=True)] == [
        "01NEW"
    ]
