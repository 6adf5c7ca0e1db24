"""``armor-rx demo``: a small pipeline end to end, printing its events as they flow.

It makes a throwaway directory, opens a session on it, registers a guard and an
observer, runs three tasks (one completes, one is vetoed, one fails in its
effect), and prints every event from the bus, then the task table.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from armor_rx.errors import ArmorError
from armor_rx.model.events import TaskEvent, to_plain
from armor_rx.pipeline.effects import EffectContext
from armor_rx.session import Armor


class ScratchDirEffect:
    """A real (if tiny) effect: a scratch directory per task, written idempotently."""

    name = "scratch"
    kinds = "task.start.requested,task.complete.requested"

    def __init__(self, root: Path) -> None:
        self.root = root

    def apply(self, ctx: EffectContext) -> Mapping[str, Any] | None:
        request = ctx.request
        assert request.task_id is not None
        workdir = self.root / request.task_id
        if request.kind == "task.start.requested":
            if request.payload.get("explode"):
                raise RuntimeError("the agent's setup script exited with status 3")
            workdir.mkdir(parents=True, exist_ok=True)
            marker = workdir / f".applied-{request.id}"
            if not marker.exists():  # keyed by the request id: a re-delivery does nothing
                (workdir / "NOTES.md").write_text(f"task {request.task_id} started\n")
                marker.touch()
            ctx.emit("scratch.ready", {"path": str(workdir)})
            return {"workdir": str(workdir)}
        files = sorted(p.name for p in workdir.iterdir() if not p.name.startswith("."))
        return {"files": files}


def _line(event: TaskEvent) -> str:
    payload = to_plain(event.payload)
    detail = ", ".join(f"{k}={v}" for k, v in payload.items() if k not in ("metadata",))
    return f"  #{event.seq:<3} {event.task_id or '-':<14} {event.kind:<24} {detail}"


def run_demo(*, state_dir: str | None = None, keep: bool = False) -> int:
    root = Path(tempfile.mkdtemp(prefix="armor-demo-"))
    state = Path(state_dir) if state_dir else root / ".armor"
    print(f"armor-rx demo: state directory {state}\n")
    try:
        with Armor(state_dir=state, effects=[ScratchDirEffect(root / "work")]) as armor:
            subscription = armor.events("*").subscribe(lambda e: print(_line(e), flush=True))

            @armor.hook("before_start", priority=10)
            def no_network(event: TaskEvent) -> str | None:
                task = armor.task(event.task_id or "")
                return "tasks may not ask for network access" if task.metadata.get("network") else None

            @armor.hook("after_complete")
            def announce(event: TaskEvent) -> None:
                print(f"  >> after_complete hook saw {event.task_id} finish with {to_plain(event.payload)}")

            armor.create_task("write-notes")
            armor.start("write-notes")
            armor.emit("write-notes", "exec.output", {"stream": "stdout", "text": "hello from the agent\n"})
            armor.complete("write-notes")

            armor.create_task("phone-home", metadata={"network": True})
            try:
                armor.start("phone-home")
            except ArmorError as exc:
                print(f"  >> {exc}")

            armor.create_task("broken-setup")
            try:
                armor.start("broken-setup", explode=True)
            except ArmorError as exc:
                print(f"  >> {exc}")

            armor.wait_idle()
            subscription.dispose()
            print("\ntasks:")
            for task in armor.tasks():
                print(f"  {task.task_id:<14} {task.state.value:<10} {task.reason or ''}")
        print(f"\nthe whole story is in the log: armor-rx events --state-dir {state}")
        return 0
    finally:
        if not keep and not state_dir:
            shutil.rmtree(root, ignore_errors=True)
        elif keep:
            print(f"kept {root}")
