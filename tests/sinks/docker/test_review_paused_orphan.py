"""Review: a service killed during a rollback leaves its task's container paused.

A restore freezes the container (``DockerEffect.paused``) while it rewrites the
worktree; kill -9 the service then and nothing thaws it. The next session saw
the task interrupted and ``resume`` made a new container, but replaced only a
dead session's *running* containers: the paused one (its processes frozen, the
worktree still mounted) stayed beside the new one, and after ``complete`` the
task still had a container (found by a kill -9 loop: 1 of 16 kills, during
rollback). Invariant: after resume, no container of a dead session is left for
the task, whatever its state. One case; the pause is made by hand so the kill
lands inside it every time.
"""

from __future__ import annotations

import pytest

import armor_rx
from armor_rx.sinks.docker.containers import LABEL_TASK
from tests.service.conftest import kill_service

pytestmark = [pytest.mark.docker]


def test_resume_replaces_a_container_a_dead_session_left_paused(repo, test_image, engine, monkeypatch):
    monkeypatch.setenv("ARMOR_RX_DOCKER", "1")
    monkeypatch.setenv("ARMOR_RX_IMAGE", test_image)
    task = "paused-orphan"
    with armor_rx.connect(repo) as remote:
        remote.create_task(task)
        remote.start(task)
        (old,) = engine.client.containers.list(filters={"label": f"{LABEL_TASK}={task}"})
    old.pause()  # as a restore leaves it when its service is killed mid-way
    kill_service(repo / ".armor")
    try:
        with armor_rx.connect(repo) as remote:
            remote.resume(task, timeout=120)
            assert remote.task(task).state.value == "running"
            left = [c.id for c in engine.client.containers.list(all=True, filters={"label": f"{LABEL_TASK}={task}"})]
            assert old.id not in left, "the paused container of the dead session is still there"
            remote.complete(task, timeout=120)
        assert engine.client.containers.list(all=True, filters={"label": f"{LABEL_TASK}={task}"}) == []
    finally:
        for c in engine.client.containers.list(all=True, filters={"label": f"{LABEL_TASK}={task}"}):
            c.remove(force=True)
