"""retry_with_backoff, checked in virtual time so the delays are exact."""

from __future__ import annotations

import errno
import itertools

import pytest
import reactivex
from hypothesis import given
from hypothesis import strategies as st
from reactivex.testing import ReactiveTest, TestScheduler

from armor_rx.errors import ConfigError, TransientError
from armor_rx.operators import default_is_transient, retry_with_backoff
from armor_rx.operators._retry import backoff_delay

SUBSCRIBED = ReactiveTest.subscribed  # when TestScheduler.start subscribes (virtual seconds)


class Flaky:
    """A source that fails with ``error`` on its first ``failures`` subscriptions, then emits "ok"."""

    def __init__(self, scheduler, failures, error=None):
        self.scheduler = scheduler
        self.failures = failures
        self.error = error or TransientError("try again")
        self.subscribed_at = []

    def observable(self):
        def subscribe(observer, _scheduler=None):
            self.subscribed_at.append(self.scheduler.clock)
            if len(self.subscribed_at) <= self.failures:
                observer.on_error(self.error)
            else:
                observer.on_next("ok")
                observer.on_completed()
            return reactivex.disposable.Disposable()

        return reactivex.create(subscribe)

    def gaps(self):
        times = self.subscribed_at
        return [later - earlier for earlier, later in itertools.pairwise(times)]


def kinds_of(messages):
    return [m.value.kind for m in messages]


def test_delays_grow_exponentially_in_virtual_time():
    scheduler = TestScheduler()
    source = Flaky(scheduler, failures=10)
    letters = []
    retrying = retry_with_backoff(
        max_attempts=5, initial_delay=0.05, multiplier=2, jitter=0, dead_letter=lambda e, n: letters.append((e, n))
    )
    results = scheduler.start(lambda: source.observable().pipe(retrying))
    assert source.gaps() == pytest.approx([0.05, 0.1, 0.2, 0.4])
    assert source.subscribed_at[0] == SUBSCRIBED
    [message] = results.messages
    assert message.value.kind == "E"
    assert message.value.exception is source.error
    assert message.time == pytest.approx(SUBSCRIBED + 0.75)
    assert letters == [(source.error, 5)]


def test_delays_stop_growing_at_max_delay():
    scheduler = TestScheduler()
    source = Flaky(scheduler, failures=10)
    scheduler.start(
        lambda: source.observable().pipe(
            retry_with_backoff(
                max_attempts=5, initial_delay=1, multiplier=10, max_delay=3, jitter=0, scheduler=scheduler
            )
        )
    )
    assert source.gaps() == pytest.approx([1, 3, 3, 3])


def test_jitter_shortens_each_delay_by_the_injected_random_fraction():
    scheduler = TestScheduler()
    source = Flaky(scheduler, failures=3)
    draws = iter([1.0, 0.0, 0.5])
    scheduler.start(
        lambda: source.observable().pipe(
            retry_with_backoff(initial_delay=1, multiplier=2, jitter=0.5, random=lambda: next(draws))
        )
    )
    # retry 1: 1 * (1 - 0.5*1.0); retry 2: 2 * (1 - 0); retry 3: 4 * (1 - 0.25)
    assert source.gaps() == pytest.approx([0.5, 2.0, 3.0])


