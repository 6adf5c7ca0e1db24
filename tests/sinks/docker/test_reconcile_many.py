"""Reconciling many tasks after a crash asks the engine once, and finds what asking per task finds."""

from __future__ import annotations

import uuid

import pytest

from armor_rx.model.events import TaskEvent
from armor_rx.sinks.docker.containers import LABEL_TASK, containers_by_task, find_containers

pytestmark = [pytest.mark.docker]


def test_one_listing_finds_each_tasks_containers_as_the_per_task_query_does(engine, test_image):
    tag = uuid.uuid4().hex[:8]
    tasks = [f"rm-{tag}-{i}" for i in range(3)]
    made = [engine.client.containers.create(test_image, ["sleep", "60"], labels={LABEL_TASK: t}) for t in tasks[:2]]
    made.append(engine.client.containers.create(test_image, ["sleep", "60"], labels={LABEL_TASK: tasks[0]}))
    made[1].start()
    try:
        by_task = containers_by_task(engine)
        for task in tasks:
            single = sorted(({"id": c.short_id, "status": c.status} for c in find_containers(engine, task_id=task)),
                            key=lambda d: d["id"])
            assert sorted(by_task.get(task, []), key=lambda d: d["id"]) == single
        assert len(by_task[tasks[0]]) == 2 and by_task[tasks[1]][0]["status"] == "running" and tasks[2] not in by_task
    finally:
        for c in made:
            c.remove(force=True)


def test_the_docker_effect_reconciles_many_requests_in_their_order(engine, test_image):
    from armor_rx.sinks.docker import DockerEffect

    task = f"rm-{uuid.uuid4().hex[:8]}"
    box = engine.client.containers.create(test_image, ["sleep", "60"], labels={LABEL_TASK: task})
    try:
        effect = DockerEffect(engine=engine)
        requests = [TaskEvent.new("task.running", "nobody-has-this-task"), TaskEvent.new("task.running", task)]
        many = effect.reconcile_many(requests)
        assert many == [effect.reconcile(r) for r in requests]
        assert many[1] == {"containers": [{"id": box.short_id, "status": "created"}]}
    finally:
        box.remove(force=True)
