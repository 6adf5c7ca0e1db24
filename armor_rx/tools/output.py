"""A command's output, kept bounded for a model to read: its start and its end, with the total size stated.

A test run can print megabytes; a model's context cannot hold them and does
not need to. :class:`OutputBuffer` keeps the first quarter of ``limit``
characters and the last three quarters (where failures are usually reported),
counts everything, and says what it left out. Memory stays bounded whatever
the command prints.
"""

from __future__ import annotations

import threading
from typing import Any


class OutputBuffer:
    """Collects ``exec.output`` text from any thread; :meth:`text` is what a model sees."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 64)
        self._head_limit = self.limit // 4
        self._tail_limit = self.limit - self._head_limit
        self._head: list[str] = []
        self._head_chars = 0
        self._tail: list[str] = []
        self._tail_chars = 0
        self.total_bytes = 0
        self.total_chars = 0
        self._lock = threading.Lock()

    def add(self, data: str) -> None:
        with self._lock:
            self.total_chars += len(data)
            self.total_bytes += len(data.encode("utf-8", "replace"))
            room = self._head_limit - self._head_chars
            if room > 0:
                self._head.append(data[:room])
                self._head_chars += min(room, len(data))
                data = data[room:]
            if not data:
                return
            self._tail.append(data)
            self._tail_chars += len(data)
            if self._tail_chars > 2 * self._tail_limit:  # trim now and then, not on every chunk
                self._trim()

    def on_event(self, event: Any) -> None:
        """Use as ``on_output``: takes an ``exec.output`` event's text."""
        self.add(str(event.payload.get("data", "")))

    def _trim(self) -> None:
        joined = "".join(self._tail)[-self._tail_limit :]
        self._tail = [joined]
        self._tail_chars = len(joined)

    @property
    def truncated(self) -> bool:
        return self.total_chars > self._head_chars + min(self._tail_chars, self._tail_limit)

    def text(self) -> str:
        with self._lock:
            self._trim()
            head = "".join(self._head)
            tail = self._tail[0] if self._tail else ""
            left_out = self.total_chars - len(head) - len(tail)
            if left_out <= 0:
                return head + tail
            return (
                f"{head}\n[... {left_out} characters left out; {self.total_bytes} bytes in all; "
                f"the whole output is in the event log ...]\n{tail}"
            )
