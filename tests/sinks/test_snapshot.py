"""Snapshots: atomic, checksummed, and never trusted over the log."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from armor_rx.errors import SnapshotError
from armor_rx.model import KIND_TO_STATE, TRANSITIONS, Registry, State, TaskEvent
from armor_rx.sinks import EventLog, SnapshotStore, recover_registry
from armor_rx.sinks.snapshot import REBUILD, SNAPSHOT_PLUS_TAIL

SETTINGS = settings(max_examples=50, deadline=None)
TASKS = ["a", "fix-login", "t-3"]


@st.composite
def lifecycles(draw: st.DrawFn, max_size: int = 30) -> list[TaskEvent]:
    """Random legal histories: each step is a transition the lifecycle table allows."""
    states: dict[str, State] = {}
    events: list[TaskEvent] = []
    for _ in range(draw(st.integers(0, max_size))):
        task = draw(st.sampled_from(TASKS))
        if task not in states:
            kind = "task.created"
        else:
            allowed = TRANSITIONS[states[task]]
            kinds = sorted(k for k, s in KIND_TO_STATE.items() if s in allowed) + ["exec.output", "task.updated"]
            kind = draw(st.sampled_from(kinds))
        payload: dict[str, object] = {}
        if kind == "task.updated":
            payload = {"metadata": {draw(st.sampled_from(["image", "note"])): draw(st.text(max_size=5))}}
        elif kind in ("task.failed", "task.fail.requested", "task.cancelled"):
            payload = {"reason": draw(st.text(max_size=10))}
        events.append(TaskEvent.new(kind, task, payload))
        if kind in KIND_TO_STATE:
            states[task] = KIND_TO_STATE[kind]
    return events


@contextmanager
def log_with(events: list[TaskEvent]) -> Iterator[tuple[Path, EventLog]]:
    with tempfile.TemporaryDirectory(prefix="snapshot-") as tmp, EventLog(Path(tmp) / "events") as log:
        log.append_many(events)
        yield Path(tmp), log


def folded(log: EventLog, end: int | None = None) -> Registry:
    return Registry().apply_all(log.read(1, end))


def same(a: Registry, b: Registry) -> bool:
    return a.seq == b.seq and a.to_list() == b.to_list() and a.requests.to_dict() == b.requests.to_dict()


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    events = [
        TaskEvent.new("task.created", "a", {"metadata": {"image": "py"}}),
        TaskEvent.new("task.start.requested", "a"),
    ]
    with EventLog(tmp_path / "events") as log:
        log.append_many(events)
        registry = folded(log)
    store = SnapshotStore(tmp_path / "snapshot.json")
    store.save(registry)
    assert same(store.load(), registry)
    data = orjson.loads((tmp_path / "snapshot.json").read_bytes())
    assert list(data) == ["requests", "schema", "seq", "tasks", "sha256"] and data["schema"] == 2 and data["seq"] == 2
    # The request still in flight is kept, so reconciling after a crash needs only the log after the snapshot.
    assert [r["kind"] for r in data["requests"]["open"]] == ["task.start.requested"] and data["requests"]["dead"] == []
    body = orjson.dumps({"requests": data["requests"], "schema": 2, "seq": 2, "tasks": data["tasks"]},
                        option=orjson.OPT_SORT_KEYS)
    assert data["sha256"] == hashlib.sha256(body).hexdigest()
    # Saving again replaces it whole and leaves no temporary files behind.
    registry.apply(TaskEvent.new("task.started", "a").with_seq(3))
    store.save(registry)
    assert store.load().get("a").state is State.RUNNING
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events", "snapshot.json"]


def _spelled_by_another_orjson(raw: bytes) -> bytes:
    """``raw`` as an orjson release that spells exponents the other way would write it."""
    ours = orjson.dumps(1e16)
    other = b"1e16" if ours == b"1e+16" else b"1e+16"
    assert ours in raw
    return raw.replace(ours, other)


def _registry_with_big_floats(tmp_path: Path) -> Registry:
    with EventLog(tmp_path / "events") as log:
        log.append_many([TaskEvent.new("task.created", "a", {"metadata": {"big": 1e16, "small": 1.5e-7}})])
        return folded(log)


def test_a_snapshot_saved_under_another_orjson_release_loads(tmp_path: Path) -> None:
    # orjson 3.8 writes 1e16, 3.10+ writes 1e+16: the hash must cover the bytes on disk, not
    # what the installed orjson makes of the parsed data, or an upgrade voids every snapshot.
    registry = _registry_with_big_floats(tmp_path)
    SnapshotStore(tmp_path / "mine.json").save(registry)
    body = (tmp_path / "mine.json").read_bytes()
    body = _spelled_by_another_orjson(body[: body.rindex(b',"sha256":"')] + b"}")
    theirs = body[:-1] + b',"sha256":"%s"}' % hashlib.sha256(body).hexdigest().encode()
    (tmp_path / "theirs.json").write_bytes(theirs)
    loaded = SnapshotStore(tmp_path / "theirs.json").load()
    assert same(loaded, registry) and loaded.get("a").metadata["big"] == 1e16


def test_a_snapshot_saved_by_earlier_versions_still_loads(tmp_path: Path) -> None:
    # Before, the file was the fields in insertion order and the hash covered their sorted re-serialisation.
    registry = _registry_with_big_floats(tmp_path)
    tasks = registry.to_list()
    digest = hashlib.sha256(orjson.dumps({"schema": 1, "seq": 1, "tasks": tasks}, option=orjson.OPT_SORT_KEYS)).hexdigest()
    (tmp_path / "snapshot.json").write_bytes(orjson.dumps({"schema": 1, "seq": 1, "tasks": tasks, "sha256": digest}))
    assert same(SnapshotStore(tmp_path / "snapshot.json").load(), registry)


def test_a_changed_byte_is_a_checksum_mismatch(tmp_path: Path) -> None:
    registry = _registry_with_big_floats(tmp_path)
    store = SnapshotStore(tmp_path / "snapshot.json")
    store.save(registry)
    raw = (tmp_path / "snapshot.json").read_bytes()
    (tmp_path / "snapshot.json").write_bytes(raw.replace(b'"task_id":"a"', b'"task_id":"b"'))
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        store.load()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no snapshot"),
        (b'{"schema":1,"seq":', "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"schema":3,"seq":0,"tasks":[],"sha256":"x"}', "schema 3"),
        (b'{"schema":1,"seq":0,"tasks":[],"sha256":"00"}', "checksum mismatch"),
    ],
)
def test_load_says_what_is_wrong(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "snapshot.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SnapshotError, match=message) as caught:
        SnapshotStore(path).load()
    assert str(path) in str(caught.value) and "rebuilt from the event log" in str(caught.value)


@SETTINGS
@given(events=lifecycles(), data=st.data())
def test_a_good_snapshot_is_used_and_the_tail_replayed(events: list[TaskEvent], data: st.DataObject) -> None:
    with log_with(events) as (root, log):
        at = data.draw(st.integers(0, len(events)), label="snapshot seq")
        store = SnapshotStore(root / "snapshot.json")
        store.save(folded(log, at))
        registry, report = recover_registry(store, log)
        assert same(registry, folded(log))
        assert report.options == (SNAPSHOT_PLUS_TAIL, REBUILD)
        assert (report.chosen, report.snapshot_seq, report.log_seq, report.replayed) == (
            SNAPSHOT_PLUS_TAIL,
            at,
            len(events),
            len(events) - at,
        )
        assert "verified" in report.reason


@SETTINGS
@given(events=lifecycles(), data=st.data())
def test_a_damaged_or_missing_snapshot_is_rebuilt_from_the_log(events: list[TaskEvent], data: st.DataObject) -> None:
    with log_with(events) as (root, log):
        path = root / "snapshot.json"
        store = SnapshotStore(path)
        store.save(folded(log, data.draw(st.integers(0, len(events)), label="snapshot seq")))
        raw = bytearray(path.read_bytes())
        damage = data.draw(st.sampled_from(["flip", "delete", "truncate"]), label="damage")
        if damage == "flip":
            at = data.draw(st.integers(0, 2**20), label="offset") % len(raw)
            raw[at] ^= data.draw(st.integers(1, 255), label="xor")
            path.write_bytes(bytes(raw))
        elif damage == "truncate":
            path.write_bytes(bytes(raw[: data.draw(st.integers(0, 2**20), label="length") % len(raw)]))
        else:
            path.unlink()

        registry, report = recover_registry(store, log)
        assert same(registry, folded(log))
        assert report.chosen == REBUILD and report.replayed == len(events) == report.log_seq
        assert report.reason  # names the problem
        if damage == "delete":
            assert report.reason == "no snapshot" and report.snapshot_seq is None


def test_a_snapshot_ahead_of_the_log_is_not_trusted(tmp_path: Path) -> None:
    events = [
        TaskEvent.new("task.created", "a"),
        TaskEvent.new("task.start.requested", "a"),
        TaskEvent.new("task.started", "a"),
    ]
    store = SnapshotStore(tmp_path / "snapshot.json")
    with EventLog(tmp_path / "long") as long_log:
        long_log.append_many(events)
        store.save(folded(long_log))
    with EventLog(tmp_path / "events") as log:
        log.append_many(events[:2])
        registry, report = recover_registry(store, log)
        assert report.chosen == REBUILD
        assert report.reason == "snapshot at seq 3 is ahead of the log (seq 2)"
        assert (report.snapshot_seq, report.log_seq, report.replayed) == (3, 2, 2)
        assert registry.get("a").state is State.STARTING and registry.seq == 2


def test_a_snapshot_the_log_does_not_apply_to_is_rebuilt(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshot.json")
    # A snapshot from another history: task "a" already completed at seq 1.
    other = Registry().apply_all(
        [TaskEvent.new(k, "a").with_seq(1) for k in ("task.created", "task.start.requested", "task.started")]
        + [TaskEvent.new(k, "a").with_seq(1) for k in ("task.complete.requested", "task.completed")]
    )
    store.save(other)
    with EventLog(tmp_path / "events") as log:
        log.append_many([TaskEvent.new("task.created", "a"), TaskEvent.new("task.start.requested", "a")])
        registry, report = recover_registry(store, log)
    assert report.chosen == REBUILD and "does not apply" in report.reason
    assert registry.get("a").state is State.STARTING


def test_an_empty_log_and_no_snapshot_give_an_empty_registry(tmp_path: Path) -> None:
    with EventLog(tmp_path / "events") as log:
        registry, report = recover_registry(SnapshotStore(tmp_path / "snapshot.json"), log)
    assert registry.tasks == {} and registry.seq == 0
    assert (report.chosen, report.reason, report.replayed) == (REBUILD, "no snapshot", 0)


def test_a_snapshot_whose_records_do_not_chain_to_its_seq_is_not_trusted(tmp_path: Path) -> None:
    """A snapshot armor_rx did not write (a record newer than the snapshot's own seq, checksum intact) is
    reported and rebuilt from the log, never merged."""
    store = SnapshotStore(tmp_path / "snapshot.json")
    forged = Registry().apply_all([TaskEvent.new("task.created", "a").with_seq(5)])
    forged.seq = 1
    store.save(forged)
    with EventLog(tmp_path / "events") as log:
        log.append_many([TaskEvent.new("task.created", "b")])
        registry, report = recover_registry(store, log)
    assert report.chosen == REBUILD and "does not chain" in report.reason
    assert sorted(registry.tasks) == ["b"]
