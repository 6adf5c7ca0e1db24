"""An event stream for one client: durable history first, then live, no gaps, no duplicates, bounded memory.

The bus hands live events to :meth:`EventFeed._on_bus` on the publishing
thread, which must never block (it would stall every task's events), so live
events go into a small bounded queue and the overflow is simply not kept.
Nothing is lost by that: every published event is already in the durable log,
and the feed knows exactly which seq ranges its queue does not cover, so it
reads those from the log when the client gets there. A client that falls more
than ``max_behind`` events behind the head is skipped forward and told which
seqs it missed (it can fetch them again with ``from_seq``), so a client too
slow to ever catch up costs the service neither memory nor an ever-growing
backlog of disk reads.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from armor_rx.model.events import TaskEvent
from armor_rx.model.patterns import kind_matcher

_CHUNK = 256


class Batch(list[TaskEvent]):
    """Events read from the log together, with their wire form made on the reading thread."""

    blob: bytes = b""


@dataclass(frozen=True)
class Lagged:
    """The client was skipped over events ``from_seq..to_seq`` (``count`` events, before filtering)."""

    from_seq: int
    to_seq: int

    @property
    def count(self) -> int:
        return self.to_seq - self.from_seq + 1


class EventFeed:
    """Events matching ``kind`` / ``task_id`` / ``where`` from ``from_seq`` on.

    ``follow=False`` ends at the log's end as of the first read; otherwise the
    feed goes on until :meth:`close` or the session stops. Iterate it with
    ``async for`` on the event loop it was made on.
    """

    def __init__(
        self,
        armor: Any,
        *,
        kind: str | None = None,
        task_id: str | None = None,
        where: Callable[[TaskEvent], bool] | None = None,
        from_seq: int | None = None,
        follow: bool = True,
        max_behind: int | None = 100_000,
        queue_size: int = 1024,
        read: Callable[[Callable[[], list[TaskEvent]]], Any] | None = None,
    ) -> None:
        self._armor = armor
        self._kind = kind
        self._task_id = task_id
        kind_ok = kind_matcher(kind) if kind is not None else None

        def matches(event: TaskEvent) -> bool:
            return ((kind_ok is None or kind_ok(event.kind)) and (task_id is None or event.task_id == task_id)
                    and (where is None or where(event)))

        self._matches: Callable[[TaskEvent], bool] = matches
        self._follow = follow
        self._max_behind = max_behind
        self._queue_size = queue_size
        self._read = read
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._lock = threading.Lock()
        # Queue items are (known_from, event): every event with known_from <= seq < event.seq
        # was seen by the bus callback and did not match, so the log need not be read there.
        self._queue: deque[tuple[int, TaskEvent]] = deque()
        self._seen = 0  # highest seq the callback has seen
        self._clean_from = 0  # events in [_clean_from, _seen] are accounted for (queued or not matching); 0: none
        self._waiting = False
        self._ended = False
        self._subscription: Any = None
        self._until: int | None = None
        self._page: Callable[[int], Iterator[TaskEvent]] | None = None
        self._page_at = 0
        published = armor.pipeline.bus.published_seq
        self.next_seq = max(1, from_seq) if from_seq is not None else published + 1
        if follow:
            self._subscription = armor.events("*").subscribe(self._on_bus, lambda _e: self._end(), self._end)

    # -- the bus side (publisher thread: never blocks) -------------------------
    def _on_bus(self, event: TaskEvent) -> None:
        seq = event.seq
        assert seq is not None
        with self._lock:
            contiguous = self._clean_from and seq == self._seen + 1
            self._seen = seq
            if not self._matches(event):
                if not contiguous:
                    self._clean_from = seq
                wake = False
            elif len(self._queue) < self._queue_size:
                self._queue.append((self._clean_from if contiguous else seq, event))
                if not contiguous:
                    self._clean_from = seq
                wake = True
            else:
                self._clean_from = 0  # dropped: the log has it, the feed will read it there
                wake = False
            # Past the seq the feed ends at, the client is waiting for nothing but the end.
            wake = wake or (self._until is not None and seq >= self._until)
            if wake and self._waiting:
                self._waiting = False
            else:
                wake = False
        if wake:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _end(self, *_: object) -> None:
        with self._lock:
            self._ended = True
        self._loop.call_soon_threadsafe(self._wake.set)

    def stop_after(self, seq: int) -> None:
        """End the feed once everything up to ``seq`` has been delivered (call on the feed's loop)."""
        self._until = seq
        self._wake.set()

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.dispose()
            self._subscription = None
        self._ended = True
        self._wake.set()

    # -- the client side ------------------------------------------------------
    async def _read_log(self, first: int, last: int) -> Batch:
        log = self._armor.log

        def read() -> Batch:
            if self._page is None or self._page_at != first:  # a fresh start, or a skip ahead after lagging
                self._page = log.pages(first, task_id=self._task_id, kind=self._kind)
            batch = Batch(e for e in self._page(last) if self._matches(e))
            # Complete up to ``last``: it is never past the log's durable end, which only grows.
            self._page_at = last + 1
            # Serialised here, off the event loop: a client catching up costs the loop one write per batch.
            batch.blob = b"\n".join(e.to_json() for e in batch)
            return batch

        if self._read is not None:
            return await self._read(read)  # type: ignore[no-any-return]
        return await asyncio.to_thread(read)

    async def __aiter__(self) -> AsyncIterator[TaskEvent | Batch | Lagged]:
        """Live events one by one; events read back from the log as a :class:`Batch`; :class:`Lagged` notices."""
        end_of_history = self._armor.log.last_seq
        try:
            while True:
                if self._until is not None and self.next_seq > self._until:
                    return
                with self._lock:
                    head = self._queue[0] if self._queue else None
                    clean_upto = self._seen if (head is None and self._clean_from and self._clean_from <= self.next_seq) else 0
                    ended = self._ended
                durable = self._armor.log.last_seq
                # How far the log must be read before the queue (or the live edge) takes over.
                if head is not None:
                    gap_end = head[0] - 1 if head[0] > self.next_seq else 0
                elif clean_upto:
                    self.next_seq = max(self.next_seq, clean_upto + 1)
                    gap_end = 0
                else:
                    gap_end = durable
                if not self._follow:
                    gap_end = min(max(gap_end, durable), end_of_history)
                # Only the live part can be skipped: history the client asked for is always served whole.
                if self._max_behind is not None and self.next_seq > end_of_history and gap_end - self.next_seq > self._max_behind:
                    skip_to = gap_end - self._max_behind // 2
                    yield Lagged(self.next_seq, skip_to - 1)
                    self.next_seq = skip_to
                if self._until is not None:
                    gap_end = min(gap_end, self._until)
                if gap_end >= self.next_seq:
                    last = min(gap_end, self.next_seq + _CHUNK - 1)
                    batch = await self._read_log(self.next_seq, last)
                    if batch:
                        yield batch
                    self.next_seq = last + 1
                    continue
                if not self._follow:
                    return
                if head is not None:
                    with self._lock:
                        self._queue.popleft()
                    _, event = head
                    assert event.seq is not None
                    if self._until is not None and event.seq > self._until:
                        return
                    if event.seq >= self.next_seq:
                        self.next_seq = event.seq + 1
                        yield event
                    continue
                if ended or (self._until is not None and self.next_seq > self._until):
                    return
                with self._lock:
                    if self._queue or self._ended:
                        continue
                    self._waiting = True
                try:
                    # The timeout re-checks the log: a feed whose queue overflowed is not woken.
                    await asyncio.wait_for(self._wake.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
                # Cleared after waking, never before waiting: a wake that came while this
                # loop was busy (stop_after during a log read) must not be lost.
                self._wake.clear()
        finally:
            self.close()
