"""Submodule status in a task's worktree, and what to do when one is off.

A submodule is *diverged* when the commit checked out in it is not the one
the task's commit records. The strategies say what to do about it: ``skip``
reports, ``fail`` refuses, ``reset`` checks the recorded commit out, and
``merge`` / ``rebase`` keep the submodule's own work and bring the recorded
commit into it (see :func:`apply_strategy`); those two are worked out in full
for every submodule before any is changed, so a conflict leaves everything
as it was.
"""

from __future__ import annotations

import os
import stat as st
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dulwich.config import ConfigFile, parse_submodules
from dulwich.diff_tree import TreeChange, tree_changes
from dulwich.graph import can_fast_forward
from dulwich.index import update_working_tree
from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit, ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from armor_rx.errors import GitError, SubmoduleConflict
from armor_rx.sinks.git import worktrees
from armor_rx.sinks.git.beneath import walk_beneath
from armor_rx.sinks.git.status import has_changes
from armor_rx.sinks.git.trees import flatten_tree

SubmoduleState = Literal["clean", "dirty", "diverged", "uninitialised"]
SubmoduleStrategy = Literal["skip", "reset", "fail", "merge", "rebase"]
#: Every strategy, in the order the docs list them.
STRATEGIES: tuple[SubmoduleStrategy, ...] = ("skip", "reset", "fail", "merge", "rebase")


@dataclass(frozen=True)
class SubmoduleStatus:
    """One submodule: where it is, what the task's commit records, what is checked out."""

    path: str
    url: str | None
    recorded: str
    actual: str | None
    state: SubmoduleState
    action: str | None = None  # what the strategy did ("reset", "merged", "rebased" ...), if anything
    # merge/rebase: the commits recorded and checked out before the strategy moved them.
    previous: tuple[str, str | None] | None = None

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"path": self.path, "url": self.url, "recorded": self.recorded,
                   "actual": self.actual, "state": self.state, "action": self.action}
        if self.previous is not None:
            payload["previous"] = {"recorded": self.previous[0], "actual": self.previous[1]}
        return payload


def status(repo: Repo, worktree: Path) -> list[SubmoduleStatus]:
    """The status of every submodule recorded in the worktree's HEAD commit."""
    links = {p: sha for p, (mode, sha) in _head_files(repo, worktree).items() if mode == 0o160000}
    urls: dict[str, str] = {}
    gitmodules = worktree / ".gitmodules"
    if gitmodules.exists():
        for raw_path, raw_url, _name in parse_submodules(ConfigFile.from_path(str(gitmodules))):
            urls[raw_path.decode()] = raw_url.decode()
    found = []
    for path, recorded in sorted(links.items()):
        found.append(_one(worktree, path, recorded.decode(), urls.get(path), Path(repo.commondir()) / "modules"))
    return found


def _head_files(repo: Repo, worktree: Path) -> dict[str, tuple[int, bytes]]:
    """The files of the worktree's HEAD commit, found through the user's repository (empty if none)."""
    admin = worktrees.admin_dir(repo, worktree)
    head = worktrees.head_commit(repo, admin) if admin is not None else None
    if head is None:
        return {}
    commit = repo[head]
    assert isinstance(commit, Commit)
    store = repo.object_store
    assert isinstance(store, DiskObjectStore)
    return flatten_tree(store, commit.tree)


def _one(worktree: Path, path: str, recorded: str, url: str | None, modules: Path) -> SubmoduleStatus:
    directory = worktree / path
    if not os.path.lexists(directory / ".git"):
        return SubmoduleStatus(path, url, recorded, None, "uninitialised")
    head = safe_submodule_head(worktree, path, modules)
    actual = head.decode() if head else None
    if actual != recorded:
        return SubmoduleStatus(path, url, recorded, actual, "diverged")
    if _dirty(directory):
        return SubmoduleStatus(path, url, recorded, actual, "dirty")
    return SubmoduleStatus(path, url, recorded, actual, "clean")


def _dirty(directory: Path) -> bool:
    return has_changes(directory, untracked=False)


