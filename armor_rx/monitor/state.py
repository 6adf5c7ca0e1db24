"""What the monitor knows: tasks folded from events, the event tail, the view's filters.

No terminal and no I/O here: the subscription feeds events in
(:meth:`MonitorState.apply`), the command engine changes the view, and the
prompt_toolkit layout only reads. Everything is guarded by one lock because the
feed's drain thread writes while the UI thread renders.

The fold is order-tolerant on purpose. Events reach the monitor through a
dropping buffer and are mixed with registry snapshots taken after a reconnect
or a skip, so a state change older than what a row already shows is ignored
(``seq`` guards it) instead of moving the task backwards.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import KIND_TO_STATE, State
from armor_rx.model.patterns import kind_matcher
from armor_rx.model.registry import TaskRecord

#: Flags that need a person, in the order they are shown.
FLAGS = ("stuck", "waiting", "vetoed", "dead-lettered", "failed", "conflicting", "stalled", "unhealthy")

# Kinds that put a flag on a task until its next state change (or, for dead letters, a redrive).
_FLAG_KINDS = {"hook.vetoed": "vetoed", "effect.failed": "failed", "effect.dead_lettered": "dead-lettered",
               "deadletter.added": "dead-lettered", "git.merge.conflict": "conflicting", "conflict.detected": "conflicting",
               "task.stalled": "stalled"}
_WAITING = frozenset({State.PENDING, State.INTERRUPTED})


@dataclass
class TaskRow:
    """One line of the task table."""

    task_id: str
    state: State = State.PENDING
    state_seq: int = 0  # the seq of the event (or registry record) the state comes from
    branch: str | None = None
    container: str | None = None
    last_ts: float = 0.0  # wall-clock time of the task's latest event
    last_kind: str | None = None
    exit_code: int | None = None
    checkpoints: set[str] = field(default_factory=set)
    marks: set[str] = field(default_factory=set)  # flags set by events (vetoed, dead-lettered, ...)
    reason: str | None = None
    output: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    def flags(self, now: float, stuck_after: float) -> list[str]:
        """What needs a person, now: the event-set marks plus stuck (running, silent too long) and waiting."""
        found = set(self.marks)
        if self.state is State.RUNNING and self.last_ts and now - self.last_ts > stuck_after:
            found.add("stuck")
        if self.state in _WAITING:
            found.add("waiting")
        if self.state in (State.FAILED, State.FAILING):
            found.add("failed")
        return [f for f in FLAGS if f in found]


def ago(ts: float, now: float) -> str:
    """``3 s ago``, ``4 min ago``, ``2 h ago``; ``-`` for never."""
    if not ts:
        return "-"
    delta = max(0.0, now - ts)
    if delta < 60:
        return f"{int(delta)} s ago"
    if delta < 3600:
        return f"{int(delta // 60)} min ago"
    if delta < 86400:
        return f"{int(delta // 3600)} h ago"
    return f"{int(delta // 86400)} d ago"


@dataclass(frozen=True)
class EventLine:
    """An event as the event pane keeps it: small, with the payload already cut to one line."""

    seq: int
    ts: float
    task_id: str | None
    kind: str
    text: str


def _summary(event: TaskEvent) -> str:
    p = event.payload
    if event.kind == "exec.output":
        return str(p.get("data", "")).rstrip("\n").replace("\n", "⏎")[:200]
    parts = []
    for key, value in p.items():
        if key == "metadata" or isinstance(value, Mapping):
            continue
        # A command reads as one: ('sh', '-c', 'make test') -> sh -c 'make test'.
        text = shlex.join(str(v) for v in value) if isinstance(value, tuple) else str(value)
        parts.append(f"{key}={text[:40]}")
    return " ".join(parts)[:200]


class MonitorState:
    """Tasks, the event tail and the view, for one monitor. Thread-safe; the UI reads, the feed writes."""

    def __init__(self, *, history: int = 5000, stuck_after: float = 120.0, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.stuck_after = stuck_after
        self.rows: dict[str, TaskRow] = {}
        self.events: deque[EventLine] = deque(maxlen=history)
        # -- the view
        self.selected: str | None = None
        self.task_filter: str | None = None
        self.kind_filter: str | None = None
        self._kind_ok: Callable[[str], bool] | None = None
        self.paused_at: int | None = None  # the seq the event pane is frozen at; None: following
        self.scroll = 0  # lines scrolled back from the newest (or from paused_at)
        self.detail_title = "detail"
        self.detail: list[tuple[str, str]] = []  # (style, line)
        self.detail_scroll = 0
        self.message = ""  # the status line's last word
        self.message_style = ""
        # -- the connection and its losses
        self.connected = False
        self.connection_note = "connecting..."
        self.reconnects = 0
        self.skipped = 0  # events the monitor's own buffer dropped
        self.lagged = 0  # events the service skipped this slow client over
        self.service_dropped = 0  # events the service's own buffers dropped (backpressure.dropped)
        self.last_seq = 0
        self.applied = 0
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)  # (time, applied) samples for events/s
        self.dirty = True
        self.needs_resync = False
        # -- latency: (event ts) of events applied since the last frame
        self._unrendered: list[float] = []
        self.latencies: deque[float] = deque(maxlen=100_000)
        # Only events made after the monitor attached are timed: replayed history is old by design.
        self.live_since = float("inf")
        self.frames = 0
        # Pairs of tasks in conflict now (conflict.detected names both; conflict.resolved ends it).
        self.conflict_pairs: set[frozenset[str]] = set()

    # -- the feed side ----------------------------------------------------------
    def apply(self, event: TaskEvent) -> None:
        """Fold one event in: the tail, the task's row, the counters."""
        with self.lock:
            seq = event.seq or 0
            self.last_seq = max(self.last_seq, seq)
            self.applied += 1
            self.dirty = True
            if event.ts >= self.live_since:
                self._unrendered.append(event.ts)
                if len(self._unrendered) > 100_000:
                    del self._unrendered[:50_000]
            self.events.append(EventLine(seq, event.ts, event.task_id, event.kind, _summary(event)))
            if event.kind == "backpressure.dropped":
                dropped = event.payload.get("dropped")
                self.service_dropped += dropped if isinstance(dropped, int) else 0
            if event.task_id is None:
                return
            row = self.rows.get(event.task_id)
            if row is None:
                row = self.rows[event.task_id] = TaskRow(event.task_id)
                if self.selected is None:
                    self.selected = event.task_id
            self._fold(row, event, seq)
            if event.kind in ("conflict.detected", "conflict.resolved"):
                self._fold_conflict(event)

    def _fold_conflict(self, event: TaskEvent) -> None:
        """Flag both tasks of a detected conflict; a resolved one unflags those left in no other pair."""
        tasks = event.payload.get("tasks")
        if not isinstance(tasks, (list, tuple)) or len(tasks) != 2:
            return
        pair = frozenset(str(t) for t in tasks)
        if event.kind == "conflict.detected":
            self.conflict_pairs.add(pair)
        elif not event.payload.get("remaining"):
            self.conflict_pairs.discard(pair)
        for task_id in pair:
            row = self.rows.get(task_id)
            if row is None:
                continue
            if any(task_id in p for p in self.conflict_pairs):
                row.marks.add("conflicting")
            else:
                row.marks.discard("conflicting")

    def _fold(self, row: TaskRow, event: TaskEvent, seq: int) -> None:
        kind, p = event.kind, event.payload
        if kind not in ("task.stalled", "task.unstalled"):  # the flag says the task did nothing: not activity
            row.last_ts = max(row.last_ts, event.ts)
            row.last_kind = kind
        target = KIND_TO_STATE.get(kind)
        if target is not None and seq >= row.state_seq:
            if target is not row.state:
                row.marks.difference_update({"vetoed", "failed", "conflicting", "stalled", "unhealthy"})
            row.state, row.state_seq = target, seq
            if isinstance(p.get("reason"), str):
                row.reason = str(p["reason"])
        if isinstance(p.get("branch"), str) and kind.startswith(("task.", "git.branch.created", "git.worktree")):
            row.branch = str(p["branch"])
        if kind == "container.started":
            row.container = str(p.get("name") or p.get("container") or "")[:24] or None
        elif kind == "container.removed":
            row.container = None
        elif kind == "exec.exited":
            code = p.get("exit_code")
            row.exit_code = code if isinstance(code, int) else None
        elif kind == "exec.output":
            for line in str(p.get("data", "")).splitlines():
                row.output.append(line)
        elif kind == "checkpoint.created" and isinstance(p.get("checkpoint"), str):
            row.checkpoints.add(str(p["checkpoint"]))
        elif kind == "checkpoint.pruned":
            dropped = p.get("checkpoints")
            if isinstance(dropped, (list, tuple)):
                row.checkpoints.difference_update(str(c) for c in dropped)
        elif kind == "deadletter.redriven":
            row.marks.discard("dead-lettered")
        elif kind == "task.unstalled":
            row.marks.discard("stalled")
        elif kind == "service.health.changed":
            # Set by a service turning unhealthy, cleared by one turning healthy again.
            if p.get("to") == "unhealthy":
                row.marks.add("unhealthy")
            elif p.get("to") == "healthy":
                row.marks.discard("unhealthy")
        mark = _FLAG_KINDS.get(kind)
        if mark is not None:
            row.marks.add(mark)

    def apply_records(self, records: Iterable[TaskRecord]) -> None:
        """Take the service's registry as the truth for states (after a connect, a reconnect or a skip)."""
        with self.lock:
            for record in records:
                row = self.rows.get(record.task_id)
                if row is None:
                    row = self.rows[record.task_id] = TaskRow(record.task_id)
                if record.updated_seq >= row.state_seq:
                    row.state, row.state_seq = record.state, record.updated_seq
                    row.reason = record.reason
                branch = record.metadata.get("branch")
                if isinstance(branch, str):
                    row.branch = branch
                row.last_ts = max(row.last_ts, record.updated_ts)
            if self.selected is None and self.rows:
                self.selected = min(self.rows)
            self.needs_resync = False
            self.dirty = True

    def set_checkpoints(self, task_id: str, ids: Iterable[str]) -> None:
        with self.lock:
            row = self.rows.get(task_id)
            if row is not None:
                row.checkpoints = set(ids)
                self.dirty = True

    def add_skipped(self, count: int, *, lagged: bool = False) -> None:
        """Events this monitor did not see: its own buffer dropped them, or the service skipped it ahead."""
        with self.lock:
            if lagged:
                self.lagged += count
            else:
                self.skipped += count
            self.needs_resync = True  # a skipped state change must not leave a row wrong
            self.dirty = True

    def set_connection(self, connected: bool, note: str, *, reconnected: bool = False) -> None:
        with self.lock:
            if connected and self.live_since == float("inf"):
                self.live_since = time.time()
            self.connected = connected
            self.connection_note = note
            if reconnected:
                self.reconnects += 1
            self.dirty = True

    def say(self, message: str, style: str = "") -> None:
        with self.lock:
            self.message, self.message_style = message, style
            self.dirty = True

    def show(self, title: str, lines: Iterable[tuple[str, str] | str]) -> None:
        """Put ``lines`` in the detail pane (a plain string is unstyled)."""
        with self.lock:
            self.detail_title = title
            self.detail = [(line if isinstance(line, tuple) else ("", line)) for line in lines]
            self.detail_scroll = 0
            self.dirty = True

    def append_detail(self, line: str, style: str = "") -> None:
        with self.lock:
            self.detail.append((style, line))
            if len(self.detail) > 5000:
                del self.detail[:1000]
            self.dirty = True

    # -- the view ---------------------------------------------------------------
    def set_kind_filter(self, pattern: str | None) -> None:
        """Show only kinds matching ``pattern`` (None or ``*``: all); raises ConfigError for a bad pattern."""
        with self.lock:
            if pattern in (None, "", "*"):
                self.kind_filter, self._kind_ok = None, None
            else:
                assert pattern is not None
                self._kind_ok = kind_matcher(pattern)
                self.kind_filter = pattern
            self.scroll = 0
            self.dirty = True

    def set_task_filter(self, task_id: str | None) -> None:
        with self.lock:
            self.task_filter = task_id
            self.scroll = 0
            self.dirty = True

    def pause(self) -> None:
        with self.lock:
            if self.paused_at is None:
                self.paused_at = self.last_seq
            self.dirty = True

    def follow(self) -> None:
        with self.lock:
            self.paused_at = None
            self.scroll = 0
            self.dirty = True

    def scroll_events(self, lines: int) -> None:
        """Scroll the event pane back (positive) or forward; scrolling back pauses it."""
        with self.lock:
            if lines > 0 and self.paused_at is None:
                self.paused_at = self.last_seq
            self.scroll = max(0, self.scroll + lines)
            self.dirty = True

    def visible_events(self, limit: int) -> list[EventLine]:
        """The newest ``limit`` events that pass the filters, as of the pause point and scroll."""
        with self.lock:
            out: list[EventLine] = []
            skip = self.scroll
            for line in reversed(self.events):
                if self.paused_at is not None and line.seq > self.paused_at:
                    continue
                if self.task_filter is not None and line.task_id != self.task_filter:
                    continue
                if self._kind_ok is not None and not self._kind_ok(line.kind):
                    continue
                if skip:
                    skip -= 1
                    continue
                out.append(line)
                if len(out) >= limit:
                    break
            out.reverse()
            return out

    def newer_than_pause(self) -> int:
        with self.lock:
            if self.paused_at is None:
                return 0
            return sum(1 for line in self.events if line.seq > self.paused_at)

    def task_ids(self) -> list[str]:
        with self.lock:
            return sorted(self.rows)

    def table(self) -> list[tuple[TaskRow, list[str]]]:
        """The rows in display order with their flags, as of now."""
        now = self.clock()
        with self.lock:
            return [(self.rows[k], self.rows[k].flags(now, self.stuck_after)) for k in sorted(self.rows)]

    def move_selection(self, step: int) -> None:
        with self.lock:
            ids = sorted(self.rows)
            if not ids:
                return
            index = ids.index(self.selected) if self.selected in ids else 0
            self.selected = ids[max(0, min(len(ids) - 1, index + step))]
            self.dirty = True

    # -- measures -----------------------------------------------------------------
    def events_per_second(self) -> float:
        """Events applied per second over the last ~10 s of samples (taken as frames render)."""
        with self.lock:
            now = time.monotonic()
            self._rate.append((now, self.applied))
            while len(self._rate) > 2 and now - self._rate[0][0] > 10:
                self._rate.popleft()
            first_t, first_n = self._rate[0]
            return (self.applied - first_n) / (now - first_t) if now > first_t else 0.0

    def frame_rendered(self) -> None:
        """Called once per drawn frame: what was applied before it is now on screen."""
        now = time.time()
        with self.lock:
            self.frames += 1
            if self._unrendered:
                self.latencies.extend(now - ts for ts in self._unrendered)
                self._unrendered.clear()
            self.dirty = False

    def by_state(self) -> Counter[str]:
        with self.lock:
            return Counter(row.state.value for row in self.rows.values())

    def snapshot_counts(self) -> dict[str, Any]:
        with self.lock:
            return {"applied": self.applied, "skipped": self.skipped, "lagged": self.lagged, "service_dropped": self.service_dropped,
                    "reconnects": self.reconnects, "frames": self.frames, "last_seq": self.last_seq}
