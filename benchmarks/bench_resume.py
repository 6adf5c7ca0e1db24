"""Reconcile + resume of interrupted tasks (issue 12 item 1), against baselines measured in the same run.

Each round starts ``N`` tasks (100 by default) with containers through a session, kills it the way a crashed
process dies (:func:`armor_rx.testing.crash`: no close, the containers left running), then times:

- opening the next session, which reconciles: all ``N`` tasks recorded ``interrupted`` (cause ``crash``) —
  against opening a session on the same state directory once that is done (nothing left to reconcile);
- resuming all ``N`` (each gets a new container; the dead session's is removed first) — against the start of
  the same ``N`` tasks in the same round (both with the same concurrency).

Prints the median over the rounds of each side and of the per-round ratios. Targets: reconcile open <= 3x
a plain open of the same log; resume <= 1.5x a start. Needs DOCKER_HOST and busybox-static (no registry).

    python benchmarks/bench_resume.py [N] [ROUNDS]

Measured at 100 tasks, 2 rounds, medians, on the shared 2-vCPU machine (load 4-13): before batching
(one container listing and inspect per task at reconcile, two listings per resume, one fsync per
interruption) reconcile open 5.9x a plain open (2.16 s vs 0.37 s) and resume 1.73x a start (59 s vs
34 s); after, reconcile open 1.6-2.2x (0.15-0.23 s vs 0.09-0.11 s) and resume 1.16x a start (26.5 s
vs 23.2 s). Both targets pass.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

IMAGE = "armor-rx-bench/resume:latest"
TARGETS = [("reconcile_open_ratio", "<=", 3.0), ("resume_vs_start_ratio", "<=", 1.5)]
ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}


def _repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=ENV)
    (repo / "README.md").write_text("bench\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=ENV)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True, env=ENV)
    return repo


def _all(fn: Any, tasks: list[str], workers: int = 8) -> float:
    began = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fn, tasks))
    return time.perf_counter() - began


def _round(n: int, spec: Any) -> dict[str, float]:
    from armor_rx.model.lifecycle import State
    from armor_rx.session import Armor
    from armor_rx.testing import crash

    with tempfile.TemporaryDirectory(prefix="armor-bench-resume-") as tmp:
        repo = _repo(Path(tmp))
        options: dict[str, Any] = {"docker": True, "sandbox": spec, "sweep_interval": None}
        tasks = [f"t{i}" for i in range(n)]
        first = Armor(repo, **options).open()
        for task in tasks:
            first.create_task(task)
        start = _all(lambda t: first.start(t), tasks)
        crash(first)

        began = time.perf_counter()
        second = Armor(repo, **options).open()
        reconcile_open = time.perf_counter() - began
        assert all(second.task(t).state is State.INTERRUPTED for t in tasks)
        second.close()

        began = time.perf_counter()
        third = Armor(repo, **options).open()
        plain_open = time.perf_counter() - began
        try:
            resume = _all(lambda t: third.resume(t), tasks)
            assert all(third.task(t).state is State.RUNNING for t in tasks)
        finally:
            third.close()  # interrupts them again and removes their containers
    return {"start_s": start, "resume_s": resume, "plain_open_s": plain_open, "reconcile_open_s": reconcile_open}


def run(n: int = 100, rounds: int = 3) -> dict[str, Any]:
    from armor_rx.sinks.docker import Engine, SandboxSpec
    from armor_rx.sinks.docker.rootfs import busybox_rootfs, import_rootfs

    with Engine.connect(timeout=30) as engine:
        import_rootfs(engine, busybox_rootfs(), IMAGE)
    spec = SandboxSpec(image=IMAGE, wall_clock=3600)
    results = [_round(n, spec) for _ in range(rounds)]
    out: dict[str, Any] = {"tasks": n, "rounds": rounds}
    for key in ("start_s", "resume_s", "plain_open_s", "reconcile_open_s"):
        out[key] = statistics.median(r[key] for r in results)
    out["resume_vs_start_ratio"] = statistics.median(r["resume_s"] / r["start_s"] for r in results)
    out["reconcile_open_ratio"] = statistics.median(r["reconcile_open_s"] / r["plain_open_s"] for r in results)
    return out


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    results = run(*args)
    for key, value in results.items():
        print(f"{key:<28} {value:.3f}" if isinstance(value, float) else f"{key:<28} {value}")
    for key, op, bound in TARGETS:
        print(f"target {key} {op} {bound}: {'PASS' if results[key] <= bound else 'MISS'}")
