"""Linked worktrees, one per task, that the git CLI recognises as its own."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from dulwich.refs import Ref
from dulwich.repo import Repo
from dulwich.worktree import WorkTreeInfo, list_worktrees

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

    The admin directory is named after the last component of ``path``, or
    ``<name>-<random>`` when that name is taken (git does the same). An admin
    directory is only ever deleted when it is a stale one of ours: its
    worktree was under ``path``'s parent, is gone, and it is not locked.
    Raises :class:`GitError` if ``path`` exists or if the branch is checked
    out elsewhere.
    """
    if path.exists():
        raise GitError(
            f"cannot create worktree {path}: the directory exists; "
            "remove it or prune stale worktrees first"
        )
    root = Path(repo.commondir()) / "worktrees"
    stale = root / path.name
    if stale.exists() and _stale_and_ours(stale, path.parent):
        # Left behind by one of our worktrees whose directory is gone: git would prune it.
        shutil.rmtree(stale)
    bname = b"refs/heads/" + branch.encode()
    for info in list_worktrees(repo):
        if info.branch == bname:
            raise GitError(f"cannot create worktree {path} for {branch}: it is checked out at {info.path}")
    admin = _reserve_admin_dir(root, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path)
        wt = Repo._init_new_working_directory(str(path), repo, identifier=admin.name)
        try:
            wt.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(bname))
            wt.get_worktree().reset_index(config=wt.get_config_stack())
        finally:
            wt.close()
    except BaseException as exc:
        # Only what this call made is removed: the reserved admin dir and the new directory.
        shutil.rmtree(admin, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        if isinstance(exc, (OSError, ValueError, KeyError)):
            raise GitError(f"cannot create worktree {path} for {branch}: {exc}") from None
        raise
    return path


def _reserve_admin_dir(root: Path, path: Path) -> Path:
    """Make a fresh ``.git/worktrees/<id>`` for ``path`` (created here, so no one else's)."""
    root.mkdir(exist_ok=True)
    admin = root / path.name
    for _ in range(100):
        try:
            admin.mkdir()
            return admin
        except FileExistsError:
            admin = root / f"{path.name}-{secrets.token_hex(4)}"
    raise GitError(f"cannot create worktree {path}: no free admin directory name under {root}")


def _stale_and_ours(admin: Path, worktrees_dir: Path) -> bool:
    if (admin / "locked").exists():
        return False  # a locked worktree may just be on an unplugged drive
    try:
        gitdir = (admin / "gitdir").read_text().strip()
    except OSError:
        return False
    target = gitdir if os.path.isabs(gitdir) else os.path.join(admin, gitdir)
    directory = os.path.realpath(os.path.dirname(target))
    ours = os.path.realpath(worktrees_dir)
    return directory.startswith(ours + os.sep) and not os.path.exists(directory)


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
