"""Run every benchmark and print its ratios against the baselines measured in the same run.

    .venv/bin/python benchmarks/run.py   # pipeline, event log, re-opening, docker, the armor service, checkpoint storage
    .venv/bin/python benchmarks/run.py --all   # also the git checkpoint benchmark (needs ~1 GB of disk)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SUITES = ["bench_pipeline", "bench_masking", "bench_eventlog", "bench_reopen", "bench_docker", "service", "bench_mcp",
          "bench_checkpoint_storage"]
HEAVY = ["bench_checkpoint", "monitor", "bench_conflicts", "bench_resume"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="include the heavy benchmarks")
    args = parser.parse_args()
    for name in SUITES + (HEAVY if args.all else []):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            print(f"== {name}: not available ({exc})")
            continue
        print(f"== {name}")
        try:
            results = module.run()
        except Exception as exc:  # e.g. no Docker engine: say so, run the rest
            print(f"   skipped: {type(exc).__name__}: {exc}")
            continue
        for key, value in results.items():
            shown = f"{value:>14.3f}" if isinstance(value, float) else f"{value!s:>14}"
            print(f"   {key:<44} {shown}")
        for key, op, target in getattr(module, "TARGETS", []):
            if key in results:
                value = results[key]
                ok = value <= target if op == "<=" else value >= target
                print(f"   target {key} {op} {target}: {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
