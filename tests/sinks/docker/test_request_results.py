"""The docker effect's stored exec results: kept per task, gone when the task ends, a damaged one a clear error."""

from __future__ import annotations

import orjson
import pytest

from armor_rx import Armor
from armor_rx.errors import DockerError
from armor_rx.model.events import TaskEvent
from armor_rx.pipeline.effects import EffectContext
from armor_rx.sinks.docker.effect import DockerEffect


def _exec_ctx(task_id: str = "t1") -> EffectContext:
    request = TaskEvent.new("exec.requested", task_id, {"command": ["true"]})

    def emit(kind: str, payload: object) -> TaskEvent:
        raise AssertionError(f"a stored result must not run the command again (it emitted {kind})")

    return EffectContext(request=request, task=None, emit=emit)


# These need no engine: a stored result is answered before the effect touches Docker.

def test_a_stored_result_is_returned_without_running_the_command(tmp_path):
    ctx = _exec_ctx()
    path = tmp_path / "docker" / "requests" / "t1" / f"{ctx.request.id}.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(orjson.dumps({"exit_code": 7, "reason": "exited"}))
    assert DockerEffect(state_dir=tmp_path).apply(ctx) == {"exit_code": 7, "reason": "exited"}


def test_a_result_stored_where_earlier_versions_kept_it_is_still_found(tmp_path):
    ctx = _exec_ctx()
    legacy = tmp_path / "docker" / "requests" / f"{ctx.request.id}.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(orjson.dumps({"exit_code": 0, "reason": "exited"}))
    assert DockerEffect(state_dir=tmp_path).apply(ctx)["exit_code"] == 0


@pytest.mark.parametrize("damage", [b'{"exit_code": 0, "rea', b"", b"[1, 2]", b"\xff\xfe"])
def test_a_damaged_stored_result_is_a_one_line_docker_error_and_runs_nothing(tmp_path, damage):
    ctx = _exec_ctx()
    path = tmp_path / "docker" / "requests" / "t1" / f"{ctx.request.id}.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(damage)
    with pytest.raises(DockerError) as caught:
        DockerEffect(state_dir=tmp_path).apply(ctx)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "delete the file" in message
    assert path.read_bytes() == damage  # kept for a person to look at


# The whole life, on the real engine.

@pytest.mark.docker
@pytest.mark.parametrize("ending", ["complete", "cancel", "fail"])
def test_a_tasks_stored_results_are_removed_when_it_ends(repo, engine, sandbox, cleanup_containers, ending):
    with Armor(repo, docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        results = armor.state.path / "docker" / "requests"
        for task in ("ends", "stays"):
            armor.create_task(task)
            armor.start(task)
            first = armor.exec(task, ["true"])
            armor.exec(task, ["sh", "-c", "exit 2"])
            assert (results / task / f"{first.causation_id}.json").is_file()
        assert len(list((results / "ends").iterdir())) == 2
        if ending == "complete":
            armor.complete("ends", message="done", merge="none")
        elif ending == "cancel":
            armor.cancel("ends")
        else:
            armor.fail("ends", "given up")
        armor.wait_idle()
        assert not (results / "ends").exists()
        assert len(list((results / "stays").iterdir())) == 2  # another task's are its own
        armor.cancel("stays")
