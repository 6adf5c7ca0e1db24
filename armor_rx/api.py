"""The one API: what a session offers, in-process or through the service, sync or async.

:class:`ArmorAPI` is implemented by :class:`armor_rx.Armor` (in this process)
and :class:`armor_rx.RemoteArmor` (a client of the repository's service, from
:func:`armor_rx.connect`); code typed against the Protocol runs on either.
The async flavours, :class:`armor_rx.AsyncArmor` and
:class:`armor_rx.AsyncRemoteArmor`, are one class, :class:`AsyncArmorBase`,
over either sync implementation, so sync and async cannot drift apart.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from reactivex import Observable

from armor_rx.model.events import TaskEvent
from armor_rx.model.registry import TaskRecord
from armor_rx.model.secrets import SecretSource

T = TypeVar("T")


@runtime_checkable
class ArmorAPI(Protocol):
    """Every operation of a session. See :class:`armor_rx.Armor` for what each does and raises."""

    def create_task(self, task_id: str, *, base_ref: str = "HEAD", metadata: Mapping[str, Any] | None = None) -> TaskRecord: ...
    def task(self, task_id: str) -> TaskRecord: ...
    def tasks(self) -> list[TaskRecord]: ...
    def start(self, task_id: str, *, timeout: float | None = None, secrets: Mapping[str, SecretSource] | None = None,
              **payload: Any) -> TaskEvent: ...
    def complete(self, task_id: str, *, timeout: float | None = None, **payload: Any) -> TaskEvent: ...
    def fail(self, task_id: str, reason: str, *, timeout: float | None = None, **payload: Any) -> TaskEvent: ...
    def cancel(self, task_id: str, reason: str = "cancelled by the user", *, timeout: float | None = None) -> TaskEvent: ...
    def interrupt(self, task_id: str, reason: str) -> TaskEvent: ...
    def resume(self, task_id: str, *, timeout: float | None = None, secrets: Mapping[str, SecretSource] | None = None,
               **payload: Any) -> TaskEvent: ...
    def exec(self, task_id: str, command: Sequence[str], *, timeout: float | None = None,
             on_output: Callable[[TaskEvent], object] | None = None, secrets: Mapping[str, SecretSource] | None = None,
             **options: Any) -> TaskEvent: ...
    def stop_command(self, task_id: str, reason: str = "stopped by the user") -> bool: ...
    def checkpoint(self, task_id: str, message: str | None = None, *, timeout: float | None = None,
                   tag: str | None = None) -> TaskEvent: ...
    def checkpoints(self, task_id: str) -> list[Any]: ...
    def diff(self, task_id: str, checkpoint: str | None = None) -> Any: ...
    def rollback(self, task_id: str, checkpoint: str, *, timeout: float | None = None) -> TaskEvent: ...
    def branch_from(self, source_task: str, checkpoint: str, new_task: str, *, timeout: float | None = None) -> TaskEvent: ...
    def fork(self, task_id: str, checkpoint: str, *, into: int | None = None, names: Sequence[str] | None = None,
             timeout: float | None = None) -> list[TaskEvent]: ...
    def compare(self, task_ids: Sequence[str]) -> Any: ...
    def conflicts(self) -> list[dict[str, Any]]: ...
    def worktree(self, task_id: str) -> Path: ...
    def container(self, task_id: str) -> dict[str, Any]: ...
    def emit(self, task_id: str | None, kind: str, payload: Mapping[str, Any] | None = None) -> TaskEvent: ...
    def history(self, *, task_id: str | None = None, kind: str | None = None, start_seq: int = 1) -> Iterable[TaskEvent]: ...
    def events(self, pattern: str = "*", *, task_id: str | None = None, last: int | None = None, since: float | None = None,
               from_seq: int | None = None) -> Observable[TaskEvent]: ...
    def dead_letters(self, *, include_redriven: bool = False) -> list[Any]: ...
    def redrive(self, letter_id: str, *, timeout: float | None = None) -> TaskEvent: ...
    def sweep(self, *, now: bool = False, dry_run: bool = False, grace: float | None = None) -> list[Any]: ...
    def close(self) -> None: ...


class AsyncArmorBase:
    """The async face of any :class:`ArmorAPI`: each call runs on this object's own threads.

    The threads belong to this object (created on ``async with``, ended on
    exit), never to a process-wide pool. Subclasses say how the sync
    implementation is opened (:meth:`_open`).
    """

    def __init__(self) -> None:
        self.sync: Any = None
        self._executor: ThreadPoolExecutor | None = None

    def _open(self) -> ArmorAPI:
        raise NotImplementedError

    async def __aenter__(self: T) -> T:
        base: AsyncArmorBase = self  # type: ignore[assignment]
        base._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="armor-async")
        try:
            base.sync = await base._call(base._open)
        except BaseException:
            base._executor.shutdown(wait=False)
            base._executor = None
            raise
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self.sync is not None:
                await self._call(self.sync.close)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None:
            raise RuntimeError("use 'async with' before calling the session")
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    # -- the API, awaited -----------------------------------------------------
    async def create_task(self, task_id: str, *, base_ref: str = "HEAD", metadata: Mapping[str, Any] | None = None) -> TaskRecord:
        return await self._call(self.sync.create_task, task_id, base_ref=base_ref, metadata=metadata)  # type: ignore[no-any-return]

    async def task(self, task_id: str) -> TaskRecord:
        return await self._call(self.sync.task, task_id)  # type: ignore[no-any-return]

    async def tasks(self) -> list[TaskRecord]:
        return await self._call(self.sync.tasks)  # type: ignore[no-any-return]

    async def start(self, task_id: str, *, timeout: float | None = None, secrets: Mapping[str, SecretSource] | None = None,
                    **payload: Any) -> TaskEvent:
        return await self._call(self.sync.start, task_id, timeout=timeout, secrets=secrets, **payload)  # type: ignore[no-any-return]

    async def complete(self, task_id: str, *, timeout: float | None = None, **payload: Any) -> TaskEvent:
        return await self._call(self.sync.complete, task_id, timeout=timeout, **payload)  # type: ignore[no-any-return]

    async def fail(self, task_id: str, reason: str, *, timeout: float | None = None, **payload: Any) -> TaskEvent:
        return await self._call(self.sync.fail, task_id, reason, timeout=timeout, **payload)  # type: ignore[no-any-return]

    async def cancel(self, task_id: str, reason: str = "cancelled by the user", *, timeout: float | None = None) -> TaskEvent:
        return await self._call(self.sync.cancel, task_id, reason, timeout=timeout)  # type: ignore[no-any-return]

    async def interrupt(self, task_id: str, reason: str) -> TaskEvent:
        return await self._call(self.sync.interrupt, task_id, reason)  # type: ignore[no-any-return]

    async def resume(self, task_id: str, *, timeout: float | None = None, secrets: Mapping[str, SecretSource] | None = None,
                     **payload: Any) -> TaskEvent:
        return await self._call(self.sync.resume, task_id, timeout=timeout, secrets=secrets, **payload)  # type: ignore[no-any-return]

    async def exec(self, task_id: str, command: Sequence[str], *, timeout: float | None = None,
                   on_output: Callable[[TaskEvent], object] | None = None, secrets: Mapping[str, SecretSource] | None = None,
                   **options: Any) -> TaskEvent:
        """As :meth:`ArmorAPI.exec`; ``on_output`` is called on a worker thread."""
        return await self._call(self.sync.exec, task_id, command, timeout=timeout, on_output=on_output, secrets=secrets, **options)  # type: ignore[no-any-return]

    async def stop_command(self, task_id: str, reason: str = "stopped by the user") -> bool:
        return await self._call(self.sync.stop_command, task_id, reason)  # type: ignore[no-any-return]

    async def checkpoint(self, task_id: str, message: str | None = None, *, timeout: float | None = None,
                         tag: str | None = None) -> TaskEvent:
        return await self._call(self.sync.checkpoint, task_id, message, timeout=timeout, tag=tag)  # type: ignore[no-any-return]

    async def checkpoints(self, task_id: str) -> list[Any]:
        return await self._call(self.sync.checkpoints, task_id)  # type: ignore[no-any-return]

    async def diff(self, task_id: str, checkpoint: str | None = None) -> Any:
        return await self._call(self.sync.diff, task_id, checkpoint)

    async def rollback(self, task_id: str, checkpoint: str, *, timeout: float | None = None) -> TaskEvent:
        return await self._call(self.sync.rollback, task_id, checkpoint, timeout=timeout)  # type: ignore[no-any-return]

    async def branch_from(self, source_task: str, checkpoint: str, new_task: str, *, timeout: float | None = None) -> TaskEvent:
        return await self._call(self.sync.branch_from, source_task, checkpoint, new_task, timeout=timeout)  # type: ignore[no-any-return]

    async def fork(self, task_id: str, checkpoint: str, *, into: int | None = None, names: Sequence[str] | None = None,
                   timeout: float | None = None) -> list[TaskEvent]:
        return await self._call(self.sync.fork, task_id, checkpoint, into=into, names=names, timeout=timeout)  # type: ignore[no-any-return]

    async def compare(self, task_ids: Sequence[str]) -> Any:
        return await self._call(self.sync.compare, task_ids)

    async def conflicts(self) -> list[dict[str, Any]]:
        return await self._call(self.sync.conflicts)  # type: ignore[no-any-return]

    async def worktree(self, task_id: str) -> Path:
        return await self._call(self.sync.worktree, task_id)  # type: ignore[no-any-return]

    async def container(self, task_id: str) -> dict[str, Any]:
        return await self._call(self.sync.container, task_id)  # type: ignore[no-any-return]

    async def emit(self, task_id: str | None, kind: str, payload: Mapping[str, Any] | None = None) -> TaskEvent:
        return await self._call(self.sync.emit, task_id, kind, payload)  # type: ignore[no-any-return]

    async def history(self, *, task_id: str | None = None, kind: str | None = None, start_seq: int = 1) -> list[TaskEvent]:
        return await self._call(lambda: list(self.sync.history(task_id=task_id, kind=kind, start_seq=start_seq)))

    async def dead_letters(self, *, include_redriven: bool = False) -> list[Any]:
        return await self._call(self.sync.dead_letters, include_redriven=include_redriven)  # type: ignore[no-any-return]

    async def redrive(self, letter_id: str, *, timeout: float | None = None) -> TaskEvent:
        return await self._call(self.sync.redrive, letter_id, timeout=timeout)  # type: ignore[no-any-return]

    async def sweep(self, *, now: bool = False, dry_run: bool = False, grace: float | None = None) -> list[Any]:
        return await self._call(self.sync.sweep, now=now, dry_run=dry_run, grace=grace)  # type: ignore[no-any-return]

    async def events(self, pattern: str = "*", *, task_id: str | None = None, last: int | None = None, from_seq: int | None = None,
                     max_items: int = 10_000) -> AsyncIterator[TaskEvent]:
        """Iterate events as they arrive (replay first, as in :meth:`ArmorAPI.events`).

        At most ``max_items`` wait for the consumer; past that the iteration
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

        observable = (self.sync.events(pattern, task_id=task_id, last=last, from_seq=from_seq) if last is not None
                      else self.sync.events(pattern, task_id=task_id, from_seq=from_seq))
        subscription = await self._call(observable.subscribe,
                                        lambda e: loop.call_soon_threadsafe(push, e),
                                        lambda err: loop.call_soon_threadsafe(push, err),
                                        lambda: loop.call_soon_threadsafe(push, None))
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


if TYPE_CHECKING:
    # Checked by mypy --strict: both transports implement the one Protocol.
    from armor_rx.client.sync import RemoteArmor
    from armor_rx.session import Armor

    def _in_process(armor: Armor) -> ArmorAPI:
        return armor

    def _remote(armor: RemoteArmor) -> ArmorAPI:
        return armor
