"""A rollback to a checkpoint whose container part is gone is refused whole, before anything changes (real daemon).

Before: the worktree was restored, then the image step failed, leaving the
task half rolled back (worktree of the checkpoint, container of now).
"""

from __future__ import annotations

import dataclasses

import docker.errors
import pytest

from armor_rx import Armor
from armor_rx.errors import CheckpointIncomplete, EffectFailed

pytestmark = pytest.mark.docker


def _out(armor, task, command, **options):
    lines: list[str] = []
    sub = armor.events("exec.output", task_id=task).subscribe(lambda e: lines.append(e.payload["data"]))
    try:
        done = armor.exec(task, ["sh", "-c", command], **options)
        armor.wait_idle()
    finally:
        sub.dispose()
    assert done.payload["exit_code"] == 0, (command, done.payload, lines)
    return "".join(lines)


@pytest.fixture(autouse=True)
def _no_snapshot_left(engine, tmp_path):
    yield
    for image in engine.client.images.list(filters={"label": "armor.snapshot"}):
        if str(image.labels.get("armor.state", "")).startswith(str(tmp_path.resolve())):
            for name in image.tags or [image.id]:
                try:
                    engine.client.images.remove(name, force=True)
                except docker.errors.APIError:
                    pass


@pytest.fixture
def writable(sandbox):
    return dataclasses.replace(sandbox, read_only=False, allow_root=True)


def _state(armor, task):
    """What a refused rollback must leave as it was: worktree files, container, log, checkpoints."""
    worktree = armor.worktree(task)
    files = {p.name: p.read_text() for p in worktree.iterdir() if p.is_file()}
    return (files, armor.container(task)["id"], [e.id for e in armor.history()],
            [cp.id for cp in armor.checkpoints(task)])


def _remove_image(engine, image_id):
    image = engine.client.images.get(image_id)
    for name in image.tags or [image.id]:
        engine.client.images.remove(name, force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        engine.client.images.get(image_id)


def test_rollback_to_a_checkpoint_whose_image_was_removed_changes_nothing(repo, engine, writable,
                                                                           cleanup_containers):
    with Armor(repo, docker=True, sandbox=writable, sweep_interval=None) as armor:
        armor.create_task("gone")
        armor.start("gone")
        _out(armor, "gone", "echo before > work.txt")
        cp = armor.checkpoint("gone", "clean").payload
        _out(armor, "gone", "echo 1 > /etc/installed", user="root")
        _out(armor, "gone", "echo after > work.txt && echo new > extra.txt")
        _remove_image(engine, cp["container"]["image"])  # a person ran 'docker rmi', or a prune took it
        before = _state(armor, "gone")

        with pytest.raises(CheckpointIncomplete) as refused:
            armor.rollback("gone", cp["checkpoint"])
        message = str(refused.value)
        assert "\n" not in message
        assert "snapshot image" in message and cp["checkpoint"] in message and "nothing was changed" in message
        assert "armor-rx checkpoints gone" in message
        assert _state(armor, "gone") == before
        assert (armor.worktree("gone") / "work.txt").read_text() == "after\n"
        assert _out(armor, "gone", "cat /etc/installed") == "1\n"  # the same container, still running

        # Past the session's check (the image removed between it and the restore): the restore itself refuses
        # before its safety checkpoint and the rewrite; only the request and its failure are logged.
        with pytest.raises(EffectFailed) as failed:
            armor.request("gone", "checkpoint.restore.requested", {"checkpoint": cp["checkpoint"]}).result(120)
        assert isinstance(failed.value.cause, CheckpointIncomplete)
        files, container, _log, checkpoints = _state(armor, "gone")
        assert (files, container, checkpoints) == (before[0], before[1], before[3])
        assert not list(armor.history(kind="checkpoint.restored", task_id="gone"))
        armor.cancel("gone")


def test_rollback_to_a_checkpoint_whose_volume_archive_was_deleted_changes_nothing(repo, engine, writable,
                                                                                    cleanup_containers):
    spec = dataclasses.replace(writable, allow_root=False, volumes=("/var/cache/data",))
    with Armor(repo, docker=True, sandbox=spec, sweep_interval=None) as armor:
        armor.create_task("vol")
        armor.start("vol")
        _out(armor, "vol", "echo one > /var/cache/data/f && echo before > work.txt")
        cp = armor.checkpoint("vol").payload
        _out(armor, "vol", "echo two > /var/cache/data/f && echo after > work.txt")
        archive = (armor.git.state_dir / "docker" / "snapshots" / "vol" / cp["container"]["snapshot"]
                   / cp["container"]["volumes"]["/var/cache/data"])
        archive.unlink()
        before = _state(armor, "vol")

        with pytest.raises(CheckpointIncomplete) as refused:
            armor.rollback("vol", cp["checkpoint"])
        assert "volume /var/cache/data" in str(refused.value) and "\n" not in str(refused.value)
        assert _state(armor, "vol") == before
        assert _out(armor, "vol", "cat /var/cache/data/f") == "two\n"
        armor.cancel("vol")


def test_resume_at_a_checkpoint_whose_image_was_removed_is_refused_before_anything(repo, engine, writable,
                                                                                    cleanup_containers):
    with Armor(repo, docker=True, sandbox=writable, sweep_interval=None) as armor:
        armor.create_task("later")
        armor.start("later")
        _out(armor, "later", "echo before > work.txt")
        cp = armor.checkpoint("later").payload
        _out(armor, "later", "echo after > work.txt")
        armor.interrupt("later", "the test stops it")
        _remove_image(engine, cp["container"]["image"])
        log = [e.id for e in armor.history()]
        with pytest.raises(CheckpointIncomplete):
            armor.resume("later", checkpoint=cp["checkpoint"])
        assert [e.id for e in armor.history()] == log
        assert armor.task("later").state.value == "interrupted"
        assert (armor.worktree("later") / "work.txt").read_text() == "after\n"
        armor.resume("later")  # without the checkpoint it comes back as it was
        assert _out(armor, "later", "cat work.txt") == "after\n"
        armor.cancel("later")
