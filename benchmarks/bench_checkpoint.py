"""Checkpoint benchmark: armor_rx checkpoints vs the git CLI on the same tree.

Run ``python benchmarks/bench_checkpoint.py [files] [big_mb]``. It builds a
repository of ``files`` small files (about 2 KB, in nested directories) plus
one ``big_mb`` MB file, then times, in the same run:

* the initial checkpoint vs ``git add -A && git commit`` on a copy;
* an incremental checkpoint after 10 files changed vs the same with the CLI
  (five rounds, each side's best; the median of the per-round ratios is
  printed too, as a check on noise);
* restoring the first checkpoint vs ``git checkout`` of the first commit;
* peak Python memory (tracemalloc, in a subprocess) while checkpointing a
  worktree holding the big file vs one holding a 1 MB file.

Targets: incremental checkpoint <= 1.0x the CLI; peak memory independent of
the big file's size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from armor_rx.sinks.git import GitWorkspace  # noqa: E402

#: Read by benchmarks/run.py: (result key, comparison, bound).
TARGETS = [("incremental_ratio", "<=", 1.0), ("memory_ratio", "<=", 1.5)]

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout


def _write_big(path: Path, mb: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(mb):
            # vary each block so the file does not compress to nothing
            f.write(i.to_bytes(8, "big") + block[8:])


def _generate(root: Path, files: int, big_mb: int) -> list[Path]:
    made = []
    filler = (os.urandom(700).hex() + "\n").encode()  # ~1.4 KB of text per file, plus a header
    for i in range(files):
        d = root / f"pkg{i % 40}" / f"mod{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"file{i}.txt"
        p.write_bytes(f"file {i}\n".encode() * 60 + filler[: 2048 - 480])
        made.append(p)
    if big_mb:
        _write_big(root / "big.bin", big_mb)
    return made


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


_MEMORY_CHILD = r"""
import sys, tracemalloc, subprocess, os
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from armor_rx.sinks.git import GitWorkspace
root, mb = Path(sys.argv[1]), int(sys.argv[2])
env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x")
repo = root / "repo"; repo.mkdir()
subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True, env=env)
(repo / "README").write_text("x\n")
subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
subprocess.run(["git", "commit", "-qm", "init"], cwd=repo, check=True, env=env)
with GitWorkspace(repo, root / "state") as ws:
    wt = ws.add_worktree("mem", ws.create_branch("mem"))
    block = os.urandom(1 << 20)
    with open(wt / "big.bin", "wb") as f:
        for i in range(mb):
            f.write(i.to_bytes(8, "big") + block[8:])
    del block
    tracemalloc.start()
    ws.checkpoint("mem")
    print(tracemalloc.get_traced_memory()[1])
