"""dedup: re-deliveries within the window of recent distinct keys are dropped."""

from __future__ import annotations

import pytest
import reactivex
from hypothesis import given
from hypothesis import strategies as st
from reactivex import operators as ops

from armor_rx.errors import ConfigError
from armor_rx.model import TaskEvent
from armor_rx.operators import dedup


def run(items, operator):
    return reactivex.from_iterable(items).pipe(operator, ops.to_list()).run()


def identity(x):
    return x


def test_a_redelivered_event_is_dropped_by_its_id():
    a, b = TaskEvent.new("task.started", "a"), TaskEvent.new("task.started", "b")
    assert run([a, b, a, b, a], dedup()) == [a, b]


def test_a_key_pushed_out_of_the_window_is_let_through_again():
    # window 2: after 1, 2, 3 the remembered keys are 2 and 3, so 1 is new again.
    assert run([1, 2, 3, 1], dedup(window=2, key=identity)) == [1, 2, 3, 1]


def test_a_repeat_refreshes_its_key():
    # The second 1 is dropped but makes 1 the most recent key, so 3 evicts 2, not 1;
    # then 2 is new again and evicts 1.
    assert run([1, 2, 1, 3, 2, 1], dedup(window=2, key=identity)) == [1, 2, 3, 2, 1]


def test_a_failing_key_function_ends_the_stream_with_its_error():
    errors = []
    reactivex.of({"id": 1}, {}).pipe(dedup(key=lambda d: d["id"])).subscribe(on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], KeyError)


def test_an_unhashable_key_ends_the_stream_with_a_type_error():
    errors = []
    reactivex.of([1]).pipe(dedup(key=identity)).subscribe(on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], TypeError)


def test_each_subscription_remembers_on_its_own():
    deduped = reactivex.of(1, 1, 2).pipe(dedup(key=identity), ops.to_list())
    assert deduped.run() == [1, 2]
    assert deduped.run() == [1, 2]


@pytest.mark.parametrize("window", [0, -5, 2.5, True])
def test_the_window_must_be_a_positive_integer(window):
    with pytest.raises(ConfigError):
        dedup(window=window)


def reference(items, window):
    """What dedup should emit, by its definition: an item is dropped when its key is
    among the last ``window`` distinct keys seen before it."""
    out = []
    for i, item in enumerate(items):
        recent = []
        for earlier in reversed(items[:i]):
            if earlier not in recent:
                recent.append(earlier)
            if len(recent) == window:
                break
        if item not in recent:
            out.append(item)
    return out


@given(items=st.lists(st.integers(0, 12), max_size=80), window=st.integers(1, 10))
def test_output_is_the_first_occurrences_within_the_window(items, window):
    assert run(items, dedup(window=window, key=identity)) == reference(items, window)


@given(items=st.lists(st.integers(0, 30), max_size=60))
def test_with_a_window_larger_than_the_keys_every_key_appears_once(items):
    assert run(items, dedup(window=100, key=identity)) == list(dict.fromkeys(items))
