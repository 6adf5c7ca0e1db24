"""conflict.detected / conflict.resolved between active tasks, on real repositories."""

import base64
import os
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from armor_rx import Armor
from armor_rx.model.events import to_plain
from armor_rx.pipeline.effects import EffectContext


def wait_for(armor, kind, count=1, timeout=30.0, **match):
    """The payloads (plain JSON values) of the first ``count`` events of ``kind`` (polls the log)."""
    deadline = time.monotonic() + timeout
    while True:
        armor.wait_idle()
        found = [Seen(e.task_id, to_plain(e.payload)) for e in armor.history(kind=kind)]
        found = [e for e in found if all(e.payload.get(k) == v for k, v in match.items())]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"no {kind} {match} within {timeout}s: {found}"
        time.sleep(0.05)


def put(path, text):
    """Write ``path`` atomically: another task's watcher may look at any moment (never at half a file)."""
    tmp = path.parent.parent / f".{path.name}.put-tmp"  # outside the worktree: never scanned
    tmp.write_text(text)
    os.replace(tmp, path)


class Seen:
    def __init__(self, task_id, payload):
        self.task_id, self.payload = task_id, payload


def settle(armor):
    """Let the watcher look at everything queued (no new events for a while)."""
    last = -1
    for _ in range(100):
        armor.wait_idle()
        time.sleep(0.3)
        seq = armor.log.last_seq
        if seq == last:
            return
        last = seq


def start(armor, *names):
    for name in names:
        armor.create_task(name)
        armor.start(name)


def test_same_lines_overlap_detected_at_checkpoints(repo, edit, git):
    with Armor(repo) as armor:
        start(armor, "a", "b")
        edit(armor.worktree("a") / "app.py", 5, "a's line 5")
        armor.checkpoint("a")
        edit(armor.worktree("b") / "app.py", 5, "b's line 5")
        armor.checkpoint("b")
        detected = wait_for(armor, "conflict.detected")
        p = detected[0].payload
        # Seen at b's checkpoint, or already at a's if the watcher looked after b's edit.
        assert detected[0].task_id in ("a", "b") and p["seen_at"] == detected[0].task_id and p["tasks"] == ["a", "b"]
        assert p["paths"] == ["app.py"] and p["overlap"] is True
        assert p["files"][0]["lines"] == [[5, 5]] and p["files"][0]["why"] == "both changed the same lines"
        assert armor.conflicts()[0]["tasks"] == ["a", "b"]
        # Further boundaries with the same conflict say nothing new.
        armor.checkpoint("a")
        armor.checkpoint("b")
        settle(armor)
        assert len(list(armor.history(kind="conflict.detected"))) == 1
        assert armor.task("a").state.value == "running"  # detected before completion
    git(repo, "fsck", "--strict")


def test_different_lines_do_not_overlap(repo, edit):
    with Armor(repo) as armor:
        start(armor, "a", "b")
        edit(armor.worktree("a") / "app.py", 3, "a's line 3")
        (armor.worktree("a") / "only-a.txt").write_text("mine\n")
        armor.checkpoint("a")
        edit(armor.worktree("b") / "app.py", 30, "b's line 30")
        armor.checkpoint("b")
        p = wait_for(armor, "conflict.detected")[0].payload
        assert p["paths"] == ["app.py"] and p["overlap"] is False
        assert p["files"][0]["lines"] == []


def test_resolved_when_reverted_or_ended_then_detected_again(repo, edit):
    with Armor(repo) as armor:
        start(armor, "a", "b", "c")
        original = (repo / "app.py").read_text()
        for name in ("a", "b"):
            edit(armor.worktree(name) / "app.py", 1, f"{name} was here")
            armor.checkpoint(name)
        wait_for(armor, "conflict.detected")
        # b reverts: the conflict goes away.
        put(armor.worktree("b") / "app.py", original)
        armor.checkpoint("b")
        resolved = wait_for(armor, "conflict.resolved")[0].payload
        assert resolved["tasks"] == ["a", "b"] and resolved["paths"] == ["app.py"] and resolved["remaining"] == []
        assert armor.conflicts() == []
        # c edits the same file: a new conflict; then a is cancelled: resolved again.
        edit(armor.worktree("c") / "app.py", 1, "c was here")
        armor.checkpoint("c")
        assert wait_for(armor, "conflict.detected", 2)[1].payload["tasks"] == ["a", "c"]
        armor.cancel("a")
        ended = wait_for(armor, "conflict.resolved", 2)[1].payload
        assert ended["tasks"] == ["a", "c"] and "ended" in ended["reason"]


class LocalExec:
    """A test effect that runs commands on the host in the task's worktree (no docker), as exec does."""

    name = "local-exec"
    kinds = "exec.requested"

    def __init__(self) -> None:
        self.armor: Armor | None = None

    def apply(self, ctx: EffectContext) -> Mapping[str, Any] | None:
        assert self.armor is not None and ctx.request.task_id is not None
        done = subprocess.run(ctx.request.payload["command"], cwd=self.armor.worktree(ctx.request.task_id),
                              capture_output=True, check=False)
        ctx.emit("exec.exited", {"exit_code": done.returncode})
        return {"exit_code": done.returncode}


