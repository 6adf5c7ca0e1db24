"""Completing a task: commit its worktree to its branch, optionally merge to the base."""


from __future__ import annotations

import os
import stat as st
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dulwich.graph import can_fast_forward, find_merge_base
from dulwich.merge import three_way_merge
from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit, ObjectID, Tree
from dulwich.refs import Ref
from dulwich.repo import Repo
from dulwich.worktree import list_worktrees

from armor_rx.errors import GitError, TransientError
from armor_rx.model.merge import MergeMode
from armor_rx.sinks.git import worktrees
from armor_rx.sinks.git.beneath import walk_beneath
from armor_rx.sinks.git.indexfile import index_entry, write_index
from armor_rx.sinks.git.paths import printable
from armor_rx.sinks.git.restore import materialize
from armor_rx.sinks.git.statcache import CacheEntry
from armor_rx.sinks.git.refs import read_commit
from armor_rx.sinks.git.reserved import DEFAULT as DEFAULT_RESERVED
from armor_rx.sinks.git.reserved import Reserved
from armor_rx.sinks.git.scan import ScanResult
from armor_rx.sinks.git.status import has_changes
from armor_rx.sinks.git.trees import Files, diff_trees, flatten_tree, reserved_entries

#: Commits a rebase replays at most (a task branch is a handful; more means something else is wrong).
MAX_REBASE_COMMITS = 10_000


@dataclass(frozen=True)
class CompletionResult:
    """What completing a task did.

    ``commit`` is the task branch tip afterwards; ``committed`` says whether a
    new commit was made (``False`` when the worktree matched the branch).
    ``merged`` is true when the base branch now contains the task's work;
    when it is false after a merge was asked for, ``reason`` says why and
    ``conflicts`` lists conflicting paths (nothing was changed; names that
    are not UTF-8 shown escaped, see :func:`.paths.printable`).
    ``left_out`` says which paths of the worktree were not committed and why
    (fifos, sockets, devices, reserved names, trees too deep; capped).
    """

    task_id: str
    branch: str
    commit: str
    committed: bool
    merge: MergeMode
    merged: bool
    base_branch: str | None = None
    merge_commit: str | None = None
    reason: str | None = None
    conflicts: tuple[str, ...] = field(default=())
    left_out: tuple[tuple[str, str], ...] = field(default=())

    def to_payload(self) -> dict[str, Any]:
        return {
            "branch": self.branch,
            "commit": self.commit,
            "committed": self.committed,
            "merge": self.merge,
            "merged": self.merged,
            "base_branch": self.base_branch,
            "merge_commit": self.merge_commit,
            "reason": self.reason,
            "conflicts": [printable(p) for p in self.conflicts],
            "left_out": {printable(p): why for p, why in self.left_out},
        }


def make_commit(repo: Repo, tree: bytes, parents: list[bytes], message: str, author: bytes) -> Commit:
    commit = Commit()
    commit.tree = tree
    commit.parents = [ObjectID(p) for p in parents]
    commit.author = commit.committer = author
    commit.author_time = commit.commit_time = int(time.time())
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = message.encode() if message.endswith("\n") else (message + "\n").encode()
    repo.object_store.add_object(commit)
    return commit


def commit_worktree(
    repo: Repo, worktree: Path, branch: str, scan: ScanResult, message: str, author: bytes,
    reserved: Reserved = DEFAULT_RESERVED,
) -> tuple[bytes, bool]:
    """Commit the scanned worktree to ``branch``; return ``(tip, committed)``.

    The scan never holds reserved paths (see :mod:`.reserved`); whatever the
    branch itself holds under them (files the user's own history tracks
    there) is carried over unchanged, so completion neither adds, changes
    nor deletes anything under a reserved name. The worktree's index is
    rewritten to match the commit, so plain ``git status`` in the worktree
    is clean afterwards.
    """
    ref = Ref(b"refs/heads/" + branch.encode())
    try:
        head = repo.refs[ref]
    except KeyError:
        raise GitError(f"branch {branch!r} is gone; cannot complete the task onto it") from None
    store = repo.object_store
    assert isinstance(store, DiskObjectStore)
    head_tree = read_commit(repo, head).tree
    carried = reserved_entries(store, head_tree, reserved)
    tree = scan.tree
    if carried:
        tree = ObjectID(build_tree(store, {**flatten_tree(store, scan.tree), **carried}))
    if head_tree == tree:
        _write_index(repo, worktree, scan, carried)
        return head, False
    commit = make_commit(repo, tree, [head], message, author)
    if not repo.refs.set_if_equals(ref, head, commit.id, committer=author, message=b"armor-rx: complete"):
        raise TransientError(f"branch {branch!r} moved while the task was being committed; retry")
    _write_index(repo, worktree, scan, carried)
    return commit.id, True