@given(
    retry=st.integers(1, 60),
    initial=st.floats(0, 10),
    multiplier=st.floats(1, 10),
    cap=st.floats(0, 100),
    jitter=st.floats(0, 1),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_a_delay_is_never_above_the_cap_nor_below_the_jittered_floor(retry, initial, multiplier, cap, jitter, draw):
    delay = backoff_delay(retry, initial, multiplier, cap, jitter, draw)
    base = min(cap, initial * multiplier ** (retry - 1)) if multiplier ** (retry - 1) < 1e300 else cap
    assert base * (1 - jitter) - 1e-9 <= delay <= base + 1e-9
    assert delay <= cap + 1e-9


def test_success_after_two_failures_emits_the_value_and_completes():
    scheduler = TestScheduler()
    source = Flaky(scheduler, failures=2)
    letters = []
    results = scheduler.start(
        lambda: source.observable().pipe(
            retry_with_backoff(initial_delay=0.05, jitter=0, dead_letter=lambda e, n: letters.append(n))
        )
    )
    assert kinds_of(results.messages) == ["N", "C"]
    assert results.messages[0].value.value == "ok"
    assert results.messages[0].time == pytest.approx(SUBSCRIBED + 0.15)
    assert len(source.subscribed_at) == 3
    assert letters == []


def test_a_non_transient_error_is_not_retried():
    scheduler = TestScheduler()
    source = Flaky(scheduler, failures=5, error=ValueError("bad request"))
    letters = []
    results = scheduler.start(
        lambda: source.observable().pipe(retry_with_backoff(dead_letter=lambda e, n: letters.append((e, n))))
    )
    assert len(source.subscribed_at) == 1
    assert [(m.time, m.value.exception) for m in results.messages] == [(SUBSCRIBED, source.error)]
    assert letters == [(source.error, 1)]


def test_max_attempts_one_means_no_retry():
    scheduler = TestScheduler()
    source = Flaky(scheduler, failures=5)
    letters = []
    scheduler.start(
        lambda: source.observable().pipe(retry_with_backoff(max_attempts=1, dead_letter=lambda e, n: letters.append(n)))
    )
    assert len(source.subscribed_at) == 1
    assert letters == [1]


def test_disposing_cancels_a_pending_retry():
    scheduler = TestScheduler()
    source = Flaky(scheduler, failures=10)
    results = scheduler.start(
        lambda: source.observable().pipe(retry_with_backoff(initial_delay=10, jitter=0, max_delay=100)),
        disposed=SUBSCRIBED + 15,
    )
    # Subscribed at 200 and 210; the retry due at 230 is cancelled by the dispose at 215.
    assert source.subscribed_at == pytest.approx([SUBSCRIBED, SUBSCRIBED + 10])
    assert results.messages == []
    scheduler.advance_by(1000)
    assert len(source.subscribed_at) == 2


def test_a_raising_predicate_ends_the_stream_with_its_error_chained_to_the_original():
    scheduler = TestScheduler()
    source = Flaky(scheduler, failures=1)
    oops = RuntimeError("predicate bug")

    def is_transient(error):
        raise oops

    results = scheduler.start(lambda: source.observable().pipe(retry_with_backoff(is_transient=is_transient)))
    [message] = results.messages
    assert message.value.exception is oops
    assert oops.__cause__ is source.error


def test_a_raising_dead_letter_is_reported_rather_than_lost():
    scheduler = TestScheduler()
    source = Flaky(scheduler, failures=1, error=ValueError("permanent"))
    letter_error = OSError("dead-letter log unwritable")

    def dead_letter(error, attempts):
        raise letter_error

    results = scheduler.start(lambda: source.observable().pipe(retry_with_backoff(dead_letter=dead_letter)))
    [message] = results.messages
    assert message.value.exception is letter_error
    assert letter_error.__cause__ is source.error


def test_each_subscription_gets_the_whole_budget():
    scheduler = TestScheduler()
    source = Flaky(scheduler, failures=100)
    retrying = source.observable().pipe(retry_with_backoff(max_attempts=3, jitter=0, scheduler=scheduler))
    errors = []
    retrying.subscribe(on_error=errors.append)
    retrying.subscribe(on_error=errors.append)
    scheduler.start()
    assert len(source.subscribed_at) == 6
    assert len(errors) == 2


def test_works_on_real_time_with_the_default_scheduler():
    calls = []

    def flaky(_):
        calls.append(1)
        return reactivex.throw(TimeoutError("slow")) if len(calls) < 3 else reactivex.of("done")

    assert reactivex.defer(flaky).pipe(retry_with_backoff(initial_delay=0.001)).run() == "done"
    assert len(calls) == 3


@pytest.mark.parametrize(
    "error",
    [
        TransientError("x"),
        TimeoutError(),
        ConnectionResetError(),
        BrokenPipeError(),
        OSError(errno.EAGAIN, "again"),
        OSError(errno.EBUSY, "busy"),
        OSError(errno.EINTR, "interrupted"),
        OSError(errno.ETIMEDOUT, "timed out"),
    ],
)
def test_transient_errors(error):
    assert default_is_transient(error)


@pytest.mark.parametrize(
    "error", [ValueError(), OSError(errno.ENOENT, "missing"), PermissionError(errno.EACCES, "no"), OSError("no errno")]
)
def test_permanent_errors(error):
    assert not default_is_transient(error)


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"initial_delay": -1},
        {"max_delay": -1},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        retry_with_backoff(**options)
