"""Linked worktrees, one per task, that the git CLI recognises as its own."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dulwich.repo import Repo
from dulwich.worktree import WorkTreeInfo, add_worktree, list_worktrees

from armor_rx.errors import GitError


def admin_dir(repo: Repo, worktree: Path) -> Path | None:
    """The ``.git/worktrees/<id>`` directory that belongs to ``worktree``, if any."""
    root = Path(repo.commondir()) / "worktrees"
    if not root.is_dir():
        return None
    want = os.path.realpath(worktree)
    for entry in root.iterdir():
        try:
            gitdir = (entry / "gitdir").read_text().strip()
        except OSError:
            continue
        target = gitdir if os.path.isabs(gitdir) else os.path.join(entry, gitdir)
        if os.path.realpath(os.path.dirname(target)) == want:
            return entry
    return None


def create(repo: Repo, path: Path, branch: str) -> Path:
    """Check ``branch`` out into a new linked worktree at ``path``.

    The admin directory is named after the last component of ``path`` (git
    does the same). Raises :class:`GitError` if ``path`` exists, if the branch
    is checked out elsewhere, or if a live worktree already uses that name.
    """
    if path.exists():
        raise GitError(
            f"cannot create worktree {path}: the directory exists; "
            "remove it or prune stale worktrees first"
        )
    admin = Path(repo.commondir()) / "worktrees" / path.name
    if admin.exists():
        try:
            gitdir = (admin / "gitdir").read_text().strip()
        except OSError:
            gitdir = ""
        if gitdir and os.path.exists(os.path.dirname(gitdir)):
            raise GitError(
                f"cannot create worktree {path}: git already has a worktree named {path.name!r} "
                f"at {os.path.dirname(gitdir)}; remove it with 'git worktree remove'"
            )
        # Left behind by a worktree whose directory is gone: git would prune it.
        shutil.rmtree(admin)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        wt = add_worktree(repo, str(path), branch=branch.encode())
    except ValueError as exc:
        raise GitError(f"cannot create worktree {path} for {branch}: {exc}") from None
    wt.close()
    return path


def listed(repo: Repo) -> list[WorkTreeInfo]:
    """Every worktree git knows about, the main one first."""
    return list_worktrees(repo)


def delete(repo: Repo, path: Path) -> None:
    """Remove the worktree directory and its admin directory (no safety checks here)."""
    admin = admin_dir(repo, path)
    if path.exists():
        shutil.rmtree(path)
    if admin is not None and admin.exists():
        shutil.rmtree(admin)
