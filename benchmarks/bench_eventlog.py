"""How fast the durable event log is, next to the plainest code that is as durable.

Run ``python benchmarks/bench_eventlog.py [N]``. Every figure is measured in
the same run, on temporary directories on the same disk:

* ``batch async``: N ``append_async`` calls, then wait for all of them.
* ``batch 4 threads``: the same split over 4 producer threads.
* ``always``: sequential ``append`` with one fsync per event.
* ``raw``: ``orjson.dumps`` of the same event dicts, one ``os.write`` and one
  ``os.fsync`` per batch, with the batch size the log actually achieved
  (events / group commits), or one fsync per event for ``always``.
* latency: p50 / p99 of a single ``append`` (request to durable) under
  ``batch``, over 2000 sequential appends.

Targets: durable log throughput >= 50% of raw; single-append p99 <= 5 ms.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson

if __package__ in (None, ""):  # run as a script: import the checkout it sits in
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from armor_rx.model import TaskEvent, to_plain
from armor_rx.sinks.eventlog import EventLog, FsyncPolicy

THROUGHPUT_TARGET = 0.5
P99_TARGET_MS = 5.0


def _events(n: int) -> list[TaskEvent]:
    return [
        TaskEvent.new(
            "exec.output", f"task-{i % 8}", {"stream": "stdout", "line": f"building module {i} of the project", "n": i}
        )
        for i in range(n)
    ]


def _plain(events: list[TaskEvent]) -> list[dict[str, Any]]:
    return [to_plain(event.with_seq(i + 1).to_dict()) for i, event in enumerate(events)]


def _log_async(directory: Path, events: list[TaskEvent], threads: int) -> tuple[float, float]:
    """Seconds to append all events durably, and the mean group-commit size."""
    with EventLog(directory, fsync="batch") as log:
        share = [events[i::threads] for i in range(threads)]

        def produce(part: list[TaskEvent]) -> None:
            futures: list[Future[TaskEvent]] = [log.append_async(event) for event in part]
            for future in futures:
                future.result()

        workers = [threading.Thread(target=produce, args=(part,)) for part in share]
        start = time.perf_counter()
        if threads == 1:
            produce(events)
        else:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        elapsed = time.perf_counter() - start
        return elapsed, log.stats.mean_batch


def _log_sync(directory: Path, events: list[TaskEvent], policy: FsyncPolicy) -> float:
    with EventLog(directory, fsync=policy) as log:
        start = time.perf_counter()
        for event in events:
            log.append(event)
        return time.perf_counter() - start


def _raw(path: Path, dicts: list[dict[str, Any]], batch: int) -> float:
    """orjson + one write + one fsync per ``batch`` events."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        start = time.perf_counter()
        for i in range(0, len(dicts), batch):
            os.write(fd, b"".join([orjson.dumps(d) + b"\n" for d in dicts[i : i + batch]]))
            os.fsync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)


def _latency(directory: Path, events: list[TaskEvent]) -> tuple[float, float]:
    samples = []
    with EventLog(directory, fsync="batch") as log:
        for event in events:
            start = time.perf_counter()
            log.append(event)
            samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples) * 1e3, samples[int(len(samples) * 0.99) - 1] * 1e3


def run(n: int = 20000) -> dict[str, Any]:
    """Run every measurement and return the figures (events/s, ratios, ms, verdicts)."""
    events = _events(n)
    dicts = _plain(events)
    n_always = min(n, 2000)
    result: dict[str, Any] = {"n": n, "n_always": n_always}
    with tempfile.TemporaryDirectory(prefix="bench-eventlog-") as tmp:
        root = Path(tmp)
        for name, threads in (("batch_async", 1), ("batch_4_threads", 4)):
            elapsed, mean_batch = _log_async(root / name, events, threads)
            batch = max(1, round(mean_batch))
            raw = _raw(root / f"{name}.raw", dicts, batch)
            result[name] = {
                "log_eps": n / elapsed,
                "raw_eps": n / raw,
                "ratio": raw / elapsed,
                "mean_batch": mean_batch,
            }
        elapsed = _log_sync(root / "always", events[:n_always], "always")
        raw = _raw(root / "always.raw", dicts[:n_always], 1)
        result["always"] = {
            "log_eps": n_always / elapsed,
            "raw_eps": n_always / raw,
            "ratio": raw / elapsed,
            "mean_batch": 1.0,
        }
        p50, p99 = _latency(root / "latency", events[:2000])
        result["latency_ms"] = {"p50": p50, "p99": p99}
    result["verdict"] = {
        "throughput": all(
            result[k]["ratio"] >= THROUGHPUT_TARGET for k in ("batch_async", "batch_4_threads", "always")
        ),
        "p99": p99 <= P99_TARGET_MS,
    }
    return result


def _print(result: dict[str, Any]) -> None:
    print(f"event log benchmark: {result['n']} events ({result['n_always']} for 'always')")
    print(f"{'mode':<18}{'log ev/s':>12}{'raw ev/s':>12}{'log/raw':>9}{'batch':>8}")
    for key in ("batch_async", "batch_4_threads", "always"):
        row = result[key]
        print(f"{key:<18}{row['log_eps']:>12,.0f}{row['raw_eps']:>12,.0f}{row['ratio']:>8.0%}{row['mean_batch']:>8.1f}")
    lat = result["latency_ms"]
    print(f"single append under 'batch': p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms")
    verdict = result["verdict"]
    print(f"target log/raw >= {THROUGHPUT_TARGET:.0%}: {'PASS' if verdict['throughput'] else 'MISS'}")
    print(f"target p99 <= {P99_TARGET_MS:g} ms: {'PASS' if verdict['p99'] else 'MISS'}")


if __name__ == "__main__":
    _print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
