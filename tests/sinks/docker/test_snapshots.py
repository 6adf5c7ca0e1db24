"""Atomic checkpoints: a container's changes outside the worktree saved, rolled back, pruned, swept (real daemon)."""

from __future__ import annotations

import dataclasses

import pytest

from armor_rx import Armor
from armor_rx.errors import ConfigError
from armor_rx.sinks.docker import SandboxSpec
from armor_rx.sinks.git import CheckpointPolicy

pytestmark = pytest.mark.docker

# What a package install does outside the worktree: files under /usr/local and /etc, one deleted from the image.
INSTALL = ("mkdir -p /usr/local/lib/pkg /usr/local/bin && echo v1 > /usr/local/lib/pkg/VERSION && "
           "echo '#!/bin/sh' > /usr/local/bin/tool && echo 'deb x' > /etc/pkg.conf && rm /bin/wc")
STATE = ("for p in /usr/local/lib/pkg/VERSION /usr/local/bin/tool /etc/pkg.conf /bin/wc;"
         " do test -e $p && echo $p; done; true")
INSTALLED = ["/usr/local/lib/pkg/VERSION", "/usr/local/bin/tool", "/etc/pkg.conf"]


def _images(engine, task, armor):
    state = str(armor.git.state_dir)
    labels = ["armor.snapshot", f"armor.task={task}", f"armor.state={state}"]
    return engine.client.images.list(filters={"label": labels})


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
    """A test that fails half-way leaves no snapshot image of its own on the shared daemon."""
    yield
    import docker.errors

    for image in engine.client.images.list(filters={"label": "armor.snapshot"}):
        if str(image.labels.get("armor.state", "")).startswith(str(tmp_path.resolve())):
            for name in image.tags or [image.id]:
                try:
                    engine.client.images.remove(name, force=True)
                except docker.errors.APIError:
                    pass


@pytest.fixture
def writable(sandbox):
    """A writable root where commands may run as root (an agent that installs packages)."""
    return dataclasses.replace(sandbox, read_only=False, allow_root=True)


def test_rollback_undoes_changes_outside_the_worktree(repo, engine, writable, cleanup_containers):
    with Armor(repo, docker=True, sandbox=writable, sweep_interval=None) as armor:
        armor.create_task("apt")
        armor.start("apt")
        _out(armor, "apt", "echo before > work.txt")
        first = armor.checkpoint("apt", "clean")
        assert list(first.payload["holds"]) == ["worktree", "image"]
        image = first.payload["container"]["image"]
        assert first.payload["log_seq"] is not None
        made = engine.client.images.get(image)
        assert made.labels["armor.snapshot"] == first.payload["container"]["snapshot"]
        assert made.labels["armor.checkpoint"] == first.payload["checkpoint"] and made.labels["armor.task"] == "apt"
        listed = armor.checkpoints("apt")[-1]
        assert listed.container == first.payload["container"] and listed.holds == ["worktree", "image"]

        _out(armor, "apt", INSTALL, user="root")
        _out(armor, "apt", "echo after > work.txt && echo new > extra.txt")
        assert _out(armor, "apt", STATE).split() == INSTALLED
        changed = armor.diff("apt", first.payload["checkpoint"])
        assert changed.container is not None
        paths = {c["path"]: c["kind"] for c in changed.container["changes"]}
        assert paths["/etc/pkg.conf"] == "added" and paths["/bin/wc"] == "deleted"
        assert paths["/usr/local/bin/tool"] == "added"
        old_container = armor.container("apt")["id"]

        restored = armor.rollback("apt", first.payload["checkpoint"])
        assert restored.payload["container_restored"] is True
        assert armor.container("apt")["id"] != old_container
        assert _out(armor, "apt", STATE).split() == ["/bin/wc"]  # the install is undone, the deleted file back
        assert (armor.worktree("apt") / "work.txt").read_text() == "before\n"
        assert not (armor.worktree("apt") / "extra.txt").exists()
        assert engine.client.containers.list(all=True, filters={"id": old_container}) == []
        # The safety checkpoint taken before the rollback holds the install: rolling forward brings it back.
        safety = next(e for e in armor.history(kind="checkpoint.restored", task_id="apt")).payload["safety_checkpoint"]
        assert safety is not None
        armor.rollback("apt", safety)
        assert _out(armor, "apt", STATE).split() == INSTALLED
        assert (armor.worktree("apt") / "extra.txt").read_text() == "new\n"
        assert (armor.worktree("apt") / "work.txt").read_text() == "after\n"
        against = armor.diff("apt")
        assert against.container is not None and against.container["against"] == f"snapshot of {safety}"
        # cp-1, and the safety checkpoints of the two rollbacks: each named by its checkpoint.
        named = {cp.container["image"] for cp in armor.checkpoints("apt")}
        assert {i.id for i in _images(engine, "apt", armor)} == named and len(named) == 3
        armor.complete("apt")
        # A task that ended keeps no snapshot.
        assert _images(engine, "apt", armor) == []


