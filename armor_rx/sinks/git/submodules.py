"""Submodule status in a task's worktree, and what to do when one is off."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dulwich import porcelain
from dulwich.config import ConfigFile, parse_submodules
from dulwich.diff_tree import tree_changes
from dulwich.graph import can_fast_forward
from dulwich.index import read_submodule_head, update_working_tree
from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit, ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from armor_rx.errors import GitError, SubmoduleConflict
from armor_rx.sinks.git.trees import flatten_tree

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


def gitmodules_paths(worktree: Path) -> set[str]:
    """The submodule paths ``.gitmodules`` at the top of ``worktree`` lists (empty if none or unreadable)."""
    gitmodules = worktree / ".gitmodules"
    if not gitmodules.is_file():
        return set()
    try:
        return {
            raw_path.decode("utf-8", "surrogateescape").strip("/")
            for raw_path, _url, _name in parse_submodules(ConfigFile.from_path(str(gitmodules)))
        }
    except Exception:
        return set()  # a broken .gitmodules registers nothing: such repos are then treated as nested


def repositories_at_risk(repo: Repo, worktree: Path, admin: Path | None) -> dict[str, str]:
    """Repositories inside ``worktree`` whose work deleting it would destroy: ``{path: why}``.

    A nested repository that is not a registered submodule (a gitlink in the
    worktree's HEAD, or listed in ``.gitmodules``) always counts: checkpoints
    keep its files but not its history. A submodule counts when it has
    uncommitted or untracked changes, or when its checked-out commit lives only
    in a git directory that goes away with the worktree (inside it, or under
    its admin directory ``admin``) and not in ``repo``.
    """
    registered = gitmodules_paths(worktree)
    try:
        with Repo(str(worktree)) as wt:
            commit = wt[wt.head()]
            assert isinstance(commit, Commit)
            store = repo.object_store
            assert isinstance(store, DiskObjectStore)
            registered |= {p for p, (mode, _) in flatten_tree(store, commit.tree).items() if mode == 0o160000}
    except Exception:
        pass  # no HEAD commit: only .gitmodules registers submodules
    doomed = [os.path.realpath(worktree)] + ([os.path.realpath(admin)] if admin is not None else [])
    problems: dict[str, str] = {}
    for current, dirnames, filenames in os.walk(worktree):
        rel = os.path.relpath(current, worktree).replace(os.sep, "/")
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d != ".git"]
            continue
        if ".git" not in dirnames and ".git" not in filenames:
            continue
        dirnames[:] = []  # what lies inside is the nested repository's own business
        if rel not in registered:
            problems[rel] = "a nested repository that is not a registered submodule"
            continue
        why = _submodule_risk(repo, Path(current), doomed)
        if why:
            problems[rel] = why
    return problems


def _submodule_risk(repo: Repo, directory: Path, doomed: list[str]) -> str | None:
    head = read_submodule_head(str(directory))
    if head is None:
        return "a submodule with no commit checked out"
    try:
        result = porcelain.status(str(directory))
    except Exception as exc:
        return f"a submodule whose status cannot be read ({exc})"
    if result.unstaged or result.untracked or any(result.staged[k] for k in ("add", "delete", "modify")):
        return "a submodule with uncommitted or untracked changes"
    if ObjectID(head) in repo.object_store or _fetched(directory, head):
        return None
    git_dir = _git_dir_of(directory)
    if any(git_dir == d or git_dir.startswith(d + os.sep) for d in doomed):
        return f"a submodule whose commit {head.decode()} exists only in a git directory removed with the worktree"
    return None


def _fetched(directory: Path, head: bytes) -> bool:
    """Whether ``head`` is in the history of a remote-tracking branch of the submodule (so it exists upstream)."""
    try:
        with Repo(str(directory)) as sub:
            for ref in sub.refs.keys(base=Ref(b"refs/remotes/")):
                tip = sub.refs[Ref(b"refs/remotes/" + ref)]
                if tip == head or can_fast_forward(sub, ObjectID(head), tip):
                    return True
    except Exception:
        return False
    return False


def _git_dir_of(directory: Path) -> str:
    dot_git = directory / ".git"
    if dot_git.is_file():
        text = dot_git.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            target = text[len("gitdir:"):].strip()
            return os.path.realpath(target if os.path.isabs(target) else directory / target)
    return os.path.realpath(dot_git)