"""


def _peak_memory(mb: int) -> int:
    with tempfile.TemporaryDirectory(prefix="armor-bench-mem-") as tmp:
        root = str(Path(__file__).resolve().parents[1])
        out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, tmp, str(mb), root],
                             check=True, capture_output=True, text=True)
        return int(out.stdout.strip().splitlines()[-1])


def run(files: int = 5000, big_mb: int = 200) -> dict[str, Any]:
    """Run the benchmark and return its measurements (seconds, bytes, ratios, verdicts)."""
    with tempfile.TemporaryDirectory(prefix="armor-bench-") as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "repo"
        repo.mkdir()
        _git(repo, "init", "-q", "-b", "main")
        (repo / "README").write_text("bench\n")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", "init")
        with GitWorkspace(repo, tmp / "state") as ws:
            wt = ws.add_worktree("bench", ws.create_branch("bench"))
            made = _generate(wt, files, big_mb)
            cli = tmp / "cli"
            shutil.copytree(wt, cli, ignore=shutil.ignore_patterns(".git"), symlinks=True)
            _git(cli, "init", "-q", "-b", "main")
            # Both sides start from files older than the racy-timestamp window,
            # as real worktrees do; otherwise both git and we must re-read them.
            time.sleep(1.2)

            first: list[str] = []
            initial = _timed(lambda: first.append(ws.checkpoint("bench", "initial").id))
            git_initial = _timed(lambda: (_git(cli, "add", "-A"), _git(cli, "commit", "-qm", "initial")))
            first_commit = _git(cli, "rev-parse", "HEAD").strip()

            # Best of five rounds on each side (10 different files each round):
            # one run of ~30 ms is mostly noise on a shared machine.
            step = max(1, len(made) // 10)
            ours: list[float] = []
            theirs: list[float] = []
            for round_ in range(5):
                changed = made[round_::step][:10]
                for p in changed:
                    p.write_bytes(p.read_bytes() + b"changed\n")
                    c = cli / p.relative_to(wt)
                    c.write_bytes(c.read_bytes() + b"changed\n")
                ours.append(_timed(lambda: ws.checkpoint("bench", "incremental")))
                theirs.append(_timed(lambda: (_git(cli, "add", "-A"), _git(cli, "commit", "-qm", "incremental"))))
            incremental, git_incremental = min(ours), min(theirs)
            # Each round's two runs are back to back, so their ratio sees the same load.
            paired = sorted(a / b for a, b in zip(ours, theirs))[len(ours) // 2]

            restore = _timed(lambda: ws.restore("bench", first[0]))
            git_checkout = _timed(lambda: _git(cli, "checkout", "-q", first_commit))
        peak_small = _peak_memory(1)
        peak_big = _peak_memory(big_mb) if big_mb else peak_small

    result: dict[str, Any] = {
        "files": files,
        "big_mb": big_mb,
        "initial_s": initial,
        "git_initial_s": git_initial,
        "initial_ratio": initial / git_initial,
        "incremental_s": incremental,
        "git_incremental_s": git_incremental,
        "incremental_ratio": incremental / git_incremental,
        "incremental_paired_median_ratio": paired,
        "restore_s": restore,
        "git_checkout_s": git_checkout,
        "restore_ratio": restore / git_checkout,
        "peak_small_bytes": peak_small,
        "peak_big_bytes": peak_big,
        "memory_ratio": peak_big / max(peak_small, 1),
    }
    result["incremental_target"] = "PASS" if result["incremental_ratio"] <= 1.0 else "MISS"
    # "Independent of size": the big file may cost at most a small constant more.
    result["memory_target"] = "PASS" if peak_big <= peak_small * 1.5 + (4 << 20) else "MISS"
    return result


def _table(r: dict[str, Any]) -> str:
    rows = [
        ("initial checkpoint", r["initial_s"], r["git_initial_s"], r["initial_ratio"], "-"),
        ("incremental (10 files)", r["incremental_s"], r["git_incremental_s"], r["incremental_ratio"],
         f"{r['incremental_target']} (<= 1.0x; median of paired rounds {r['incremental_paired_median_ratio']:.2f}x)"),
        ("restore vs checkout", r["restore_s"], r["git_checkout_s"], r["restore_ratio"], "-"),
    ]
    lines = [f"{r['files']} files + {r['big_mb']} MB file",
             f"{'step':<24}{'armor_rx s':>12}{'git CLI s':>12}{'ratio':>8}  target"]
    lines += [f"{name:<24}{a:>12.3f}{b:>12.3f}{ratio:>7.2f}x  {target}" for name, a, b, ratio, target in rows]
    lines.append(
        f"{'peak memory':<24}{r['peak_big_bytes'] / 1024:>10.0f}KB (big) vs {r['peak_small_bytes'] / 1024:.0f}KB (1 MB file)"
        f"  ratio {r['memory_ratio']:.2f}  {r['memory_target']} (independent of size)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    measured = run(*args)
    print(_table(measured))
    if "--json" in sys.argv:
        print(json.dumps(measured, indent=2))