def test_a_read_only_root_makes_no_image(repo, engine, sandbox, cleanup_containers):
    assert sandbox.read_only and not sandbox.volumes
    with Armor(repo, docker=True, sandbox=sandbox, sweep_interval=None) as armor:
        armor.create_task("ro")
        armor.start("ro")
        _out(armor, "ro", "echo x > a.txt")
        cp = armor.checkpoint("ro")
        assert list(cp.payload["holds"]) == ["worktree"] and cp.payload["container"] is None
        assert armor.checkpoints("ro")[-1].container is None
        assert _images(engine, "ro", armor) == []
        done = armor.rollback("ro", cp.payload["checkpoint"])
        assert "container_restored" not in done.payload
        armor.cancel("ro")


def test_pruned_checkpoints_lose_their_images(repo, engine, writable, cleanup_containers):
    with Armor(repo, docker=True, sandbox=writable, sweep_interval=None,
               checkpoint_policy=CheckpointPolicy(keep_last=1)) as armor:
        armor.create_task("prune")
        armor.start("prune")
        made = []
        for n in range(3):
            _out(armor, "prune", f"echo {n} > /etc/step", user="root")
            made.append(armor.checkpoint("prune", f"step {n}").payload["container"]["image"])
        kept = armor.checkpoints("prune")
        assert len(kept) == 1 and kept[0].container["image"] == made[-1]
        assert [i.id for i in _images(engine, "prune", armor)] == [made[-1]]
        pruned = [e.payload for e in armor.history(kind="checkpoint.pruned", task_id="prune")]
        assert pruned, "retention pruned nothing"
        removed = [s for e in armor.history(kind="snapshot.removed", task_id="prune") for s in e.payload["snapshots"]]
        assert {r["image"] for r in removed} >= set(made[:-1])
        armor.cancel("prune")


def test_a_crash_between_the_image_and_the_git_checkpoint_leaves_no_claim_and_no_orphan(
        repo, engine, writable, cleanup_containers, monkeypatch):
    from armor_rx.sinks.git.checkpoints import CheckpointStore

    with Armor(repo, docker=True, sandbox=writable, sweep_interval=None) as armor:
        armor.create_task("crash")
        armor.start("crash")
        _out(armor, "crash", "echo 1 > /etc/one", user="root")
        real = CheckpointStore.commit_scan

        def dies(self, *args, **kwargs):
            raise RuntimeError("killed between docker commit and the git checkpoint")

        monkeypatch.setattr(CheckpointStore, "commit_scan", dies)
        with pytest.raises(RuntimeError):
            armor.git.checkpoint("crash", "never written")  # the workspace's own path, as the effect runs it
        monkeypatch.setattr(CheckpointStore, "commit_scan", real)
        orphans = _images(engine, "crash", armor)
        assert len(orphans) == 1  # the image was made ...
        assert armor.checkpoints("crash") == []  # ... and no checkpoint claims it
        # gc sweeps it (the task is active: an image no checkpoint names is an orphan).
        decisions = armor.sweep(now=True)
        assert any(d.name == orphans[0].labels["armor.snapshot"] and d.action == "removed" for d in decisions)
        assert _images(engine, "crash", armor) == []
        # The next checkpoint is whole.
        cp = armor.checkpoint("crash")
        assert list(cp.payload["holds"]) == ["worktree", "image"]
        assert [i.id for i in _images(engine, "crash", armor)] == [cp.payload["container"]["image"]]
        armor.cancel("crash")