def apply_strategy(repo: Repo, worktree: Path, task_id: str, strategy: SubmoduleStrategy) -> list[SubmoduleStatus]:
    """Report submodules and apply ``strategy`` to those that are not clean.

    ``skip`` only reports. ``reset`` checks the recorded commit out (detached,
    as ``git submodule update`` does) in diverged submodules; a submodule with
    uncommitted changes is never reset — that would destroy work — so it
    raises :class:`SubmoduleConflict`, as does ``fail`` for any dirty or
    diverged submodule. Uninitialised submodules are reported, not fetched.

    ``merge`` and ``rebase`` keep what was committed in a diverged submodule:
    ``merge`` makes a merge commit in the submodule of the checked-out commit
    (first parent) and the recorded one, ``rebase`` replays the submodule's
    own commits (those the recorded commit does not have) onto the recorded
    one. Either way the result is checked out in the submodule (on its branch
    if one is checked out, else detached) and recorded in the superproject:
    the worktree's index gets the new gitlink, which the next checkpoint or
    completion commits; the status says ``clean`` with action ``merged`` /
    ``rebased`` (or ``fast-forward`` / ``up-to-date`` when one side already
    holds the other) and ``previous`` gives the commits before. A conflict, a
    merge commit among the commits to replay, uncommitted changes or a
    missing recorded commit raises :class:`SubmoduleConflict` (or
    :class:`GitError`) before any submodule, ref, file or index is changed.
    """
    if strategy not in STRATEGIES:
        raise GitError(f"unknown submodule strategy {strategy!r}; use one of: {', '.join(STRATEGIES)}")
    found = status(repo, worktree)
    if strategy == "skip":
        return found
    problems: dict[str, str] = {s.path: s.state for s in found if s.state in ("dirty", "diverged")}
    if strategy == "fail":
        if problems:
            raise SubmoduleConflict(task_id, problems)
        return found
    if strategy in ("merge", "rebase"):
        from armor_rx.sinks.git.submodule_merge import integrate  # it builds on this module

        return integrate(repo, worktree, task_id, found, strategy)
    # Every diverged submodule is checked before any is reset, so a refusal leaves them all as they were.
    ready: dict[str, str] = {}
    for sub in found:
        if sub.state != "diverged":
            continue
        git_dir = writable_git_dir(repo, worktree, task_id, sub.path)
        if sub.actual is None:
            raise SubmoduleConflict(task_id, {sub.path: OUTSIDE}, hint=OUTSIDE_HINT)
        if _dirty(worktree / sub.path):
            raise SubmoduleConflict(task_id, {sub.path: "diverged and dirty"})
        with open_submodule(worktree / sub.path, git_dir) as module:
            current, target = _commit_of(module, sub.path, sub.actual, "checked-out"), \
                _commit_of(module, sub.path, sub.recorded, "recorded")
            check_links(task_id, sub.path, worktree / sub.path,
                        tree_changes(module.object_store, current.tree, target.tree))
        ready[sub.path] = git_dir
    out = []
    for sub in found:
        if sub.path not in ready:
            out.append(sub)
            continue
        _reset(worktree / sub.path, ready[sub.path], sub.actual or "", sub.recorded)
        out.append(SubmoduleStatus(sub.path, sub.url, sub.recorded, sub.recorded, "clean", "reset"))
    return out


#: Why a submodule is refused when armor cannot be sure that what it writes stays in the task's worktree.
OUTSIDE = ("its directory is not a plain directory of the worktree (a symlink on the way?), "
           "or its git directory is not the task's own (in the worktree, or .git/worktrees/<id>/modules)")
OUTSIDE_HINT = ("make it a plain directory with its own git directory ('git submodule update --init' in the "
                "task's worktree), or choose the strategy 'skip'")


def _commit_of(module: Repo, path: str, sha: str, name: str) -> Commit:
    try:
        found = module[ObjectID(sha.encode())]
    except KeyError:
        raise GitError(f"submodule {path} does not have the {name} commit {sha}; "
                       f"fetch it in the submodule (git -C {path} fetch), or use the strategy 'skip'") from None
    if not isinstance(found, Commit):
        raise GitError(f"{sha} in submodule {path} is not a commit")
    return found


