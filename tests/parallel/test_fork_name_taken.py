"""A fork whose chosen name another client takes mid-fork is never left half made (real git).

Deterministic: the name is taken right after the fork chose its names (the
choosing function is wrapped), as another client's ``create_task`` landing
between the two steps would.
"""

import pytest

import armor_rx.session.git as session_git
from armor_rx import Armor, State
from armor_rx.errors import ForkNameTaken, TaskExists


@pytest.fixture
def forked(repo):
    with Armor(repo) as armor:
        armor.create_task("solve")
        armor.start("solve")
        (armor.worktree("solve") / "plan.txt").write_text("the plan\n")
        cp = armor.checkpoint("solve", "plan").payload["checkpoint"]
        yield armor, cp


def _taken_after_choosing(monkeypatch, armor, index):
    """Another client creates the ``index``-th chosen name once the fork has chosen them (first fork only)."""
    real = session_git.fork_names
    calls = []

    def choose(*args, **kwargs):
        chosen = real(*args, **kwargs)
        if not calls:
            armor.create_task(chosen[index], metadata={"by": "another client"})
        calls.append(chosen)
        return chosen

    monkeypatch.setattr(session_git, "fork_names", choose)
    return calls


def test_a_given_name_taken_mid_fork_undoes_the_fork(forked, monkeypatch, repo, git):
    armor, cp = forked
    _taken_after_choosing(monkeypatch, armor, 1)
    with pytest.raises(ForkNameTaken) as refused:
        armor.fork("solve", cp, names=["try-a", "try-b", "try-c"])
    assert isinstance(refused.value, TaskExists) and refused.value.task_id == "try-b"
    message = str(refused.value)
    assert "\n" not in message and "'try-b'" in message and "try-a" in message and "other names" in message
    # The task registered before the collision was cancelled before it started; the other client's task is untouched.
    assert armor.task("try-a").state is State.CANCELLED
    assert armor.task("try-b").state is State.PENDING and armor.task("try-b").metadata["by"] == "another client"
    assert "try-c" not in {t.task_id for t in armor.tasks()}
    assert not list(armor.history(kind="task.start.requested", task_id="try-a"))
    branches = git(repo, "branch", "--list", "task/*")
    assert "try-" not in branches
    assert "try-" not in git(repo, "worktree", "list")
    git(repo, "fsck", "--strict")


def test_a_counted_fork_takes_the_next_free_number_when_one_is_taken_mid_fork(forked, monkeypatch, repo, git):
    armor, cp = forked
    _taken_after_choosing(monkeypatch, armor, 1)
    started = armor.fork("solve", cp, into=3)
    names = [e.task_id for e in started]
    assert names == ["solve-1", "solve-3", "solve-4"]
    for name in names:
        assert armor.task(name).state is State.RUNNING
        assert (armor.worktree(name) / "plan.txt").read_text() == "the plan\n"
        assert git(repo, "show", f"task/{name}:plan.txt") == "the plan\n"
    assert armor.task("solve-2").state is State.PENDING  # the other client's, not started by the fork
    assert "task/solve-2" not in git(repo, "branch", "--list", "task/*")
    git(repo, "fsck", "--strict")


def test_a_fork_whose_start_fails_leaves_no_later_fork_pending(forked, repo, git):
    from armor_rx.errors import Vetoed
    from armor_rx.operators import guard

    armor, cp = forked

    def no_second(event):
        return "not this one" if event.task_id == "solve-2" else None

    armor.use(guard(no_second, kinds="task.start.requested"), stage="before")
    with pytest.raises(Vetoed):
        armor.fork("solve", cp, into=3)
    assert armor.task("solve-1").state is State.RUNNING  # started before the failure: a task of its own
    assert armor.task("solve-3").state is State.CANCELLED  # registered, never started
    assert "task/solve-3" not in git(repo, "branch", "--list", "task/*")
    git(repo, "fsck", "--strict")
