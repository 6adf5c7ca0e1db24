"""Calling a hook with a time limit.

Python cannot stop a running thread, so a call that overruns its deadline is
*abandoned*, not stopped: the caller gets :class:`HookTimeout` at once and the
call goes on in the background until it returns by itself; its result is
thrown away. The worker threads are daemons so that an abandoned call that
never returns cannot keep the interpreter from exiting. Idle workers are kept
for a while to be reused, and let go at once by :func:`release_idle_workers`,
which a pipeline calls when it stops: after ``stop()`` only calls that
overran their deadline (and were reported) may still hold a thread.
"""

from __future__ import annotations

import contextvars
import math
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
        self._released = threading.Condition(self._lock)
        # None tells the idle worker that takes it to leave (see release_idle).
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._idle = 0  # idle workers no submitter has claimed yet
        self._leaving = 0  # idle workers told to leave that have not left yet

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
                    next_job = self._jobs.get(timeout=_IDLE_SECONDS)
                except queue.Empty:
                    with self._lock:
                        # If every idle worker has been claimed, a job is on its
                        # way to one of us: stay. Otherwise this one may leave.
                        if self._idle:
                            self._idle -= 1
                            return
                    continue
                if next_job is None:
                    with self._lock:
                        self._leaving -= 1
                        self._released.notify_all()
                    return
                job = next_job
                break

    def release_idle(self, timeout: float = 5.0) -> None:
        """Let every idle worker go now, and wait (up to ``timeout``) until they have."""
        with self._lock:
            count, self._idle = self._idle, 0
            self._leaving += count
            for _ in range(count):
                self._jobs.put(None)
            self._released.wait_for(lambda: self._leaving == 0, timeout)


_pool = _DaemonPool()


def release_idle_workers(timeout: float = 5.0) -> None:
    """Stop the deadline workers that are idle (a stopping pipeline calls it; new calls start new ones)."""
    _pool.release_idle(timeout)


def check_timeout(seconds: float | None, what: str) -> None:
    """Raise :class:`ConfigError` unless ``seconds`` is None or a positive number (``math.inf``: no limit)."""
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0
    ):
        raise ConfigError(f"{what} timeout must be a positive number of seconds or None, not {seconds!r}")


def limit(seconds: float | None) -> float | None:
    """``seconds`` as a deadline: None for no limit (``math.inf`` means no limit too)."""
    return None if seconds is None or seconds == math.inf else seconds


class Deadline(Generic[_T, _R]):
    """Calls one hook with a time limit, and stops waiting on it once it has overrun too often.

    A hook stuck for good would otherwise cost its full timeout on every later
    event, and a thread each: the lane (or the publisher) would crawl and
    threads would pile up. So while ``max_abandoned`` of its overrun calls are
    still running, each new call fails at once with :class:`HookTimeout`
    (``still_running``), and the caller's policy (veto or report) applies
    without waiting. A hook that is only slow now and then (one stuck call)
    is still called for the next event.
    """

    def __init__(self, fn: Callable[[_T], _R], seconds: float | None, name: str, *, max_abandoned: int = 2) -> None:
        self.fn, self.seconds, self.name = fn, limit(seconds), name
        self.max_abandoned = max_abandoned
        self._abandoned: list[_Call[_R]] = []
        self._lock = threading.Lock()

    def __call__(self, arg: _T) -> _R:
        if self.seconds is None:
            return self.fn(arg)
        with self._lock:
            self._abandoned = [call for call in self._abandoned if not call.done.is_set()]
            if len(self._abandoned) >= self.max_abandoned:
                raise HookTimeout(self.name, self.seconds, still_running=True)
        call = _start(self.fn, arg)
        if not call.done.wait(self.seconds):
            with self._lock:
                self._abandoned.append(call)
            raise HookTimeout(self.name, self.seconds)
        return _outcome(call)


def call_with_timeout(fn: Callable[[_T], _R], arg: _T, seconds: float | None, name: str) -> _R:
    """``fn(arg)``, or :class:`HookTimeout(name, seconds) <HookTimeout>` if it takes longer.

    With ``seconds`` None the call is made inline on the caller's thread (the
    hot path: no thread hop). Otherwise it runs on a pooled daemon thread with
    the caller's context variables; whatever ``fn`` raises is raised here.
    """
    seconds = limit(seconds)
    if seconds is None:
        return fn(arg)
    call = _start(fn, arg)
    if not call.done.wait(seconds):
        raise HookTimeout(name, seconds)
    return _outcome(call)


def _start(fn: Callable[[_T], _R], arg: _T) -> _Call[_R]:
    """Start ``fn(arg)`` on a pooled daemon thread with the caller's context variables."""
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
    return call


def _outcome(call: _Call[_R]) -> _R:
    if call.error is not None:
        raise call.error
    return call.result  # type: ignore[return-value]  # set by the worker when no error