def _reset(directory: Path, git_dir: str, actual: str, recorded: str) -> None:
    with open_submodule(directory, git_dir) as sub:
        current, target = sub[ObjectID(actual.encode())], sub[ObjectID(recorded.encode())]
        assert isinstance(target, Commit) and isinstance(current, Commit)
        changes = tree_changes(sub.object_store, current.tree, target.tree)
        update_working_tree(sub, current.tree, target.tree, change_iterator=changes)
    # Detach HEAD at the recorded commit rather than moving a branch, so no
    # branch in the submodule loses commits. A new file renamed over HEAD: a
    # symlink there is replaced, never written through.
    fd, tmp = _new_file(git_dir, "HEAD")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(recorded.encode() + b"\n")
        os.replace(tmp, os.path.join(git_dir, "HEAD"))
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _new_file(directory: str, name: str) -> tuple[int, str]:
    for attempt in range(100):
        tmp = os.path.join(directory, f"{name}.armor-{os.getpid()}-{attempt}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644), tmp
        except FileExistsError:
            continue
    raise GitError(f"cannot make a temporary file in {directory}; remove its *.armor-*.tmp files")


def writable_git_dir(repo: Repo, worktree: Path, task_id: str, rel: str) -> str:
    """The git directory of the submodule at ``rel`` if a strategy may write it; else :class:`SubmoduleConflict`.

    Writing is narrower than reading (:func:`safe_git_dir`): the git directory
    must be the task's own — inside its worktree, or under its worktree's
    admin directory (``.git/worktrees/<id>/modules``), never the user's
    ``.git/modules`` that the main checkout's submodules use, nor another
    task's. One inside the worktree is the agent's to shape, so it must hold
    no symlink (an object directory or reflog linked out would be written
    through) and borrow nothing (``objects/info/alternates``, ``commondir``).
    """
    modules = Path(repo.commondir()) / "modules"
    git_dir = safe_git_dir(worktree, rel, modules)
    admin = worktrees.admin_dir(repo, worktree)
    own = [os.path.realpath(worktree)] + ([os.path.realpath(admin / "modules")] if admin is not None else [])
    if git_dir is None or not any(git_dir == d or git_dir.startswith(d + os.sep) for d in own):
        raise SubmoduleConflict(task_id, {rel: OUTSIDE}, hint=OUTSIDE_HINT)
    if git_dir.startswith(own[0] + os.sep):
        for borrowed in ("commondir", os.path.join("objects", "info", "alternates"),
                         os.path.join("objects", "info", "http-alternates")):
            if os.path.lexists(os.path.join(git_dir, borrowed)):
                raise SubmoduleConflict(task_id, {rel: f"its git directory borrows from elsewhere ({borrowed})"},
                                        hint=OUTSIDE_HINT)
        for here, dirnames, filenames in os.walk(git_dir):  # never descends a symlinked directory
            for name in dirnames + filenames:
                if os.path.islink(os.path.join(here, name)):
                    link = os.path.relpath(os.path.join(here, name), git_dir)
                    raise SubmoduleConflict(task_id, {rel: f"its git directory holds a symlink ({link})"},
                                            hint=OUTSIDE_HINT)
    return git_dir


class open_submodule:
    """The submodule's repository, refused if dulwich opened another git directory than the one checked."""

    def __init__(self, directory: Path, git_dir: str) -> None:
        self.repo = Repo(str(directory))
        if os.path.realpath(self.repo.controldir()) != git_dir:
            self.repo.close()
            raise GitError(f"the submodule {directory} changed its git directory while armor read it; "
                           "stop the task's processes and try again")

    def __enter__(self) -> Repo:
        return self.repo

    def __exit__(self, *exc: object) -> None:
        self.repo.close()


def check_links(task_id: str, path: str, directory: Path, changes: Iterable[TreeChange]) -> None:
    """Refuse (:class:`SubmoduleConflict`) a checkout of ``changes`` in ``directory`` that would go through a symlink.

    A file the new commit writes under a symlinked directory, or in the place
    of a symlink the old commit does not have (an untracked one the agent
    made), would be written wherever the link points, outside the worktree;
    a file removed under a symlinked directory would be removed there. Checked
    before anything is written, so the refusal changes nothing, whatever
    dulwich itself guards against.
    """
    root = os.fsencode(directory)
    through: set[str] = set()
    for change in changes:
        old, new = change.old, change.new
        old_link = old is not None and old.path is not None and old.mode is not None and st.S_ISLNK(old.mode)
        for entry, writes in ((old, False), (new, True)):
            if entry is None or entry.path is None:
                continue
            parts = entry.path.split(b"/")
            here = root
            for i, part in enumerate(parts):
                here = os.path.join(here, part)
                try:
                    info = os.lstat(here)
                except OSError:
                    break  # absent: made as a directory or file, by the checkout
                last = i == len(parts) - 1
                if st.S_ISLNK(info.st_mode):
                    # The one link a checkout may replace: the tracked one the old commit has at this very path.
                    same_tracked = last and old_link and old is not None and old.path == entry.path
                    if not last or (writes and not same_tracked):
                        through.add(os.fsdecode(b"/".join(parts[:i + 1])))
                    break
                if not st.S_ISDIR(info.st_mode):
                    break
    if through:
        listed = ", ".join(sorted(through)[:10]) + (f" and {len(through) - 10} more" if len(through) > 10 else "")
        raise SubmoduleConflict(task_id, {path: f"the checkout would go through the symlink(s) {listed}"},
                                hint=f"remove them (or check the commit out yourself: git -C {path} checkout), "
                                     "or choose the strategy 'skip'")


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
        registered |= {p for p, (mode, _) in _head_files(repo, worktree).items() if mode == 0o160000}
    except Exception:
        pass  # no HEAD commit: only .gitmodules registers submodules
    doomed = [os.path.realpath(worktree)] + ([os.path.realpath(admin)] if admin is not None else [])
    modules = Path(repo.commondir()) / "modules"
    problems: dict[str, str] = {}
    # Iterative and never through a symlink (os.walk recurses once per level).
    for rel, dirnames, filenames in walk_beneath(worktree):
        if rel == "":
            dirnames[:] = [d for d in dirnames if d != ".git"]
            continue
        if ".git" not in dirnames and ".git" not in filenames:
            continue
        dirnames[:] = []  # what lies inside is the nested repository's own business
        if rel not in registered:
            problems[rel] = "a nested repository that is not a registered submodule"
            continue
        why = _submodule_risk(repo, worktree, rel, doomed, modules)
        if why:
            problems[rel] = why
    return problems


def _submodule_risk(repo: Repo, worktree: Path, rel: str, doomed: list[str], modules: Path) -> str | None:
    directory = worktree / rel
    head = safe_submodule_head(worktree, rel, modules)
    if head is None:
        return "a submodule with no commit checked out (or whose git directory is outside the worktree)"
    try:
        changed = has_changes(directory, untracked=True)
    except Exception as exc:
        return f"a submodule whose status cannot be read ({exc})"
    if changed:
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


_HEX = frozenset("0123456789abcdef")


def safe_submodule_head(worktree: Path, rel: str, modules: Path) -> bytes | None:
    """The commit checked out in the repository at ``rel`` of ``worktree``, read without following it anywhere.

    Only a git directory inside the worktree, or under the user's
    ``.git/modules`` (where git keeps submodules' git directories), is
    read; a ``.git`` file pointing elsewhere — which an agent can write to
    name any repository on the host — gives None, as does anything that is
    not a plain ``HEAD`` naming a commit or a branch. Only files are read:
    no configuration, hook or command of that repository is ever used.
    """
    git_dir = safe_git_dir(worktree, rel, modules)
    if git_dir is None:
        return None
    head = _read_small(os.path.join(git_dir, "HEAD"))
    for _ in range(5):  # symbolic refs, a few hops at most
        if head is None:
            return None
        head = head.strip()
        if len(head) == 40 and set(head) <= _HEX:
            return head.encode()
        if not head.startswith("ref: refs/"):
            return None
        ref = head[5:].strip()
        if ".." in ref.split("/") or "\0" in ref:
            return None
        loose = _read_small(os.path.join(git_dir, ref))
        head = loose if loose is not None else _packed_ref(git_dir, ref)
    return None


def safe_git_dir(worktree: Path, rel: str, modules: Path) -> str | None:
    """The real path of the git directory of the repository at ``rel`` in ``worktree``, if armor may use it.

    Only one inside the worktree or under the user's ``.git/modules`` (or
    ``.git/worktrees``, where git keeps a linked worktree's submodules) counts;
    a ``.git`` that is a symlink, or a file naming any other place, gives None.
    """
    directory = worktree / rel
    # The submodule's own directory must be reached without a symlink: one there (or on the way) would make armor
    # read, and a strategy write, another checkout (the user's own, say) than the task's.
    if os.path.realpath(directory) != os.path.join(os.path.realpath(worktree), os.path.normpath(rel)):
        return None
    dot_git = directory / ".git"
    try:
        info = os.lstat(dot_git)
    except OSError:
        return None
    if st.S_ISDIR(info.st_mode):
        git_dir = os.path.realpath(dot_git)
    elif st.S_ISREG(info.st_mode):
        text = _read_small(str(dot_git))
        if text is None or not text.startswith("gitdir:"):
            return None
        target = text[len("gitdir:"):].strip()
        git_dir = os.path.realpath(target if os.path.isabs(target) else directory / target)
    else:
        return None
    # Git keeps submodules' git directories under .git/modules, or .git/worktrees/<id>/modules.
    allowed = [os.path.realpath(worktree), os.path.realpath(modules), os.path.realpath(modules.parent / "worktrees")]
    if not any(git_dir == a or git_dir.startswith(a + os.sep) for a in allowed):
        return None
    return git_dir


def _read_small(path: str, limit: int = 4096) -> str | None:
    """The text of a small regular file, opened without following a symlink (None otherwise)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not st.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _packed_ref(git_dir: str, ref: str) -> str | None:
    text = _read_small(os.path.join(git_dir, "packed-refs"), 1 << 20)
    for line in (text or "").splitlines():
        sha, _, name = line.partition(" ")
        if name == ref and len(sha) == 40:
            return sha
    return None
