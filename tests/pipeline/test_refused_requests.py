"""A refused request leaves no trace but its error (issue 14 item 2).

Whatever is refused (a task that exists, an illegal transition, a stale
version, a request for a task that does not exist), nothing is logged, the
registry's seq stays the log's, a snapshot is written at once, the periodic
snapshot keeps up with the log, and the next open trusts the snapshot."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from armor_rx import Armor
from armor_rx.errors import ArmorError
from armor_rx.sinks.snapshot import SNAPSHOT_PLUS_TAIL, SnapshotStore

# Every way to ask for something, as (name, call).
Ask = Callable[[Armor, str], object]
ASKS: list[tuple[str, Ask]] = [
    ("create", lambda a, t: a.create_task(t)),
    ("start", lambda a, t: a.start(t, timeout=20)),
    ("complete", lambda a, t: a.complete(t, timeout=20)),
    ("fail", lambda a, t: a.fail(t, "asked", timeout=20)),
    ("cancel", lambda a, t: a.cancel(t, timeout=20)),
    ("resume", lambda a, t: a.resume(t, timeout=20)),
    ("interrupt", lambda a, t: a.interrupt(t, "asked")),
    ("update-stale", lambda a, t: a.update_task(t, 10_000, {"k": "v"})),
    ("checkpoint", lambda a, t: a.request(t, "checkpoint.requested", {"message": "m"}).result(20)),
    ("rollback", lambda a, t: a.request(t, "checkpoint.restore.requested", {"checkpoint": "cp-1"}).result(20)),
]

# A task in each state a request can find it in, and how to get it there.
SETUPS: dict[str, Callable[[Armor, str], None]] = {
    "pending": lambda a, t: None,
    "running": lambda a, t: a.start(t, timeout=20) and None,
    "interrupted": lambda a, t: (a.start(t, timeout=20), a.interrupt(t, "x")) and None,
    "completed": lambda a, t: (a.start(t, timeout=20), a.complete(t, timeout=20)) and None,
    "failed": lambda a, t: (a.start(t, timeout=20), a.fail(t, "x", timeout=20)) and None,
    "cancelled": lambda a, t: a.cancel(t, timeout=20) and None,
}


def test_every_refused_request_leaves_the_log_registry_and_snapshots_in_step(tmp_path: Path) -> None:
    """Invariant (every request x every state it can be refused in, and every request for a task that does not
    exist; the number of refusals is asserted below): a refusal raises, logs nothing, and leaves
    registry.seq == log.last_seq, so snapshot() returns at once and the periodic snapshot keeps up."""
    state = tmp_path / ".armor"
    refused = 0
    with Armor(state_dir=state, snapshot_every=1) as armor:
        for setup_name, setup in SETUPS.items():
            for ask_name, ask in ASKS:
                task = f"{setup_name}-{ask_name}"
                armor.create_task(task)
                setup(armor, task)
                assert armor.wait_idle(20)
                for target in (task, f"nosuch-{refused}"):
                    if (target == task and ask_name == "checkpoint") or (target != task and ask_name == "create"):
                        continue  # allowed: not a refusal
                    log_before = [e.id for e in armor.history()]
                    record_before = armor.task(task)
                    try:
                        ask(armor, target)
                    except ArmorError:
                        pass
                    else:
                        if target == task:
                            continue  # this request is legal in this state: not a refusal
                        pytest.fail(f"{ask_name} of a task that does not exist was accepted")
                    assert armor.wait_idle(20)
                    if ask_name in ("start", "complete", "resume", "rollback") and target == task:
                        # A request refused by an effect is logged with its outcome; only
                        # refusals before the log count here.
                        if [e.id for e in armor.history()] != log_before:
                            continue
                    refused += 1
                    assert [e.id for e in armor.history()] == log_before, (setup_name, ask_name, target)
                    assert armor.task(task) == record_before
                    assert armor.pipeline.registry.seq == armor.log.last_seq, (setup_name, ask_name, target)
                    assert not any(e.task_id == target for e in armor.history()) or target == task
        began = time.monotonic()
        assert armor.snapshot(timeout=2.0) == armor.log.last_seq  # timed out while the registry ran ahead
        assert time.monotonic() - began < 2.0
        assert armor.wait_idle(20)
        # The periodic snapshot (every event) kept up: it was never left behind by a refusal.
        assert SnapshotStore(state / "snapshot.json").load().seq == armor.log.last_seq
        last = armor.log.last_seq
    assert refused >= 90, refused  # the number of cases tried (93 when written)
    with Armor(state_dir=state) as reopened:
        assert reopened.recovery is not None
        assert reopened.recovery.chosen == SNAPSHOT_PLUS_TAIL and reopened.recovery.snapshot_seq == last
