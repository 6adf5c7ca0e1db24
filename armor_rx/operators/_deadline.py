"""Calling a hook with a time limit.

Python cannot stop a running thread, so a call that overruns its deadline is
*abandoned*, not stopped: the caller gets :class:`HookTimeout` at once and the
call goes on in the background until it returns by itself; its result is
thrown away. The worker threads are daemons so that an abandoned call that
never returns cannot keep the interpreter from exiting.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from armor_rx.errors import ConfigError, HookTimeout

_T = TypeVar("_T")
_R = TypeVar("_R")

# An idle worker waits this long for more work before it exits, so a burst of
# timed calls reuses threads and a quiet process keeps none.
_IDLE_SECONDS = 30.0


class _Call(Generic[_R]):
    """One call's outcome, handed from the worker to the waiting caller."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: _R | None = None
        self.error: BaseException | None = None


class _DaemonPool:
    """A cached pool of daemon threads: reuse an idle one or start another.

    It never queues a call behind a busy worker, because a worker may be busy
    for ever with an abandoned call; a deadline must only ever measure the
    call itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0  # idle workers no submitter has claimed yet

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put(job)
                return
        threading.Thread(target=self._work, args=(job,), name="armor-rx-deadline", daemon=True).start()

    def _work(self, job: Callable[[], None]) -> None:
        while True:
            job()
            with self._lock:
                self._idle += 1
            while True:
                try:
                    job = self._jobs.get(timeout=_IDLE_SECONDS)
                    break
                except queue.Empty:
                    with self._lock:
                        # If every idle worker has been claimed, a job is on its
                        # way to one of us: stay. Otherwise this one may leave.
                        if self._idle:
                            self._idle -= 1
                            return


_pool = _DaemonPool()


def check_timeout(seconds: float | None, what: str) -> None:
    """Raise :class:`ConfigError` unless ``seconds`` is None or a positive number."""
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0):
        raise ConfigError(f"{what} timeout must be a positive number of seconds or None, not {seconds!r}")


def call_with_timeout(fn: Callable[[_T], _R], arg: _T, seconds: float | None, name: str) -> _R:
    """``fn(arg)``, or :class:`HookTimeout(name, seconds) <HookTimeout>` if it takes longer.

    With ``seconds`` None the call is made inline on the caller's thread (the
    hot path: no thread hop). Otherwise it runs on a pooled daemon thread with
    the caller's context variables; whatever ``fn`` raises is raised here.
    """
    if seconds is None:
        return fn(arg)
    call: _Call[_R] = _Call()
    context = contextvars.copy_context()

    def job() -> None:
        try:
            call.result = context.run(fn, arg)
        except BaseException as exc:  # handed to the caller, who decides
            call.error = exc
        finally:
            call.done.set()

    _pool.submit(job)
    if not call.done.wait(seconds):
        raise HookTimeout(name, seconds)
    if call.error is not None:
        raise call.error
    return call.result  # type: ignore[return-value]  # set by the worker when no error
