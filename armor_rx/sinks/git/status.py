"""Whether a checkout has uncommitted work, without running anything it names.

dulwich's ``porcelain.status`` runs the clean filters (and long-running filter
processes) that the repository's configuration and ``.gitattributes`` name, to
compare files the way git would. In a repository an agent made (a nested
repository, a submodule in its worktree) both are the agent's to write, so
that would run the agent's commands on the host. This compares raw bytes
instead: a file a filter would normalise reads as changed, which only ever
errs on the side of keeping work (a merge or removal is refused, not forced).

The repository's own control files must be plain files (a fifo planted as its
``config`` or ``index`` would make any reader hang), and untracked files are
found by a walk that reads only ``.gitignore`` files, never a path its
configuration names (``core.excludesFile``).
"""

from __future__ import annotations

import os
import stat as st

import pathspec
from dulwich.index import get_unstaged_changes
from dulwich.objects import Commit
from dulwich.repo import Repo

from armor_rx.errors import GitError
from armor_rx.sinks.git.beneath import walk_beneath

__all__ = ["has_changes"]

# What opening a repository and reading its status opens by path.
_CONTROL_FILES = ("HEAD", "config", "index", "commondir", "packed-refs", "objects/info/alternates", "gitdir")
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def has_changes(path: str | os.PathLike[str], *, untracked: bool) -> bool:
    """Whether the checkout at ``path`` differs from its HEAD: staged, unstaged (or, if asked, untracked) files.

    No filter, hook, fsmonitor or pager is run. Raises :class:`GitError` if a
    control file of the repository is not a plain file, and what dulwich
    raises for a path that is not a readable repository.
    """
    with Repo(_checked(os.fspath(path))) as repo:
        index = repo.open_index()
        # filter_blob_callback=None: file contents are hashed as they are.
        if next(iter(get_unstaged_changes(index, repo.path, filter_blob_callback=None)), None) is not None:
            return True
        try:
            head = repo[repo.head()]
        except KeyError:
            head = None
        tree = head.tree if isinstance(head, Commit) else None
        if tree is not None and next(iter(index.changes_from_tree(repo.object_store, tree)), None) is not None:
            return True
        if tree is None and len(index):
            return True
        if untracked:
            tracked = {name.decode("utf-8", "surrogateescape") for name in index}
            return _has_untracked(os.fspath(path), tracked)
    return False


def _checked(path: str) -> str:
    """``path`` after checking its git directory's control files are plain files (or absent)."""
    dot_git = os.path.join(path, ".git")
    info = os.lstat(dot_git)
    git_dir = dot_git
    if st.S_ISREG(info.st_mode):
        text = _read(dot_git) or ""
        target = text.removeprefix("gitdir:").strip()
        git_dir = target if os.path.isabs(target) else os.path.join(path, target)
    elif not st.S_ISDIR(info.st_mode):
        raise GitError(f"{dot_git} is neither a directory nor a file; its repository is not read")
    for name in _CONTROL_FILES:
        try:
            mode = os.lstat(os.path.join(git_dir, name)).st_mode
        except FileNotFoundError:
            continue
        if not st.S_ISREG(mode):
            raise GitError(f"{git_dir}/{name} is not a plain file; the repository at {path} is not read")
    return path


def _read(path: str) -> str | None:
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None
    try:
        if not st.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 1 << 20).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _has_untracked(root: str, tracked: set[str]) -> bool:
    """Whether a file under ``root`` is neither tracked nor ignored by a ``.gitignore``."""
    specs: dict[str, list[tuple[str, pathspec.GitIgnoreSpec]]] = {"": []}
    for rel, dirs, files in walk_beneath(root):
        prefix = rel + "/" if rel else ""
        here = list(specs.pop(rel, []))
        if ".gitignore" in files:
            text = _read(os.path.join(root, prefix + ".gitignore"))
            if text is not None:
                here.append((prefix, pathspec.GitIgnoreSpec.from_lines(text.splitlines())))

        def ignored(name: str, is_dir: bool) -> bool:
            probe = prefix + name + ("/" if is_dir else "")
            return any(spec.match_file(probe[len(base):]) for base, spec in here)

        if not rel:
            dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            if prefix + name not in tracked and name != ".git" and not ignored(name, False):
                return True
        dirs[:] = [name for name in dirs if not ignored(name, True)]
        for name in dirs:
            specs[prefix + name] = here
    return False