def _write_index(repo: Repo, worktree: Path, scan: ScanResult, extra: Files | None = None) -> None:
    admin = worktrees.admin_dir(repo, worktree)
    if admin is None:
        raise GitError(f"{worktree} is not a worktree of {repo.path} any more; its index cannot be written")
    # Reserved paths carried over from the branch (``extra``) have no stat: git re-reads them.
    write_index(admin, {**scan.files, **(extra or {})}, scan.cache)


def merge_into_base(
    repo: Repo, task_tip: bytes, branch: str, base_branch: str, mode: MergeMode, author: bytes,
    reserved: Reserved = DEFAULT_RESERVED,
) -> tuple[bool, bytes | None, str | None, list[str]]:
    """Merge ``task_tip`` into ``base_branch``; return ``(merged, new base tip, reason, conflicts)``.

    ``mode`` says how, when the base cannot simply fast-forward to the task:
    ``"ff"`` refuses (``not-fast-forward``); ``"merge"`` and ``"three-way"``
    make a merge commit from a line-level three-way merge (a conflict is a
    region both sides changed); ``"first-wins"`` makes one only when no file
    the task changed was also changed on the base since the task's fork point
    (whoever landed first wins the file, even on other lines); ``"rebase"``
    replays the task's commits, oldest first, onto the base's tip as new
    commits (author and message kept) and fast-forwards the base to the last.
    Nothing is changed unless the merge succeeds completely. When the base
    branch is checked out somewhere (usually the user's checkout), that
    checkout must be clean and is updated along with the ref, as ``git merge``
    would; if it is dirty the merge is refused with reason ``base-checkout-dirty``.
    A merge that would add, change or delete anything under a reserved path
    (armor's state directory, see :mod:`.reserved`) is refused with reason
    ``reserved-path`` and those paths. No merge driver, filter or hook runs:
    dulwich gets no attributes and no configuration to find one in.
    """
    base_ref = Ref(base_branch.encode())
    try:
        base_tip = repo.refs[base_ref]
    except KeyError:
        raise GitError(f"base branch {base_branch!r} does not exist any more; merge by hand") from None
    if base_tip == task_tip or can_fast_forward(repo, ObjectID(task_tip), base_tip):
        return True, base_tip, "up-to-date", []
    if can_fast_forward(repo, base_tip, ObjectID(task_tip)):
        new_tip = task_tip
        how = "fast-forward"
    elif mode == "ff":
        return False, None, "not-fast-forward", []
    elif mode == "rebase":
        replayed, conflicts = _rebase(repo, base_tip, task_tip, author)
        if conflicts or replayed is None:
            return False, None, "conflict", conflicts
        new_tip = replayed
        how = "rebase"
    else:
        bases = find_merge_base(repo, [base_tip, ObjectID(task_tip)])
        base_commit = read_commit(repo, bases[0]) if bases else None
        ours, theirs = read_commit(repo, base_tip), read_commit(repo, task_tip)
        if mode == "first-wins":
            merged_tree, conflicts = _file_level_merge(repo, base_commit, ours, theirs)
        else:
            merged_tree, conflicts = _line_level_merge(repo, base_commit, ours, theirs)
        if conflicts:
            return False, None, "conflict", conflicts
        short = base_branch.removeprefix("refs/heads/")
        merge = make_commit(repo, merged_tree, [base_tip, task_tip], f"Merge branch '{branch}' into {short}", author)
        new_tip = merge.id
        how = "merge"
    checkout = _checkout_of(repo, base_branch)
    old_tree, new_tree = read_commit(repo, base_tip).tree, read_commit(repo, new_tip).tree
    # Conflict paths are for people (and JSON records): names that are not UTF-8 come out escaped.
    touched = [printable(p) for p in _reserved_changes(repo, old_tree, new_tree, reserved)]
    if touched:
        # Only a task tree made before names were reserved (an old checkpoint
        # branched from) can hold them; such a merge is refused, never applied.
        return False, None, "reserved-path", touched
    if checkout is not None:
        if _is_dirty(checkout):
            return False, None, "base-checkout-dirty", []
        blocked = [printable(p) for p in _untracked_in_the_way(repo, Path(checkout), old_tree, new_tree)]
        if blocked:
            return False, None, "base-checkout-untracked", blocked
    if not repo.refs.set_if_equals(base_ref, base_tip, ObjectID(new_tip), committer=author, message=f"armor-rx: {how} {branch}".encode()):
        raise TransientError(f"base branch {base_branch!r} moved during the merge; retry")
    if checkout is not None:
        try:
            _sync_checkout(repo, checkout, old_tree, new_tree)
        except Exception as exc:
            # The ref and the checkout must move together: put the ref back so
            # the user's branch never names a commit their files do not show.
            repo.refs.set_if_equals(base_ref, ObjectID(new_tip), base_tip, committer=author,
                                    message=f"armor-rx: undo {how} {branch}".encode())
            raise GitError(
                f"updating the checkout of {base_branch!r} at {checkout} failed ({exc}); {base_branch!r} was "
                f"moved back to {base_tip.decode()}; check 'git status' there, then merge {branch!r} by hand"
            ) from None
    return True, new_tip, how, []


