"""backpressure: each policy on small deterministic cases, then a million items."""

from __future__ import annotations

import itertools
import threading
import tracemalloc

import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.subject import Subject

from armor_rx.errors import BackpressureOverflow, ConfigError
from armor_rx.operators import BackpressureStats, DropReport, backpressure

WAIT = 10  # seconds; only a safety net against hangs, never a timing assertion
_names = itertools.count()


def unique_name():
    return f"bp-test-{next(_names)}"


class Consumer:
    """Records what arrives; blocks inside on_next on the items listed in ``hold`` until released."""

    def __init__(self, hold=()):
        self.items = []
        self.errors = []
        self.completed = False
        self.done = threading.Event()
        self.threads = set()
        self.arrived = {item: threading.Event() for item in hold}
        self.release = {item: threading.Event() for item in hold}

    def on_next(self, item):
        self.threads.add(threading.current_thread().name)
        self.items.append(item)
        if item in self.release:
            self.arrived[item].set()
            assert self.release[item].wait(WAIT)

    def on_error(self, error):
        self.errors.append(error)
        self.done.set()

    def on_completed(self):
        self.completed = True
        self.done.set()

    def hold_at(self, item):
        """Wait until the drain thread is stuck delivering ``item``."""
        assert self.arrived[item].wait(WAIT)

    def let_go(self, item):
        self.release[item].set()

    def finish(self):
        assert self.done.wait(WAIT)


def wire(policy, max_items=2, hold=(0,), **options):
    subject: Subject[int] = Subject()
    consumer = Consumer(hold)
    stats = options.pop("stats", BackpressureStats())
    name = unique_name()
    subscription = subject.pipe(backpressure(max_items, policy, stats=stats, name=name, **options)).subscribe(
        consumer.on_next, consumer.on_error, consumer.on_completed
    )
    return subject, consumer, stats, name, subscription


def drain_thread(name):
    return next((t for t in threading.enumerate() if t.name == f"{name}-drain"), None)


def assert_thread_ends(name):
    thread = drain_thread(name)
    if thread is not None:
        thread.join(WAIT)
        assert not thread.is_alive()


def push_while_held(subject, consumer, items):
    """Deliver 0 and hold the consumer on it, then push ``items`` into the queue."""
    subject.on_next(0)
    consumer.hold_at(0)
    for item in items:
        subject.on_next(item)


def test_block_makes_the_producer_wait_and_loses_nothing():
    subject, consumer, stats, _, _ = wire("block")
    push_while_held(subject, consumer, [1, 2])
    producer = threading.Thread(target=lambda: (subject.on_next(3), subject.on_completed()))
    producer.start()
    producer.join(0.2)
    assert producer.is_alive()  # waiting for room: the queue holds 1 and 2
    assert stats.received == 4 and stats.delivered == 1
    consumer.let_go(0)
    producer.join(WAIT)
    consumer.finish()
    assert consumer.items == [0, 1, 2, 3]
    assert consumer.completed
    assert (stats.received, stats.delivered, stats.dropped, stats.high_water) == (4, 4, 0, 2)


def test_drop_oldest_evicts_the_oldest_queued_item():
    subject, consumer, stats, _, _ = wire("drop_oldest")
    push_while_held(subject, consumer, [1, 2, 3, 4])
    subject.on_completed()
    consumer.let_go(0)
    consumer.finish()
    assert consumer.items == [0, 3, 4]
    assert (stats.received, stats.delivered, stats.dropped) == (5, 3, 2)


def test_drop_newest_drops_the_incoming_item():
    subject, consumer, stats, _, _ = wire("drop_newest")
    push_while_held(subject, consumer, [1, 2, 3, 4])
    subject.on_completed()
    consumer.let_go(0)
    consumer.finish()
    assert consumer.items == [0, 1, 2]
    assert (stats.received, stats.delivered, stats.dropped) == (5, 3, 2)


def test_latest_keeps_only_the_newest_item_when_full():
    subject, consumer, stats, _, _ = wire("latest")
    # [1, 2] is full; 3 replaces both; 4 fits beside it; 5 replaces [3, 4].
    push_while_held(subject, consumer, [1, 2, 3, 4, 5])
    subject.on_completed()
    consumer.let_go(0)
    consumer.finish()
    assert consumer.items == [0, 5]
    assert (stats.received, stats.delivered, stats.dropped) == (6, 2, 4)


