"""retry_with_backoff: resubscribe on transient errors, waiting longer each time."""

from __future__ import annotations

import errno
import random as _random
from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable, SingleAssignmentDisposable
from reactivex.scheduler import TimeoutScheduler

from armor_rx.errors import ConfigError, TransientError

_T = TypeVar("_T")

_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT})


def default_is_transient(error: BaseException) -> bool:
    """True for errors that may go away if the work is simply tried again."""
    if isinstance(error, (TransientError, TimeoutError, ConnectionError)):
        return True
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS


def _validate(max_attempts: int, initial_delay: float, multiplier: float, max_delay: float, jitter: float) -> None:
    if not isinstance(max_attempts, int) or max_attempts < 1:
        raise ConfigError(f"max_attempts must be an integer >= 1 (1 means no retry), not {max_attempts!r}")
    if initial_delay < 0 or max_delay < 0:
        raise ConfigError(f"delays must be >= 0 seconds, not initial_delay={initial_delay!r}, max_delay={max_delay!r}")
    if multiplier < 1:
        raise ConfigError(f"multiplier must be >= 1 so delays never shrink, not {multiplier!r}")
    if not 0 <= jitter <= 1:
        raise ConfigError(f"jitter must be between 0 (none) and 1 (delay anywhere down to 0), not {jitter!r}")


def backoff_delay(
    retry: int, initial_delay: float, multiplier: float, max_delay: float, jitter: float, draw: float
) -> float:
    """The wait before retry number ``retry`` (1 is the first retry)."""
    try:
        base = min(max_delay, initial_delay * multiplier ** (retry - 1))
    except OverflowError:  # many retries with a big multiplier: long past the cap
        base = max_delay
    return base * (1 - jitter * draw)


def retry_with_backoff_(
    max_attempts: int = 5,
    initial_delay: float = 0.05,
    multiplier: float = 2.0,
    max_delay: float = 5.0,
    jitter: float = 0.5,
    is_transient: Callable[[BaseException], bool] = default_is_transient,
    dead_letter: Callable[[BaseException, int], None] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    random: Callable[[], float] = _random.random,
) -> Callable[[Observable[_T]], Observable[_T]]:
    _validate(max_attempts, initial_delay, multiplier, max_delay, jitter)

    def _retry(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            timer = scheduler or scheduler_ or TimeoutScheduler.singleton()
            current = SerialDisposable()  # the live attempt, or the timer before the next
            attempts = 0  # per subscription, so every subscriber gets the full budget
            disposed = False

            def give_up(error: Exception) -> None:
                if dead_letter is not None:
                    try:
                        dead_letter(error, attempts)
                    except Exception as letter_error:
                        # Losing a dead letter is the worse failure: report that one.
                        letter_error.__cause__ = error
                        observer.on_error(letter_error)
                        return
                observer.on_error(error)

            def on_error(error: Exception) -> None:
                try:
                    transient = is_transient(error)
                except Exception as predicate_error:
                    predicate_error.__cause__ = error
                    observer.on_error(predicate_error)
                    return
                if not transient or attempts >= max_attempts:
                    give_up(error)
                    return
                delay = backoff_delay(attempts, initial_delay, multiplier, max_delay, jitter, random())
                current.disposable = timer.schedule_relative(delay, attempt)

            def attempt(_: abc.SchedulerBase | None = None, __: Any = None) -> None:
                nonlocal attempts
                if disposed:
                    return
                attempts += 1
                subscription = SingleAssignmentDisposable()
                current.disposable = subscription
                subscription.disposable = source.subscribe(
                    observer.on_next, on_error, observer.on_completed, scheduler=scheduler_
                )

            def dispose() -> None:
                nonlocal disposed
                disposed = True

            attempt()
            return CompositeDisposable(Disposable(dispose), current)

        return Observable(subscribe)

    return _retry