def test_detected_at_exec_boundaries(repo):
    effect = LocalExec()
    with Armor(repo, effects=[effect]) as armor:
        effect.armor = armor
        start(armor, "a", "b")
        armor.request("a", "exec.requested", {"command": ["sh", "-c", "echo A > new.txt"]}).result(30)
        armor.request("b", "exec.requested", {"command": ["sh", "-c", "echo B > new.txt"]}).result(30)
        p = wait_for(armor, "conflict.detected")[0].payload
        assert p["paths"] == ["new.txt"] and p["overlap"] is True
        assert [c.kind for c in armor.history(kind="checkpoint.created")] == []  # seen without any checkpoint


def test_same_change_is_reported_without_overlap(repo):
    with Armor(repo) as armor:
        start(armor, "a", "b")
        for name in ("a", "b"):
            put(armor.worktree(name) / "README.md", "same fix\n")
            armor.checkpoint(name)
        f = wait_for(armor, "conflict.detected")[0].payload["files"][0]
        assert f["identical"] is True and f["overlap"] is False


def test_off_switch(repo):
    with Armor(repo, detect_conflicts=False) as armor:
        start(armor, "a", "b")
        for name in ("a", "b"):
            (armor.worktree(name) / "README.md").write_text(f"{name}\n")
            armor.checkpoint(name)
        settle(armor)
        assert list(armor.history(kind="conflict.detected")) == [] and armor.conflicts() == []


def test_a_reopened_session_remembers_what_it_announced(repo, edit):
    with Armor(repo) as armor:
        start(armor, "a", "b", "c")
        for name in ("a", "b", "c"):
            edit(armor.worktree(name) / "app.py", 7, f"{name} 7")
            armor.checkpoint(name)
        wait_for(armor, "conflict.detected", 3)
        settle(armor)
        b_tree = armor.worktree("b")
    (b_tree / "app.py").write_text((repo / "app.py").read_text())  # b reverts while no session is open
    with Armor(repo) as armor:
        armor.checkpoint("a")
        resolved = wait_for(armor, "conflict.resolved")[0].payload
        assert resolved["tasks"] == ["a", "b"]
        settle(armor)
        assert len(list(armor.history(kind="conflict.detected"))) == 3  # a/c not announced again
        # b was looked at out of turn (a needed it), so its pair with c is settled too, without a scan of c.
        assert [c["tasks"] for c in armor.conflicts()] == [["a", "c"]]
        pairs = sorted(tuple(e.payload["tasks"]) for e in armor.history(kind="conflict.resolved"))
        assert pairs == [("a", "b"), ("b", "c")]


def test_tasks_from_different_bases_compare_against_their_merge_base(repo, edit, git):
    with Armor(repo) as armor:
        start(armor, "a")
        (repo / "README.md").write_text("moved on\n")  # main moves on before b starts
        git(repo, "commit", "-qam", "main moves")
        start(armor, "b")
        edit(armor.worktree("a") / "app.py", 3, "a 3")
        armor.checkpoint("a")
        edit(armor.worktree("b") / "app.py", 33, "b 33")
        put(armor.worktree("b") / "new.txt", "b\n")
        armor.checkpoint("b")
        p = wait_for(armor, "conflict.detected")[0].payload
        assert p["paths"] == ["app.py"] and p["overlap"] is False
        # Both add the same new file differently: no common base for it, so every line overlaps.
        put(armor.worktree("a") / "new.txt", "a\n")
        armor.checkpoint("a")
        second = wait_for(armor, "conflict.detected", 2)[1].payload
        assert second["new_paths"] == ["new.txt"]
        assert {f["path"]: f["overlap"] for f in second["files"]} == {"app.py": False, "new.txt": True}


def test_checkpoints_still_count_the_bytes_the_watcher_stored(repo):
    with Armor(repo) as armor:
        start(armor, "a", "b")
        put(armor.worktree("a") / "big.txt", base64.b64encode(os.urandom(30_000)).decode())  # ~30 kB compressed
        # The watcher's look (here made directly) stores the blob before the checkpoint does.
        armor.assembly.conflicts.check("a")
        armor.checkpoint("a")
        # Charged to this checkpoint, not lost (it would be a few hundred bytes of trees otherwise).
        assert armor.checkpoints("a")[-1].bytes_added >= 25_000


def test_a_task_alone_is_not_scanned(repo):
    with Armor(repo) as armor:
        start(armor, "solo")
        put(armor.worktree("solo") / "README.md", "mine\n")
        armor.checkpoint("solo")
        settle(armor)
        assert armor.assembly.conflicts._changes == {}
        start(armor, "other")
        put(armor.worktree("other") / "README.md", "theirs\n")
        armor.checkpoint("other")
        assert wait_for(armor, "conflict.detected")[0].payload["tasks"] == ["other", "solo"]
