"""The state directory: where the event log, snapshot and dead letters live.

By default it is ``.armor/`` at the root of the repository being worked on;
it ignores itself for git (``.gitignore`` of ``*``) and is held by one
armor_rx process at a time through an inter-process file lock.

    >>> import tempfile
    >>> with StateDir(tempfile.mkdtemp()) as state:
    ...     state.events_dir.name, state.snapshot_path.name
    ('events', 'snapshot.json')
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from armor_rx._paths import DEFAULT_NAME as DEFAULT_NAME, state_dir_in
from armor_rx.errors import ConfigError, StateDirLocked
from armor_rx.sinks._atomic import write_atomic

if TYPE_CHECKING:
    import filelock

#: Names no task tree may hold, at any depth, reserved the way git reserves
#: '.git': a worktree sits in an agent's hands, and a '.armor/' it made must
#: never be committed, merged or checked out into the user's checkout, where
#: it would land in the real state directory (see docs/git.md).
RESERVED_IN_TREES = (DEFAULT_NAME,)


def _expand(path: str | Path, what: str) -> Path:
    """``~`` and ``~user`` expanded; a home that cannot be found is a ConfigError, not pathlib's RuntimeError."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise ConfigError(f"{what} {str(path)!r}: cannot find that home directory; give the path without '~'") from None


class StateDir:
    """One state directory and its lock.

    ``lock_timeout`` is how long :meth:`acquire` waits for another process to
    let go: ``0`` fails at once, a negative value waits forever.
    """

    def __init__(self, path: str | Path, *, lock_timeout: float = 0.0) -> None:
        self.path = Path(path)
        self.events_dir = self.path / "events"
        self.deadletter_dir = self.path / "deadletter"
        self.snapshot_path = self.path / "snapshot.json"
        # Copies of damaged event-log bytes (see armor_rx.sinks._quarantine); the
        # event log's own default, so every reader of the state directory finds them.
        self.quarantine_dir = self.events_dir / "quarantine"
        self.lock_timeout = lock_timeout
        # thread_local=False: the lock belongs to this object, whichever thread
        # releases it. A second StateDir on the same path (in this process or
        # another) opens its own descriptor, so it is refused by the OS lock.
        # (filelock is imported here: it pulls in asyncio, which a read-only CLI verb never needs.)
        import filelock

        self._lock: filelock.FileLock = filelock.FileLock(self.path / "lock", timeout=lock_timeout, thread_local=False)

    @property
    def locked(self) -> bool:
        """True while this object holds the lock."""
        return self._lock.is_locked

    def acquire(self) -> StateDir:
        """Create the directory (and its ``.gitignore``) and take its lock; returns ``self``.

        Raises :class:`StateDirLocked` when another holder keeps the lock past
        ``lock_timeout``, :class:`ConfigError` when the directory cannot be
        created (a file in the way, no permission).
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError, PermissionError) as exc:
            raise ConfigError(
                f"cannot use {self.path} as the state directory: {exc}; pass another --state-dir"
            ) from exc
        self._write_gitignore()
        import filelock

        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise StateDirLocked(str(self.path)) from None
        return self

    def release(self) -> None:
        """Let go of the lock (idempotent; the directory stays)."""
        if self._lock.is_locked:
            self._lock.release(force=True)

    def __enter__(self) -> StateDir:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _write_gitignore(self) -> None:
        # The state dir usually sits inside the repository; it must never be
        # committed by the user's "git add -A" (or by a task's completion commit).
        gitignore = self.path / ".gitignore"
        try:
            if gitignore.read_text() == "*\n":
                return
        except FileNotFoundError:
            pass
        write_atomic(gitignore, b"*\n", durable=False)  # written again on the next open if a crash loses it

    @staticmethod
    def resolve(
        state_dir: str | Path | None = None, repo: str | Path | None = None, cwd: str | Path | None = None
    ) -> Path:
        """Where the state directory is, as an absolute path (nothing is created).

        An explicit ``state_dir`` wins (relative to ``cwd``). Otherwise it is
        ``<root>/.armor`` for the git checkout containing ``repo`` (or ``cwd``):
        the nearest directory upwards holding a ``.git`` file or directory.
        Outside any checkout it is ``<repo or cwd>/.armor``. Raises
        :class:`ConfigError` when ``repo`` is given but does not exist.
        """
        base = Path(cwd) if cwd is not None else Path.cwd()
        if state_dir is not None:
            return (base / _expand(state_dir, "state directory")).resolve()
        start = base
        if repo is not None:
            start = (base / _expand(repo, "repository path")).resolve()
            if not start.exists():
                raise ConfigError(
                    f"repository path {str(repo)!r} does not exist (resolved to {start}); pass --repo pointing at a git checkout"
                )
            if not start.is_dir():
                start = start.parent
        return Path(state_dir_in(str(start.resolve())))
