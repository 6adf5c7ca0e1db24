"""Checkpoint storage over a simulated 200-step agent session, with and without the adaptive policy and retention.

Run ``python benchmarks/bench_checkpoint_storage.py [steps] [rounds]``. Each
round replays the same seeded agent session (edits, builds that write large
generated files, ``rm -rf build``, package installs, test runs) through a real
git session four ways, side by side:

* ``every_step``: a checkpoint after every exec, nothing ever pruned (the baseline);
* ``every_step_retention``: the same, with retention (keep_last=10, one per hour, tagged kept);
* ``adaptive``: ``checkpoint_policy(risk_threshold=40, every_execs=25)``, nothing pruned;
* ``adaptive_retention``: the adaptive policy with the same retention.

For each: checkpoints made and kept, the bytes the kept checkpoints' objects
take after ``git gc --prune=now`` (what the disk holds), whether every risky
command had a checkpoint of the state just before it, and ``reach``: how many
steps back the oldest kept untagged checkpoint goes (how far a rollback can
reach). Ratios are against ``every_step`` in the same round; the median over
the rounds is reported (coverage: the worst round). Targets: the adaptive
policy makes at most a fifth of the baseline's checkpoints, and with retention
keeps at most half its bytes, while still covering every risky command.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from armor_rx import Armor  # noqa: E402
from armor_rx.model.risk import score_request  # noqa: E402
from armor_rx.operators import CheckpointTriggers  # noqa: E402
from armor_rx.pipeline.effects import EffectContext  # noqa: E402
from armor_rx.sinks.git import CheckpointPolicy  # noqa: E402

#: Read by benchmarks/run.py: (result key, comparison, bound).
TARGETS = [("adaptive_made_ratio", "<=", 0.2), ("adaptive_retention_bytes_ratio", "<=", 0.5),
           ("adaptive_retention_risky_covered", ">=", 1.0)]

ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@example.com",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@example.com"}

RISKY = 40
RETENTION = CheckpointPolicy(keep_last=10, keep_hourly=24, keep_tagged=True)
NO_RETENTION = CheckpointPolicy(keep_last=None)
CONFIGS: Mapping[str, tuple[CheckpointTriggers, CheckpointPolicy]] = {
    "every_step": (CheckpointTriggers(at=("after_exec",)), NO_RETENTION),
    "every_step_retention": (CheckpointTriggers(at=("after_exec",)), RETENTION),
    "adaptive": (CheckpointTriggers(risk_threshold=RISKY, every_execs=25), NO_RETENTION),
    "adaptive_retention": (CheckpointTriggers(risk_threshold=RISKY, every_execs=25), RETENTION),
}


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout


def agent_session(steps: int, seed: int) -> list[list[str]]:
    """The commands of one simulated agent session (the same for every configuration of a round)."""
    rng = random.Random(seed)
    commands: list[list[str]] = []
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.60:
            commands.append(["edit", str(rng.randrange(40)), str(rng.randrange(1, 4))])
        elif roll < 0.75:
            commands.append(["make", "test"])
        elif roll < 0.87:
            commands.append(["sh", "-c", "make build"])
        elif roll < 0.93:
            commands.append(["sh", "-c", "make clean && rm -rf build"])
        else:
            commands.append(["pip", "install", f"pkg{rng.randrange(5)}"])
    return commands


class SimulatedAgent:
    """An exec effect that does what each simulated command would do to the worktree (no processes)."""

    name = "simulated-agent"
    kinds = "exec.requested"

    def __init__(self, seed: int) -> None:
        self.worktree_of: Any = None
        self.rng = random.Random(seed)

    def apply(self, ctx: EffectContext) -> dict[str, Any]:
        command = [str(w) for w in ctx.request.payload["command"]]
        root: Path = self.worktree_of(ctx.request.task_id)
        if command[0] == "edit":
            first, count = int(command[1]), int(command[2])
            for i in range(first, first + count):
                path = root / "src" / f"mod{i % 40}.py"
                lines = path.read_text().splitlines()
                lines[self.rng.randrange(len(lines))] = f"value = {self.rng.random()!r}"
                path.write_text("\n".join(lines) + "\n")
        elif command[-1] == "make build":
            out = root / "build"
            out.mkdir(exist_ok=True)
            for i in range(8):  # generated artefacts: large and never the same twice
                (out / f"part{i}.o").write_bytes(self.rng.randbytes(16 * 1024))
        elif "rm -rf build" in command[-1]:
            subprocess.run(["rm", "-rf", str(root / "build")], check=True)
        elif command[0] == "pip":
            site = root / ".venv" / command[2]
            site.mkdir(parents=True, exist_ok=True)
            for i in range(10):
                (site / f"m{i}.py").write_bytes(self.rng.randbytes(4 * 1024))
        return {"exit_code": 0, "duration": 0.01}


def _store_bytes(repo: Path) -> int:
    _git(repo, "gc", "--prune=now", "--quiet")
    total = 0
    for dirpath, _, files in os.walk(repo / ".git" / "objects"):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def run_one(name: str, commands: list[list[str]], seed: int) -> dict[str, Any]:
    triggers, retention = CONFIGS[name]
    with tempfile.TemporaryDirectory(prefix="armor-storage-") as tmp_name:
        repo = Path(tmp_name) / "repo"
        (repo / "src").mkdir(parents=True)
        filler = random.Random(seed)
        for i in range(40):
            (repo / "src" / f"mod{i}.py").write_text(
                "\n".join(f"line_{j} = {filler.random()!r}" for j in range(60)) + "\n")
        _git(repo, "init", "-q", "-b", "main")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", "init")
        base = _store_bytes(repo)
        agent = SimulatedAgent(seed)
        began = time.perf_counter()
        with Armor(repo, effects=[agent], checkpoint_when=triggers, checkpoint_policy=retention) as armor:
            agent.worktree_of = armor.worktree
            armor.create_task("agent")
            armor.start("agent")
            for step, command in enumerate(commands):
                armor.exec("agent", command)
                if step == len(commands) // 2:
                    armor.checkpoint("agent", "halfway", tag="halfway")
            armor.wait_idle()
            history = list(armor.history(task_id="agent"))
            kept_ids = {cp.id for cp in armor.checkpoints("agent") if not cp.tags}
            kept = len(armor.checkpoints("agent"))
        elapsed = time.perf_counter() - began
        made = sum(1 for e in history if e.kind == "checkpoint.done")
        # How far back a rollback can reach without a tag: steps since the oldest untagged kept checkpoint.
        steps_done, made_at = 0, {}
        for event in history:
            if event.kind == "exec.done":
                steps_done += 1
            elif event.kind == "checkpoint.done":
                made_at[str(event.payload.get("checkpoint"))] = steps_done
        reach = steps_done - min((made_at[c] for c in kept_ids if c in made_at), default=steps_done)
        # A risky command is covered when a checkpoint was taken after the step before it ended and
        # before it ended itself: with no exec in between, that is the state just before it ran.
        risky = covered = 0
        checkpointed = False
        requests = {e.id: e for e in history if e.kind == "exec.requested"}
        for event in history:
            if event.kind == "checkpoint.done":
                checkpointed = True
            elif event.kind == "exec.done":
                request = requests[str(event.causation_id)]
                if score_request(request.payload).score >= RISKY:
                    risky += 1
                    covered += checkpointed
                checkpointed = False
        return {"made": made, "kept": kept, "bytes": _store_bytes(repo) - base, "seconds": elapsed,
                "risky_covered": covered / risky if risky else 1.0, "reach": reach}


def run(steps: int = 200, rounds: int = 3) -> dict[str, Any]:
    """Run the benchmark; return each configuration's medians and its ratios to ``every_step``."""
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    ratios: dict[str, list[float]] = {}
    for round_ in range(rounds):
        seed = 1000 + round_
        commands = agent_session(steps, seed)
        results = {name: run_one(name, commands, seed) for name in CONFIGS}
        for name, result in results.items():
            per[name].append(result)
            if name != "every_step":
                base = results["every_step"]
                ratios.setdefault(f"{name}_bytes_ratio", []).append(result["bytes"] / max(1, base["bytes"]))
                ratios.setdefault(f"{name}_kept_ratio", []).append(result["kept"] / max(1, base["kept"]))
                ratios.setdefault(f"{name}_made_ratio", []).append(result["made"] / max(1, base["made"]))
                ratios.setdefault(f"{name}_time_ratio", []).append(result["seconds"] / base["seconds"])
    out: dict[str, Any] = {"steps": steps, "rounds": rounds}
    for name, results in per.items():
        out[f"{name}_made"] = int(statistics.median(r["made"] for r in results))
        out[f"{name}_kept"] = int(statistics.median(r["kept"] for r in results))
        out[f"{name}_bytes"] = int(statistics.median(r["bytes"] for r in results))
        out[f"{name}_risky_covered"] = min(r["risky_covered"] for r in results)
        out[f"{name}_reach"] = int(statistics.median(r["reach"] for r in results))
    for key, values in ratios.items():
        out[key] = statistics.median(values)
    return out


if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    found = run(steps, rounds)
    names = list(CONFIGS)
    print(f"{'':<24}" + "".join(f"{n:>22}" for n in names))
    for metric in ("made", "kept", "bytes", "risky_covered", "reach"):
        print(f"{metric:<24}" + "".join(f"{found[f'{n}_{metric}']!s:>22}" for n in names))
    for metric in ("made_ratio", "bytes_ratio", "kept_ratio", "time_ratio"):
        print(f"{metric:<24}" + f"{'1.0':>22}" + "".join(f"{found[f'{n}_{metric}']:>22.3f}" for n in names[1:]))
    for key, op, bound in TARGETS:
        value = found[key]
        ok = value <= bound if op == "<=" else value >= bound
        print(f"target {key} {op} {bound}: {'PASS' if ok else 'MISS'} ({value:.3f})")
