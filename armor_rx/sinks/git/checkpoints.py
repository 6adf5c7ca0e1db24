"""Checkpoints: worktree snapshots as commits on ``refs/armor/checkpoints/<task>``.

Each checkpoint is an ordinary commit whose tree is the whole worktree and
whose parents are the previous checkpoint and the task branch's tip at the
time, so ``git log refs/armor/checkpoints/<task>`` shows both histories and
the task branch itself is never touched. The checkpoint's stable id
(``cp-<n>``) and bookkeeping live in trailers of the commit message: git is the
only store, so nothing can drift out of sync after a crash.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from dulwich.index import Index
from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit, ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from armor_rx.errors import CheckpointNotFound, CheckpointsOwnedElsewhere, ConfigError, GitError
from armor_rx.sinks.git.trees import flatten_tree
from armor_rx.sinks.git import worktrees
from armor_rx.sinks.git.paths import printable
from armor_rx.sinks.git.reserved import DEFAULT as DEFAULT_RESERVED
from armor_rx.sinks.git.reserved import Reserved
from armor_rx.sinks.git.retention import plan_retention, plan_total
from armor_rx.sinks.git.submodules import gitmodules_paths, safe_submodule_head
from armor_rx.sinks.git.scan import LEFT_OUT_LIMIT, ScanPolicy, ScanResult, StatCache, scan_worktree

REF_PREFIX = b"refs/armor/checkpoints/"
_TRAILER = re.compile(r"^Armor-([A-Za-z]+): (.*)$", re.M)
_SKIPPED_PATH = re.compile(r"^Armor-Skipped-Path: (.*)$", re.M)
_LEFT_OUT_PATH = re.compile(r"^Armor-LeftOut-Path: (.*)$", re.M)
_NESTED_PATH = re.compile(r"^Armor-Nested-Path: (.*)$", re.M)
_TAG_LINE = re.compile(r"^Armor-Tag: (.*)$", re.M)
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def validate_tag(tag: str) -> str:
    """``tag`` if it is a checkpoint tag (letters, digits, ``.``, ``_``, ``-``; up to 64), else ConfigError."""
    if not isinstance(tag, str) or _TAG.fullmatch(tag) is None:
        raise ConfigError(f"checkpoint tag {tag!r} is not valid; use letters, digits, '.', '_' and '-' "
                          "(up to 64, starting with a letter or digit), e.g. --tag before-migration")
    return tag
_CONTAINER = re.compile(r"^Armor-Container: (.*)$", re.M)


@dataclass(frozen=True)
class CheckpointPolicy:
    """What checkpoints capture and how many are kept.

    ``excludes`` (gitignore syntax), ``honor_gitignore`` and ``max_file_size``
    choose the files (see :class:`~armor_rx.sinks.git.scan.ScanPolicy`).
    ``keep_last`` keeps the newest N checkpoints of a task; ``max_bytes`` caps
    the bytes their new objects added to the store. The newest checkpoint is
    always kept. ``None`` means no limit.

    Dropping the oldest checkpoint rewrites every newer one (each names its
    predecessor), so for ``keep_last`` of 10 or more, pruning waits until a
    tenth more than ``keep_last`` exist and then drops them together: at most
    ``keep_last + keep_last // 10`` are ever kept, and a checkpoint costs the
    same after the first hundred as before. ``max_bytes`` is applied exactly.

    Retention beyond the last N (see :mod:`.retention`): ``keep_hourly``
    keeps the newest checkpoint of each of the last N hours, ``keep_daily``
    of each of the last N days, ``keep_tagged`` every checkpoint with a tag
    (``armor-rx checkpoint TASK --tag NAME``); a checkpoint any rule keeps
    stays. ``max_total_bytes`` caps all tasks' checkpoints together (this
    state directory's), dropping the oldest first; no limit ever drops a
    task's newest checkpoint or a tagged one.
    """

    excludes: tuple[str, ...] = ()
    honor_gitignore: bool = True
    max_file_size: int | None = None
    keep_last: int | None = 50
    max_bytes: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_tagged: bool = True
    max_total_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("keep_last", "max_bytes", "keep_hourly", "keep_daily", "max_total_bytes", "max_file_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"checkpoint policy {name} must be a whole number >= 0 or None, not {value!r}")

    @classmethod
    def parse(cls, text: str, base: CheckpointPolicy | None = None) -> CheckpointPolicy:
        """Retention from the CLI's form: ``keep_last=50,hourly=24,daily=7,max_bytes=100m,total_bytes=1g``.

        Sizes take k/m/g suffixes; ``none`` lifts a limit. Starts from ``base`` (default: the defaults).
        """
        from armor_rx.sinks.docker.spec import parse_bytes

        names = {"keep_last": "keep_last", "last": "keep_last", "hourly": "keep_hourly", "keep_hourly": "keep_hourly",
                 "daily": "keep_daily", "keep_daily": "keep_daily", "max_bytes": "max_bytes", "bytes": "max_bytes",
                 "total_bytes": "max_total_bytes", "max_total_bytes": "max_total_bytes", "tagged": "keep_tagged",
                 "keep_tagged": "keep_tagged"}
        changes: dict[str, Any] = {}
        for part in (p.strip() for p in text.split(",") if p.strip()):
            key, sep, value = part.partition("=")
            field_name = names.get(key.strip().replace("-", "_"))
            if field_name is None or not sep:
                raise ConfigError(f"checkpoint retention part {part!r} is not one of keep_last=N, hourly=N, daily=N, "
                                  "max_bytes=SIZE, total_bytes=SIZE, tagged=yes|no")
            value = value.strip().lower()
            if field_name == "keep_tagged":
                if value not in ("yes", "no", "true", "false", "1", "0"):
                    raise ConfigError(f"checkpoint retention tagged= takes yes or no, not {value!r}")
                changes[field_name] = value in ("yes", "true", "1")
            elif value in ("none", "off"):
                changes[field_name] = None
            elif field_name in ("max_bytes", "max_total_bytes"):
                changes[field_name] = parse_bytes(value)
            elif value.isdigit():
                changes[field_name] = int(value)
            else:
                raise ConfigError(f"checkpoint retention {key}= takes a whole number (or none), not {value!r}")
        return replace(base or cls(), **changes)

    def scan_policy(self) -> ScanPolicy:
        return ScanPolicy(self.excludes, self.honor_gitignore, self.max_file_size)


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of one task.

    ``id`` (``cp-<seq>``) is stable; ``commit`` changes when retention rewrites
    older history, so refer to checkpoints by ``id``. ``log_seq`` is the log
    position of the request that made it (None when made outside a request).
    ``container`` is the part saved outside the worktree, when the task's
    container could change files there (see
    :mod:`armor_rx.sinks.docker.snapshots`): ``snapshot`` id, ``image`` (a
    ``docker commit``, or None) and ``volumes`` (path -> saved archive);
    None when the checkpoint holds the worktree only.
    """

    task_id: str
    id: str
    seq: int
    commit: str
    tree: str
    head: str | None
    message: str
    created_at: float
    files: int
    bytes_added: int
    skipped: tuple[str, ...] = field(default=())
    skipped_count: int = 0
    owner: str | None = None
    left_out: tuple[tuple[str, str], ...] = field(default=())
    left_out_count: int = 0
    nested: tuple[str, ...] = field(default=())
    tags: tuple[str, ...] = field(default=())
    log_seq: int | None = None
    container: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def holds(self) -> list[str]:
        """What restoring it brings back: ``worktree``, and ``image`` / ``volumes`` when saved."""
        part = self.container or {}
        return ["worktree"] + (["image"] if part.get("image") else []) + (["volumes"] if part.get("volumes") else [])

    def to_payload(self) -> dict[str, Any]:
        """A JSON-safe description for events (names that are not UTF-8 shown escaped, see :func:`.paths.printable`)."""
        return {
            "checkpoint": self.id,
            "seq": self.seq,
            "commit": self.commit,
            "tree": self.tree,
            "head": self.head,
            "message": self.message,
            "files": self.files,
            "bytes_added": self.bytes_added,
            "skipped": [printable(p) for p in self.skipped],
            "left_out": {printable(p): why for p, why in self.left_out},
            "left_out_count": self.left_out_count,
            "nested_repositories": [printable(p) for p in self.nested],
            "tags": list(self.tags),
            "log_seq": self.log_seq,
            "holds": self.holds,
            "container": self.container,
        }


