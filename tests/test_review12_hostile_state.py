"""Review 12: state files that parse as JSON but are not what armor wrote must not stop a session or a hook."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from armor_rx import Armor
from armor_rx.model import State, TaskEvent
from armor_rx.model.events import to_plain
from armor_rx.sinks.plans import PlanFiles
from armor_rx.sinks.snapshot import REBUILD
from armor_rx.testing import crash


def _forge_snapshot(state: Path, mutate: object) -> None:
    path = state / "snapshot.json"
    data = orjson.loads(path.read_bytes())
    assert callable(mutate)
    mutate(data)
    data.pop("sha256")
    body = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    path.write_bytes(body[:-1] + b',"sha256":"%s"}' % hashlib.sha256(body).hexdigest().encode())


@pytest.mark.parametrize("task_id", ["nosuch", None])
def test_a_snapshot_with_an_open_request_for_no_known_task_is_rebuilt_from_the_log(
        tmp_path: Path, task_id: str | None) -> None:
    state = tmp_path / ".armor"
    armor = Armor(state_dir=state).open()
    armor.create_task("t1")
    armor.start("t1")
    armor.snapshot()
    crash(armor)

    def mutate(data: dict) -> None:  # type: ignore[type-arg]
        request = to_plain(TaskEvent.new("task.complete.requested", "t1").to_dict())
        request.update(task_id=task_id, seq=data["seq"])
        data["requests"]["open"].append(request)

    _forge_snapshot(state, mutate)
    with Armor(state_dir=state) as again:
        assert again.recovery is not None and again.recovery.chosen == REBUILD, again.recovery
        assert again.task("t1").state is State.RUNNING


def test_a_snapshot_with_an_open_request_whose_payload_is_not_an_object_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    state = tmp_path / ".armor"
    armor = Armor(state_dir=state).open()
    armor.create_task("t1")
    armor.start("t1")
    armor.snapshot()
    crash(armor)

    def mutate(data: dict) -> None:  # type: ignore[type-arg]
        request = to_plain(TaskEvent.new("task.complete.requested", "t1").to_dict())
        request.update(seq=data["seq"], payload="not an object")
        data["requests"]["open"].append(request)

    _forge_snapshot(state, mutate)
    with Armor(state_dir=state) as again:
        assert again.recovery is not None and again.recovery.chosen == REBUILD, again.recovery
        assert again.task("t1").state is State.RUNNING


@pytest.mark.parametrize("body", [b"[]", b"1", b'"plan"', b"null"])
def test_a_plan_state_file_that_is_not_an_object_gives_a_blank_plan(tmp_path: Path, body: bytes) -> None:
    files = PlanFiles(tmp_path)
    files.directory.mkdir(parents=True)
    files.state_path("t1").write_bytes(body)
    plan = files.load("t1")
    assert plan is not None and plan.task_id == "t1" and plan.last_seq == 0


@pytest.mark.parametrize("row", [
    {"tasks": ["a", "b"], "files": [{"path": 5, "overlap": True, "identical": False, "why": "x"}]},
    {"tasks": [1, 2], "files": [{"path": "p", "overlap": True, "identical": False, "why": "x"}]},
    {"tasks": ["../../x", "b"], "files": [{"path": "p", "overlap": True, "identical": False, "why": "x"}]},
])
def test_a_conflicts_file_with_names_armor_never_wrote_is_ignored(tmp_path: Path, row: dict) -> None:  # type: ignore[type-arg]
    from armor_rx.sinks.git.conflicts import ConflictWatcher

    state = tmp_path / "conflicts.json"
    state.write_bytes(orjson.dumps([row]))
    recorded: list[object] = []
    watcher = ConflictWatcher(None, lambda: [], lambda *a: recorded.append(a), state_file=state)  # type: ignore[arg-type]
    watcher._pairs = watcher._load()
    assert watcher.conflicts() == []
    assert watcher.forget("b", "gone") == [] and recorded == []
