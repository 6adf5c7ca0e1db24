"""The monitor's attachment to the service: history then live, through a dropping buffer, reconnecting.

A reader thread follows the service's event stream (``follow``: durable
history from a seq, then live, no gaps or duplicates) and pushes each event
into :func:`armor_rx.operators.backpressure` with a dropping policy
(``drop_oldest`` by default, or ``latest``); the buffer's drain thread folds
events into :class:`~armor_rx.monitor.state.MonitorState`. A flood therefore
costs the reader one append per event and never waits on the screen: what the
screen cannot keep up with is dropped and counted as skipped, and a skip makes
the monitor re-read the task registry so no row is left wrong.

The monitor never starts a service of its own and never changes a task: when
the service goes away it says so, polls until one is back (started by any
other client), and resumes from the last seq it saw.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, Protocol

import reactivex
from reactivex import abc
from reactivex.disposable import Disposable

from armor_rx.errors import ArmorError
from armor_rx.model.events import TaskEvent
from armor_rx.monitor.state import MonitorState
from armor_rx.operators import BackpressureStats, backpressure


class EventClient(Protocol):
    """What the feed needs of a service client (:class:`armor_rx.RemoteArmor` has it)."""

    info: dict[str, Any]

    def tasks(self) -> list[Any]: ...
    def checkpoints(self, task_id: str) -> list[Any]: ...
    def follow(self, pattern: str = "*", *, task_id: str | None = None, from_seq: int | None = None,
               max_behind: int | None = None) -> Iterator[tuple[str, Any]]: ...
    def close(self) -> None: ...


class Feed:
    """Keeps ``state`` in step with the service until :meth:`stop`.

    ``attach`` opens a client of a running service, or raises
    :class:`~armor_rx.errors.ArmorError` when none runs (the feed then waits
    ``retry`` seconds and tries again). ``history`` is how many logged events
    are replayed on the first connection.
    """

    def __init__(self, attach: Callable[[], EventClient], state: MonitorState, *, history: int = 5000,
                 max_items: int = 2000, policy: Literal["drop_oldest", "latest"] = "drop_oldest", retry: float = 0.5,
                 max_behind: int = 200_000) -> None:
        self._attach = attach
        self.state = state
        self.history = history
        self.max_items = max_items
        self.policy = policy
        self.retry = retry
        self.max_behind = max_behind
        self.stats = BackpressureStats()
        self._stop = threading.Event()
        self._client: EventClient | None = None
        self._client_lock = threading.Lock()
        self._subscription: abc.DisposableBase | None = None
        self._resync = threading.Thread(target=self._resync_loop, name="armor-monitor-resync", daemon=True)
        self._dropped_seen = 0

    # -- lifetime -------------------------------------------------------------
    def start(self) -> Feed:
        source = reactivex.create(self._read)
        self._subscription = source.pipe(
            backpressure(self.max_items, self.policy, stats=self.stats, name="monitor"),
        ).subscribe(self._deliver, lambda exc: self.state.set_connection(False, f"the feed failed: {exc}"))
        self._resync.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._client_lock:
            if self._client is not None:
                self._client.close()  # ends a blocked read
        if self._subscription is not None:
            self._subscription.dispose()
            self._subscription = None
        if self._resync.is_alive() and self._resync is not threading.current_thread():
            self._resync.join(5)

    # -- the drain side ------------------------------------------------------
    def _deliver(self, event: TaskEvent) -> None:
        self.state.apply(event)
        dropped = self.stats.dropped
        if dropped != self._dropped_seen:
            self.state.add_skipped(dropped - self._dropped_seen)
            self._dropped_seen = dropped

    # -- the reader side -----------------------------------------------------
    def _read(self, observer: abc.ObserverBase[TaskEvent], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        thread = threading.Thread(target=self._pump, args=(observer,), name="armor-monitor-feed", daemon=True)
        thread.start()

        def dispose() -> None:
            self._stop.set()
            with self._client_lock:
                if self._client is not None:
                    self._client.close()
            if thread is not threading.current_thread():
                thread.join(5)

        return Disposable(dispose)

    def _pump(self, observer: abc.ObserverBase[TaskEvent]) -> None:
        attached_once = False
        while not self._stop.is_set():
            try:
                client = self._attach()
            except ArmorError as exc:
                note = "service lost; waiting for it to come back" if attached_once else f"waiting for the armor service ({exc})"
                self.state.set_connection(False, note)
                self._stop.wait(self.retry)
                continue
            with self._client_lock:
                if self._stop.is_set():
                    client.close()
                    return
                self._client = client
            try:
                self._catch_up(client, reconnected=attached_once)
                attached_once = True
                start = self.state.last_seq + 1 if self.state.last_seq else max(1, int(client.info.get("last_seq") or 0) - self.history + 1)
                for key, value in client.follow("*", from_seq=start, max_behind=self.max_behind):
                    if self._stop.is_set():
                        return
                    if key == "event":
                        observer.on_next(value)
                    else:  # lagged: the service skipped this client ahead
                        self.state.add_skipped(int(value.get("count") or 0), lagged=True)
                self.state.set_connection(False, "the service ended the stream; reconnecting")
            except Exception as exc:  # noqa: BLE001 - whatever broke the stream, a monitor keeps watching
                if self._stop.is_set():
                    return
                self.state.set_connection(False, f"service lost ({type(exc).__name__}); waiting for it to come back")
            finally:
                with self._client_lock:
                    self._client = None
                client.close()
            self._stop.wait(self.retry)

    def _catch_up(self, client: EventClient, *, reconnected: bool) -> None:
        """The registry and checkpoints as they are now, then say where the monitor is attached."""
        self.state.apply_records(client.tasks())
        for task_id in self.state.task_ids()[:200]:
            try:
                self.state.set_checkpoints(task_id, [cp.id for cp in client.checkpoints(task_id)])
            except ArmorError:
                pass  # a session without git has no checkpoints to list
        pid = client.info.get("pid")
        stamp = time.strftime("%H:%M:%S")
        if reconnected:
            self.state.set_connection(True, f"reconnected to the service (pid {pid}) at {stamp}", reconnected=True)
            self.state.say(f"reconnected to a restarted service (pid {pid})", "class:warn")
        else:
            self.state.set_connection(True, f"attached to the service (pid {pid})")

    def _resync_loop(self) -> None:
        """Re-read the registry when events were skipped, so a dropped state change never sticks."""
        while not self._stop.wait(1.0):
            if not self.state.needs_resync:
                continue
            with self._client_lock:
                client = self._client
            if client is None:
                continue
            try:
                # A separate connection: the feed's own one is busy streaming.
                records = self._fresh_tasks()
            except Exception:  # noqa: BLE001 - the service is away; the feed reports that, this tries again later
                continue
            if records is not None:
                self.state.apply_records(records)

    def _fresh_tasks(self) -> list[Any] | None:
        client = self._attach()
        try:
            return client.tasks()
        finally:
            client.close()