def _line_level_merge(repo: Repo, base: Commit | None, ours: Commit, theirs: Commit) -> tuple[bytes, list[str]]:
    """A line-level three-way merge of two commits' trees: ``(tree id, conflicting paths)``."""
    try:
        tree, raw_conflicts = three_way_merge(repo.object_store, base, ours, theirs)
    except ImportError:
        # dulwich's line-level merge needs the optional 'merge3' package;
        # without it, merge whole files and call any file both sides
        # changed a conflict — coarser, but never wrong.
        return _file_level_merge(repo, base, ours, theirs)
    repo.object_store.add_object(tree)
    return bytes(tree.id), sorted(printable(os.fsdecode(p)) for p in raw_conflicts)


def _rebase(repo: Repo, base_tip: bytes, task_tip: bytes, author: bytes) -> tuple[bytes | None, list[str]]:
    """Replay the task's commits since its fork point onto ``base_tip``: ``(new tip, conflicting paths)``.

    Each commit's own change (against its first parent) is merged line by
    line onto the replayed history so far, and committed with the original
    author, date and message (the committer is armor). Only objects are
    written: no ref moves here, so a conflict half-way leaves nothing behind
    but unreferenced objects. Merge commits on the task branch are replayed
    as their first-parent change.
    """
    bases = find_merge_base(repo, [ObjectID(base_tip), ObjectID(task_tip)])
    stop = bases[0] if bases else None
    todo: list[Commit] = []
    sha: bytes = task_tip
    while sha != stop:
        commit = read_commit(repo, sha)
        todo.append(commit)
        if not commit.parents or len(todo) > MAX_REBASE_COMMITS:
            break
        sha = commit.parents[0]
    if len(todo) > MAX_REBASE_COMMITS:
        raise GitError(f"the task branch has more than {MAX_REBASE_COMMITS} commits to replay; rebase it by hand")
    current = read_commit(repo, base_tip)
    for original in reversed(todo):
        parent = read_commit(repo, original.parents[0]) if original.parents else None
        tree, conflicts = _line_level_merge(repo, parent, current, original)
        if conflicts:
            return None, conflicts
        if tree == current.tree:
            continue  # already on the base (the other task made the same change): nothing to replay
        commit = Commit()
        commit.tree = ObjectID(tree)
        commit.parents = [current.id]
        commit.author, commit.author_time, commit.author_timezone = (
            original.author, original.author_time, original.author_timezone)
        commit.committer = author
        commit.commit_time, commit.commit_timezone = int(time.time()), 0
        commit.message = original.message
        repo.object_store.add_object(commit)
        current = commit
    return bytes(current.id), []


