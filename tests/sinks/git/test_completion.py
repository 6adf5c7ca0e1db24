"""Completion: commit to the task branch, fast-forward / three-way merge / conflict."""

from __future__ import annotations

from pathlib import Path

import pytest

from armor_rx.errors import GitError
from armor_rx.sinks.git import GitWorkspace

from .conftest import Events, git, started


def test_commit_only(ws: GitWorkspace, repo: Path, events: Events) -> None:
    path = started(ws, "done")
    (path / "feature.txt").write_text("feature\n")
    (path / "README.md").unlink()
    result = ws.complete("done", "Add feature")
    assert result.committed and not result.merged
    assert git(repo, "log", "-1", "--format=%s|%an|%ae", "task/done").strip() == "Add feature|Armor Test|armor@example.com"
    assert git(repo, "ls-tree", "-r", "--name-only", "task/done").split() == ["feature.txt", "link", "run.sh", "src/app.py"]
    assert git(path, "status", "--porcelain") == ""  # index matches the new commit
    assert git(repo, "rev-parse", "main").strip() != result.commit
    assert events.of("git.commit.created")[0]["commit"] == result.commit
    again = ws.complete("done", "nothing new")
    assert not again.committed and again.commit == result.commit


def test_fast_forward_updates_clean_user_checkout(ws: GitWorkspace, repo: Path, events: Events) -> None:
    path = started(ws, "ff")
    (path / "ff.txt").write_text("ff\n")
    result = ws.complete("ff", "ff work", merge="ff")
    assert result.merged and result.reason == "fast-forward"
    assert git(repo, "rev-parse", "main").strip() == result.commit
    assert (repo / "ff.txt").read_text() == "ff\n"
    assert git(repo, "status", "--porcelain") == ""
    assert events.of("git.merge.completed")[0]["reason"] == "fast-forward"


def test_ff_refused_when_diverged(ws: GitWorkspace, repo: Path, events: Events) -> None:
    path = started(ws, "noff")
    (repo / "other.txt").write_text("main moved\n")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-q", "-m", "main moves")
    main_before = git(repo, "rev-parse", "main").strip()
    (path / "mine.txt").write_text("mine\n")
    result = ws.complete("noff", "mine", merge="ff")
    assert not result.merged and result.reason == "not-fast-forward"
    assert git(repo, "rev-parse", "main").strip() == main_before
    assert events.of("git.merge.conflict")[0]["reason"] == "not-fast-forward"


def test_three_way_merge(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "three")
    (repo / "other.txt").write_text("main moved\n")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-q", "-m", "main moves")
    (path / "mine.txt").write_text("mine\n")
    result = ws.complete("three", "mine", merge="merge")
    assert result.merged and result.reason == "merge"
    assert git(repo, "rev-parse", "main").strip() == result.merge_commit
    parents = git(repo, "log", "-1", "--format=%P", "main").split()
    assert len(parents) == 2 and parents[1] == result.commit
    assert sorted(git(repo, "ls-tree", "--name-only", "main").split()) == ["README.md", "link", "mine.txt", "other.txt", "run.sh", "src"]
    assert (repo / "mine.txt").exists() and git(repo, "status", "--porcelain") == ""


def test_conflict_changes_nothing(ws: GitWorkspace, repo: Path, events: Events) -> None:
    path = started(ws, "clash")
    (repo / "README.md").write_text("main says this\n")
    git(repo, "commit", "-q", "-am", "main edits readme")
    main_before = git(repo, "rev-parse", "main").strip()
    (path / "README.md").write_text("task says that\n")
    result = ws.complete("clash", "task edits readme", merge="merge")
    assert not result.merged and result.conflicts == ("README.md",)
    assert git(repo, "rev-parse", "main").strip() == main_before
    assert (repo / "README.md").read_text() == "main says this\n"
    assert git(repo, "status", "--porcelain") == ""
    assert events.of("git.merge.conflict")[0]["paths"] == ["README.md"]
    # the task's own commit is kept on its branch
    assert git(repo, "show", "task/clash:README.md") == "task says that\n"


