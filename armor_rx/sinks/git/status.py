"""Whether a checkout has uncommitted work, without running anything it names.

dulwich's ``porcelain.status`` runs the clean filters (and long-running filter
processes) that the repository's configuration and ``.gitattributes`` name, to
compare files the way git would. In a repository an agent made (a nested
repository, a submodule in its worktree) both are the agent's to write, so
that would run the agent's commands on the host. This compares raw bytes
instead: a file a filter would normalise reads as changed, which only ever
errs on the side of keeping work (a merge or removal is refused, not forced).
"""

from __future__ import annotations

import os

from dulwich.index import get_unstaged_changes
from dulwich.objects import Commit
from dulwich.porcelain import get_untracked_paths
from dulwich.repo import Repo

__all__ = ["has_changes"]


def has_changes(path: str | os.PathLike[str], *, untracked: bool) -> bool:
    """Whether the checkout at ``path`` differs from its HEAD: staged, unstaged (or, if asked, untracked) files.

    No filter, hook, fsmonitor or pager is run; raises what dulwich raises
    for a path that is not a readable repository.
    """
    with Repo(os.fspath(path)) as repo:
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
            return next(iter(get_untracked_paths(repo.path, repo.path, index, exclude_ignored=True)), None) is not None
    return False