def checkpoint_ref(task_id: str) -> Ref:
    return Ref(REF_PREFIX + task_id.encode())


def _message(
    task_id: str, seq: int, text: str, head: bytes | None, result: ScanResult, owner: str | None,
    tags: tuple[str, ...] = (), log_seq: int | None = None, container: Mapping[str, Any] | None = None,
) -> bytes:
    files, added, skipped = result.count, result.bytes_added, result.skipped
    lines = [
        text.strip() or f"checkpoint {seq}",
        "",
        f"Armor-Task: {task_id}",
        f"Armor-Checkpoint: {seq}",
        f"Armor-Head: {head.decode() if head else '-'}",
        f"Armor-Files: {files}",
        f"Armor-Bytes: {added}",
        f"Armor-Skipped: {len(skipped)}",
    ]
    if owner:
        lines.append(f"Armor-State: {owner}")
    lines += [f"Armor-Tag: {validate_tag(t)}" for t in dict.fromkeys(tags)]
    if log_seq is not None:
        lines.append(f"Armor-LogSeq: {log_seq}")
    if container is not None:
        # Written with the commit that is the checkpoint: a part is named only once it exists.
        lines.append(f"Armor-Container: {json.dumps(dict(container), sort_keys=True)}")
    # JSON-quoted so any file name (newlines included) survives as one line.
    lines += [f"Armor-Skipped-Path: {json.dumps(p)}" for p in skipped]
    # What the scan could or would not save, and why: special files, reserved
    # names, trees too deep; the count is exact, the list capped.
    if result.left_out_count:
        lines.append(f"Armor-LeftOut: {result.left_out_count}")
    lines += [f"Armor-LeftOut-Path: {json.dumps([p, why])}" for p, why in result.left_out.items()]
    lines += [f"Armor-Nested-Path: {json.dumps(p)}" for p in result.nested[:LEFT_OUT_LIMIT]]
    return ("\n".join(lines) + "\n").encode()


