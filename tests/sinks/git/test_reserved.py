"""armor's state directory is reserved in task trees the way '.git' is (issue 13 item 2).

The attack: an agent makes '.armor/' in its worktree with a planted file and a
file named like a log segment, then the task is checkpointed and completed.
Nothing of it may reach the user's branch or the real state directory, and the
log must stay readable.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from armor_rx import Armor
from armor_rx.sinks.git import GitWorkspace
from armor_rx.sinks.git.checkpoints import CheckpointStore
from armor_rx.sinks.git.reserved import Reserved

from .conftest import Events, fsck, git, started

SEGMENT = "events-000000000001.jsonl"
FORGED = b'{"v":1,"seq":1,"kind":"task.completed","task_id":"forged","payload":{}}\n'


def _plant(worktree: Path) -> None:
    (worktree / ".armor" / "events").mkdir(parents=True)
    (worktree / ".armor" / "planted.txt").write_text("planted by the agent\n")
    (worktree / ".armor" / "events" / SEGMENT).write_bytes(FORGED)
    (worktree / "sub" / ".ARMOR").mkdir(parents=True)  # any depth, any case
    (worktree / "sub" / ".ARMOR" / "x").write_text("x\n")
    (worktree / "work.txt").write_text("real work\n")


@pytest.mark.parametrize("merge", ["none", "ff", "merge"])
def test_a_planted_state_directory_reaches_neither_the_branch_nor_the_state_dir(repo: Path, merge: str) -> None:
    state = repo / ".armor"
    with Armor(repo) as armor:
        armor.create_task("evil")
        armor.start("evil")
        worktree = armor.worktree("evil")
        _plant(worktree)
        cp = armor.checkpoint("evil").payload
        if merge == "merge":
            # The user's branch moves on, so the completion makes a real merge commit.
            (repo / "user.txt").write_text("the user's own work\n")
            git(repo, "add", "user.txt")
            git(repo, "commit", "-q", "-m", "user work")
        done = armor.complete("evil", message="done", merge=merge).payload
        assert done["merged"] is (merge != "none")
    assert cp["checkpoint"] == "cp-1"
    for ref in ("task/evil", "main", "refs/armor/checkpoints/evil"):
        names = git(repo, "ls-tree", "-r", "--name-only", ref).splitlines()
        assert "work.txt" in names or ref == "main" and merge == "none"
        assert not [n for n in names if ".armor" in n.lower()], (ref, names)
    assert not (state / "planted.txt").exists()
    assert not (state / "events" / SEGMENT).exists() or FORGED not in (state / "events" / SEGMENT).read_bytes()
    assert not (repo / "sub").exists() or not (repo / "sub" / ".ARMOR").exists()
    fsck(repo)
    # The log reads back whole, with nothing forged in it.
    with Armor(repo) as armor:
        assert [t.task_id for t in armor.tasks()] == ["evil"]
        assert all(e.task_id != "forged" for e in armor.history())


def test_the_checkpoint_records_why_the_reserved_paths_were_left_out(ws: GitWorkspace, events: Events) -> None:
    path = started(ws, "t")
    _plant(path)
    cp = ws.checkpoint("t")
    left = dict(cp.left_out)
    assert left[".armor"] == "reserved for armor's state directory" and left["sub/.ARMOR"] == left[".armor"]
    assert cp.left_out_count == 2
    payload = events.of("checkpoint.created")[-1]
    assert payload["left_out"][".armor"] and payload["left_out_count"] == 2
    # The record survives a re-read from git (trailers), as every checkpoint field does.
    assert dict(ws.checkpoints("t")[-1].left_out) == left


def test_a_state_directory_under_another_name_in_the_repository_is_reserved_too(repo: Path, tmp_path: Path) -> None:
    with GitWorkspace(repo, repo / "build" / "state") as ws:
        path = started(ws, "t")
        (path / "build" / "state").mkdir(parents=True)
        (path / "build" / "state" / "planted").write_text("x\n")
        (path / "build" / "kept.txt").write_text("kept\n")
        ws.complete("t", "done", merge="ff")
    names = git(repo, "ls-tree", "-r", "--name-only", "main").splitlines()
    assert "build/kept.txt" in names and "build/state/planted" not in names
    assert not (repo / "build" / "state" / "planted").exists()


def test_files_the_users_history_tracks_under_the_name_are_carried_over_not_deleted(
    repo: Path, tmp_path: Path
) -> None:
    (repo / ".armor").mkdir()
    (repo / ".armor" / "tool.cfg").write_text("the user's own file\n")
    git(repo, "add", "-f", ".armor/tool.cfg")
    git(repo, "commit", "-q", "-m", "a file of another tool")
    with GitWorkspace(repo, tmp_path / "state") as ws:
        path = started(ws, "t")
        assert not (path / ".armor").exists()  # never checked out into a task tree
        (path / "work.txt").write_text("work\n")
        done = ws.complete("t", "done", merge="ff")
        assert done.merged and done.committed
        diff = ws.diff("t")
        assert [f.path for f in diff.files] == ["work.txt"]
    assert git(repo, "show", "main:.armor/tool.cfg") == "the user's own file\n"
    fsck(repo)


def _old_style_checkpoint(ws: GitWorkspace, task_id: str, path: Path) -> str:
    """A checkpoint holding '.armor/', as one made before the name was reserved would."""
    record = ws.records.require(task_id)
    old = CheckpointStore(ws.repo, ws.git_dir / "cache-old", ws.author, ws.policy, owner=ws.state_id,
                          reserved=Reserved(names=frozenset()))
    return old.create(task_id, path, "old", ws._head(record)).id


def test_restore_and_branching_never_write_a_reserved_path_from_an_old_checkpoint(
    ws: GitWorkspace, repo: Path, events: Events
) -> None:
    path = started(ws, "t")
    _plant(path)
    old = _old_style_checkpoint(ws, "t", path)
    assert ".armor/planted.txt" in git(repo, "ls-tree", "-r", "--name-only", f"refs/armor/checkpoints/t")
    for p in (path / ".armor", path / "sub"):
        os.system(f"rm -rf '{p}'")
    ws.restore("t", old)
    assert not (path / ".armor").exists() and (path / "work.txt").exists()
    restored = events.of("checkpoint.restored")[-1]
    assert ".armor/planted.txt" in restored["left_out"] and restored["left_out_count"] == 3
    branch = ws.branch_from_checkpoint(old, "t2", source_task_id="t")
    names = git(repo, "ls-tree", "-r", "--name-only", branch).splitlines()
    assert "work.txt" in names and not [n for n in names if ".armor" in n.lower()]


def test_a_merge_that_would_write_a_reserved_path_is_refused(ws: GitWorkspace, repo: Path, events: Events) -> None:
    path = started(ws, "t")
    # Something other than armor put '.armor/' on the task branch (an old checkpoint, a hand-made commit).
    git(path, "-c", "core.hooksPath=/dev/null", "add", "-f", "README.md")
    (path / ".armor").mkdir()
    (path / ".armor" / "planted").write_text("x\n")
    git(path, "add", "-f", ".armor/planted")
    git(path, "commit", "-q", "-m", "sneak")
    done = ws.complete("t", "done", merge="ff")
    assert not done.merged and done.reason == "reserved-path" and done.conflicts == (".armor/planted",)
    assert ".armor" not in git(repo, "ls-tree", "--name-only", "main")
    assert not (repo / ".armor").exists()
    assert events.of("git.merge.conflict")[-1]["reason"] == "reserved-path"