def landed_changes(
    repo: Repo, base_branch: str, task_tip: bytes, paths: list[str], limit: int = 20
) -> dict[str, dict[str, str]]:
    """For each of ``paths`` (at most ``limit``), the newest commit on the base since the task forked that changed it.

    ``{path: {"commit": sha, "subject": first line}}``: what won a
    ``first-wins`` refusal, so the person reading it knows whose work landed.
    """
    try:
        base_tip = repo.refs[Ref(base_branch.encode())]
    except KeyError:
        return {}
    bases = find_merge_base(repo, [base_tip, ObjectID(task_tip)])
    out: dict[str, dict[str, str]] = {}
    for path in paths[:limit]:
        raw = path.encode("utf-8", "surrogateescape")
        walker = repo.get_walker(include=[base_tip], exclude=list(bases), paths=[raw], max_entries=1)
        for entry in walker:
            subject = entry.commit.message.decode("utf-8", "replace").split("\n", 1)[0]
            out[path] = {"commit": entry.commit.id.decode(), "subject": subject}
    return out


def manual_instructions(branch: str, base_branch: str) -> dict[str, str]:
    """How a person merges ``branch`` into ``base_branch`` by hand (for the ``git.merge.manual`` event)."""
    base = base_branch.removeprefix("refs/heads/")
    return {
        "merge": f"git switch {base} && git merge --no-ff {branch}",
        "rebase": f"git rebase {base} {branch} && git switch {base} && git merge --ff-only {branch}",
        "inspect": f"git log --oneline {base}..{branch} && git diff {base}...{branch}",
    }


def _file_level_merge(repo: Repo, base: Commit | None, ours: Commit, theirs: Commit) -> tuple[bytes, list[str]]:
    store = repo.object_store
    assert isinstance(store, DiskObjectStore)
    old = flatten_tree(store, base.tree) if base is not None else {}
    mine, yours = flatten_tree(store, ours.tree), flatten_tree(store, theirs.tree)
    merged: dict[str, tuple[int, bytes]] = {}
    conflicts: list[str] = []
    for path in sorted(set(old) | set(mine) | set(yours)):
        b, o, t = old.get(path), mine.get(path), yours.get(path)
        pick = o if o == t or t == b else t if o == b else None
        if pick is None:
            conflicts.append(printable(path))
        else:
            merged[path] = pick
    # A file on one side where the other made a directory is a conflict too.
    dirs = {p.rsplit("/", 1)[0] for p in merged if "/" in p}
    dirs |= {d.rsplit("/", i)[0] for d in dirs for i in range(1, d.count("/") + 1)}
    conflicts += sorted(printable(p) for p in merged if p in dirs)
    return build_tree(store, merged), sorted(conflicts)


def build_tree(store: DiskObjectStore, files: dict[str, tuple[int, bytes]]) -> bytes:
    """Write the nested trees for ``{path: (mode, sha)}``; return the root tree id.

    Deepest directories first, so no recursion: any depth is written.
    """
    entries: dict[str, list[tuple[bytes, int, bytes]]] = {"": []}
    for path, (mode, sha) in files.items():
        parent, _, name = path.rpartition("/")
        if parent not in entries:
            # A directory seen for the first time: its parents are made too, up to one already known.
            missing = parent
            while missing not in entries:
                entries[missing] = []
                missing = missing.rpartition("/")[0]
        entries[parent].append((name.encode("utf-8", "surrogateescape"), mode, sha))
    for directory in sorted(entries, key=lambda d: d.count("/") + 1 if d else 0, reverse=True):
        tree = Tree()
        for raw, mode, sha in entries[directory]:
            tree.add(raw, mode, ObjectID(sha))
        store.add_object(tree)
        if directory:
            parent, _, name = directory.rpartition("/")
            entries[parent].append((name.encode("utf-8", "surrogateescape"), 0o040000, bytes(tree.id)))
        else:
            return bytes(tree.id)
    raise AssertionError("unreachable: the root is always last")