def _parse(task_id: str, commit: Commit) -> Checkpoint:
    whole = commit.message.decode("utf-8", "replace")
    # The trailers are the block armor appended after the free text, which is the user's (or the agent's, through
    # its tools): lines in it that look like trailers must not name a container part, a tag or skipped paths.
    # Armor's block never holds a blank line (paths are JSON-quoted), so its start is the last one before it.
    body, sep, block = whole.rpartition("\n\nArmor-Task:")
    text = "Armor-Task:" + block if sep else whole
    trailers = dict(_TRAILER.findall(text))
    try:
        seq = int(trailers["Checkpoint"])
    except (KeyError, ValueError):
        raise GitError(
            f"commit {commit.id.decode()} on {checkpoint_ref(task_id).decode()} is not an armor_rx "
            "checkpoint (no Armor-Checkpoint trailer); something else wrote to that ref"
        ) from None
    head = trailers.get("Head", "-")
    container = _CONTAINER.search(text)
    log_seq = trailers.get("LogSeq")
    return Checkpoint(
        task_id=task_id,
        id=f"cp-{seq}",
        seq=seq,
        commit=commit.id.decode(),
        tree=commit.tree.decode(),
        head=None if head == "-" else head,
        message=body.strip() if sep else whole.strip(),
        created_at=float(commit.commit_time),
        files=int(trailers.get("Files", "0")),
        bytes_added=int(trailers.get("Bytes", "0")),
        skipped=tuple(json.loads(p) for p in _SKIPPED_PATH.findall(text)),
        skipped_count=int(trailers.get("Skipped", "0")),
        owner=trailers.get("State"),
        left_out=tuple((str(p), str(why)) for p, why in (json.loads(x) for x in _LEFT_OUT_PATH.findall(text))),
        left_out_count=int(trailers.get("LeftOut", "0")),
        nested=tuple(json.loads(p) for p in _NESTED_PATH.findall(text)),
        tags=tuple(t.strip() for t in _TAG_LINE.findall(text)),
        log_seq=int(log_seq) if log_seq and log_seq.isdigit() else None,
        container=json.loads(container.group(1)) if container else None,
    )


