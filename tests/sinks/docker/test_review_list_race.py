"""Review: a container removed while armor lists containers must not fail the listing.

docker-py's ``containers.list()`` inspects each listed container one by one; a
container removed in between (by another session's completion, a sweep, a
container whose removal a killed service had already asked for, or anyone on
a shared daemon) raised NotFound out of ``find_containers``, and a service
reconciling at start died with "cannot use: 404 Client Error ... No such
container" (seen after a kill -9 during ``complete``). Invariant: the listing
returns the containers that still exist. One case, on the real daemon, with the
removal forced between the list and the inspect.
"""

from __future__ import annotations

import pytest

from armor_rx.sinks.docker.containers import LABEL_TASK, find_containers

pytestmark = [pytest.mark.docker]


def test_a_container_removed_during_the_listing_is_left_out(engine, test_image):
    task = "review-list-race"
    doomed = engine.client.containers.create(test_image, ["sleep", "60"], labels={LABEL_TASK: task})
    kept = engine.client.containers.create(test_image, ["sleep", "60"], labels={LABEL_TASK: task})
    real = engine.client.api.containers

    def list_then_remove(*args, **kwargs):
        listed = real(*args, **kwargs)
        doomed.remove(force=True)  # gone before docker-py inspects what was listed
        return listed

    engine.client.api.containers = list_then_remove
    try:
        found = find_containers(engine, task_id=task)
    finally:
        engine.client.api.containers = real
        kept.remove(force=True)
    assert [c.id for c in found] == [kept.id]
