"""The git sink's facade: one object per repository and state directory."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

from dulwich.refs import Ref
from dulwich.repo import Repo
from filelock import FileLock, Timeout

from armor_rx.errors import ArmorError, GitError
from armor_rx.model.ids import validate_task_id
from armor_rx.sinks.git import cleanup, recovery
from armor_rx.sinks.git import submodules as submodule_ops
from armor_rx.sinks.git import worktrees
from armor_rx.sinks.git.branches import BranchAllocator
from armor_rx.sinks.git.checkpoints import Checkpoint, CheckpointPolicy, CheckpointStore, checkpoint_ref
from armor_rx.sinks.git.completion import (
    CompletionResult, build_tree, commit_worktree, landed_changes, make_commit, manual_instructions,
    merge_into_base,
)
from armor_rx.model.merge import MERGE_MODES, MergeMode
from armor_rx.sinks.git.diffs import MAX_PATCH_BYTES, TaskDiff, compare_trees
from armor_rx.sinks.git.paths import printable, resolve_inside
from armor_rx.sinks.git.records import RecordStore, TaskGitRecord
from armor_rx.sinks.git.refs import read_commit, resolve_commit
from armor_rx.sinks.git.restore import materialize
from armor_rx.sinks.git.reserved import DEFAULT as DEFAULT_RESERVED
from armor_rx.sinks.git.reserved import REASON as RESERVED_REASON
from armor_rx.sinks.git.reserved import Reserved
from armor_rx.sinks.git.scan import LEFT_OUT_LIMIT, CacheEntry, DirCache, ScanPolicy, ScanResult, TreeEntry
from armor_rx.sinks.git.trees import TreeDiff, diff_trees, flatten_tree, reserved_entries
from armor_rx.sinks.git.submodules import SubmoduleStatus, SubmoduleStrategy

Emit = Callable[[str, "str | None", Mapping[str, Any]], object]


class OutsideState(Protocol):
    """What a checkpoint saves outside the worktree (the Docker sink: an image of the task's container, its volumes).

    ``wants(task_id)`` says whether the task has such state; ``capture(task_id,
    checkpoint_id)`` saves it (with the task frozen) and returns what to
    record in the checkpoint, or raises to fail the checkpoint. It is called
    before the checkpoint's commit is written, so a checkpoint never names a
    part that was not made (see :mod:`armor_rx.sinks.docker.snapshots`).
    ``check_restorable(task_id, checkpoint_id, part)`` raises when the part a
    checkpoint recorded is no longer all there; a restore asks it before it
    changes anything.
    """

    def wants(self, task_id: str) -> bool: ...

    def capture(self, task_id: str, checkpoint_id: str) -> Mapping[str, Any]: ...

    def check_restorable(self, task_id: str, checkpoint_id: str, part: Mapping[str, Any] | None) -> None: ...


def _no_emit(kind: str, task_id: str | None, payload: Mapping[str, Any]) -> None:
    return None


class GitWorkspace:
    """Branches, worktrees, checkpoints and completion for the tasks of one repository.

    ``repo`` is the user's repository (never modified except for new refs,
    ``.git/worktrees`` entries and, on a requested merge, the base branch);
    task worktrees, stat caches and records live under ``state_dir``.
    ``emit(kind, task_id, payload)`` receives every event. Errors are
    :class:`armor_rx.errors.GitError` and its children, :class:`PathEscape`,
    :class:`InvalidTaskId` and :class:`TaskNotFound`.
    """

    def __init__(
        self,
        repo: str | Path,
        state_dir: str | Path,
        *,
        emit: Emit | None = None,
        author: str = "armor-rx <armor-rx@localhost>",
        checkpoint_policy: CheckpointPolicy | None = None,
    ) -> None:
        self.repo_path = Path(repo).resolve()
        self.state_dir = Path(state_dir).resolve()
        self.git_dir = self.state_dir / "git"
        self.worktrees_dir = self.state_dir / "worktrees"
        self.author = author.encode()
        self.policy = checkpoint_policy or CheckpointPolicy()
        self._emit: Emit = emit or _no_emit
        self._repo: Repo | None = None
        self._routes = threading.local()
        self.records = RecordStore(self.git_dir / "tasks")
        # freeze(task_id) is a context manager that stops whatever could write to
        # the task's worktree (the Docker sink pauses the task's container).
        self.freeze: Callable[[str], AbstractContextManager[object]] = lambda _task: nullcontext()
        # Saved with each checkpoint when the task has it (set by the session's assembly).
        self.outside: OutsideState | None = None
        self._checkpoints: CheckpointStore | None = None
        self.state_id: str | None = None
        self.reserved = _reserved_for(self.repo_path, self.state_dir)
        # Events found while starting (recovered locks) wait here: the session's
        # pipeline that records them is not running until every sink has started.
        self._held: list[tuple[str, str | None, Mapping[str, Any]]] | None = None
        self._held_over: list[tuple[str, str | None, Mapping[str, Any]]] = []
        self._admins: dict[str, Path] = {}
        self._nested_reported: dict[str, set[str]] = {}

    # -- lifecycle -------------------------------------------------------
    def start(self) -> GitWorkspace:
        """Open the repository and create the state directories."""
        try:
            repo = Repo(str(self.repo_path))
        except Exception as exc:
            raise GitError(f"{self.repo_path} is not a git repository ({exc}); run 'git init' there first") from None
        if repo.bare:
            repo.close()
            raise GitError(f"{self.repo_path} is a bare repository; armor_rx needs one with a working tree")
        for directory in (self.git_dir / "locks", self.git_dir / "cache", self.git_dir / "requests", self.worktrees_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._repo = repo
        self.state_id = self._read_state_id()
        self._exclude_state_dir()
        self._held = []
        try:
            self.recover()
        finally:
            held, self._held = self._held, None
        for index, event in enumerate(held):
            try:
                self._emit(*event)
            except ArmorError:
                # The receiver is not ready (a session records events once all its
                # sinks have started): they go out before the next event instead.
                self._held_over = held[index:]
                break
        return self

    def recover(self) -> list[str]:
        """Undo what killed writers left behind, for every task not busy now; return the lock files removed.

        Run on :meth:`start` (so before the session reconciles and resumes
        anything). Per task: a lock on its worktree's index or on its refs
        that no live process holds is removed (``git.lock.recovered``), and a
        worktree whose checkout was cut short (no index yet: the agent never
        had it) is finished (``git.worktree.recovered``). A task another
        process is working on is skipped.
        """
        removed: list[str] = []
        admins = worktrees.admin_dirs(self.repo)  # read once, not once per task
        for record in self.records.all():
            lock = FileLock(str(self.git_dir / "locks" / f"{record.task_id}.lock"), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                continue  # busy: its holder is alive, and so may be its locks
            try:
                admin = admins.get(os.path.realpath(self.worktree_path(record.task_id)))
                removed += self._recover_task(record, finish_checkout=True, admin=admin)
            finally:
                lock.release()
        return removed

    def _admin_of(self, task_id: str, path: Path) -> Path | None:
        """The worktree's admin directory, remembered while its ``gitdir`` still names the worktree.

        Finding it means reading every admin directory's ``gitdir``; this runs
        before every checkpoint, so the answer is kept and checked with one read.
        """
        known = self._admins.get(task_id)
        if known is not None:
            try:
                if (known / "gitdir").read_text().strip() == str(path / ".git"):
                    return known
            except OSError:
                pass
        found = worktrees.admin_dir(self.repo, path)
        if found is not None:
            self._admins[task_id] = found
        return found

    def _recover_task(
        self, record: TaskGitRecord, *, finish_checkout: bool = False, admin: Path | None = None
    ) -> list[str]:
        """Remove the task's stale locks (and finish a cut-short checkout); the caller holds the task lock.

        ``admin`` is the worktree's admin directory when the caller knows it.
        """
        path = self.worktree_path(record.task_id)
        if not path.is_dir():
            admin = None
        elif admin is None:
            admin = self._admin_of(record.task_id, path)
        return recovery.recover_task(
            self.repo, record.task_id, record.branch, checkpoint_ref(record.task_id).decode(), path, admin,
            self.reserved, self.emit, finish_checkout=finish_checkout,
        )

    def stop(self) -> None:
        """Close the repository. Safe to call twice."""
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    def __enter__(self) -> GitWorkspace:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def repo(self) -> Repo:
        if self._repo is None:
            raise GitError("the git workspace is not started; call start() or use it as a context manager")
        return self._repo

    def emit(self, kind: str, task_id: str | None, payload: Mapping[str, Any]) -> None:
        """Send one event to the routed receiver of this thread, else to ``emit``.

        Events from :meth:`start` that ``emit`` could not take then are sent
        before the first event after it (or by :meth:`flush_held`).
        """
        if self._held is not None:
            self._held.append((kind, task_id, payload))
            return
        route: Emit | None = getattr(self._routes, "emit", None)
        target = route or self._emit
        if self._held_over:
            held, self._held_over = self._held_over, []
            for event in held:
                target(*event)
        target(kind, task_id, payload)

    def flush_held(self) -> None:
        """Send the events :meth:`start` held (recovered locks and checkouts) now, to ``emit``."""
        held, self._held_over = self._held_over, []
        for event in held:
            self._emit(*event)

    @contextmanager
    def routed(self, emit: Emit) -> Iterator[None]:
        """Send this thread's events to ``emit`` for the duration of the block.

        Per thread, so the pipeline can apply requests of different tasks
        concurrently through one shared workspace.
        """
        previous = getattr(self._routes, "emit", None)
        self._routes.emit = emit
        try:
            yield
        finally:
            self._routes.emit = previous

    def _read_state_id(self) -> str:
        """This state directory's id, made on first start; checkpoints record it."""
        path = self.git_dir / "id"
        if not path.exists():
            # Written whole under another name and linked into place: a second
            # process starting at the same moment reads a complete id or none.
            tmp = path.with_name(f"id.{os.getpid()}.{os.urandom(4).hex()}.tmp")
            tmp.write_text(os.urandom(8).hex() + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # someone else's won
            finally:
                tmp.unlink()
        found = path.read_text().strip()
        if not found.isalnum():
            raise GitError(f"{path} is damaged ({found[:40]!r}); delete it and start again")
        return found

    def _exclude_state_dir(self) -> None:
        # A state dir inside the repository (the default '.armor/') would show
        # up in the user's 'git status' and be swept into their commits.
        try:
            rel = self.state_dir.relative_to(self.repo_path)
        except ValueError:
            return
        exclude = Path(self.repo.commondir()) / "info" / "exclude"
        line = f"/{rel.as_posix()}/"
        existing = exclude.read_text() if exclude.exists() else ""
        if line not in existing.splitlines():
            exclude.parent.mkdir(parents=True, exist_ok=True)
            with open(exclude, "a") as f:
                f.write(("" if existing.endswith("\n") or not existing else "\n") + line + "\n")

    def _task_lock(self, task_id: str) -> FileLock:
        return FileLock(str(self.git_dir / "locks" / f"{validate_task_id(task_id)}.lock"))

    @property
    def checkpoints_store(self) -> CheckpointStore:
        # Kept for the workspace's life: its stat caches remember their last save.
        if self._checkpoints is None or self._checkpoints.repo is not self.repo:
            self._checkpoints = CheckpointStore(
                self.repo, self.git_dir / "cache", self.author, self.policy, owner=self.state_id,
                reserved=self.reserved,
            )
        return self._checkpoints

    # -- branches and worktrees -----------------------------------------
    def create_branch(self, task_id: str, base_ref: str = "HEAD") -> str:
        """Create the task's branch from ``base_ref``; return its name (``task/...``)."""
        validate_task_id(task_id)
        sha, base_branch = resolve_commit(self.repo, base_ref)
        return self._create_branch_at(task_id, sha, base_ref, base_branch.decode() if base_branch else None)

    def _create_branch_at(self, task_id: str, sha: bytes, base_ref: str, base_branch: str | None) -> str:
        # Refused before anything is made: the task's checkpoints would land
        # on a ref another state directory writes to.
        self.checkpoints_store.check_owner(task_id)
        allocator = BranchAllocator(self.repo_path, self.git_dir / "locks" / "branches.lock", self.author, self.emit)
        branch = allocator.create(task_id, sha, base_ref)
        with self._task_lock(task_id):
            old = self.records.get(task_id)
            self.records.put(
                TaskGitRecord(task_id, branch, base_ref, base_branch, sha.decode(),
                              worktree=old.worktree if old else None, requests=old.requests if old else {})
            )
        return branch

    def worktree_path(self, task_id: str) -> Path:
        return self.worktrees_dir / validate_task_id(task_id)

    def add_worktree(self, task_id: str, branch: str) -> Path:
        """Check ``branch`` out into the task's linked worktree; return its path.

        Idempotent: if the worktree already exists on that branch it is returned.
        """
        path = self.worktree_path(task_id)
        with self._task_lock(task_id):
            record = self.records.get(task_id)
            admin = worktrees.admin_dir(self.repo, path) if path.exists() else None
            if admin is not None:
                # The admin directory's HEAD, not the worktree's '.git' file (the agent's to rewrite).
                try:
                    current = (admin / "HEAD").read_bytes().strip().removeprefix(b"ref: ")
                except OSError:
                    current = b"?"
                if current == b"refs/heads/" + branch.encode():
                    return path
                raise GitError(
                    f"task {task_id!r} already has a worktree at {path} on {current.decode()}, not {branch!r}; "
                    "remove it first"
                )
            worktrees.create(self.repo, path, branch)
            if record is None:
                sha = self.repo.refs[Ref(b"refs/heads/" + branch.encode())]
                record = TaskGitRecord(task_id, branch, branch, f"refs/heads/{branch}", sha.decode())
            record.branch = branch
            record.worktree = str(path)
            self.records.put(record)
        self.emit("git.worktree.created", task_id, {"path": str(path), "branch": branch})
        return path

    def _worktree(self, task_id: str) -> tuple[TaskGitRecord, Path]:
        record = self.records.require(task_id)
        path = self.worktree_path(task_id)
        if not path.is_dir():
            raise GitError(f"task {task_id!r} has no worktree at {path}; start the task (add_worktree) first")
        return record, path

    def _head(self, record: TaskGitRecord) -> bytes | None:
        try:
            return bytes(self.repo.refs[Ref(b"refs/heads/" + record.branch.encode())])
        except KeyError:
            return None

    def remove_worktree(self, task_id: str, *, on_dirty: Literal["checkpoint", "refuse"] = "checkpoint") -> None:
        """Remove the task's worktree without losing work (see :func:`.cleanup.remove_worktree`)."""
        cleanup.remove_worktree(self, task_id, on_dirty=on_dirty)

    def prune_stale(self, active_task_ids: Collection[str]) -> list[str]:
        """Remove the worktrees of tasks not in ``active_task_ids`` (see :func:`.cleanup.prune_stale`)."""
        return cleanup.prune_stale(self, active_task_ids)

    def resolve_path(self, task_id: str, path: str) -> Path:
        """``path`` resolved inside the task's worktree; :class:`PathEscape` if it would leave it."""
        return resolve_inside(self.worktree_path(task_id), path)

    # -- submodules -------------------------------------------------------
    def submodules(self, task_id: str, strategy: SubmoduleStrategy = "skip") -> list[SubmoduleStatus]:
        """Each submodule's status in the task's worktree, after applying ``strategy``.

        Emits ``git.submodule.status`` per submodule. ``"reset"`` moves
        diverged (clean) submodules back to the recorded commit; ``"fail"``
        raises :class:`SubmoduleConflict` if any is not clean; ``"merge"`` and
        ``"rebase"`` bring the recorded commit into a diverged submodule's own
        work and stage the result in the worktree's index, or raise
        :class:`SubmoduleConflict` having changed nothing (see
        :func:`.submodules.apply_strategy`).
        """
        _, path = self._worktree(task_id)
        if strategy in ("skip", "fail"):
            found = submodule_ops.apply_strategy(self.repo, path, task_id, strategy)
        else:
            # It rewrites submodule files and refs: nothing in the task may race it (as for a restore).
            with self._task_lock(task_id), self.freeze(task_id):
                found = submodule_ops.apply_strategy(self.repo, path, task_id, strategy)
        for status in found:
            self.emit("git.submodule.status", task_id, status.to_payload())
        return found

    # -- checkpoints ------------------------------------------------------
    def task_lock(self, task_id: str) -> FileLock:
        """The lock every change to the task's worktree and checkpoints holds (across processes)."""
        return self._task_lock(task_id)

    def checkpoint(self, task_id: str, message: str | None = None, *, tags: tuple[str, ...] = (),
                   log_seq: int | None = None) -> Checkpoint:
        """Snapshot the task's worktree on ``refs/armor/checkpoints/<task>`` (with ``tags``); apply retention.

        When the task has state outside the worktree (:attr:`outside`), it is
        captured first, with the task frozen, and the commit names it.
        ``log_seq`` records the log position of the request that asked.
        Every checkpoint retention drops is reported in a ``checkpoint.pruned``
        event (``checkpoints``: their ids; ``reason``: ``retention`` or
        ``max_total_bytes``), for this task or, under the overall limit, for
        whichever task lost them.
        """
        with self._task_lock(task_id):
            record, path = self._worktree(task_id)
            self._recover_task(record)
            store = self.checkpoints_store
            outside = self.outside if self.outside is not None and self.outside.wants(task_id) else None
            if outside is None:
                cp = store.create(task_id, path, message, self._head(record), tags, log_seq=log_seq)
            else:
                store.check_owner(task_id)
                # Frozen across both parts, so the container and the worktree are saved as of one moment.
                with self.freeze(task_id):
                    container = outside.capture(task_id, store.next_id(task_id))
                    cp = store.create(task_id, path, message, self._head(record), tags, log_seq=log_seq,
                                      container=container)
            self.emit("checkpoint.created", task_id, cp.to_payload())
            self._report_nested(task_id, cp.nested, cp.id)
            dropped = store.prune(task_id)
        if dropped:
            self._report_pruned(task_id, dropped, "retention")
        if self.policy.max_total_bytes is not None:
            self.prune_total()
        return cp

    def prune_total(self) -> dict[str, list[Checkpoint]]:
        """Apply the overall byte limit (``max_total_bytes``) to every task's checkpoints now; report each drop."""
        found: dict[str, list[Checkpoint]] = {}
        for task_id, seqs in self.checkpoints_store.plan_total().items():
            with self._task_lock(task_id):  # one task at a time: its own checkpoints may be being written
                dropped = self.checkpoints_store.drop(task_id, seqs)
            if dropped:
                found[task_id] = dropped
                self._report_pruned(task_id, dropped, "max_total_bytes")
        return found

    def _report_pruned(self, task_id: str, dropped: list[Checkpoint], reason: str) -> None:
        latest = self.checkpoints_store.history(task_id, limit=1)
        self.emit("checkpoint.pruned", task_id, {
            "checkpoints": [d.id for d in dropped], "kept": latest[-1].id if latest else None, "reason": reason,
            "bytes": sum(d.bytes_added for d in dropped)})

    def checkpoints(self, task_id: str) -> list[Checkpoint]:
        """The task's checkpoints, oldest first."""
        return self.checkpoints_store.history(validate_task_id(task_id))

    def restore(self, task_id: str, checkpoint: str, *, log_seq: int | None = None) -> Checkpoint:
        """Make the worktree exactly match ``checkpoint`` (``cp-<n>``, ``<n>`` or a sha).

        Unsaved state is checkpointed first (an ``auto`` checkpoint), so a
        restore can itself be undone; with state outside the worktree
        (:attr:`outside`) it always is, since the container may differ while
        the files do not. Excluded files are left alone. Bringing back the
        container part is the Docker sink's (after this returns).
        """
        # The scan and the rewrite happen with the task's processes frozen (when
        # the session has a container per task): nothing can race them.
        with self._task_lock(task_id), self.freeze(task_id):
            record, path = self._worktree(task_id)
            self._recover_task(record)
            store = self.checkpoints_store
            store.check_owner(task_id)
            target = store.find(task_id, checkpoint)
            if self.outside is not None:
                # Before the safety checkpoint and the rewrite: a checkpoint whose container part is gone is refused
                # whole, not restored half (worktree back, container not).
                self.outside.check_restorable(task_id, target.id, target.container)
            # Not saved yet: the cache is saved once, below, as the restore leaves the worktree.
            current = store.scan(task_id, path, save=False)
            safety = None
            outside = self.outside if self.outside is not None and self.outside.wants(task_id) else None
            if current.tree != target.tree.encode() or outside is not None:
                latest = store.history(task_id, limit=1)
                if not latest or latest[-1].tree.encode() != current.tree or outside is not None:
                    container = outside.capture(task_id, store.next_id(task_id)) if outside is not None else None
                    auto = store.commit_scan(task_id, current, f"auto: before restoring {target.id}",
                                             self._head(record), log_seq=log_seq, container=container)
                    safety = auto.id
                    self.emit("checkpoint.created", task_id, {**auto.to_payload(), "auto": True})
            tree = target.tree.encode()
            # Only the directories that differ are read and compared; the files
            # of the others are the same on both sides.
            diff = diff_trees(store.store, current.tree, tree)
            # A checkpoint made before names were reserved may hold '.armor/':
            # never written back, like '.git'.
            refused = sorted(p for p in diff.new if self.reserved.path(p))
            for p in refused:
                del diff.new[p]
            written: dict[str, CacheEntry] = {}
            stats = materialize(path, store.store, diff.old, diff.new, written)
            store.stat_cache(task_id).save(*_after_restore(current, diff, written), tree)
        self.emit(
            "checkpoint.restored",
            task_id,
            {"checkpoint": target.id, "commit": target.commit, "written": stats.written,
             "removed": stats.removed, "chmodded": stats.chmodded, "safety_checkpoint": safety,
             "left_out": {printable(p): RESERVED_REASON for p in refused[:LEFT_OUT_LIMIT]},
             "left_out_count": len(refused)},
        )
        return target

    def diff(self, task_id: str, checkpoint: str | None = None, *, max_patch_bytes: int = MAX_PATCH_BYTES) -> TaskDiff:
        """What the task changed: its worktree now against its base commit, or against ``checkpoint``.

        The worktree is read with the checkpoints' scan (same excludes, no
        symlink followed, the state directory never in it). Nothing is
        recorded: no checkpoint, no event, the stat cache left as it was;
        only the scanned blobs and trees land in the object store. Raises
        :class:`TaskNotFound` for a task without a branch here,
        :class:`CheckpointNotFound` for an unknown ``checkpoint`` and
        :class:`GitError` when the task has no worktree.
        """
        # Under the task lock: a restore rewriting the worktree mid-scan would
        # make the new side a mix of two states.
        with self._task_lock(task_id):
            record, path = self._worktree(task_id)
            store = self.checkpoints_store
            if checkpoint is None:
                against, old_commit = "base", record.base_commit
                old_tree = read_commit(self.repo, record.base_commit.encode()).tree
            else:
                cp = store.find(task_id, checkpoint)
                against, old_commit, old_tree = cp.id, cp.commit, cp.tree.encode()
            scan = store.scan(task_id, path, save=False)
        # Reserved paths are never scanned: what the old side holds there counts as unchanged.
        files, patch, truncated = compare_trees(
            store.store, old_tree, scan.tree, unchanged=scan.skipped, max_patch_bytes=max_patch_bytes,
            ignore=self.reserved.path,
        )
        return TaskDiff(
            task_id, against, old_commit, scan.tree.decode(), files, patch, truncated, tuple(scan.skipped)
        )

    def changes_since_base(self, task_id: str) -> dict[str, tuple[bytes | None, bytes | None]]:
        """The paths the task's worktree changed since its base commit: ``{path: (sha then, sha now)}``.

        ``None`` on a side means the path is missing there. The scan uses
        (and updates) the task's stat cache under the task lock, so only files
        whose stat changed since the last scan or checkpoint are read; files
        the scan leaves out (too large, reserved names) count as unchanged.
        Raises :class:`GitError` when the task has no worktree.
        """
        with self._task_lock(task_id):
            record, path = self._worktree(task_id)
            store = self.checkpoints_store
            scan = store.scan(task_id, path)
            # The blobs written now would be missing from the next checkpoint's count (its scan finds them stored).
            store.note_added(task_id, scan.bytes_added)
            base_tree = read_commit(self.repo, record.base_commit.encode()).tree
        diff = diff_trees(store.store, base_tree, scan.tree)
        skipped = set(scan.skipped)
        out: dict[str, tuple[bytes | None, bytes | None]] = {}
        for rel in diff.old.keys() | diff.new.keys():
            if rel in skipped or self.reserved.path(rel):
                continue
            was, now = diff.old.get(rel), diff.new.get(rel)
            out[rel] = (was[1] if was else None, now[1] if now else None)
        return out

    def branch_from_checkpoint(self, checkpoint: str, new_task_id: str, *, source_task_id: str) -> str:
        """Create a branch for ``new_task_id`` whose tip holds ``checkpoint``'s files.

        The new commit's parent is the source branch tip at checkpoint time,
        so the new branch shares the source's history. Returns the branch name.
        """
        validate_task_id(new_task_id)
        cp = self.checkpoints_store.find(source_task_id, checkpoint)
        source = self.records.get(source_task_id)
        parents = [cp.head.encode()] if cp.head else []
        commit = make_commit(
            self.repo, self._fill_skipped(cp), parents,
            f"armor-rx: start {new_task_id} from {source_task_id} {cp.id}\n\n{cp.message}\n", self.author,
        )
        return self._create_branch_at(
            new_task_id, commit.id, f"{source_task_id}@{cp.id}", source.base_branch if source else None
        )

    def _fill_skipped(self, cp: Checkpoint) -> bytes:
        """``cp``'s tree with the files it skipped (too large) taken from its head commit.

        A checkpoint leaves out files over ``max_file_size``; committing its
        tree as is would delete them from the new branch. Reserved paths
        come from the head commit too, never from the checkpoint.
        """
        store = self.checkpoints_store.store
        reserved = reserved_entries(store, cp.tree.encode(), self.reserved)
        if not cp.skipped_count and not reserved:
            return cp.tree.encode()
        if cp.skipped_count and len(cp.skipped) != cp.skipped_count:
            raise GitError(
                f"checkpoint {cp.id} of task {cp.task_id!r} skipped {cp.skipped_count} file(s) without "
                "recording which; branch from a newer checkpoint (raise max_file_size) or from the task branch"
            )
        files = flatten_tree(store, cp.tree.encode())
        head = flatten_tree(store, read_commit(self.repo, cp.head.encode()).tree) if cp.head else {}
        files.update({p: head[p] for p in cp.skipped if p in head})
        # A checkpoint from before names were reserved may hold '.armor/': the head's are kept instead.
        for p in reserved:
            del files[p]
        files.update({p: v for p, v in head.items() if self.reserved.path(p)})
        return build_tree(store, files)

    # -- completion -------------------------------------------------------
    def check_completable(self, task_id: str, merge: object) -> None:
        """Raise :class:`GitError` if completing ``task_id`` with ``merge`` is bound to be refused.

        Read before the completion is requested, so a refusal leaves the task
        running (its work uncommitted and untouched) instead of failing it in
        the git step: an unknown mode, or a merging mode for a task that
        started from a commit rather than a branch.
        """
        if merge not in MERGE_MODES:
            raise GitError(f"unknown merge mode {merge!r}; use one of {', '.join(MERGE_MODES)}")
        record = self.records.get(task_id)
        if merge != "none" and record is not None and record.base_branch is None:
            raise GitError(
                f"task {task_id!r} started from {record.base_ref!r}, which is not a branch, so there is nothing to "
                f"merge into; complete it with merge='none' (its work stays on {record.branch}) and merge that by hand"
            )

    def complete(self, task_id: str, message: str, *, merge: MergeMode = "none") -> CompletionResult:
        """Commit the worktree to the task branch and optionally merge it into the base.

        ``merge="ff"`` only fast-forwards; ``"merge"`` (or ``"three-way"``)
        also makes a line-level three-way merge commit; ``"first-wins"``
        refuses a task that changed a file the base changed since it started;
        ``"rebase"`` replays the task's commits onto the base's tip (see
        :func:`.completion.merge_into_base`). On conflict nothing is changed
        and ``git.merge.conflict`` lists the paths. ``"manual"`` merges
        nothing and records ``git.merge.manual`` with the commands to merge
        the branch by hand.
        """
        if merge not in MERGE_MODES:
            raise GitError(f"unknown merge mode {merge!r}; use one of {', '.join(MERGE_MODES)}")
        with self._task_lock(task_id):
            record, path = self._worktree(task_id)
            store = self.checkpoints_store
            self._recover_task(record)
            policy = ScanPolicy(self.policy.excludes, honor_gitignore=True, max_file_size=None)
            scan = store.scan(task_id, path, policy)
            tip, committed = commit_worktree(
                self.repo, path, record.branch, scan, message, self.author, self.reserved
            )
            self._report_nested(task_id, scan.nested, None)
            left_out = tuple(scan.left_out.items())
            if committed:
                self.emit("git.commit.created", task_id,
                          {"branch": record.branch, "commit": tip.decode(), "files": scan.count,
                           "left_out": {printable(p): why for p, why in left_out},
                           "left_out_count": scan.left_out_count})
            result = CompletionResult(task_id, record.branch, tip.decode(), committed, merge, False, record.base_branch,
                                      left_out=left_out)
            if merge == "none":
                return result
            if record.base_branch is None:
                raise GitError(
                    f"task {task_id!r} started from {record.base_ref!r}, which is not a branch; "
                    "complete with merge='none' and merge by hand"
                )
            if merge == "manual":
                self.emit("git.merge.manual", task_id, {
                    "branch": record.branch, "base_branch": record.base_branch, "commit": tip.decode(),
                    "how": manual_instructions(record.branch, record.base_branch)})
                return CompletionResult(task_id, record.branch, tip.decode(), committed, merge, False,
                                        record.base_branch, reason="manual", left_out=left_out)
            # One merge into the base at a time: two tasks completing at once each took the base's ref
            # lock in turn, and the second failed on 'main.lock exists' instead of merging or conflicting.
            with FileLock(str(self.git_dir / "locks" / "merge.lock")):
                merged, new_tip, reason, conflicts = merge_into_base(
                    self.repo, tip, record.branch, record.base_branch, merge, self.author, self.reserved
                )
                landed = (landed_changes(self.repo, record.base_branch, tip, conflicts)
                          if merge == "first-wins" and reason == "conflict" else {})
        payload = {"base_branch": record.base_branch, "branch": record.branch, "reason": reason, "strategy": merge}
        if merged:
            self.emit("git.merge.completed", task_id, {**payload, "commit": new_tip.decode() if new_tip else None})
        else:
            extra = {"landed": landed} if landed else {}
            self.emit("git.merge.conflict", task_id, {**payload, "paths": conflicts, **extra})
        return CompletionResult(
            task_id, record.branch, tip.decode(), committed, merge, merged, record.base_branch,
            new_tip.decode() if merged and new_tip else None, reason, tuple(conflicts), left_out,
        )

    def _report_nested(self, task_id: str, nested: Collection[str], checkpoint: str | None) -> None:
        """One ``git.nested_repository`` event per nested repository, the first time it is seen."""
        seen = self._nested_reported.setdefault(task_id, set())
        for rel in nested:
            if rel not in seen:
                seen.add(rel)
                self.emit("git.nested_repository", task_id, {
                    "path": printable(rel), "checkpoint": checkpoint, "followed": False,
                    "saved": "its files, not its .git (never read, followed or run on the host)",
                })


def _reserved_for(repo: Path, state_dir: Path) -> Reserved:
    """The reserved names, plus the state directory's own place when it sits in the repository under another name."""
    try:
        rel = state_dir.relative_to(repo).as_posix()
    except ValueError:
        return DEFAULT_RESERVED
    if rel in ("", ".") or DEFAULT_RESERVED.path(rel):
        return DEFAULT_RESERVED
    return Reserved(paths=frozenset({rel}))


def _after_restore(
    current: ScanResult, diff: TreeDiff, written: dict[str, CacheEntry]
) -> tuple[DirCache, int, dict[str, TreeEntry]]:
    """The stat cache for a worktree that was ``current`` and was restored by ``diff``.

    Files are the scan's, less what the restore removed, plus what it wrote
    (those are newer than the scan's stamp, so they and the trees above them
    are re-read next time). Directory trees are the scan's where nothing
    differed and the restored tree's along the paths that did.
    """
    dirs = dict(current.dirs)
    for path in diff.old.keys() - diff.new.keys():
        directory, _, name = path.rpartition("/")
        if name in dirs.get(directory, {}):
            dirs[directory] = {n: e for n, e in dirs[directory].items() if n != name}
    for path, entry in written.items():
        directory, _, name = path.rpartition("/")
        dirs[directory] = {**dirs.get(directory, {}), name: entry}
    trees = {d: t for d, t in current.trees.items() if d not in diff.gone}
    trees.update(diff.trees)
    return dirs, current.stamp, trees