def _reserved_changes(repo: Repo, old_tree: bytes, new_tree: bytes, reserved: Reserved) -> list[str]:
    store = repo.object_store
    assert isinstance(store, DiskObjectStore)
    diff = diff_trees(store, old_tree, new_tree)
    return sorted(p for p in diff.old.keys() | diff.new.keys() if reserved.path(p))


def _checkout_of(repo: Repo, branch: str) -> str | None:
    for info in list_worktrees(repo):
        if info.branch == branch.encode() and not info.bare:
            return str(info.path)
    return None


def _is_dirty(path: str) -> bool:
    return has_changes(path, untracked=False)


def _untracked_in_the_way(repo: Repo, checkout: Path, old_tree: bytes, new_tree: bytes) -> list[str]:
    """Paths in ``checkout`` that git does not track and the merge would overwrite.

    ``git merge`` refuses rather than overwrite untracked files; so do we. A
    spot is in the way when the merge writes a file there (or needs it as a
    directory) and the disk holds something the base commit does not track.
    Only the paths that differ between the two trees are looked at (a path
    the base tracks and the merge replaces is always among them), each
    directory once, without recursion.
    """
    store = repo.object_store
    assert isinstance(store, DiskObjectStore)
    diff = diff_trees(store, old_tree, new_tree)
    old = diff.old
    base = os.fspath(checkout)
    blocked: set[str] = set()
    looked: set[str] = set()
    for path in diff.new:
        parts = path.split("/")
        parent = ""
        for part in parts[:-1]:
            parent = f"{parent}/{part}" if parent else part
            if parent in looked:
                continue
            looked.add(parent)
            kind = _lstat_mode(f"{base}/{parent}")
            if kind is not None and not st.S_ISDIR(kind) and parent not in old:
                blocked.add(parent)  # a file or link sits where the merge needs a directory
        kind = _lstat_mode(f"{base}/{path}")
        if path in old or kind is None:
            continue
        if st.S_ISDIR(kind):
            blocked.update(_untracked_under(f"{base}/{path}", path, old))
        else:
            blocked.add(path)
    return sorted(blocked)


def _lstat_mode(path: str) -> int | None:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return None


def _untracked_under(directory: str, rel: str, old: Files) -> list[str]:
    """Files under ``directory`` (which a merged file replaces) that the base does not track.

    A directory the base tracks nothing in is reported whole, as ``rel/``.
    """
    if not any(p.startswith(rel + "/") for p in old):
        return [rel + "/"]
    found: list[str] = []
    for sub, _dirs, files in walk_beneath(directory):
        here = f"{rel}/{sub}" if sub else rel
        found += [f"{here}/{name}" for name in files if f"{here}/{name}" not in old]
    return found


def _sync_checkout(repo: Repo, path: str, old_tree: bytes, new_tree: bytes) -> None:
    """Move the user's checkout at ``path`` from ``old_tree`` to ``new_tree``, files and index.

    Through :func:`~.restore.materialize`, not dulwich's
    ``update_working_tree``: no smudge filter (the new tree's
    ``.gitattributes`` may be an agent's), no symlink in the checkout
    followed, any depth (dulwich makes directories recursively) and any
    byte string as a name. Only the paths that differ are touched.
    """
    store = repo.object_store
    assert isinstance(store, DiskObjectStore)
    diff = diff_trees(store, old_tree, new_tree)
    with Repo(path) as checkout:
        index = checkout.open_index()
        written: dict[str, CacheEntry] = {}
        materialize(Path(path), store, diff.old, diff.new, written)
        for gone in diff.old.keys() - diff.new.keys():
            name = os.fsencode(gone)
            if name in index:
                del index[name]
        for rel, (mode, sha) in diff.new.items():
            index[os.fsencode(rel)] = index_entry(mode, sha, written.get(rel))
        index.write()
