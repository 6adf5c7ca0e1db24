"""The asyncio face of a session: the same pipeline, awaited instead of blocked on.

>>> import asyncio, tempfile
>>> async def main() -> str:
...     async with AsyncArmor(state_dir=tempfile.mkdtemp()) as armor:
...         await armor.create_task("t1")
...         event = await armor.start("t1")
...         return event.kind
>>> asyncio.run(main())
'task.started'
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from armor_rx.model.events import TaskEvent
from armor_rx.model.registry import TaskRecord
from armor_rx.session import Armor


class AsyncArmor:
    """Wraps an :class:`Armor`; every blocking call runs off the event loop."""

    def __init__(self, repo: str | Path | None = None, **options: Any) -> None:
        self.sync = Armor(repo, **options)

    async def __aenter__(self) -> AsyncArmor:
        await asyncio.to_thread(self.sync.open)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.sync.close)

    async def create_task(self, task_id: str, **options: Any) -> TaskRecord:
        return await asyncio.to_thread(self.sync.create_task, task_id, **options)

    async def request(self, task_id: str, kind: str, payload: Mapping[str, Any] | None = None) -> TaskEvent:
        future = await asyncio.to_thread(self.sync.request, task_id, kind, payload)
        return await asyncio.wrap_future(future)

    async def start(self, task_id: str, **payload: Any) -> TaskEvent:
        return await self.request(task_id, "task.start.requested", payload)

    async def complete(self, task_id: str, **payload: Any) -> TaskEvent:
        return await self.request(task_id, "task.complete.requested", payload)

    async def fail(self, task_id: str, reason: str, **payload: Any) -> TaskEvent:
        return await self.request(task_id, "task.fail.requested", {"reason": reason, **payload})

    async def cancel(self, task_id: str, reason: str = "cancelled by the user") -> TaskEvent:
        return await self.request(task_id, "task.cancel.requested", {"reason": reason})

    async def resume(self, task_id: str, **payload: Any) -> TaskEvent:
        return await self.request(task_id, "task.resume.requested", payload)

    async def emit(self, task_id: str | None, kind: str, payload: Mapping[str, Any] | None = None) -> TaskEvent:
        return await asyncio.to_thread(self.sync.emit, task_id, kind, payload)

    async def task(self, task_id: str) -> TaskRecord:
        return self.sync.task(task_id)

    async def events(self, pattern: str = "*", *, task_id: str | None = None, last: int | None = None, from_seq: int | None = None, max_items: int = 10_000) -> AsyncIterator[TaskEvent]:
        """Iterate events as they arrive (replay first, as in :meth:`Armor.events`).

        At most ``max_items`` wait for the consumer; past that the subscription
        ends with :class:`armor_rx.errors.BackpressureOverflow` rather than
        growing without bound.
        """
        from armor_rx.errors import BackpressureOverflow

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[TaskEvent | BaseException | None] = asyncio.Queue()
        pending = 0

        def push(item: TaskEvent | BaseException | None) -> None:
            nonlocal pending
            pending += 1
            queue.put_nowait(item if pending <= max_items else BackpressureOverflow(max_items))

        def on_next(event: TaskEvent) -> None:
            loop.call_soon_threadsafe(push, event)

        def on_error(error: Exception) -> None:
            loop.call_soon_threadsafe(push, error)

        def on_completed() -> None:
            loop.call_soon_threadsafe(push, None)

        subscription = self.sync.events(pattern, task_id=task_id, last=last, from_seq=from_seq).subscribe(on_next, on_error, on_completed)
        try:
            while True:
                item = await queue.get()
                pending -= 1
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            subscription.dispose()