class CheckpointStore:
    """Creates, lists and prunes the checkpoints of tasks in one repository.

    ``owner`` identifies the state directory this store works for; it is
    recorded in every checkpoint, and a task id whose checkpoints another
    owner wrote is refused (:class:`CheckpointsOwnedElsewhere`) instead of
    mixing two histories on one ref.
    """

    def __init__(
        self, repo: Repo, cache_dir: Path, author: bytes, policy: CheckpointPolicy, owner: str | None = None,
        reserved: Reserved = DEFAULT_RESERVED,
    ) -> None:
        self.repo = repo
        self.reserved = reserved
        self.owner = owner
        self.cache_dir = cache_dir
        self.author = author
        self.policy = policy
        self._stat_caches: dict[str, StatCache] = {}
        # Bytes other scans of a task's worktree (the conflict watcher's) added to the store since its last
        # checkpoint: charged to the next one, so max_bytes still counts everything the task's files cost.
        self._pending_bytes: dict[str, int] = {}
        # Parsed history per task: (tip sha, checkpoints oldest first). Reused
        # while the ref still points at that tip or one of its descendants.
        self._histories: dict[str, tuple[bytes, list[Checkpoint]]] = {}

    @property
    def store(self) -> DiskObjectStore:
        store = self.repo.object_store
        assert isinstance(store, DiskObjectStore)
        return store

    def stat_cache(self, task_id: str) -> StatCache:
        # One object per task, so its memory of the last save spares a re-parse.
        cache = self._stat_caches.get(task_id)
        if cache is None:
            cache = self._stat_caches[task_id] = StatCache(self.cache_dir / f"{task_id}.json")
        return cache

    def forget_worktree(self, task_id: str) -> None:
        """Drop the task's stat cache (its worktree is gone; the checkpoints stay)."""
        cache = self._stat_caches.pop(task_id, None) or StatCache(self.cache_dir / f"{task_id}.json")
        cache.delete()

    def scan(self, task_id: str, worktree: Path, policy: ScanPolicy | None = None, *, save: bool = True) -> ScanResult:
        """Scan ``worktree`` with the task's stat cache (updated afterwards unless ``save`` is false)."""
        cache = self.stat_cache(task_id)
        stamp = cache.stamp(worktree)
        tracked = _TrackedPaths(self.repo, worktree)
        entries, trees = cache.load_all(self.store)
        scan_policy = replace(policy or self.policy.scan_policy(), reserved=self.reserved)
        modules = Path(self.repo.commondir()) / "modules"
        result = scan_worktree(
            worktree, self.store, entries, scan_policy, tracked, trees, tracked.is_submodule, stamp,
            lambda rel: safe_submodule_head(worktree, rel, modules),
        )
        if save:
            cache.save(result.dirs, stamp, result.trees, result.tree, result.racy)
        return result

    def history(self, task_id: str, limit: int | None = None) -> list[Checkpoint]:
        """The task's checkpoints, oldest first (only the newest ``limit`` if given)."""
        try:
            tip = self.repo.refs[checkpoint_ref(task_id)]
        except KeyError:
            self._histories.pop(task_id, None)
            return []
        cached = self._histories.get(task_id)
        known = {cp.commit.encode(): i for i, cp in enumerate(cached[1])} if cached else {}
        found: list[Checkpoint] = []
        seen: set[bytes] = set()
        sha = tip
        # What precedes ``found``: set once the walk reaches the oldest
        # checkpoint or one already parsed; a walk cut short by ``limit``
        # leaves it None and is not remembered.
        base: list[Checkpoint] | None = None
        while sha not in seen and (limit is None or len(found) < limit):
            if sha in known:
                assert cached is not None
                base = cached[1][: known[sha] + 1]  # the rest is already parsed
                break
            seen.add(sha)
            commit = self.repo[sha]
            assert isinstance(commit, Commit)
            cp = _parse(task_id, commit)
            found.append(cp)
            # Parents are [previous checkpoint] + [task head]; the oldest
            # checkpoint has only the head (when there is one).
            if len(commit.parents) <= (1 if cp.head else 0):
                base = []
                break
            sha = commit.parents[0]
        found.reverse()
        if base is not None:
            full = base + found
            self._histories[task_id] = (tip, full)
            return full[-limit:] if limit is not None else list(full)  # a copy: callers may change theirs
        return found

    def find(self, task_id: str, checkpoint: str) -> Checkpoint:
        """A checkpoint by ``cp-<n>``, ``<n>`` or a commit sha prefix (4+ digits)."""
        key = checkpoint.strip().lower()
        for cp in self.history(task_id):
            if key in (cp.id, str(cp.seq)) or (len(key) >= 4 and cp.commit.startswith(key)):
                return cp
        raise CheckpointNotFound(task_id, checkpoint)

    def check_owner(self, task_id: str) -> None:
        """Raise :class:`CheckpointsOwnedElsewhere` if another state directory wrote the task's checkpoints.

        Checkpoints without an owner (written before owners were recorded)
        count as this store's.
        """
        self._refuse_foreign(task_id, self.history(task_id, limit=1))

    def _refuse_foreign(self, task_id: str, latest: list[Checkpoint]) -> None:
        if latest and latest[-1].owner and self.owner and latest[-1].owner != self.owner:
            raise CheckpointsOwnedElsewhere(task_id, latest[-1].owner, checkpoint_ref(task_id).decode())

    def create(self, task_id: str, worktree: Path, message: str | None, head: bytes | None,
               tags: tuple[str, ...] = (), *, log_seq: int | None = None,
               container: Mapping[str, Any] | None = None) -> Checkpoint:
        """Snapshot ``worktree`` as the task's next checkpoint (with ``tags``); return it."""
        for tag in tags:
            validate_tag(tag)  # before the scan: a bad tag costs nothing
        self.check_owner(task_id)
        result = self.scan(task_id, worktree)
        return self.commit_scan(task_id, result, message, head, tags, log_seq=log_seq, container=container)

    def note_added(self, task_id: str, added: int) -> None:
        """Charge ``added`` bytes, written to the store by a scan that made no checkpoint, to the task's next one."""
        if added:
            self._pending_bytes[task_id] = self._pending_bytes.get(task_id, 0) + added

    def next_id(self, task_id: str) -> str:
        """The id the task's next checkpoint gets (``cp-<n>``), as long as no other is made first."""
        latest = self.history(task_id, limit=1)
        return f"cp-{latest[-1].seq + 1 if latest else 1}"

    def commit_scan(self, task_id: str, result: ScanResult, message: str | None, head: bytes | None,
                    tags: tuple[str, ...] = (), *, log_seq: int | None = None,
                    container: Mapping[str, Any] | None = None) -> Checkpoint:
        result.bytes_added += self._pending_bytes.pop(task_id, 0)
        ref = checkpoint_ref(task_id)
        try:
            old: ObjectID | None = self.repo.refs[ref]
        except KeyError:
            old = None
        latest = self.history(task_id, limit=1) if old is not None else []
        self._refuse_foreign(task_id, latest)
        seq = latest[-1].seq + 1 if latest else 1
        parents = ([old] if old is not None else []) + ([head] if head is not None else [])
        commit = self._new_commit(
            result.tree,
            parents,
            _message(task_id, seq, message or "", head, result, self.owner, tags, log_seq, container),
        )
        if not self.repo.refs.set_if_equals(ref, old, commit.id):
            raise GitError(
                f"{ref.decode()} moved while checkpoint {seq} of task {task_id!r} was written; "
                "another process is checkpointing the same task — retry"
            )
        cp = _parse(task_id, commit)
        return cp

    def _new_commit(self, tree: bytes, parents: list[bytes], message: bytes, when: int | None = None) -> Commit:
        commit = Commit()
        commit.tree = tree
        commit.parents = [ObjectID(p) for p in parents]
        commit.author = commit.committer = self.author
        commit.author_time = commit.commit_time = int(time.time()) if when is None else when
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = message
        self.store.add_object(commit)
        return commit

    def prune(self, task_id: str, now: float | None = None) -> list[Checkpoint]:
        """Apply retention (see :class:`CheckpointPolicy`); return the checkpoints dropped (oldest first).

        Dropped checkpoints are cut out of the ref's history by rewriting the
        kept ones (same trees, messages and times), so their objects become
        unreachable and ``git gc --prune=now`` can delete them. No reflog is
        written for checkpoint refs, so nothing else keeps them alive. The
        newest checkpoint and tagged ones (``keep_tagged``) are never dropped.
        """
        policy = self.policy
        keep_last = None if policy.keep_last is None else max(1, policy.keep_last)
        batch = 1 if keep_last is None else keep_last // 10 + 1
        if policy.max_bytes is None and not policy.keep_hourly and not policy.keep_daily:
            # Only keep_last (or nothing): cheap to tell when nothing is due.
            due_at = None if keep_last is None else keep_last + batch
            if due_at is None or len(self.history(task_id, limit=due_at)) < due_at:
                return []
        history = self.history(task_id)
        plan = plan_retention(
            history, now=time.time() if now is None else now, keep_last=keep_last, keep_hourly=policy.keep_hourly,
            keep_daily=policy.keep_daily, keep_tagged=policy.keep_tagged, max_bytes=policy.max_bytes, batch=batch,
        )
        if not plan.due:
            return []
        return self.drop(task_id, set(plan.drop), history)

    def drop(self, task_id: str, seqs: set[int], history: list[Checkpoint] | None = None) -> list[Checkpoint]:
        """Cut the checkpoints numbered ``seqs`` out of the task's history; the newest always stays.

        Returns those dropped, oldest first.
        """
        history = self.history(task_id) if history is None else history
        if not history:
            return []
        seqs = seqs - {history[-1].seq}
        dropped = [cp for cp in history if cp.seq in seqs]
        if not dropped:
            return []
        kept = [cp for cp in history if cp.seq not in seqs]
        self._rewrite(task_id, kept, history[-1].commit.encode())
        return dropped

    def task_ids(self) -> list[str]:
        """Tasks with checkpoints in this repository written by this store's owner (or by none)."""
        found = []
        for ref in self.repo.refs.keys(Ref(REF_PREFIX)):
            task_id = bytes(ref).decode("utf-8", "replace")
            latest = self.history(task_id, limit=1)
            if latest and (not latest[-1].owner or not self.owner or latest[-1].owner == self.owner):
                found.append(task_id)
        return sorted(found)

    def plan_total(self) -> dict[str, set[int]]:
        """Which checkpoints (seqs per task) ``max_total_bytes`` drops now, oldest first across tasks."""
        limit = self.policy.max_total_bytes
        if limit is None:
            return {}
        histories = {task_id: self.history(task_id) for task_id in self.task_ids()}
        if sum(cp.bytes_added for h in histories.values() for cp in h) <= limit:
            return {}
        planned = plan_total(histories, max_total_bytes=limit, keep_tagged=self.policy.keep_tagged)
        return {task_id: set(seqs) for task_id, seqs in planned.items()}

    def _rewrite(self, task_id: str, kept: list[Checkpoint], old_tip: bytes) -> None:
        parent: bytes | None = None
        rewritten: list[Checkpoint] = []
        for cp in kept:
            original = self.repo[cp.commit.encode()]
            assert isinstance(original, Commit)
            parents = ([parent] if parent is not None else []) + ([cp.head.encode()] if cp.head else [])
            if parents == list(original.parents):
                parent = original.id
                rewritten.append(cp)
                continue
            commit = self._new_commit(original.tree, parents, original.message, original.commit_time)
            parent = commit.id
            rewritten.append(_parse(task_id, commit))
        assert parent is not None
        if not self.repo.refs.set_if_equals(checkpoint_ref(task_id), ObjectID(old_tip), ObjectID(parent)):
            self._histories.pop(task_id, None)
            raise GitError(f"checkpoints of task {task_id!r} changed during pruning; retry")
        self._histories[task_id] = (parent, rewritten)


