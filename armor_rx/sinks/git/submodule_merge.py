"""The ``merge`` and ``rebase`` submodule strategies: keep a diverged submodule's work, bring the recorded commit in.

Both run in two passes. The first works out, for every diverged submodule,
the commit it should end on (new commits and trees go into the submodule's
object store, where unreferenced they are harmless) and raises on the first
conflict; only when every submodule has its answer does the second pass
change anything: the submodule's files, its HEAD (or the branch HEAD names)
and the gitlink in the task worktree's index. So a refusal leaves every
submodule, ref, file and index as it was.

All of it is dulwich: no git command, hook, filter or merge driver of the
submodule (whose configuration the agent can write) is ever run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from dulwich.diff_tree import tree_changes
from dulwich.graph import can_fast_forward, find_merge_base
from dulwich.index import Index, update_working_tree
from dulwich.merge import three_way_merge
from dulwich.objects import Commit, ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from armor_rx.errors import GitError, SubmoduleConflict
from armor_rx.sinks.git import worktrees
from armor_rx.sinks.git.indexfile import index_entry
from armor_rx.sinks.git.paths import printable
from armor_rx.sinks.git.recovery import recover_stale_lock
from armor_rx.sinks.git.status import has_changes
from armor_rx.sinks.git.submodules import (
    OUTSIDE,
    OUTSIDE_HINT,
    SubmoduleStatus,
    SubmoduleStrategy,
    check_links,
    open_submodule,
    writable_git_dir,
)

_COMMITTER = b"armor-rx <armor-rx@localhost>"
#: A rebase replays at most this many commits; more is a history to rebase by hand.
MAX_REPLAYED = 1000


@dataclass(frozen=True)
class _Plan:
    sub: SubmoduleStatus
    directory: Path
    git_dir: str
    old: bytes  # checked out now
    new: bytes  # what the strategy ends on
    how: str  # merged, rebased, fast-forward, up-to-date


def integrate(
    repo: Repo, worktree: Path, task_id: str, found: list[SubmoduleStatus], strategy: SubmoduleStrategy
) -> list[SubmoduleStatus]:
    """Apply ``merge`` or ``rebase`` to the diverged submodules of ``found`` (see :func:`.apply_strategy`)."""
    plans: dict[str, _Plan] = {}
    for sub in found:
        if sub.state == "diverged":
            plans[sub.path] = _plan(repo, worktree, task_id, sub, strategy)
    if not plans:
        return found
    admin = worktrees.admin_dir(repo, worktree)
    if admin is None:
        raise GitError(f"task {task_id!r}: the worktree {worktree} is not a linked worktree of {repo.path}; "
                       "its submodules cannot be recorded there")
    out = []
    for sub in found:
        plan = plans.get(sub.path)
        if plan is None:
            out.append(sub)
            continue
        _apply(plan)
        out.append(SubmoduleStatus(sub.path, sub.url, plan.new.decode(), plan.new.decode(), "clean", plan.how,
                                   previous=(sub.recorded, sub.actual)))
    _record_gitlinks(admin, {path: plan.new for path, plan in plans.items()})
    return out


def _plan(superproject: Repo, worktree: Path, task_id: str, sub: SubmoduleStatus,
          strategy: SubmoduleStrategy) -> _Plan:
    directory = worktree / sub.path
    git_dir = writable_git_dir(superproject, worktree, task_id, sub.path)
    if sub.actual is None:
        raise SubmoduleConflict(task_id, {sub.path: OUTSIDE}, hint=OUTSIDE_HINT)
    if has_changes(directory, untracked=False):
        raise SubmoduleConflict(task_id, {sub.path: "diverged and dirty"},
                                hint=f"commit or discard the changes in {sub.path} first, "
                                     "or choose the strategy 'skip'")
    recorded, actual = sub.recorded.encode(), sub.actual.encode()
    with open_submodule(directory, git_dir) as repo:
        for name, sha in (("recorded", recorded), ("checked-out", actual)):
            if ObjectID(sha) not in repo.object_store:
                raise GitError(f"submodule {sub.path} does not have the {name} commit {sha.decode()}; "
                               f"fetch it in the submodule (git -C {sub.path} fetch), or use the strategy 'skip'")
        if can_fast_forward(repo, ObjectID(recorded), ObjectID(actual)):
            new, how = actual, "up-to-date"  # the checkout already holds the recorded commit
        elif can_fast_forward(repo, ObjectID(actual), ObjectID(recorded)):
            new, how = recorded, "fast-forward"  # nothing of its own to keep
        elif strategy == "merge":
            new, how = _merge(repo, task_id, sub.path, recorded, actual), "merged"
        else:
            new, how = _rebase(repo, task_id, sub.path, recorded, actual), "rebased"
        if new != actual:
            check_links(task_id, sub.path, directory,
                        tree_changes(repo.object_store, _commit(repo, actual).tree, _commit(repo, new).tree))
    return _Plan(sub, directory, git_dir, actual, new, how)


def _merge(repo: Repo, task_id: str, path: str, recorded: bytes, actual: bytes) -> bytes:
    ours, theirs = _commit(repo, actual), _commit(repo, recorded)
    bases = find_merge_base(repo, [ObjectID(actual), ObjectID(recorded)])
    base = _commit(repo, bases[0]) if bases else None
    tree = _merged_tree(repo, task_id, path, base, ours, theirs, "merging the recorded commit into its checkout",
                        f"merge it yourself (git -C {path} merge {recorded.decode()[:12]}), "
                        "or choose the strategy 'reset'")
    message = (f"Merge recorded commit {recorded.decode()[:12]} into {path}\n\n"
               "Made by armor-rx's submodule strategy 'merge'.\n").encode()
    return _new_commit(repo, tree, [actual, recorded], message, author=None)


def _rebase(repo: Repo, task_id: str, path: str, recorded: bytes, actual: bytes) -> bytes:
    # The submodule's own commits: those the recorded commit cannot reach, oldest first.
    own = [entry.commit for entry in repo.get_walker(include=[ObjectID(actual)], exclude=[ObjectID(recorded)],
                                                     reverse=True, max_entries=MAX_REPLAYED + 1)]
    if len(own) > MAX_REPLAYED:
        raise SubmoduleConflict(task_id, {path: f"more than {MAX_REPLAYED} commits to replay"},
                                hint="rebase it yourself, or choose the strategy 'merge'")
    merges = [c.id.decode()[:12] for c in own if len(c.parents) > 1]
    if merges:
        raise SubmoduleConflict(task_id, {path: f"merge commit(s) {', '.join(merges)} among the commits to replay"},
                                hint="a rebase would flatten them; choose the strategy 'merge'")
    tip = recorded
    for commit in own:
        parent = _commit(repo, commit.parents[0]) if commit.parents else None
        tree = _merged_tree(repo, task_id, path, parent, _commit(repo, tip), commit,
                            f"replaying {commit.id.decode()[:12]} onto the recorded commit",
                            f"rebase it yourself (git -C {path} rebase {recorded.decode()[:12]}), "
                            "or choose the strategy 'merge' or 'reset'")
        tip = _new_commit(repo, tree, [tip], commit.message, author=commit)
    return tip


def _merged_tree(repo: Repo, task_id: str, path: str, base: Commit | None, ours: Commit, theirs: Commit,
                 doing: str, hint: str) -> bytes:
    # No attributes and no configuration: the submodule's merge drivers are the agent's to name.
    tree, conflicts = three_way_merge(repo.object_store, base, ours, theirs)
    if conflicts:
        listed = ", ".join(printable(os.fsdecode(p)) for p in sorted(conflicts)[:10])
        more = f" and {len(conflicts) - 10} more" if len(conflicts) > 10 else ""
        raise SubmoduleConflict(task_id, {path: f"{doing} conflicts in {listed}{more}"}, hint=hint)
    repo.object_store.add_object(tree)
    return bytes(tree.id)


def _new_commit(repo: Repo, tree: bytes, parents: list[bytes], message: bytes, *, author: Commit | None) -> bytes:
    now = int(time.time())
    commit = Commit()
    commit.tree = ObjectID(tree)
    commit.parents = [ObjectID(p) for p in parents]
    commit.committer = _COMMITTER
    commit.commit_time, commit.commit_timezone = now, 0
    if author is not None:  # a replayed commit keeps its author, as git rebase does
        commit.author = author.author
        commit.author_time, commit.author_timezone = author.author_time, author.author_timezone
    else:
        commit.author, commit.author_time, commit.author_timezone = _COMMITTER, now, 0
    commit.message = message
    repo.object_store.add_object(commit)
    return bytes(commit.id)


def _commit(repo: Repo, sha: bytes) -> Commit:
    found = repo[ObjectID(sha)]
    if not isinstance(found, Commit):
        raise GitError(f"{sha.decode()} in submodule {repo.path} is not a commit")
    return found


def _apply(plan: _Plan) -> None:
    if plan.new == plan.old:
        return  # up to date: only the superproject's gitlink moves
    with open_submodule(plan.directory, plan.git_dir) as repo:
        old_tree, new_tree = _commit(repo, plan.old).tree, _commit(repo, plan.new).tree
        changes = tree_changes(repo.object_store, old_tree, new_tree)
        update_working_tree(repo, old_tree, new_tree, change_iterator=changes)
        # HEAD's branch (or a detached HEAD) moves only if it still names what was planned from.
        if not repo.refs.set_if_equals(Ref(b"HEAD"), ObjectID(plan.old), ObjectID(plan.new), committer=_COMMITTER,
                                       message=f"armor-rx: submodule strategy ({plan.how})".encode()):
            raise GitError(f"submodule {plan.sub.path} moved while armor updated it; its files show "
                           f"{plan.new.decode()}: check 'git -C {plan.sub.path} status' and try again")


def _record_gitlinks(admin: Path, links: dict[str, bytes]) -> None:
    """Stage each submodule's new commit in the worktree's index, as ``git add <submodule>`` would."""
    recover_stale_lock(admin / "index")
    index = Index(str(admin / "index"))
    for path, sha in links.items():
        index[os.fsencode(path)] = index_entry(0o160000, sha, None)
    index.write()
