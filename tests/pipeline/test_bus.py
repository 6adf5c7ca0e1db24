"""Replay from memory and the durable log: no gaps, no duplicates."""

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from armor_rx import Armor
from armor_rx.model.events import TaskEvent
from armor_rx.pipeline.bus import EventBus


def _bus_with(n, memory):
    log = [TaskEvent.new("note.added" if i % 3 else "task.created", f"t{i % 4}", {"i": i}).with_seq(i + 1) for i in range(n)]
    bus = EventBus(lambda a, b: [e for e in log if a <= e.seq <= b], memory_events=memory)
    for e in log:
        bus.publish(e)
    return bus, log


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 80), memory=st.integers(1, 30), from_seq=st.integers(1, 90), last=st.integers(0, 90))
def test_replay_memory_plus_log_is_seamless(n, memory, from_seq, last):
    bus, log = _bus_with(n, memory)
    got = []
    bus.subscribe(from_seq=from_seq).subscribe(got.append)
    assert [e.seq for e in got] == [e.seq for e in log if e.seq >= from_seq]
    got2 = []
    bus.subscribe("note.*", last=last).subscribe(got2.append)
    notes = [e for e in log if e.kind == "note.added"]
    expected = [e.seq for e in notes][-last:] if last else []
    assert [e.seq for e in got2] == expected


def test_duplicates_are_not_published_twice():
    bus, log = _bus_with(5, 10)
    got = []
    bus.subscribe().subscribe(got.append)
    bus.publish(log[-1])
    assert got == []


def test_pattern_and_task_filters():
    bus, log = _bus_with(12, 100)
    got = []
    bus.subscribe("task.*", task_id="t0", from_seq=1).subscribe(got.append)
    assert all(e.kind == "task.created" and e.task_id == "t0" for e in got) and got


def test_live_events_during_replay_are_not_lost_or_duplicated(state_dir):
    with Armor(state_dir=state_dir, memory_events=50) as armor:
        armor.create_task("t1")
        for i in range(300):
            armor.emit("t1", "note.added", {"i": i})
        stop = threading.Event()

        def writer():
            i = 300
            while not stop.is_set() and i < 600:
                armor.emit("t1", "note.added", {"i": i})
                i += 1

        th = threading.Thread(target=writer)
        th.start()
        got = []
        sub = armor.events("note.*", from_seq=1).subscribe(got.append)
        th.join()
        armor.wait_idle()
        sub.dispose()
        values = [e.payload["i"] for e in got]
        assert values == list(range(len(values)))
        assert len(values) == 600


def test_subscriber_that_raises_does_not_stop_others(armor):
    good = []

    def bad(e):
        raise RuntimeError("boom")

    armor.events().subscribe(bad)
    armor.events().subscribe(good.append)
    armor.create_task("t1")
    armor.emit("t1", "note.added")
    armor.wait_idle()
    assert [e.kind for e in good] == ["task.created", "note.added"]


def test_since_window(armor):
    armor.create_task("t1")
    got = []
    armor.events(since=60).subscribe(got.append)
    armor.wait_idle()
    assert [e.kind for e in got] == ["task.created"]


def test_replay_window_is_bounded_by_bytes_and_replay_stays_seamless():
    log = [TaskEvent.new("exec.output", "t1", {"data": "x" * 1000, "i": i}).with_seq(i + 1) for i in range(200)]
    bus = EventBus(lambda a, b: [e for e in log if a <= e.seq <= b], memory_events=10_000, memory_bytes=20_000)
    for e in log:
        bus.publish(e)
    assert bus._recent_bytes <= 20_000 and len(bus._recent) < 25
    got = []
    bus.subscribe(from_seq=1).subscribe(got.append)
    assert [e.seq for e in got] == list(range(1, 201))