class _TrackedPaths:
    """Answers "does git track this path?" from the worktree's index, read lazily.

    Only consulted for ignored paths, so a worktree without ignore hits never
    pays for reading the index. The index and HEAD are read from the
    worktree's admin directory in the user's repository, never through the
    worktree's own ``.git`` file, which the agent can rewrite.
    """

    def __init__(self, repo: Repo, worktree: Path) -> None:
        self.repo = repo
        self.worktree = worktree
        self._paths: set[str] | None = None
        self._dirs: set[str] = set()
        self._links: set[str] = set()

    def _load(self) -> set[str]:
        if self._paths is None:
            # The index and HEAD's tree both count: a file the index lost is
            # still one whose absence would be recorded as a deletion.
            self._paths = set()
            self._links = set()
            admin = worktrees.admin_dir(self.repo, self.worktree)
            try:
                assert admin is not None
                for raw, entry in Index(str(admin / "index")).items():
                    path = raw.decode("utf-8", "surrogateescape")
                    self._paths.add(path)
                    if getattr(entry, "mode", 0) == 0o160000:
                        self._links.add(path)
            except Exception:
                pass  # no readable index: HEAD's tree still answers
            try:
                assert admin is not None
                head = worktrees.head_commit(self.repo, admin)
                assert head is not None
                commit = self.repo[head]
                assert isinstance(commit, Commit)
                store = self.repo.object_store
                assert isinstance(store, DiskObjectStore)
                files = flatten_tree(store, commit.tree)
                self._paths.update(files)
                self._links.update(p for p, (mode, _) in files.items() if mode == 0o160000)
            except Exception:
                pass  # no HEAD commit yet
            self._links.update(gitmodules_paths(self.worktree))
            for path in self._paths:
                parts = path.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    self._dirs.add("/".join(parts[:i]) + "/")
        return self._paths

    def is_submodule(self, path: str) -> bool:
        """Whether ``path`` is a registered submodule (a gitlink, or listed in ``.gitmodules``)."""
        self._load()
        return path in self._links

    def __call__(self, path: str) -> bool:
        paths = self._load()
        return path in self._dirs if path.endswith("/") else path in paths
