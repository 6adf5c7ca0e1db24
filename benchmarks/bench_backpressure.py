"""Throughput of ``backpressure`` under each policy: a synchronous producer, a consumer that does nothing.

``python benchmarks/bench_backpressure.py [items]`` prints one line per policy;
``run()`` returns the same figures as a dict for tooling.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Literal

import reactivex
from reactivex import abc
from reactivex.disposable import Disposable

from armor_rx.operators import BackpressureStats, backpressure

Policy = Literal["block", "drop_oldest", "drop_newest", "latest", "error"]
POLICIES: tuple[Policy, ...] = ("block", "drop_oldest", "drop_newest", "latest", "error")


def _producer(count: int) -> reactivex.Observable[int]:
    def subscribe(observer: abc.ObserverBase[int], _: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        for i in range(count):
            observer.on_next(i)
        observer.on_completed()
        return Disposable()

    return reactivex.create(subscribe)


def measure(policy: Policy, items: int, max_items: int) -> dict[str, Any]:
    stats = BackpressureStats()
    done = threading.Event()
    started = time.perf_counter()
    _producer(items).pipe(backpressure(max_items, policy, stats=stats)).subscribe(
        lambda _: None, lambda _: done.set(), done.set
    )
    done.wait()
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 3),
        "received_per_s": round(stats.received / seconds),
        "delivered": stats.delivered,
        "dropped": stats.dropped,
        "high_water": stats.high_water,
    }


def run(items: int = 200_000, max_items: int = 1_000) -> dict[str, Any]:
    """Flat figures, ``<policy>.<figure>``: seconds, received_per_s, delivered, dropped, high_water."""
    result: dict[str, Any] = {"items": items, "max_items": max_items}
    for policy in POLICIES:
        for figure, value in measure(policy, items, max_items).items():
            result[f"{policy}.{figure}"] = value
    return result


if __name__ == "__main__":
    for key, value in run(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000).items():
        print(f"{key:<28} {value}")
