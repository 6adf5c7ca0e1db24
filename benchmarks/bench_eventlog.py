"""How fast the durable event log is, next to the plainest code that is as durable.

Run ``python benchmarks/bench_eventlog.py [N]``. Every figure is measured in
the same run, on temporary directories on the same disk:

* ``batch async``: N ``append_async`` calls, then wait for all of them.
* ``batch 4 threads``: the same split over 4 producer threads.
* ``always``: sequential ``append`` with one fsync per event.
* ``raw``: ``orjson.dumps`` of the same events as ready-made dicts, one
  ``os.write`` and one ``os.fsync`` per batch, with the batch size the log
  actually achieved (events / group commits), or one fsync per event for
  ``always``. This is the baseline the targets use.
* ``raw-ev``: the same loop starting from TaskEvents (numbering, ``to_json``,
  the checksum), for context: what any log of TaskEvents must pay.
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
from armor_rx.sinks._logfile import encode_line
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
    """orjson of ready-made dicts + one write + one fsync per ``batch`` events."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        start = time.perf_counter()
        for i in range(0, len(dicts), batch):
            os.write(fd, b"".join([orjson.dumps(d) + b"\n" for d in dicts[i : i + batch]]))
            os.fsync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)


def _raw_events(path: Path, events: list[TaskEvent], batch: int) -> float:
    """Like :func:`_raw`, but starting from TaskEvents: with_seq + to_json + crc line.

    Not a target; it shows how much of the gap is the event model's own cost
    (every log of TaskEvents pays it) and how much is the log's machinery.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        start = time.perf_counter()
        for i in range(0, len(events), batch):
            chunk = events[i : i + batch]
            os.write(fd, b"".join([encode_line(e.with_seq(i + j + 1).to_json()) for j, e in enumerate(chunk)]))
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
    """Run every measurement; returns flat figures (events/s, ratios, batch sizes, ms).

    Ratios are log/raw throughput (1.0 = as fast as the raw baseline); see
    :data:`TARGETS` for what is expected of them.
    """
    events = _events(n)
    dicts = _plain(events)
    n_always = min(n, 2000)
    result: dict[str, Any] = {"events": n, "events_always": n_always}
    with tempfile.TemporaryDirectory(prefix="bench-eventlog-") as tmp:
        root = Path(tmp)
        for name, threads in (("batch_async", 1), ("batch_4_threads", 4)):
            elapsed, mean_batch = _log_async(root / name, events, threads)
            batch = max(1, round(mean_batch))
            raw = _raw(root / f"{name}.raw", dicts, batch)
            raw_events = _raw_events(root / f"{name}.rawev", events, batch)
            result[f"{name}_log_eps"] = n / elapsed
            result[f"{name}_raw_eps"] = n / raw
            result[f"{name}_raw_events_eps"] = n / raw_events
            result[f"{name}_mean_batch"] = mean_batch
            result[f"{name}_ratio"] = raw / elapsed
            result[f"{name}_ratio_vs_raw_events"] = raw_events / elapsed
        elapsed = _log_sync(root / "always", events[:n_always], "always")
        raw = _raw(root / "always.raw", dicts[:n_always], 1)
        result["always_log_eps"] = n_always / elapsed
        result["always_raw_eps"] = n_always / raw
        result["always_ratio"] = raw / elapsed
        result["append_p50_ms"], result["append_p99_ms"] = _latency(root / "latency", events[:2000])
    return result


# (figure, comparison, target): what benchmarks/run.py checks.
TARGETS = [
    ("batch_async_ratio", ">=", THROUGHPUT_TARGET),
    ("batch_4_threads_ratio", ">=", THROUGHPUT_TARGET),
    ("always_ratio", ">=", THROUGHPUT_TARGET),
    ("append_p99_ms", "<=", P99_TARGET_MS),
]


def _print(result: dict[str, Any]) -> None:
    print(f"event log benchmark: {result['events']} events ({result['events_always']} for 'always')")
    header = (
        f"{'mode':<17}{'log ev/s':>11}{'raw ev/s':>11}{'log/raw':>9}{'raw-ev ev/s':>13}{'log/raw-ev':>12}{'batch':>8}"
    )
    print(header)
    for key in ("batch_async", "batch_4_threads"):
        print(
            f"{key:<17}{result[f'{key}_log_eps']:>11,.0f}{result[f'{key}_raw_eps']:>11,.0f}{result[f'{key}_ratio']:>9.0%}"
            f"{result[f'{key}_raw_events_eps']:>13,.0f}{result[f'{key}_ratio_vs_raw_events']:>12.0%}"
            f"{result[f'{key}_mean_batch']:>8.1f}"
        )
    print(
        f"{'always':<17}{result['always_log_eps']:>11,.0f}{result['always_raw_eps']:>11,.0f}{result['always_ratio']:>9.0%}"
    )
    print(f"single append under 'batch': p50 {result['append_p50_ms']:.3f} ms, p99 {result['append_p99_ms']:.3f} ms")
    for key, op, target in TARGETS:
        value = result[key]
        ok = value >= target if op == ">=" else value <= target
        print(f"target {key} {op} {target:g}: {value:.3f} {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    _print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