def test_an_orphan_left_by_a_crash_goes_with_the_next_checkpoint(repo, engine, writable, cleanup_containers):
    with Armor(repo, docker=True, sandbox=writable, sweep_interval=None) as armor:
        armor.create_task("orphan")
        armor.start("orphan")
        # What a process killed after 'docker commit' leaves: an image no checkpoint names.
        with armor.docker.paused("orphan"):
            left = armor.docker.capture("orphan", "cp-1")
        cp = armor.checkpoint("orphan")
        assert cp.payload["container"]["snapshot"] != left["snapshot"]
        assert [i.id for i in _images(engine, "orphan", armor)] == [cp.payload["container"]["image"]]
        armor.cancel("orphan")


def test_volumes_are_saved_and_restored(repo, engine, writable, cleanup_containers):
    spec = dataclasses.replace(writable, allow_root=False, volumes=("/var/cache/data",))
    with Armor(repo, docker=True, sandbox=spec, sweep_interval=None) as armor:
        armor.create_task("vol")
        armor.start("vol")
        _out(armor, "vol", "cd /var/cache/data && mkdir -p sub && echo one > sub/f && echo keep > k")
        cp = armor.checkpoint("vol")
        assert list(cp.payload["holds"]) == ["worktree", "image", "volumes"]
        assert list(cp.payload["container"]["volumes"]) == ["/var/cache/data"]
        _out(armor, "vol", "cd /var/cache/data && echo two > sub/f && rm k && echo junk > new")
        armor.rollback("vol", cp.payload["checkpoint"])
        assert _out(armor, "vol", "cd /var/cache/data && cat sub/f k && ls") == "one\nkeep\nk\nsub\n"
        _out(armor, "vol", "echo writable > /var/cache/data/again")  # still the agent's after the restore
        saved = armor.git.state_dir / "docker" / "snapshots" / "vol"
        assert saved.is_dir()
        armor.cancel("vol")
        assert not saved.exists()


@pytest.mark.parametrize("path", ["relative", "/", "/a/../b", "/workspace/x", "/tmp/x", "/proc", "/a:b", "//x"])
def test_volume_paths_are_checked(path):
    with pytest.raises(ConfigError):
        SandboxSpec(volumes=(path,))


def test_volume_paths_are_normal():
    assert SandboxSpec(volumes=["/var/cache/data/"]).volumes == ("/var/cache/data",)


def test_a_process_killed_between_docker_commit_and_the_git_checkpoint(repo, engine, writable, cleanup_containers):
    """SIGKILL after the image is made and before the git commit names it: nothing claims it, gc removes it."""
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
from armor_rx import Armor
from armor_rx.sinks.docker import SandboxSpec
from armor_rx.sinks.git.checkpoints import CheckpointStore
spec = SandboxSpec(image={writable.image!r}, read_only=False, allow_root=True, wall_clock=120)
armor = Armor({str(repo)!r}, docker=True, sandbox=spec, sweep_interval=None).open()
armor.create_task("killed")
armor.start("killed")
assert armor.exec("killed", ["sh", "-c", "echo 1 > /etc/one"], user="root").payload["exit_code"] == 0
CheckpointStore.commit_scan = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
armor.checkpoint("killed", "never")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    with Armor(repo, docker=True, sandbox=writable, sweep_interval=None) as armor:
        orphans = _images(engine, "killed", armor)
        assert len(orphans) == 1 and orphans[0].labels["armor.checkpoint"] == "cp-1"
        assert armor.checkpoints("killed") == []  # no record claims the image
        requested = [e for e in armor.history(kind="checkpoint.requested", task_id="killed")]
        assert requested, "the checkpoint request was logged before its effects (write-ahead)"
        armor.sweep(now=True)
        assert _images(engine, "killed", armor) == []
        assert armor.task("killed").state.value == "interrupted"


