"""Submodule strategies and symlinks: nothing outside the task's worktree is written or followed (real git).

An agent shapes its worktree, submodules included: it can make a symlink
where the recorded commit puts a directory, turn the submodule's directory
into a link to the user's own checkout, or link its git directory's files
out. Each strategy that writes (reset, merge, rebase) refuses those with
:class:`SubmoduleConflict` before it changes anything; a symlink the
submodule's history tracks is checked out as a symlink, never followed.
Results are checked with ``git fsck --strict`` and ``git status``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from armor_rx.errors import SubmoduleConflict
from armor_rx.sinks.git import GitWorkspace

from .conftest import fsck, git, make_repo, started

WRITING = ["reset", "merge", "rebase"]


def _head(path: Path) -> str:
    return git(path, "rev-parse", "HEAD").strip()


def _tree_of(path: Path) -> dict[str, str]:
    """Every entry under ``path`` (not following links): its kind and content, to compare before and after."""
    out: dict[str, str] = {}
    for here, dirs, files in os.walk(path):
        for name in dirs + files:
            full = Path(here) / name
            rel = str(full.relative_to(path))
            if full.is_symlink():
                out[rel] = "-> " + os.readlink(full)
            elif full.is_file():
                out[rel] = full.read_bytes().decode("latin-1")
            else:
                out[rel] = "dir"
    return out


def _library(tmp_path: Path, recorded_adds: dict[str, str | None]) -> tuple[Path, str, str]:
    """The submodule's upstream: an older commit, and the recorded one adding ``recorded_adds``
    (path -> text, or ``"-> target"`` for a symlink)."""
    lib = make_repo(tmp_path / "lib-upstream")
    (lib / "notes.txt").write_text("one\n")
    git(lib, "add", "notes.txt")
    git(lib, "commit", "-q", "-m", "notes")
    older = _head(lib)
    for rel, text in recorded_adds.items():
        target = lib / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if text is not None and text.startswith("-> "):
            os.symlink(text[3:], target)
        else:
            target.write_text(text or "")
    git(lib, "add", "-A")
    git(lib, "commit", "-q", "-m", "upstream moves on")
    return lib, older, _head(lib)


def _task_with_submodule(ws: GitWorkspace, repo: Path, lib: Path, older: str) -> Path:
    """A task whose submodule ``lib`` has a commit of its own on top of ``older`` (diverged, clean)."""
    git(repo, "submodule", "add", "-q", str(lib), "lib")
    git(repo, "commit", "-q", "-m", "add lib")
    path = started(ws, "subs")
    git(path, "submodule", "update", "--init", "-q", "lib")
    git(path / "lib", "checkout", "-q", "-b", "agent-work", older)
    (path / "lib" / "mine.txt").write_text("the agent's work\n")
    git(path / "lib", "add", "mine.txt")
    git(path / "lib", "commit", "-q", "-m", "agent work")
    return path


def _fsck_module(worktree: Path) -> None:
    fsck(Path(git(worktree / "lib", "rev-parse", "--absolute-git-dir").strip()))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the worktree and the repository, with a file an escape would change."""
    found = tmp_path / "outside"
    found.mkdir()
    (found / "victim.txt").write_text("keep\n")
    return found


@pytest.mark.parametrize("strategy", WRITING)
def test_an_untracked_symlink_where_the_recorded_commit_makes_a_directory_is_refused(
        ws: GitWorkspace, repo: Path, tmp_path: Path, outside: Path, strategy: str) -> None:
    lib, older, _recorded = _library(tmp_path, {"newdir/upstream.txt": "from upstream\n"})
    path = _task_with_submodule(ws, repo, lib, older)
    os.symlink(outside, path / "lib" / "newdir")  # untracked: the status of the submodule stays clean
    head, before = _head(path / "lib"), _tree_of(outside)
    with pytest.raises(SubmoduleConflict) as refused:
        ws.submodules("subs", strategy)
    assert "newdir" in str(refused.value) and "symlink" in str(refused.value) and "\n" not in str(refused.value)
    assert _tree_of(outside) == before  # nothing written through the link
    assert _head(path / "lib") == head
    assert git(path / "lib", "status", "--porcelain").split() == ["??", "newdir"]
    assert git(path, "diff", "--cached", "--name-only") == ""  # no gitlink staged
    fsck(repo)
    _fsck_module(path)


@pytest.mark.parametrize("strategy", WRITING)
def test_a_submodule_directory_linked_to_the_users_own_checkout_is_refused(
        ws: GitWorkspace, repo: Path, tmp_path: Path, strategy: str) -> None:
    lib, older, recorded = _library(tmp_path, {"upstream.txt": "from upstream\n"})
    git(repo, "submodule", "add", "-q", str(lib), "lib")
    git(repo, "commit", "-q", "-m", "add lib")
    git(repo / "lib", "checkout", "-q", older)  # the user's own checkout of the submodule, at another commit
    path = started(ws, "subs")
    (path / "lib").rmdir()
    os.symlink(repo / "lib", path / "lib")  # the agent links the submodule's place to the user's checkout
    mine, head = _tree_of(repo / "lib"), _head(repo / "lib")
    with pytest.raises(SubmoduleConflict) as refused:
        ws.submodules("subs", strategy)
    assert "not a plain directory" in str(refused.value)
    assert _head(repo / "lib") == head == older  # the user's checkout: not moved, not rewritten
    assert _tree_of(repo / "lib") == mine and not (repo / "lib" / "upstream.txt").exists()
    assert recorded != older
    fsck(repo)


