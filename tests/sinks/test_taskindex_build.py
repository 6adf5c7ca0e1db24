"""A task index built a megabyte at a time names exactly the lines a whole read finds, across chunk edges."""

from __future__ import annotations

import zlib

from armor_rx.model import TaskEvent
from armor_rx.sinks import _taskindex
from armor_rx.sinks.eventlog import EventLog


def test_lines_across_chunk_edges_are_indexed_exactly(tmp_path):
    events = tmp_path / "events"
    tasks = ["alpha", "beta", "gamma"]
    with EventLog(events, segment_bytes=3 << 20, fsync="none") as log:  # one sealed segment of a few MB
        for i in range(9000):
            # Line lengths vary from about 150 bytes to 3 KB, so lines straddle every 1 MB edge at odd places.
            log.append(TaskEvent.new("exec.output", tasks[i % 3], {"line": "x" * ((i * 7919) % 3000), "n": i}))
    segment = sorted(events.glob("events-*.jsonl"))[0]
    data = segment.read_bytes()
    assert len(data) > 2 << 20
    assert _taskindex.build(segment)
    expected: dict[str, list[tuple[int, int]]] = {t: [] for t in tasks}
    at = 0
    for line in data.splitlines(keepends=True):
        for task in tasks:
            if f'"task_id":"{task}"'.encode() in line:
                expected[task].append((at, len(line)))
        at += len(line)
    for task in tasks:
        assert _taskindex.offsets(segment, len(data), zlib.crc32(data), task) == expected[task]
    with open(segment, "ab") as f:  # a torn last line: not a sealed segment, no index
        f.write(b'{"v":1,"seq":')
    assert not _taskindex.build(segment)