def test_resume_at_a_checkpoint_starts_from_its_snapshot(repo, engine, writable, cleanup_containers):
    with Armor(repo, docker=True, sandbox=writable, sweep_interval=None) as armor:
        armor.create_task("res")
        armor.start("res")
        _out(armor, "res", "echo 1 > /etc/one", user="root")
        cp = armor.checkpoint("res").payload["checkpoint"]
        _out(armor, "res", "echo 2 > /etc/two", user="root")
        armor.interrupt("res", "the test stops it")
        armor.resume("res", checkpoint=cp)
        assert _out(armor, "res", "ls /etc/one /etc/two 2>/dev/null; true") == "/etc/one\n"
        armor.cancel("res")


def test_a_session_opened_later_still_saves_the_container(repo, engine, writable, sandbox, cleanup_containers):
    """The service restarted since the task started: closing interrupted the task with a final checkpoint that
    saved the container, and the next session (whose own default is a read-only root) resumes it with the
    writable root its start asked for, so its checkpoints save the container too."""
    with Armor(repo, docker=True, sandbox=writable, sweep_interval=None) as armor:
        armor.create_task("later")
        armor.start("later")
        assert _out(armor, "later", "touch /home/agent/before && echo ok") == "ok\n"
    with Armor(repo, docker=True, sandbox=sandbox, sweep_interval=None) as armor:  # default: read-only
        final = [e for e in armor.history(task_id="later") if e.kind == "checkpoint.created"][-1].payload
        assert list(final["holds"]) == ["worktree", "image"]  # the final checkpoint of the graceful stop
        armor.resume("later", checkpoint=final["checkpoint"])
        assert _out(armor, "later", "ls /home/agent/before && echo ok").endswith("ok\n")  # from the snapshot
        cp = armor.checkpoint("later").payload
        assert list(cp["holds"]) == ["worktree", "image"]
        armor.rollback("later", cp["checkpoint"])
        assert _out(armor, "later", "touch /home/agent/x && echo ok") == "ok\n"  # still a writable root
        armor.cancel("later")


def test_gc_without_a_service_removes_unnamed_snapshots(repo, engine, writable, cleanup_containers):
    import subprocess
    import sys

    import orjson

    from armor_rx.testing import crash

    with Armor(repo, docker=True, sandbox=writable, sweep_interval=None) as armor:
        armor.create_task("gc")
        armor.start("gc")
        kept = armor.checkpoint("gc").payload["container"]["image"]
        with armor.docker.paused("gc"):
            left = armor.docker.capture("gc", "cp-2")  # as a process killed before the git commit leaves it
        crash(armor)  # killed then: no graceful stop (its final checkpoint would sweep the unnamed snapshot itself)
    done = subprocess.run([sys.executable, "-m", "armor_rx", "gc", "--repo", str(repo), "--now", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = orjson.loads(done.stdout)
    assert any(r["name"] == left["snapshot"] and r["action"] == "removed" for r in rows), rows
    with Armor(repo, docker=True, sandbox=writable, sweep_interval=None) as armor:
        assert [i.id for i in _images(engine, "gc", armor)] == [kept]  # the named one stays
        armor.cancel("gc")
        assert _images(engine, "gc", armor) == []
