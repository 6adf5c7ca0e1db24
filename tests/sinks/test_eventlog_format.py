"""The event log's line format stays byte for byte what it is: logs on disk hold such lines.

The golden lines below were written by the log at commit 99948f7; any change
to how events are serialised or numbered must still produce them.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from armor_rx.model import Secret, TaskEvent, to_plain
from armor_rx.sinks import EventLog
from armor_rx.sinks._logfile import check_line, event_line, number_event


def _golden_events() -> list[tuple[TaskEvent, int]]:
    payload = {
        "stream": "stdout",
        "line": 'h\u00e9llo "quoted" \\ \n\t\u2028 \u2603 \U0001d11e',
        "n": -12,
        "f": 0.1,
        "big": 2**63 - 1,
        "none": None,
        "flag": True,
        "list": [1, [2, {"k": "v"}], {}],
        "nested": {"token": "abc", "deep": {"x": 1.5e-7}},
        "secret": Secret("s"),
    }
    made = [
        TaskEvent.new("task.created", "fix-login", {"repo": "."}),
        TaskEvent.new("exec.output", "task-3", payload, causation_id="01HZX3Q4J5K6M7N8P9Q0R1S2T4"),
        TaskEvent.new("session.started"),
    ]
    stamps = [(1712345678.123456, 1), (1e16, 12345678901), (0.5, 7)]
    return [
        (replace(event, id=f"01HZX3Q4J5K6M7N8P9Q0R1S2T{i}", ts=ts), seq)
        for i, (event, (ts, seq)) in enumerate(zip(made, stamps))
    ]


GOLDEN = [
    b'{"v":1,"seq":1,"id":"01HZX3Q4J5K6M7N8P9Q0R1S2T0","kind":"task.created","task_id":"fix-login",'
    b'"ts":1712345678.123456,"causation_id":null,"payload":{"repo":"."},"crc":"efa18c87"}\n',
    b'{"v":1,"seq":12345678901,"id":"01HZX3Q4J5K6M7N8P9Q0R1S2T1","kind":"exec.output","task_id":"task-3",'
    b'"ts":1e16,"causation_id":"01HZX3Q4J5K6M7N8P9Q0R1S2T4","payload":{"stream":"stdout",'
    b'"line":"h\xc3\xa9llo \\"quoted\\" \\\\ \\n\\t\xe2\x80\xa8 \xe2\x98\x83 \xf0\x9d\x84\x9e","n":-12,"f":0.1,'
    b'"big":9223372036854775807,"none":null,"flag":true,"list":[1,[2,{"k":"v"}],{}],'
    b'"nested":{"token":"[redacted]","deep":{"x":1.5e-7}},"secret":"[redacted]"},"crc":"29f81459"}\n',
    b'{"v":1,"seq":7,"id":"01HZX3Q4J5K6M7N8P9Q0R1S2T2","kind":"session.started","task_id":null,'
    b'"ts":0.5,"causation_id":null,"payload":{},"crc":"0691ef64"}\n',
]


# orjson's spelling of a float with an exponent is orjson's, not the log's format: 3.8
# writes 1e16 where 3.10+ writes 1e+16 (both JSON for the same number). The golden
# lines keep the spelling they were written with; a line written now is compared with
# the golden one respelled as the installed orjson spells those numbers, its crc
# recomputed. Everything else stays pinned byte for byte.
_FLOATS_IN_GOLDEN = [(b'"ts":', b"1e16", 1e16), (b'"x":', b"1.5e-7", 1.5e-7)]


def _respelled(golden: bytes) -> bytes:
    for key, written, value in _FLOATS_IN_GOLDEN:
        golden = golden.replace(key + written, key + orjson.dumps(value))
    body = golden[: golden.rindex(b',"crc":"')] + b"}"
    return body[:-1] + b',"crc":"%08x"}\n' % zlib.crc32(body)


def _documented_line(event: TaskEvent) -> bytes:
    """The format as the module docs describe it, built the slow, obvious way."""
    body = orjson.dumps(to_plain(event.to_dict()))
    return body[:-1] + b',"crc":"%08x"}\n' % zlib.crc32(body)


@pytest.mark.parametrize("index", range(len(GOLDEN)))
def test_a_line_written_now_equals_the_line_written_before(index: int) -> None:
    event, seq = _golden_events()[index]
    numbered = number_event(event, seq)
    line = event_line(numbered)
    assert line == _respelled(GOLDEN[index])
    assert line == _documented_line(event.with_seq(seq))
    assert check_line(line) == seq == numbered.seq
    assert numbered == event.with_seq(seq) == replace(event, seq=seq)


def test_to_json_is_the_line_without_its_checksum() -> None:
    event, seq = _golden_events()[1]
    numbered = number_event(event, seq)
    line = event_line(numbered)
    assert numbered.to_json() == line[: line.rindex(b',"crc":"')] + b"}"
    assert numbered.to_json() == orjson.dumps(to_plain(numbered.to_dict()))
    assert event.to_json() == orjson.dumps(to_plain(event.to_dict()))  # seq null


def test_a_log_written_by_earlier_versions_reads_and_grows(tmp_path: Path) -> None:
    events = _golden_events()
    old = [replace(event, seq=None) for event, _ in events]
    lines = [event_line(number_event(event, i + 1)) for i, event in enumerate(old)]
    assert lines[0] == GOLDEN[0]  # seq 1, as written before
    (tmp_path / "events-000000000001.jsonl").write_bytes(b"".join(lines))
    with EventLog(tmp_path) as log:
        assert log.repairs == []
        assert [e.id for e in log.read()] == [e.id for e in old]
        assert [to_plain(e.payload) for e in log.read()] == [to_plain(e.payload) for e in old]
        added = log.append(TaskEvent.new("task.created", "next"))
        assert added.seq == 4
    assert (tmp_path / "events-000000000001.jsonl").read_bytes().startswith(b"".join(lines))
    assert EventLog(tmp_path, read_only=True).verify() == 4


def test_respelling_changes_only_the_numbers_and_the_crc() -> None:
    def body(line: bytes) -> bytes:
        return line[: line.rindex(b',"crc":"')]

    for index, golden in enumerate(GOLDEN):
        now = _respelled(golden)
        for key, written, value in _FLOATS_IN_GOLDEN:
            now = now.replace(key + orjson.dumps(value), key + written)
        assert body(now) == body(golden)
        assert check_line(_respelled(golden)) == check_line(golden) == _golden_events()[index][1]


@pytest.mark.parametrize("spelling", [b"1e16", b"1e+16"])
def test_a_line_with_either_float_spelling_reads(tmp_path: Path, spelling: bytes) -> None:
    # A log written under one orjson release is read under another: the crc covers the
    # bytes on disk, never a re-serialisation, so the spelling of a float does not matter.
    line = GOLDEN[1].replace(b'"ts":1e16', b'"ts":' + spelling).replace(b'"seq":12345678901', b'"seq":2')
    body = line[: line.rindex(b',"crc":"')] + b"}"
    line = body[:-1] + b',"crc":"%08x"}\n' % zlib.crc32(body)
    (tmp_path / "events-000000000001.jsonl").write_bytes(GOLDEN[0] + line)
    with EventLog(tmp_path) as log:
        assert log.repairs == []
        events = list(log.read())
        assert [e.seq for e in events] == [1, 2]
        assert events[1].ts == 1e16