@pytest.mark.parametrize("strategy", WRITING)
def test_a_git_directory_in_the_worktree_with_a_linked_out_file_is_refused(
        ws: GitWorkspace, repo: Path, tmp_path: Path, outside: Path, strategy: str) -> None:
    lib, older, _recorded = _library(tmp_path, {"upstream.txt": "from upstream\n"})
    git(repo, "submodule", "add", "-q", str(lib), "lib")
    git(repo, "commit", "-q", "-m", "add lib")
    path = started(ws, "subs")
    # The agent's own clone in the submodule's place: its git directory is inside the worktree, the agent's to shape.
    (path / "lib").rmdir()
    git(path, "clone", "-q", str(lib), "lib")
    git(path / "lib", "checkout", "-q", "-b", "agent-work", older)
    (path / "lib" / "mine.txt").write_text("the agent's work\n")
    git(path / "lib", "add", "mine.txt")
    git(path / "lib", "commit", "-q", "-m", "agent work")
    # The reflog a merge or rebase appends to (and, for reset, HEAD itself) linked to a file outside.
    linked = path / "lib" / ".git" / ("HEAD" if strategy == "reset" else "logs/HEAD")
    if strategy == "reset":
        git(path / "lib", "checkout", "-q", "--detach")
        head = _head(path / "lib")
        (path / "lib" / ".git" / "HEAD").unlink()
        (outside / "victim.txt").write_text(head + "\n")  # a HEAD git itself would read through the link
        os.symlink(outside / "victim.txt", linked)
    else:
        linked.unlink()
        os.symlink(outside / "victim.txt", linked)
    before = _tree_of(outside)
    with pytest.raises(SubmoduleConflict) as refused:
        ws.submodules("subs", strategy)
    assert "symlink" in str(refused.value)
    assert _tree_of(outside) == before
    assert not (path / "lib" / "upstream.txt").exists()
    fsck(repo)


@pytest.mark.parametrize("strategy", WRITING)
def test_tracked_symlinks_pointing_out_are_checked_out_as_links_never_followed(
        ws: GitWorkspace, repo: Path, tmp_path: Path, outside: Path, strategy: str) -> None:
    adds = {"escape": "-> ../../../../../outside", "absolute": f"-> {outside}", "victim.txt": "inside\n",
            "docs/readme.txt": "docs\n"}
    lib, older, recorded = _library(tmp_path, adds)
    path = _task_with_submodule(ws, repo, lib, older)
    before = _tree_of(outside)
    [status] = ws.submodules("subs", strategy)
    assert status.state == "clean"
    sub = path / "lib"
    assert os.readlink(sub / "escape") == "../../../../../outside" and os.readlink(sub / "absolute") == str(outside)
    assert (sub / "victim.txt").read_text() == "inside\n" and not (sub / "victim.txt").is_symlink()
    assert _tree_of(outside) == before
    assert git(sub, "status", "--porcelain") == ""
    if strategy == "reset":
        assert _head(sub) == recorded
    else:
        git(sub, "merge-base", "--is-ancestor", recorded, "HEAD")
        assert (sub / "mine.txt").read_text() == "the agent's work\n"
    fsck(repo)
    _fsck_module(path)


@pytest.mark.parametrize("strategy", WRITING)
def test_a_tracked_symlink_the_recorded_commit_makes_a_directory_is_refused_not_written_through(
        ws: GitWorkspace, repo: Path, tmp_path: Path, outside: Path, strategy: str) -> None:
    # The checked-out side tracks 'data' as a link out; the recorded commit has a directory there.
    lib = make_repo(tmp_path / "lib-upstream")
    base = _head(lib)
    (lib / "data").mkdir()
    (lib / "data" / "victim.txt").write_text("overwritten\n")
    git(lib, "add", "-A")
    git(lib, "commit", "-q", "-m", "data directory")
    git(lib, "checkout", "-q", "-b", "linked", base)
    os.symlink(outside, lib / "data")
    git(lib, "add", "-A")
    git(lib, "commit", "-q", "-m", "data is a link")
    linked = _head(lib)
    git(lib, "checkout", "-q", "main")
    git(repo, "submodule", "add", "-q", str(lib), "lib")
    git(repo, "commit", "-q", "-m", "add lib")
    path = started(ws, "subs")
    git(path, "submodule", "update", "--init", "-q", "lib")
    git(path / "lib", "fetch", "-q", "origin", "linked")
    git(path / "lib", "checkout", "-q", "-b", "agent-work", linked)
    before, head = _tree_of(outside), _head(path / "lib")
    with pytest.raises(SubmoduleConflict) as refused:
        ws.submodules("subs", strategy)
    assert "data" in str(refused.value)
    assert _tree_of(outside) == before and (outside / "victim.txt").read_text() == "keep\n"
    assert _head(path / "lib") == head and (path / "lib" / "data").is_symlink()
    fsck(repo)
    _fsck_module(path)
