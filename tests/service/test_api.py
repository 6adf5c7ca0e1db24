"""One API test suite, run against both transports: the in-process Armor and connect()."""

from __future__ import annotations

import threading

import pytest

from armor_rx import State, TaskEvent
from armor_rx.errors import (
    BadRequest,
    EffectFailed,
    IllegalTransition,
    InvalidTaskId,
    TaskExists,
    TaskNotFound,
)


def test_a_task_from_creation_to_merge(api, repo, git):
    record = api.create_task("fix-login", metadata={"size": "small"})
    assert record.state is State.PENDING and record.metadata["size"] == "small"
    started = api.start("fix-login")
    assert isinstance(started, TaskEvent) and started.kind == "task.started"
    work = api.worktree("fix-login")
    (work / "login.py").write_text("def login():\n    return True\n")
    first = api.checkpoint("fix-login", "works").payload["checkpoint"]
    (work / "login.py").write_text("broken\n")
    (work / "README.md").unlink()
    diff = api.diff("fix-login", first)
    assert {(c.path, c.status) for c in diff.files} == {("login.py", "modified"), ("README.md", "deleted")}
    assert "-    return True" in diff.patch
    api.rollback("fix-login", first)
    assert (work / "login.py").read_text() == "def login():\n    return True\n" and (work / "README.md").exists()
    assert [c.id for c in api.checkpoints("fix-login")][0] == first
    assert [c.path for c in api.diff("fix-login").files] == ["login.py"]
    done = api.complete("fix-login", message="Fix login", merge="ff")
    assert done.payload["merged"] is True
    assert api.task("fix-login").state is State.COMPLETED
    assert "Fix login" in git(repo, "log", "--format=%s", "main")
    git(repo, "fsck", "--strict")
    kinds = [e.kind for e in api.history(task_id="fix-login")]
    assert kinds[0] == "task.created" and "checkpoint.restored" in kinds and kinds[-1] == "task.completed"


def test_errors_are_the_same_types_with_the_same_messages(api):
    with pytest.raises(TaskNotFound) as missing:
        api.task("nosuch")
    assert "no task 'nosuch'" in str(missing.value) and "armor-rx tasks" in str(missing.value)
    with pytest.raises(InvalidTaskId):
        api.create_task("../escape")
    api.create_task("t1")
    with pytest.raises(TaskExists):
        api.create_task("t1")
    with pytest.raises(IllegalTransition) as illegal:
        api.complete("t1")
    assert "cannot go from 'pending'" in str(illegal.value)
    api.start("t1")
    with pytest.raises(EffectFailed) as no_cp:
        api.rollback("t1", "cp-99")
    assert "armor-rx checkpoints t1" in str(no_cp.value)
    # A refused request leaves no trace but its error.
    assert [e.kind for e in api.history(task_id="t1")].count("task.completed") == 0


def test_fail_cancel_interrupt_and_resume(api):
    for name in ("a", "b", "c"):
        api.create_task(name)
        api.start(name)
    api.fail("a", "the tests do not pass")
    assert api.task("a").state is State.FAILED and api.task("a").reason == "the tests do not pass"
    api.cancel("b", "not needed")
    assert api.task("b").state is State.CANCELLED
    api.interrupt("c", "laptop closed")
    assert api.task("c").state is State.INTERRUPTED
    api.resume("c")
    assert api.task("c").state is State.RUNNING
    assert [t.task_id for t in api.tasks()] == ["a", "b", "c"]


def test_branch_from_a_checkpoint(api, repo):
    api.create_task("src")
    api.start("src")
    (api.worktree("src") / "idea.txt").write_text("first idea\n")
    cp = api.checkpoint("src").payload["checkpoint"]
    api.branch_from("src", cp, "other-way")
    assert (api.worktree("other-way") / "idea.txt").read_text() == "first idea\n"
    assert api.task("other-way").state is State.RUNNING


def test_emit_history_and_events_with_replay(api):
    api.create_task("t1")
    seen: list[TaskEvent] = []
    got = threading.Event()

    def on_next(event):
        seen.append(event)
        if event.kind == "note.added" and event.payload.get("n") == 4:
            got.set()

    sub = api.events("note.*", task_id="t1", from_seq=1).subscribe(on_next)
    try:
        for n in range(5):
            api.emit("t1", "note.added", {"n": n})
        assert got.wait(10)
    finally:
        sub.dispose()
    notes = [e.payload["n"] for e in seen if e.kind == "note.added"]
    assert notes == [0, 1, 2, 3, 4]
    seqs = [e.seq for e in seen]
    assert seqs == sorted(set(seqs))  # no duplicates, in order
    assert [e.payload["n"] for e in api.history(task_id="t1", kind="note.*")] == [0, 1, 2, 3, 4]


def test_dead_letters_and_exec_without_containers(api):
    assert api.dead_letters() == []
    api.create_task("t1")
    api.start("t1")
    with pytest.raises(Exception) as refused:
        api.exec("t1", ["true"])
    assert "runs no containers" in str(refused.value)


def test_the_remote_refuses_what_the_wire_cannot_carry(repo, no_docker):
    from armor_rx import connect

    with connect(repo) as remote:
        with pytest.raises(BadRequest):
            remote._send(remote._ops.lifecycle("t1", "rollback", {"checkpoint": 3}))


def test_emit_refuses_requests_and_lifecycle_kinds(api):
    from armor_rx.errors import ConfigError

    api.create_task("t1")
    api.start("t1")
    for kind in ("task.cancel.requested", "exec.requested", "task.completed", "task.started"):
        with pytest.raises(ConfigError) as refused:
            api.emit("t1", kind, {})
        assert "armor_rx's own" in str(refused.value)
    assert api.task("t1").state is State.RUNNING
    assert not [e for e in api.history(task_id="t1") if e.kind in ("task.cancel.requested", "task.completed")]


def test_branch_from_an_unknown_checkpoint_makes_nothing(api):
    api.create_task("src")
    api.start("src")
    with pytest.raises(Exception) as refused:
        api.branch_from("src", "cp-99", "never")
    assert "cp-99" in str(refused.value)
    with pytest.raises(TaskNotFound):
        api.task("never")