def test_dirty_user_checkout_is_not_touched(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "careful")
    (repo / "README.md").write_text("user is editing\n")
    (path / "x.txt").write_text("x\n")
    main_before = git(repo, "rev-parse", "main").strip()
    result = ws.complete("careful", "x", merge="ff")
    assert not result.merged and result.reason == "base-checkout-dirty"
    assert git(repo, "rev-parse", "main").strip() == main_before
    assert (repo / "README.md").read_text() == "user is editing\n"


def test_unknown_merge_mode(ws: GitWorkspace) -> None:
    started(ws, "mode")
    with pytest.raises(GitError, match="unknown merge mode"):
        ws.complete("mode", "m", merge="octopus")  # type: ignore[arg-type]


def test_three_way_merge_is_line_level(ws: GitWorkspace, repo: Path) -> None:
    """Both sides edit different lines of one file: merged, not a conflict (needs merge3)."""
    lines = [f"line {i}\n" for i in range(1, 11)]
    (repo / "shared.txt").write_text("".join(lines))
    git(repo, "add", "shared.txt")
    git(repo, "commit", "-q", "-m", "shared file")
    path = started(ws, "lines")
    on_main = lines.copy()
    on_main[0] = "line 1 changed on main\n"
    (repo / "shared.txt").write_text("".join(on_main))
    git(repo, "commit", "-q", "-am", "main edits the top")
    in_task = (path / "shared.txt").read_text().splitlines(keepends=True)
    in_task[-1] = "line 10 changed by the agent\n"
    (path / "shared.txt").write_text("".join(in_task))
    result = ws.complete("lines", "agent edits the bottom", merge="merge")
    assert result.merged and not result.conflicts
    merged = git(repo, "show", "main:shared.txt")
    assert "line 1 changed on main" in merged and "line 10 changed by the agent" in merged
    git(repo, "fsck", "--strict")


def test_untracked_user_file_in_the_way_refuses_the_merge(ws: GitWorkspace, repo: Path, events: Events) -> None:
    """As 'git merge' does: an untracked file the merge would overwrite stops it, nothing moves."""
    path = started(ws, "clobber")
    (path / "config.py").write_text("agent version\n")
    (repo / "config.py").write_text("user's untracked work\n")
    main_before = git(repo, "rev-parse", "main").strip()
    result = ws.complete("clobber", "agent config", merge="ff")
    assert not result.merged and result.reason == "base-checkout-untracked"
    assert result.conflicts == ("config.py",)
    assert (repo / "config.py").read_text() == "user's untracked work\n"
    assert git(repo, "rev-parse", "main").strip() == main_before
    assert events.of("git.merge.conflict")[0]["paths"] == ["config.py"]


def test_untracked_user_dir_where_task_adds_a_file(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "notes")
    (path / "notes").write_text("a file called notes\n")
    (repo / "notes").mkdir()
    (repo / "notes" / "todo.md").write_text("user's notes\n")
    (repo / "other").write_text("user's file where the task needs a directory\n")
    (path / "other").mkdir()
    (path / "other" / "x.txt").write_text("x\n")
    main_before = git(repo, "rev-parse", "main").strip()
    result = ws.complete("notes", "notes", merge="merge")
    assert not result.merged and result.reason == "base-checkout-untracked"
    assert result.conflicts == ("notes/", "other")
    assert git(repo, "rev-parse", "main").strip() == main_before
    assert (repo / "notes" / "todo.md").read_text() == "user's notes\n"
    assert git(repo, "status", "--porcelain") == "?? notes/\n?? other\n"


def test_failed_checkout_update_moves_the_base_back(ws: GitWorkspace, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from armor_rx.sinks.git import completion

    path = started(ws, "undo")
    (path / "new.txt").write_text("new\n")
    main_before = git(repo, "rev-parse", "main").strip()

    def broken(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(completion, "_sync_checkout", broken)
    with pytest.raises(GitError, match="moved back"):
        ws.complete("undo", "new", merge="ff")
    assert git(repo, "rev-parse", "main").strip() == main_before
    assert git(repo, "status", "--porcelain") == ""
