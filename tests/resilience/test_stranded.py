"""pipeline.reconcile.stranded: which tasks a dead session left running (no Docker needed)."""

from __future__ import annotations

from armor_rx.model.events import to_plain
from armor_rx.model.lifecycle import State
from armor_rx.model.registry import TaskRecord
from armor_rx.pipeline.reconcile import stranded


def _record(task_id, state, **metadata):
    return TaskRecord(task_id=task_id, state=state, version=1, created_seq=1, updated_seq=1, created_ts=0.0, updated_ts=0.0,
                      metadata=metadata)


class _Docker:
    name = "docker"

    def __init__(self):
        self.asked = []

    def reconcile(self, request):
        self.asked.append(request.task_id)
        return {"containers": [{"id": "abc", "status": "running"}]}


def test_only_running_tasks_that_had_a_container_and_no_interruption_yet():
    docker = _Docker()
    records = [
        _record("in-container", State.RUNNING, container="abc"),
        _record("git-only", State.RUNNING),  # no container: nothing of it stopped with the session
        _record("done", State.COMPLETED, container="abc"),
        _record("already", State.RUNNING, container="abc"),  # interrupted for its open request
        _record("waiting", State.INTERRUPTED, container="abc"),
    ]
    found = stranded(records, {"already"}, [docker])
    assert [e.task_id for e in found] == ["in-container"]
    event = found[0]
    assert event.kind == "task.interrupted"
    assert event.payload["cause"] == "crash" and event.payload["request_id"] is None
    assert to_plain(event.payload["findings"]) == {"docker": {"containers": [{"id": "abc", "status": "running"}]}}
    assert docker.asked == ["in-container"]


class _BatchDocker(_Docker):
    def __init__(self):
        super().__init__()
        self.batches = []

    def reconcile_many(self, requests):
        self.batches.append([r.task_id for r in requests])
        return [{"containers": [{"id": r.task_id, "status": "running"}]} for r in requests]


def test_an_effect_that_can_look_at_many_tasks_is_asked_once_and_its_findings_stay_in_order():
    docker = _BatchDocker()
    records = [_record(f"t{i}", State.RUNNING, container="c") for i in range(5)]
    found = stranded(records, {"t2"}, [docker])
    assert docker.batches == [["t0", "t1", "t3", "t4"]] and docker.asked == []
    assert [to_plain(e.payload["findings"])["docker"]["containers"][0]["id"] for e in found] == ["t0", "t1", "t3", "t4"]
