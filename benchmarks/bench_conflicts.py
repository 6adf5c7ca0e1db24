"""Early conflict detection benchmark: the cost of one task's boundary with many active tasks.

Run ``python benchmarks/bench_conflicts.py [files] [tasks]`` (defaults 2000, 8).
It makes a repository of ``files`` small files, starts ``tasks`` git-only
tasks, has each change a few files (two of them the same one), then times,
in the same run, after one more file changes in one task:

* one conflict check at that task's boundary (what the watcher does after
  an ``exec.exited``): an incremental scan of that worktree, its diff against
  the base, and the comparison with every other task's remembered changes;
* an incremental checkpoint of the same task (the baseline: a scan of the
  same worktree, as every checkpoint already pays);
* rescanning every task's worktree (what a watcher without memory would do).

Best of five rounds each. Targets: a boundary check costs at most 1.5x a
checkpoint, and at most half of rescanning every task.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from armor_rx import Armor  # noqa: E402
from armor_rx.sinks.git.conflicts import ConflictWatcher  # noqa: E402

#: Read by benchmarks/run.py: (result key, comparison, bound).
TARGETS = [("boundary_vs_checkpoint", "<=", 1.5), ("boundary_vs_rescan_all", "<=", 0.5)]
ENV = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x",
       "PATH": "/usr/bin:/bin:/usr/local/bin"}


def _best(fn: Any, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(files: int = 2000, tasks: int = 8) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="armor-bench-conflicts-"))
    try:
        repo = root / "repo"
        for i in range(files):
            path = repo / f"d{i % 40}" / f"f{i}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"line {n} of {i}\n" for n in range(40)))
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        subprocess.run(["git", "commit", "-qm", "init"], cwd=repo, check=True, env=ENV)
        with Armor(repo, detect_conflicts=False) as armor:
            names = [f"t{i}" for i in range(tasks)]
            for name in names:
                armor.create_task(name)
                armor.start(name)
                (armor.worktree(name) / "d0" / "f0.py").write_text(f"{name}\n")  # all share one path
                (armor.worktree(name) / "d1" / f"{name}.py").write_text("own\n")
                armor.git.checkpoint(name)
            recorded: list[str] = []
            watcher = ConflictWatcher(armor.git, lambda: names, lambda kind, _t, _p: recorded.append(kind))
            for name in names:
                watcher.check(name)
            assert "conflict.detected" in recorded
            moving = armor.worktree(names[0])
            counter = iter(range(10_000))

            def touch() -> None:
                (moving / "d2" / "f2.py").write_text(f"change {next(counter)}\n")

            def boundary() -> None:
                touch()
                watcher.check(names[0])

            def checkpoint() -> None:
                touch()
                armor.git.checkpoint(names[0])

            def rescan_all() -> None:
                touch()
                for name in names:
                    armor.git.changes_since_base(name)

            b, c, r = _best(boundary), _best(checkpoint), _best(rescan_all)
        return {"files": files, "tasks": tasks, "boundary_s": b, "checkpoint_s": c, "rescan_all_s": r,
                "boundary_vs_checkpoint": b / c, "boundary_vs_rescan_all": b / r}
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    for key, value in run(*args).items():
        print(f"{key:<28} {value:.4f}" if isinstance(value, float) else f"{key:<28} {value}")
