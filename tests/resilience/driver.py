"""The agent of the fault-injection tests: a fixed sequence of idempotent steps in one task, through the service.

Run as ``python driver.py REPO TASK STEPS``: it prints ``ack <event id>`` for every event the service acknowledged
(an exec's outcome, a note), ``ready`` once connected and ``done`` at the end. Running it again after an interruption redoes every step,
so the final tree is the same however often it was cut off.
"""

from __future__ import annotations

import sys


def step_command(i: int) -> list[str]:
    return ["sh", "-c", f"mkdir -p out; echo step-{i} > out/f{i}.txt; echo {i} > out/last.txt; rm -f out/f{i - 2}.tmp; "
                        f"echo scratch > out/f{i}.tmp; sleep 0.2"]


def drive(remote, task: str, steps: int, ack=lambda event_id: None) -> None:
    for i in range(steps):
        outcome = remote.exec(task, step_command(i))
        if outcome.payload.get("exit_code") != 0:
            raise SystemExit(f"step {i} failed: {dict(outcome.payload)}")
        ack(outcome.id)
        ack(remote.emit(task, "note.added", {"step": i}).id)


if __name__ == "__main__":
    import armor_rx

    repo, task, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with armor_rx.connect(repo) as remote:
        print("ready", flush=True)  # connected: the steps begin
        drive(remote, task, steps, ack=lambda event_id: print("ack", event_id, flush=True))
    print("done", flush=True)
