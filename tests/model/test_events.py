import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from armor_rx.errors import InvalidEventKind, InvalidPayload, InvalidTaskId
from armor_rx.model import Secret, TaskEvent, to_plain, validate_task_id
from armor_rx.model.ids import EventIdFactory

# Keys from an alphabet that cannot spell a sensitive word (those are redacted on purpose).
safe_keys = st.text(alphabet="abcdfghijlmnqruvwxyz019_ ", max_size=10)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(safe_keys, children, max_size=4),
    max_leaves=20,
)


def test_event_is_immutable_including_payload():
    ev = TaskEvent.new("task.created", "t1", {"a": [1, {"b": 2}]})
    with pytest.raises(Exception):
        ev.kind = "x.y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ev.payload["a"] = 3  # type: ignore[index]
    assert isinstance(ev.payload["a"], tuple)


def test_ids_are_unique_and_time_ordered():
    factory = EventIdFactory()
    ids = [factory.new() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)


@given(payload=st.dictionaries(safe_keys, json_values, max_size=5))
def test_json_round_trip(payload):
    ev = TaskEvent.new("exec.output", "t-1", payload, causation_id="abc").with_seq(7)
    back = TaskEvent.from_json(ev.to_json())
    assert back == ev
    assert to_plain(back.payload) == orjson.loads(orjson.dumps(payload))


def test_secrets_never_reach_the_payload():
    ev = TaskEvent.new("task.created", "t1", {"token": "abc", "nested": {"password": "p"}, "value": Secret("s3cr3t"), "ok": "visible"})
    raw = ev.to_json()
    assert b"abc" not in raw and b"s3cr3t" not in raw and b'"p"' not in raw
    assert b"visible" in raw
    assert b"[redacted]" in raw


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": object()}, {1: "a"}, {"x": {1, 2}}])
def test_bad_payload_rejected_with_path(bad):
    with pytest.raises(InvalidPayload) as info:
        TaskEvent.new("exec.output", "t1", bad)
    assert "payload" in str(info.value)


@pytest.mark.parametrize("kind", ["", "task", "Task.Started", "task..x", ".task", "task.", "task start"])
def test_bad_kind_rejected(kind):
    with pytest.raises(InvalidEventKind):
        TaskEvent.new(kind, "t1")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-x", "x-", "a--b", "UPPER", "a b", "a\x00b", "x" * 64, "a.b", 5])
def test_invalid_task_ids(bad):
    with pytest.raises(InvalidTaskId) as info:
        validate_task_id(bad)
    assert "lowercase letters, digits" in str(info.value)


@given(st.text(max_size=80))
def test_task_id_is_always_a_safe_slug(value):
    try:
        validate_task_id(value)
    except InvalidTaskId:
        return
    assert value and len(value) <= 63
    assert set(value) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert ".." not in value and not value.startswith("-") and not value.endswith("-")


def test_unknown_schema_version_is_rejected():
    data = orjson.loads(TaskEvent.new("task.created", "t1").to_json())
    data["v"] = 99
    with pytest.raises(InvalidPayload, match="schema version"):
        TaskEvent.from_dict(data)
