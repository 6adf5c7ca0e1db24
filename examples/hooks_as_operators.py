"""Hooks as reactivex operators, next to classic hooks, on a throwaway state directory.

    python examples/hooks_as_operators.py
"""

from __future__ import annotations

import tempfile

from reactivex import operators as ops

from armor_rx import Armor, Vetoed
from armor_rx.operators import guard, kinds
from armor_rx.testing import capture_events


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, Armor(state_dir=tmp) as armor:
        # An operator hook: a guard that refuses tasks whose id says "prod".
        armor.use(guard(lambda e: "no tasks against prod" if "prod" in (e.task_id or "") else None, kinds="task.start.requested", name="no-prod"))
        # An after-hook written as a plain reactivex operator. After-hooks sit in
        # front of the bus, so they pass every event on (a filter here would
        # hide events from subscribers; filter in a subscription instead).
        outputs: list[str] = []
        armor.use(ops.do_action(lambda e: outputs.append(str(e.payload["text"])) if e.kind == "exec.output" else None), stage="after", name="collect-output")
        # A subscription is where filtering belongs.
        failures = []
        armor.events().pipe(kinds("*.vetoed")).subscribe(failures.append)
        # A classic hook, registered the old way; it sees the same history.
        armor.hook("after_complete", lambda e: print(f"completed: {e.task_id}"))

        with capture_events(armor, "task.*,hook.*") as events:
            armor.create_task("docs-typo")
            armor.start("docs-typo")
            armor.emit("docs-typo", "exec.output", {"text": "fixed 3 typos"})
            armor.complete("docs-typo")
            armor.create_task("prod-migration")
            try:
                armor.start("prod-migration")
            except Vetoed as exc:
                print(f"vetoed: {exc.reason}")
        print("outputs:", outputs)
        print("vetoes seen by the subscriber:", [e.payload["reason"] for e in failures])
        for event in events:
            print(f"  #{event.seq} {event.task_id or '-'} {event.kind}")


if __name__ == "__main__":
    main()
