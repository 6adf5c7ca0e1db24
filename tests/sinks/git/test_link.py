"""A task worktree's .git link and its admin directory, verified before armor works there (issue 13 item 1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from armor_rx.errors import WorktreeLinkChanged
from armor_rx.sinks.git.link import verify_link

from .conftest import started


def _common(ws) -> Path:
    return Path(ws.repo.commondir())


def test_an_intact_link_names_its_admin_directory(ws):
    worktree = started(ws, "t1")
    admin = verify_link("t1", worktree, _common(ws))
    assert admin.parent == _common(ws) / "worktrees" and (admin / "gitdir").exists()


def _planted_gitdir(worktree: Path) -> Path:
    evil = worktree / "evil"
    (evil / "refs").mkdir(parents=True)
    (evil / "objects").mkdir()
    (evil / "HEAD").write_text("ref: refs/heads/main\n")
    (evil / "config").write_text("[core]\n\tfsmonitor = touch /tmp/armor-link-test-pwned\n")
    return evil


TAMPERS = {
    "rewritten": lambda wt, admin: (wt / ".git").write_text(f"gitdir: {_planted_gitdir(wt)}\n"),
    "relative": lambda wt, admin: (wt / ".git").write_text("gitdir: evil\n"),
    "missing": lambda wt, admin: (wt / ".git").unlink(),
    "a directory": lambda wt, admin: ((wt / ".git").unlink(), _planted_gitdir(wt).rename(wt / ".git")),
    "a symlink": lambda wt, admin: ((wt / ".git").unlink(), os.symlink(_planted_gitdir(wt), wt / ".git")),
    "hard-linked": lambda wt, admin: os.link(wt / ".git", wt / "alias"),
    "another owner": lambda wt, admin: os.chown(wt / ".git", 61000, 61000),
    "garbage": lambda wt, admin: (wt / ".git").write_bytes(b"\xff\xfe" * 10),
    "huge": lambda wt, admin: (wt / ".git").write_text("gitdir: " + "/x" * 5000 + "\n"),
    "outside the admin root": lambda wt, admin: (wt / ".git").write_text(f"gitdir: {admin.parent.parent}\n"),
    "admin is a symlink": lambda wt, admin: (os.rename(admin, admin.with_name("moved")),
                                             os.symlink(admin.with_name("moved"), admin)),
    "admin points elsewhere": lambda wt, admin: (admin / "gitdir").write_text("/tmp/elsewhere/.git\n"),
    "admin names another repository": lambda wt, admin: (admin / "commondir").write_text("/tmp\n"),
    "admin lacks commondir": lambda wt, admin: (admin / "commondir").unlink(),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_every_change_to_the_link_or_its_admin_directory_is_refused(ws, tamper):
    if tamper == "another owner" and os.geteuid() != 0:
        pytest.skip("giving a file to another uid needs root")
    worktree = started(ws, "t1")
    admin = verify_link("t1", worktree, _common(ws))
    TAMPERS[tamper](worktree, admin)
    with pytest.raises(WorktreeLinkChanged) as info:
        verify_link("t1", worktree, _common(ws))
    assert "t1" in str(info.value) and str(worktree) in str(info.value)
    assert "\n" not in str(info.value)  # one line a person can act on
    assert not Path("/tmp/armor-link-test-pwned").exists()


def test_the_git_effect_refuses_and_records_a_changed_link_before_any_git_work(ws, events):
    from armor_rx.model.events import TaskEvent
    from armor_rx.pipeline.effects import EffectContext
    from armor_rx.sinks.git import GitEffect

    worktree = started(ws, "t1")
    (worktree / "work.txt").write_text("w\n")
    (worktree / ".git").write_text(f"gitdir: {_planted_gitdir(worktree)}\n")
    effect = GitEffect(ws)
    emitted: list[tuple[str, dict]] = []
    for kind, payload in (("checkpoint.requested", {}), ("checkpoint.restore.requested", {"checkpoint": "cp-1"}),
                          ("task.complete.requested", {"merge": "ff"}), ("task.resume.requested", {})):
        request = TaskEvent.new(kind, "t1", payload)
        ctx = EffectContext(request=request, task=None, emit=lambda k, p: emitted.append((k, dict(p))))
        with pytest.raises(WorktreeLinkChanged):
            effect.apply(ctx)
    assert [k for k, _ in emitted] == ["git.link.changed"] * 4
    assert [p["request"] for _, p in emitted] == [
        "checkpoint.requested", "checkpoint.restore.requested", "task.complete.requested", "task.resume.requested"]
    assert ws.checkpoints("t1") == []  # nothing was checkpointed
    assert "checkpoint.created" not in events.kinds() and "git.commit.created" not in events.kinds()


def test_removing_a_worktree_whose_link_changed_is_refused_and_keeps_it(ws):
    """Removal reads the worktree's HEAD and index through its .git: a link the agent changed is refused first,
    and the worktree (the agent's work) is left for a person to look at."""
    from armor_rx.sinks.git.cleanup import remove_worktree

    worktree = started(ws, "t1")
    (worktree / "work.txt").write_text("w\n")
    (worktree / ".git").write_text(f"gitdir: {_planted_gitdir(worktree)}\n")
    with pytest.raises(WorktreeLinkChanged):
        remove_worktree(ws, "t1")
    assert (worktree / "work.txt").read_text() == "w\n"
    assert not Path("/tmp/armor-link-test-pwned").exists()
