"""Submodule status in a task's worktree, and what to do when one is off."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dulwich import porcelain
from dulwich.config import ConfigFile, parse_submodules
from dulwich.diff_tree import tree_changes
from dulwich.index import read_submodule_head, update_working_tree
from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit, ObjectID
from dulwich.repo import Repo

from armor_rx.errors import GitError, SubmoduleConflict
from armor_rx.sinks.git.restore import flatten_tree

SubmoduleState = Literal["clean", "dirty", "diverged", "uninitialised"]
SubmoduleStrategy = Literal["skip", "reset", "fail"]


@dataclass(frozen=True)
class SubmoduleStatus:
    """One submodule: where it is, what the task's commit records, what is checked out."""

    path: str
    url: str | None
    recorded: str
    actual: str | None
    state: SubmoduleState
    action: str | None = None  # what the strategy did ("reset"), if anything

    def to_payload(self) -> dict[str, Any]:
        return {"path": self.path, "url": self.url, "recorded": self.recorded,
                "actual": self.actual, "state": self.state, "action": self.action}


def status(repo: Repo, worktree: Path) -> list[SubmoduleStatus]:
    """The status of every submodule recorded in the worktree's HEAD commit."""
    with Repo(str(worktree)) as wt:
        head = wt.head()
        commit = wt[head]
        assert isinstance(commit, Commit)
        store = repo.object_store
        assert isinstance(store, DiskObjectStore)
        links = {p: sha for p, (mode, sha) in flatten_tree(store, commit.tree).items() if mode == 0o160000}
    urls: dict[str, str] = {}
    gitmodules = worktree / ".gitmodules"
    if gitmodules.exists():
        for raw_path, raw_url, _name in parse_submodules(ConfigFile.from_path(str(gitmodules))):
            urls[raw_path.decode()] = raw_url.decode()
    found = []
    for path, recorded in sorted(links.items()):
        found.append(_one(worktree, path, recorded.decode(), urls.get(path)))
    return found


def _one(worktree: Path, path: str, recorded: str, url: str | None) -> SubmoduleStatus:
    directory = worktree / path
    if not os.path.lexists(directory / ".git"):
        return SubmoduleStatus(path, url, recorded, None, "uninitialised")
    head = read_submodule_head(str(directory))
    actual = head.decode() if head else None
    if actual != recorded:
        return SubmoduleStatus(path, url, recorded, actual, "diverged")
    if _dirty(directory):
        return SubmoduleStatus(path, url, recorded, actual, "dirty")
    return SubmoduleStatus(path, url, recorded, actual, "clean")


def _dirty(directory: Path) -> bool:
    result = porcelain.status(str(directory), untracked_files="no")
    return bool(result.unstaged or any(result.staged[k] for k in ("add", "delete", "modify")))


def apply_strategy(repo: Repo, worktree: Path, task_id: str, strategy: SubmoduleStrategy) -> list[SubmoduleStatus]:
    """Report submodules and apply ``strategy`` to those that are not clean.

    ``skip`` only reports. ``reset`` checks the recorded commit out (detached,
    as ``git submodule update`` does) in diverged submodules; a submodule with
    uncommitted changes is never reset — that would destroy work — so it
    raises :class:`SubmoduleConflict`, as does ``fail`` for any dirty or
    diverged submodule. Uninitialised submodules are reported, not fetched.
    """
    if strategy not in ("skip", "reset", "fail"):
        raise GitError(f"unknown submodule strategy {strategy!r}; use 'skip', 'reset' or 'fail'")
    found = status(repo, worktree)
    if strategy == "skip":
        return found
    problems: dict[str, str] = {s.path: s.state for s in found if s.state in ("dirty", "diverged")}
    if strategy == "fail":
        if problems:
            raise SubmoduleConflict(task_id, problems)
        return found
    out = []
    for sub in found:
        if sub.state != "diverged":
            out.append(sub)
            continue
        directory = worktree / sub.path
        if _dirty(directory):
            raise SubmoduleConflict(task_id, {sub.path: "diverged and dirty"})
        _reset(directory, sub.recorded.encode())
        out.append(SubmoduleStatus(sub.path, sub.url, sub.recorded, sub.recorded, "clean", "reset"))
    return out


def _reset(directory: Path, recorded: bytes) -> None:
    with Repo(str(directory)) as sub:
        try:
            target = sub[ObjectID(recorded)]
        except KeyError:
            raise GitError(
                f"submodule {directory} does not have the recorded commit {recorded.decode()}; "
                "fetch it in the submodule, or use the strategy 'skip'"
            ) from None
        current = sub[sub.head()]
        assert isinstance(target, Commit) and isinstance(current, Commit)
        changes = tree_changes(sub.object_store, current.tree, target.tree)
        update_working_tree(sub, current.tree, target.tree, change_iterator=changes)
        # Detach HEAD at the recorded commit rather than moving a branch, so
        # no branch in the submodule loses commits.
        with open(os.path.join(sub.controldir(), "HEAD"), "wb") as f:
            f.write(recorded + b"\n")
