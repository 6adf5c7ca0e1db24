"""hook_timeout and the deadline helper behind every hook timeout."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest
import reactivex

from armor_rx.errors import ConfigError, HookTimeout
from armor_rx.operators import hook_timeout
from armor_rx.operators._deadline import call_with_timeout


def outcome(source, operator):
    """(values, error, completed) of a synchronous pipeline."""
    values, errors, completed = [], [], []
    source.pipe(operator).subscribe(values.append, errors.append, lambda: completed.append(True))
    return values, (errors[0] if errors else None), bool(completed)


def test_maps_like_map_when_calls_are_quick():
    assert outcome(reactivex.of(1, 2, 3), hook_timeout(lambda x: x * 10, 5)) == ([10, 20, 30], None, True)


def test_an_overrun_ends_the_stream_with_hook_timeout_and_stops_calling():
    calls = []

    def enrich(x):
        calls.append(x)
        if x == 2:
            time.sleep(1)
        return x

    values, error, completed = outcome(reactivex.of(1, 2, 3), hook_timeout(enrich, 0.05))
    assert values == [1]
    assert isinstance(error, HookTimeout)
    assert (error.hook, error.seconds) == (enrich.__qualname__, 0.05)
    assert not completed
    assert calls == [1, 2]


def test_the_name_given_is_the_name_reported():
    _, error, _ = outcome(reactivex.of(1), hook_timeout(lambda x: time.sleep(1), 0.01, name="enricher"))
    assert isinstance(error, HookTimeout) and error.hook == "enricher"


def test_an_exception_from_fn_goes_down_as_on_error():
    failure = KeyError("missing")

    def boom(x):
        raise failure

    assert outcome(reactivex.of(1), hook_timeout(boom, 1)) == ([], failure, False)


@pytest.mark.parametrize("seconds", [None, 0, -1, "1"])
def test_a_deadline_must_be_a_positive_number(seconds):
    with pytest.raises(ConfigError):
        hook_timeout(str, seconds)


def test_without_a_deadline_the_call_is_inline():
    assert call_with_timeout(lambda _: threading.current_thread(), None, None, "h") is threading.current_thread()


def test_with_a_deadline_the_call_runs_elsewhere_with_the_callers_context():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("from caller")
    thread, value = call_with_timeout(lambda _: (threading.current_thread(), var.get()), None, 1, "h")
    assert thread is not threading.current_thread()
    assert thread.daemon
    assert value == "from caller"


def test_idle_workers_are_reused_rather_than_started_anew():
    threads = {call_with_timeout(lambda _: threading.get_ident(), None, 1, "h") for _ in range(50)}
    # A worker may be caught just before it marks itself idle, so allow a few.
    assert len(threads) < 10


def test_an_abandoned_call_does_not_hold_up_the_next_one():
    release = threading.Event()
    with pytest.raises(HookTimeout):
        call_with_timeout(lambda _: release.wait(5), None, 0.01, "stuck")
    try:
        assert call_with_timeout(lambda x: x + 1, 1, 1, "next") == 2
    finally:
        release.set()


def _deadline_workers():
    return [t for t in threading.enumerate() if t.name == "armor-rx-deadline"]


def test_a_stopped_session_leaves_no_idle_deadline_worker():
    """STYLE: no thread outlives stop(). Idle workers are let go when a pipeline stops."""
    import tempfile

    from armor_rx import Armor

    with Armor(state_dir=tempfile.mkdtemp()) as armor:
        armor.hook("before_start", lambda event: None, timeout=5)
        armor.create_task("t")
        armor.start("t")
        # The worker that ran this is idle from now on (calls earlier tests abandoned may still hold others).
        worker = call_with_timeout(lambda _: threading.current_thread(), None, 1, "h")
        assert worker.name == "armor-rx-deadline" and worker.is_alive()
    worker.join(5)
    assert not worker.is_alive()


def test_released_workers_do_not_stop_a_call_that_is_running():
    from armor_rx.operators._deadline import release_idle_workers

    release = threading.Event()
    slow_worker: list[threading.Thread] = []
    result = []

    def slow(_):
        slow_worker.append(threading.current_thread())
        return release.wait(10)

    waiter = threading.Thread(target=lambda: result.append(call_with_timeout(slow, None, 20, "slow")))
    waiter.start()
    deadline = time.monotonic() + 30
    while not slow_worker:  # on a loaded machine the waiter's call may take a while to reach its worker
        assert time.monotonic() < deadline, "the slow call never started"
        time.sleep(0.01)
    quick = call_with_timeout(lambda _: threading.current_thread(), None, 1, "quick")  # idle after this
    release_idle_workers()
    quick.join(5)
    assert not quick.is_alive() and slow_worker[0].is_alive()  # the idle one left, the busy one stays
    release.set()
    waiter.join(10)
    assert result == [True]
    assert call_with_timeout(lambda _: 2, None, 1, "again") == 2  # the pool still works
