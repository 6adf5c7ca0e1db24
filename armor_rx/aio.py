"""The asyncio face of a session: the same API, awaited instead of blocked on.

>>> import asyncio, tempfile
>>> async def main() -> str:
...     async with AsyncArmor(state_dir=tempfile.mkdtemp()) as armor:
...         await armor.create_task("t1")
...         event = await armor.start("t1")
...         return event.kind
>>> asyncio.run(main())
'task.started'

:class:`AsyncArmor` (in this process) and :class:`AsyncRemoteArmor`
(through the service) are the same :class:`armor_rx.api.AsyncArmorBase`.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from armor_rx.api import ArmorAPI, AsyncArmorBase
from armor_rx.model.events import TaskEvent


class AsyncArmor(AsyncArmorBase):
    """An in-process session (:class:`armor_rx.Armor`), awaited."""

    def __init__(self, repo: str | Path | None = None, **options: Any) -> None:
        super().__init__()
        from armor_rx.session import Armor

        self.sync = Armor(repo, **options)

    def _open(self) -> ArmorAPI:
        return self.sync.open()  # type: ignore[no-any-return]

    async def request(self, task_id: str, kind: str, payload: Mapping[str, Any] | None = None) -> TaskEvent:
        """Submit a request event and await its outcome (no thread waits for it)."""
        import asyncio

        future: Future[TaskEvent] = await self._call(self.sync.request, task_id, kind, payload)
        return await asyncio.wrap_future(future)


class AsyncRemoteArmor(AsyncArmorBase):
    """A client of the repository's service (:func:`armor_rx.connect`), awaited; it starts the service if none runs."""

    def __init__(self, repo: str | Path | None = None, *, state_dir: str | Path | None = None, autostart: bool = True,
                 idle_timeout: float | None = None) -> None:
        super().__init__()
        self._options = {"state_dir": state_dir, "autostart": autostart, "idle_timeout": idle_timeout}
        self._repo = repo

    def _open(self) -> ArmorAPI:
        from armor_rx.client.sync import RemoteArmor

        return RemoteArmor(self._repo, **self._options)  # type: ignore[arg-type]


def connect_async(repo: str | Path | None = None, **options: Any) -> AsyncRemoteArmor:
    """``async with armor_rx.connect_async(repo) as armor:`` — the service's client, awaited."""
    return AsyncRemoteArmor(repo, **options)
