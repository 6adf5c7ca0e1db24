"""Linked worktrees, one per task, that the git CLI recognises as its own."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from dulwich.object_store import DiskObjectStore
from dulwich.refs import Ref
from dulwich.repo import Repo
from dulwich.worktree import WorkTreeInfo, list_worktrees

from armor_rx.errors import GitError
from armor_rx.sinks.git.beneath import remove_tree
from armor_rx.sinks.git.refs import read_commit
from armor_rx.sinks.git.reserved import DEFAULT as DEFAULT_RESERVED
from armor_rx.sinks.git.reserved import Reserved
from armor_rx.sinks.git.statcache import CacheEntry


def admin_dirs(repo: Repo) -> dict[str, Path]:
    """Every linked worktree's admin directory, by the real path of its worktree (one read of each)."""
    root = Path(repo.commondir()) / "worktrees"
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for entry in root.iterdir():
        try:
            gitdir = (entry / "gitdir").read_text().strip()
        except OSError:
            continue
        target = gitdir if os.path.isabs(gitdir) else os.path.join(entry, gitdir)
        found[os.path.realpath(os.path.dirname(target))] = entry
    return found


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
        _link(path, admin, bname)
        checkout(repo, path, admin)
    except BaseException as exc:
        # Only what this call made is removed: the reserved admin dir and the new directory.
        shutil.rmtree(admin, ignore_errors=True)
        try:
            remove_tree(path)
        except OSError:
            pass
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


def _link(path: Path, admin: Path, branch_ref: bytes) -> None:
    """Write the files that make ``path`` a linked worktree on ``branch_ref``, as ``git worktree add`` does.

    Not dulwich's ``Repo._init_new_working_directory``: it also checks the
    user's HEAD out into the new directory through dulwich's filters.
    """
    dot_git = os.fsencode(path / ".git")
    (admin / "commondir").write_bytes(b"../..\n")
    (admin / "gitdir").write_bytes(dot_git + b"\n")
    (admin / "HEAD").write_bytes(b"ref: " + branch_ref + b"\n")
    with open(dot_git, "xb") as f:
        f.write(b"gitdir: " + os.fsencode(admin) + b"\n")


def checkout(repo: Repo, path: Path, admin: Path, reserved: Reserved = DEFAULT_RESERVED) -> int:
    """Write the files of the worktree's HEAD commit into ``path`` and its index; return how many.

    Not dulwich's ``reset_index``: that runs the clean/smudge filters the
    configuration and the tree's ``.gitattributes`` name (commands, when the
    tree came from an agent's checkpoint), makes directories recursively and
    follows full paths. This goes through :func:`~.restore.materialize`:
    no filter, no symlink followed, any depth, any byte string as a name.
    Files already there (a checkout a kill cut short) are rewritten where
    they differ. Reserved paths (see :mod:`.reserved`) are not written.
    """
    from armor_rx.sinks.git.indexfile import write_index
    from armor_rx.sinks.git.restore import materialize
    from armor_rx.sinks.git.trees import flatten_tree

    head = head_commit(repo, admin)
    store = repo.object_store
    assert isinstance(store, DiskObjectStore)
    files = flatten_tree(store, read_commit(repo, head).tree) if head is not None else {}
    target = {p: v for p, v in files.items() if not reserved.path(p)}
    current = _files_on_disk(path, target)
    written: dict[str, CacheEntry] = {}
    materialize(path, store, current, target, written)
    # Reserved paths the commit holds stay in the index (unstat'ed), as completion keeps them.
    write_index(admin, files, written)
    return len(target)


def _files_on_disk(path: Path, target: dict[str, tuple[int, bytes]]) -> dict[str, tuple[int, bytes]]:
    """What a checkout cut short left of ``target`` under ``path``: each such path, as if it were different.

    Marked with a sha no blob has, so the restore rewrites it (its content
    may be half written) instead of refusing it as an unsaved file.
    """
    found: dict[str, tuple[int, bytes]] = {}
    if not any(os.scandir(path)):
        return found
    for rel, (mode, _) in target.items():
        if os.path.lexists(os.path.join(os.fsencode(path), os.fsencode(rel))):
            found[rel] = (mode, b"0" * 40)
    return found


def head_commit(repo: Repo, admin: Path) -> bytes | None:
    """The commit a worktree has checked out, read from its admin directory (None if unborn or unreadable).

    Read through the user's repository, never through the worktree's own
    ``.git`` file, which the agent can rewrite to point anywhere.
    """
    try:
        text = (admin / "HEAD").read_text().strip()
    except OSError:
        return None
    if text.startswith("ref: "):
        try:
            return bytes(repo.refs[Ref(text[5:].encode())])
        except (KeyError, ValueError):
            return None
    return text.encode() if len(text) == 40 else None


def listed(repo: Repo) -> list[WorkTreeInfo]:
    """Every worktree git knows about, the main one first."""
    return list_worktrees(repo)


def delete(repo: Repo, path: Path) -> None:
    """Remove the worktree directory and its admin directory (no safety checks here)."""
    admin = admin_dir(repo, path)
    if os.path.lexists(path):
        remove_tree(path)  # not shutil.rmtree: it recurses, and a worktree can be thousands of levels deep
    if admin is not None and admin.exists():
        shutil.rmtree(admin)