def test_error_policy_ends_the_stream_with_overflow_ahead_of_the_queue():
    subject, consumer, stats, name, _ = wire("error")
    push_while_held(subject, consumer, [1, 2, 3])
    subject.on_next(4)  # no longer accepted
    consumer.let_go(0)
    consumer.finish()
    assert consumer.items == [0]
    [error] = consumer.errors
    assert isinstance(error, BackpressureOverflow) and error.max_items == 2
    assert not consumer.completed
    assert not subject.observers  # the producer was unsubscribed
    assert stats.received == stats.delivered + stats.dropped == 5
    assert_thread_ends(name)


def test_completion_and_errors_from_upstream_come_after_the_queued_items():
    subject, consumer, _, name, _ = wire("block", max_items=5)
    push_while_held(subject, consumer, [1, 2, 3])
    failure = RuntimeError("upstream broke")
    subject.on_error(failure)
    consumer.let_go(0)
    consumer.finish()
    assert consumer.items == [0, 1, 2, 3]
    assert consumer.errors == [failure]
    assert_thread_ends(name)


def test_downstream_is_called_only_from_the_drain_thread():
    subject, consumer, _, name, _ = wire("block", max_items=3, hold=())
    for i in range(100):
        subject.on_next(i)
    subject.on_completed()
    consumer.finish()
    assert consumer.items == list(range(100))
    assert consumer.threads == {f"{name}-drain"}
    assert_thread_ends(name)


def test_drop_reports_come_at_once_then_at_the_interval_then_at_the_end():
    reports = []
    subject, consumer, stats, name, _ = wire("drop_newest", hold=(0, 2), on_drop=reports.append, report_interval=3600)
    push_while_held(subject, consumer, [1, 2, 3])  # 3 is dropped
    consumer.let_go(0)
    consumer.hold_at(2)  # the first drop was reported as 1 was taken
    for item in (4, 5, 6, 7):  # 6 and 7 are dropped; too soon for a report
        subject.on_next(item)
    subject.on_completed()
    consumer.let_go(2)
    consumer.finish()
    assert consumer.items == [0, 1, 2, 4, 5]
    assert reports == [
        DropReport(name=name, policy="drop_newest", dropped=1, total_dropped=1),
        DropReport(name=name, policy="drop_newest", dropped=2, total_dropped=3),
    ]
    assert stats.received == stats.delivered + stats.dropped == 8
    assert sum(r.dropped for r in reports) == stats.dropped


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest", "latest"])
def test_reported_drops_add_up_under_load(policy):
    reports = []
    stats = BackpressureStats()
    out = (
        reactivex.from_iterable(range(20_000))
        .pipe(backpressure(8, policy, on_drop=reports.append, report_interval=0, stats=stats), ops.to_list())
        .run()
    )
    assert stats.received == 20_000 == stats.delivered + stats.dropped
    assert len(out) == stats.delivered
    assert sum(r.dropped for r in reports) == stats.dropped
    if reports:
        assert reports[-1].total_dropped == stats.dropped
    assert out == sorted(out)  # whatever survives keeps its order
    assert stats.high_water <= 8


def test_a_raising_on_drop_ends_the_stream_with_its_error():
    failure = RuntimeError("metrics down")

    def on_drop(report):
        raise failure

    subject, consumer, _, name, _ = wire("drop_newest", on_drop=on_drop)
    push_while_held(subject, consumer, [1, 2, 3])
    consumer.let_go(0)
    consumer.finish()
    assert consumer.errors == [failure]
    assert not subject.observers
    assert_thread_ends(name)


def test_a_raising_consumer_ends_the_stream_with_its_error():
    failure = ValueError("cannot render")
    errors = []
    done = threading.Event()
    name = unique_name()

    def on_next(item):
        if item == 2:
            raise failure

    subject: Subject[int] = Subject()
    subject.pipe(backpressure(4, name=name)).subscribe(on_next, lambda e: (errors.append(e), done.set()))
    for i in range(5):
        subject.on_next(i)
    assert done.wait(WAIT)
    assert errors == [failure]
    assert_thread_ends(name)


