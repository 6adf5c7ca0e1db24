"""Pipeline throughput and latency, each against a baseline measured in the same run.

- events/s through the hook stage of the standard pipeline with six hooks
  (three guards and three observers, compiled exactly as the pipeline compiles
  them) vs a bare reactivex chain of six ``map`` vs a plain loop calling six
  functions;
- events/s through a whole session (log + registry + after-hooks + bus) for
  ``none`` and ``batch`` fsync;
- p50/p99 latency from a request to its being durable under ``batch``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import reactivex
from reactivex import operators as ops

from armor_rx.model.events import TaskEvent
from armor_rx.operators import guard, observe
from armor_rx.pipeline.hooks import Hook, HookSet
from armor_rx.pipeline.stages import hook_stage


def _best(fn: Any, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def hook_chain(n: int) -> dict[str, float]:
    events = [TaskEvent.new("task.start.requested", f"t{i % 50}") for i in range(n)]
    funcs = [lambda e: None for _ in range(6)]

    def plain() -> None:
        sink = []
        for e in events:
            for f in funcs:
                f(e)
            sink.append(e)

    def bare() -> None:
        sink: list[TaskEvent] = []
        reactivex.from_iterable(events).pipe(*(ops.map(lambda e, f=f: (f(e), e)[1]) for f in funcs)).subscribe(sink.append)

    hooks = HookSet()
    for i, f in enumerate(funcs[:3]):
        hooks.add(Hook(name=f"guard{i}", stage="before", operator=guard(f, kinds="task.*", name=f"guard{i}")))
    for i, f in enumerate(funcs[3:]):
        hooks.add(Hook(name=f"observe{i}", stage="before", operator=observe(f, kinds="task.*", name=f"observe{i}")))

    def pipeline() -> None:
        sink: list[TaskEvent] = []
        reactivex.from_iterable(events).pipe(hook_stage(hooks, "before")).subscribe(sink.append)
        assert len(sink) == n

    t_plain, t_bare, t_pipe = _best(plain), _best(bare), _best(pipeline)
    return {
        "plain_loop_eps": n / t_plain,
        "bare_rx_eps": n / t_bare,
        "hook_stage_eps": n / t_pipe,
        "hook_stage_vs_bare_time_ratio": t_pipe / t_bare,
    }


def session_throughput(n: int, fsync: str) -> dict[str, float]:
    from armor_rx.session import Armor

    with tempfile.TemporaryDirectory() as tmp, Armor(state_dir=tmp, fsync=fsync) as armor:  # type: ignore[arg-type]
        armor.create_task("bench")
        record = armor.pipeline.record
        t0 = time.perf_counter()
        futures = [record(TaskEvent.new("note.added", "bench", {"i": i})) for i in range(n)]
        for f in futures:
            f.result()
        armor.wait_idle(60)
        elapsed = time.perf_counter() - t0
    return {f"session_{fsync}_eps": n / elapsed}


def latency(n: int) -> dict[str, float]:
    from armor_rx.session import Armor

    samples = []
    with tempfile.TemporaryDirectory() as tmp, Armor(state_dir=tmp, fsync="batch") as armor:
        armor.create_task("bench")
        for i in range(n):
            t0 = time.perf_counter()
            armor.emit("bench", "note.added", {"i": i})
            samples.append(time.perf_counter() - t0)
        # A request (write-ahead intent): submit returns once the intent is durable.
        intents = []
        outcomes = []
        for i in range(n):
            t0 = time.perf_counter()
            future = armor.request("bench", "probe.requested", {"i": i})
            intents.append(time.perf_counter() - t0)
            future.result()
            outcomes.append(time.perf_counter() - t0)
    samples.sort()
    intents.sort()
    outcomes.sort()

    def p99(xs: list[float]) -> float:
        return xs[int(len(xs) * 0.99) - 1] * 1000

    return {
        "request_to_durable_p50_ms": statistics.median(samples) * 1000,
        "request_to_durable_p99_ms": p99(samples),
        "intent_durable_p50_ms": statistics.median(intents) * 1000,
        "intent_durable_p99_ms": p99(intents),
        "request_to_outcome_p99_ms": p99(outcomes),
    }


def run(n: int = 50_000) -> dict[str, float]:
    result: dict[str, float] = {}
    result.update(hook_chain(n))
    result.update(session_throughput(n // 5, "none"))
    result.update(session_throughput(n // 5, "batch"))
    result.update(latency(2000))
    return result


TARGETS = [
    ("hook_stage_vs_bare_time_ratio", "<=", 1.5),
    ("request_to_durable_p99_ms", "<=", 5.0),
    ("intent_durable_p99_ms", "<=", 5.0),
]


if __name__ == "__main__":
    res = run()
    for key, value in res.items():
        print(f"{key:<36} {value:>14.2f}")
    for key, op, target in TARGETS:
        ok = res[key] <= target
        print(f"target {key} {op} {target}: {'PASS' if ok else 'MISS'} ({res[key]:.2f})")
