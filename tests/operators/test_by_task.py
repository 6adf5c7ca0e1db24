"""by_task: per-key order, cross-key concurrency, serialised output, bounded key state."""

from __future__ import annotations

import gc
import random
import threading
import time

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.scheduler import ThreadPoolScheduler
from reactivex.subject import Subject

from armor_rx.errors import ConfigError
from armor_rx.model import TaskEvent
from armor_rx.operators import by_task
from armor_rx.operators._by_task import _Lane

WAIT = 10  # seconds; a safety net against hangs, never a timing assertion


def first(x):
    return x[0]


class Sink:
    def __init__(self):
        self.items = []
        self.errors = []
        self.completed = False
        self.done = threading.Event()

    def on_next(self, item):
        self.items.append(item)

    def on_error(self, error):
        self.errors.append(error)
        self.done.set()

    def on_completed(self):
        self.completed = True
        self.done.set()

    def finish(self):
        assert self.done.wait(WAIT)
        return self


def run(source, operator):
    sink = Sink()
    source.pipe(operator).subscribe(sink.on_next, sink.on_error, sink.on_completed)
    return sink.finish()


def test_the_default_key_is_the_task_id_and_each_task_keeps_its_order():
    events = [TaskEvent.new("exec.output", task, {"n": n}) for n in range(20) for task in ("a", "b", "c")]
    sink = run(reactivex.from_iterable(events), by_task(ops.map(lambda e: (e.task_id, e.payload["n"]))))
    assert sink.completed
    for task in ("a", "b", "c"):
        assert [n for t, n in sink.items if t == task] == list(range(20))


def test_per_key_order_holds_under_concurrency_and_random_delays():
    rng = random.Random(7)
    items = [(key, n) for n in range(40) for key in range(25)]
    rng.shuffle(items)
    items.sort(key=lambda item: item[1])  # per key ascending n, keys interleaved
    delays = {item: rng.random() / 2000 for item in items}
    processed = {key: [] for key in range(25)}

    def work(item):
        time.sleep(delays[item])
        processed[item[0]].append(item[1])
        return item

    sink = run(reactivex.from_iterable(items), by_task(ops.map(work), key=first))
    assert len(sink.items) == len(items)
    for key in range(25):
        assert processed[key] == list(range(40))
        assert [n for k, n in sink.items if k == key] == list(range(40))


def test_different_keys_really_run_at_the_same_time():
    b_started = threading.Event()
    a_saw_b = []

    def work(item):
        if item[0] == "a":
            # Only another key running concurrently can set this.
            a_saw_b.append(b_started.wait(WAIT))
        else:
            b_started.set()
        return item

    sink = run(reactivex.of(("a", 1), ("b", 1)), by_task(ops.map(work), key=first, max_workers=2))
    assert a_saw_b == [True]
    assert sorted(sink.items) == [("a", 1), ("b", 1)]


def test_downstream_is_never_called_concurrently():
    guard = threading.Lock()
    overlaps = []
    count = []
    done = threading.Event()

    def on_next(item):
        if not guard.acquire(blocking=False):
            overlaps.append(item)
            return
        try:
            time.sleep(0.0002)
            count.append(item)
        finally:
            guard.release()

    items = [(key, n) for n in range(10) for key in range(16)]
    reactivex.from_iterable(items).pipe(by_task(ops.map(lambda x: x), key=first, max_workers=8)).subscribe(
        on_next, on_completed=done.set
    )
    assert done.wait(WAIT)
    assert overlaps == []
    assert len(count) == len(items)


def test_completion_waits_for_every_key_to_finish():
    release = threading.Event()

    def slow(item):
        assert release.wait(WAIT)
        return item

    subject: Subject[tuple[str, int]] = Subject()
    sink = Sink()
    subject.pipe(by_task(ops.map(slow), key=first)).subscribe(sink.on_next, sink.on_error, sink.on_completed)
    for item in [("a", 1), ("b", 1), ("a", 2)]:
        subject.on_next(item)
    subject.on_completed()
    assert not sink.done.wait(0.1)  # the source is done, the keys are not
    release.set()
    sink.finish()
    assert sink.completed
    assert sorted(sink.items) == [("a", 1), ("a", 2), ("b", 1)]


