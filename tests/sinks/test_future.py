"""The event log's light futures, resolved one by one or a group commit at once."""

from __future__ import annotations

import threading
from concurrent.futures import Future, wait

from armor_rx.sinks._future import AppendFuture, new_future, set_results


def test_set_results_resolves_waiters_callbacks_and_stock_futures() -> None:
    quiet, waited, called = new_future(), new_future(), new_future()
    stock: Future[int] = Future()
    seen: list[int] = []
    called.add_done_callback(lambda f: seen.append(f.result()))
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(waited.result(timeout=10)))
    waiter.start()
    while waited._lazy_condition is None if isinstance(waited, AppendFuture) else False:
        threading.Event().wait(0.001)  # until the waiter has made its condition
    set_results([quiet, None, waited, called, stock], [1, 2, 3, 4, 5])
    waiter.join(10)
    assert got == [3] and seen == [4]
    assert [f.result(timeout=0) for f in (quiet, waited, called, stock)] == [1, 3, 4, 5]
    assert all(f.done() and not f.cancelled() for f in (quiet, waited, called, stock))
    assert wait([quiet, waited], timeout=0).not_done == set()


def test_a_resolved_append_future_builds_no_instance_dict() -> None:
    future = AppendFuture[int]()
    set_results([future], [7])
    assert future.result() == 7
    # Values live inline in the object until __dict__ is asked for; a dict per
    # future would be one more object for the garbage collector per append.
    assert "_lazy_condition" not in future.__dict__