def test_dispose_ends_the_drain_thread_and_frees_a_blocked_producer():
    subject, consumer, stats, name, subscription = wire("block", max_items=1)
    push_while_held(subject, consumer, [1])
    producer = threading.Thread(target=subject.on_next, args=(2,))
    producer.start()
    subscription.dispose()
    producer.join(WAIT)
    assert not producer.is_alive()
    consumer.let_go(0)
    assert_thread_ends(name)
    assert consumer.items == [0]
    assert stats.received == stats.delivered + stats.dropped == 3


def test_the_drain_thread_ends_with_the_stream():
    name = unique_name()
    assert reactivex.of(1, 2, 3).pipe(backpressure(2, name=name), ops.to_list()).run() == [1, 2, 3]
    assert_thread_ends(name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0,), "max_items must be an integer >= 1"),
        ((1.5,), "max_items must be an integer >= 1"),
        ((True,), "max_items must be an integer >= 1"),
        ((4, "fifo"), "use one of: block, drop_oldest, drop_newest, latest, error"),
    ],
)
def test_bad_arguments_are_config_errors_that_say_what_is_allowed(args, message):
    with pytest.raises(ConfigError, match=message):
        backpressure(*args)


def test_a_negative_report_interval_is_a_config_error():
    with pytest.raises(ConfigError, match="report_interval"):
        backpressure(4, "drop_newest", report_interval=-1)


@settings(max_examples=50, deadline=None)
@given(items=st.lists(st.integers(), max_size=200), max_items=st.integers(1, 8))
def test_block_preserves_the_sequence(items, max_items):
    out = reactivex.from_iterable(items).pipe(backpressure(max_items), ops.to_list()).run()
    assert out == items


@settings(max_examples=50, deadline=None)
@given(
    count=st.integers(1, 300),
    max_items=st.integers(1, 8),
    policy=st.sampled_from(["drop_oldest", "drop_newest", "latest"]),
)
def test_dropping_policies_deliver_an_ordered_subsequence_and_the_right_end(count, max_items, policy):
    stats = BackpressureStats()
    out = reactivex.from_iterable(range(count)).pipe(backpressure(max_items, policy, stats=stats), ops.to_list()).run()
    assert out == sorted(set(out))
    assert stats.received == count == stats.delivered + stats.dropped
    assert stats.high_water <= max_items
    if policy == "drop_newest":
        assert out[0] == 0  # the first item always finds room
    else:
        assert out[-1] == count - 1  # the newest item is never the one dropped


# -- a million items into a slow consumer ------------------------------------

MILLION = 10**6
MAX_ITEMS = 1_000
PEAK_LIMIT = 4 * 1024 * 1024  # bytes; an unbounded queue of 10**6 ints would need ~40 MB


def million_producer(observer, _scheduler=None):
    for i in range(MILLION):
        observer.on_next(i)
    observer.on_completed()
    return reactivex.disposable.Disposable()


class SlowCounter:
    """Checks order and counts without storing the items; every 10k items it pauses."""

    def __init__(self):
        self.count = 0
        self.last = -1
        self.out_of_order = 0
        self.errors = []
        self.done = threading.Event()

    def on_next(self, item):
        if item <= self.last:
            self.out_of_order += 1
        self.last = item
        self.count += 1
        if self.count % 10_000 == 0:
            threading.Event().wait(0.001)

    def on_error(self, error):
        self.errors.append(error)
        self.done.set()

    def on_completed(self):
        self.done.set()


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["block", "drop_oldest", "drop_newest", "latest", "error"])
def test_a_million_items_keep_the_queue_and_memory_bounded(policy):
    stats = BackpressureStats()
    consumer = SlowCounter()
    tracemalloc.start()
    try:
        reactivex.create(million_producer).pipe(backpressure(MAX_ITEMS, policy, stats=stats)).subscribe(
            consumer.on_next, consumer.on_error, consumer.on_completed
        )
        assert consumer.done.wait(120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.high_water <= MAX_ITEMS
    assert peak < PEAK_LIMIT
    assert stats.received == stats.delivered + stats.dropped
    assert consumer.out_of_order == 0
    if policy == "block":
        assert consumer.count == stats.delivered == MILLION
        assert consumer.last == MILLION - 1
        assert consumer.errors == []
    elif policy == "error":
        assert [type(e) for e in consumer.errors] == [BackpressureOverflow]
    else:
        assert consumer.errors == []
        assert stats.received == MILLION