def test_an_error_from_inner_ends_the_output_with_it():
    failure = RuntimeError("effect failed")

    def work(item):
        if item == ("b", 2):
            raise failure
        return item

    items = [(key, n) for n in range(5) for key in ("a", "b", "c")]
    sink = run(reactivex.from_iterable(items), by_task(ops.map(work), key=first))
    assert sink.errors == [failure]
    assert not sink.completed
    assert ("b", 2) not in sink.items


def test_an_error_from_the_key_function_ends_the_output_with_it():
    sink = run(reactivex.of({"task": "a"}, {}), by_task(ops.map(lambda x: x), key=lambda d: d["task"]))
    assert len(sink.errors) == 1 and isinstance(sink.errors[0], KeyError)


def test_an_upstream_error_is_passed_on():
    failure = ValueError("source broke")
    sink = run(reactivex.throw(failure), by_task(ops.map(lambda x: x), key=first))
    assert sink.errors == [failure]


def test_an_idle_key_is_forgotten_and_comes_back_with_a_fresh_inner():
    starts = []

    def inner(lane):
        starts.append(1)
        return lane.pipe(ops.map(lambda x: x))

    subject: Subject[tuple[str, int]] = Subject()
    sink = Sink()
    subject.pipe(by_task(inner, key=first)).subscribe(sink.on_next, sink.on_error, sink.on_completed)
    subject.on_next(("a", 1))
    assert eventually(lambda: sink.items and live_lanes() == 0)
    subject.on_next(("a", 2))
    subject.on_completed()
    sink.finish()
    assert sink.items == [("a", 1), ("a", 2)]
    assert len(starts) == 2


def live_lanes():
    gc.collect()  # lanes held only by finished tests' tracebacks must not count
    return sum(isinstance(obj, _Lane) for obj in gc.get_objects())


@pytest.mark.slow
def test_state_of_idle_keys_is_released_across_100k_distinct_keys():
    subject: Subject[int] = Subject()
    delivered = []
    done = threading.Event()
    subject.pipe(by_task(ops.map(lambda x: x), key=lambda x: x)).subscribe(delivered.append, on_completed=done.set)
    for chunk in range(10):
        for key in range(chunk * 10_000, (chunk + 1) * 10_000):
            subject.on_next(key)
        assert eventually(lambda n=(chunk + 1) * 10_000: len(delivered) == n)
        # Every key is idle now, so no lane may be left, however many keys came by.
        assert eventually(lambda: live_lanes() == 0)
    subject.on_completed()
    assert done.wait(WAIT)
    assert len(delivered) == 100_000


def eventually(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_the_pool_threads_end_with_the_stream():
    before = set(threading.enumerate())
    items = [(key, n) for n in range(5) for key in range(10)]
    run(reactivex.from_iterable(items), by_task(ops.map(lambda x: x), key=first, max_workers=4))
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith("armor-rx-by-task"):
            thread.join(WAIT)
            assert not thread.is_alive()


def test_dispose_stops_the_work():
    seen = []
    subject: Subject[tuple[str, int]] = Subject()
    subscription = subject.pipe(by_task(ops.map(lambda x: x), key=first)).subscribe(seen.append)
    subscription.dispose()
    subject.on_next(("a", 1))
    time.sleep(0.05)
    assert seen == []
    assert not subject.observers


def test_a_given_scheduler_is_used_and_order_still_holds():
    pool = ThreadPoolScheduler(4)
    threads = set()

    def work(item):
        threads.add(threading.current_thread().name)
        return item

    items = [(key, n) for n in range(30) for key in range(6)]
    try:
        sink = run(reactivex.from_iterable(items), by_task(ops.map(work), key=first, scheduler=pool))
    finally:
        pool.executor.shutdown(wait=False)
    for key in range(6):
        assert [n for k, n in sink.items if k == key] == list(range(30))
    assert not any(name.startswith("armor-rx-by-task") for name in threads)


@pytest.mark.parametrize("max_workers", [0, -1, 1.5])
def test_max_workers_must_be_a_positive_integer(max_workers):
    with pytest.raises(ConfigError):
        by_task(ops.map(lambda x: x), max_workers=max_workers)
