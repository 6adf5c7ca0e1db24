"""Creating task branches atomically, with a unique fallback name on conflict."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dulwich.file import FileLocked
from dulwich.objects import ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo
from filelock import FileLock

from armor_rx.errors import BranchConflict, GitError
from armor_rx.sinks.git.names import branch_for_task, unique_branch_name

Emit = Callable[[str, "str | None", Mapping[str, Any]], object]

#: How many names are tried before giving up with :class:`BranchConflict`.
MAX_ATTEMPTS = 10


class BranchAllocator:
    """Hands out ``task/<slug>`` branches so that no two callers get the same one.

    Two guards stack up: a file lock (so processes sharing a state directory
    queue up instead of racing) and dulwich's ``add_if_new`` (a compare-and-
    create on the ref file itself, so even a writer that ignores our lock —
    the git CLI, another tool — cannot be overwritten).
    """

    def __init__(self, repo_path: Path, lock_path: Path, author: bytes, emit: Emit) -> None:
        self._repo_path = repo_path
        self._lock = FileLock(str(lock_path))
        # FileLock is per-thread re-entrant; a process-local mutex keeps the
        # threads of one process orderly without relying on that detail.
        self._mutex = threading.Lock()
        self._author = author
        self._emit = emit

    def create(self, task_id: str, base_commit: bytes, base_ref: str) -> str:
        """Create a branch for ``task_id`` at ``base_commit`` and return its short name.

        Tries ``task/<task_id>`` first, then up to ``MAX_ATTEMPTS - 1`` names
        with a timestamp-and-random suffix. Emits ``git.branch.requested``,
        one ``git.branch.conflict`` per taken name and ``git.branch.created``.
        Raises :class:`BranchConflict` when every attempt was taken.
        """
        preferred = branch_for_task(task_id)
        self._emit("git.branch.requested", task_id, {"branch": preferred, "base_ref": base_ref})
        candidate = preferred
        repo = Repo(str(self._repo_path))
        try:
            with self._mutex, self._lock:
                for attempt in range(1, MAX_ATTEMPTS + 1):
                    ref = Ref(b"refs/heads/" + candidate.encode())
                    if self._try_add(repo, ref, base_commit, base_ref):
                        self._emit(
                            "git.branch.created",
                            task_id,
                            {
                                "branch": candidate,
                                "base_ref": base_ref,
                                "commit": base_commit.decode(),
                                "attempts": attempt,
                            },
                        )
                        return candidate
                    self._emit("git.branch.conflict", task_id, {"branch": candidate, "attempt": attempt})
                    candidate = unique_branch_name(task_id)
        finally:
            repo.close()
        raise BranchConflict(preferred, MAX_ATTEMPTS)

    def _try_add(self, repo: Repo, ref: Ref, sha: bytes, base_ref: str) -> bool:
        try:
            return bool(
                repo.refs.add_if_new(
                    ref,
                    ObjectID(sha),
                    committer=self._author,
                    message=b"armor-rx: branch created from " + base_ref.encode(),
                )
            )
        except FileLocked:
            # Someone outside our lock is writing this very ref: treat it as taken.
            return False
        except (NotADirectoryError, IsADirectoryError) as exc:
            # 'refs/heads/task' exists as a branch, so 'task/...' cannot be a ref.
            raise GitError(
                f"cannot create {ref.decode()}: a ref is in the way ({exc}); "
                "rename the branch called 'task' in this repository"
            ) from None
