"""A hook that never returns cannot hold its task (issue 14 item 13).

Every hook has a time limit (the session's ``hook_timeout`` unless the hook
sets its own, stated in ``hook.registered``): a guard that overruns it vetoes
(fail closed, with the reason), an observer is reported and skipped (fail
open), and the stuck call's thread does not hold the task's lane."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from reactivex import operators as ops

from armor_rx import Armor
from armor_rx.errors import ConfigError, Vetoed
from armor_rx.model.lifecycle import HOOK_POINTS
from armor_rx.pipeline.effects import EffectContext
from armor_rx.session.config import DEFAULT_HOOK_TIMEOUT, SessionConfig

LIMIT = 0.3  # the session's hook_timeout in these tests
BOUND = 20.0  # generous: what a request may take in all, hooks included


@pytest.fixture
def forever() -> Iterator[threading.Event]:
    """An event the stuck hooks wait on; set at the end so their threads end too."""
    release = threading.Event()
    yield release
    release.set()


def drive(armor: Armor, task: str, point: str) -> None:
    """Move ``task`` to where the hook at ``point`` runs (each step bounded)."""
    armor.create_task(task)
    if point in ("before_start", "after_start"):
        armor.request(task, "task.start.requested").exception(BOUND)
        return
    armor.start(task, timeout=BOUND)
    if point in ("before_complete", "after_complete"):
        armor.request(task, "task.complete.requested").exception(BOUND)
    else:
        armor.request(task, "task.fail.requested", {"reason": "asked"}).exception(BOUND)


@pytest.mark.parametrize("point", list(HOOK_POINTS))
def test_a_classic_hook_that_never_returns_does_not_hold_its_task(tmp_path: Path, point: str,
                                                                  forever: threading.Event) -> None:
    """Invariant (6 cases, one per classic hook point, each hook blocking for good): the request ends within a
    bound; a before-hook's overrun vetoes with a reason naming the timeout (a fail cannot be vetoed and goes on),
    an after-hook's overrun is reported as hook.failed (fail open); no task is left in a middle state."""
    kind, stage = HOOK_POINTS[point]
    with Armor(state_dir=tmp_path / ".armor", hook_timeout=LIMIT) as armor:
        armor.hook(point, lambda event: forever.wait(), name="stuck")
        began = time.monotonic()
        drive(armor, "t1", point)
        assert armor.wait_idle(BOUND)
        assert time.monotonic() - began < BOUND
        state = armor.task("t1").state.value
        if stage == "before":
            (veto,) = armor.history(kind="hook.vetoed")
            assert veto.payload["hook"] == "stuck" and veto.payload["error_type"] == "HookTimeout"
            assert f"did not finish within {LIMIT:g}s" in veto.payload["reason"]
            assert state == "failed"  # vetoed start/complete fail the task; a fail goes on regardless
        else:
            (report,) = armor.history(kind="hook.failed")
            assert report.payload["error_type"] == "HookTimeout" and report.payload["policy"] == "fail_open"
            assert report.payload["event_kind"] == kind
            assert state == {"after_start": "running", "after_complete": "completed", "after_fail": "failed"}[point]


def test_a_vetoed_start_reaches_the_caller_with_the_reason(tmp_path: Path, forever: threading.Event) -> None:
    with Armor(state_dir=tmp_path / ".armor", hook_timeout=LIMIT) as armor:
        armor.hook("before_start", lambda event: forever.wait(), name="stuck")
        armor.create_task("t1")
        with pytest.raises(Vetoed, match="HookTimeout"):
            armor.start("t1", timeout=BOUND)


def test_a_stuck_observer_neither_stalls_the_bus_nor_is_waited_on_for_ever(tmp_path: Path,
                                                                          forever: threading.Event) -> None:
    """Invariant (12 tasks started with an after-hook on every event that blocks for good): every start ends,
    every event reaches subscribers, and after two abandoned calls the observer is skipped at once."""
    with Armor(state_dir=tmp_path / ".armor", hook_timeout=LIMIT) as armor:
        armor.use(ops.do_action(lambda event: forever.wait()), stage="after", name="stuck-watch")
        seen: list[str] = []
        armor.events("task.started").subscribe(lambda event: seen.append(event.task_id or ""))
        began = time.monotonic()
        for i in range(12):
            armor.create_task(f"t{i}")
            armor.start(f"t{i}", timeout=BOUND)
        assert armor.wait_idle(BOUND)
        # 12 tasks x 3 events: waiting LIMIT on each would take over 10 s.
        assert time.monotonic() - began < 36 * LIMIT
        assert sorted(seen) == sorted(f"t{i}" for i in range(12))
        reports = list(armor.history(kind="hook.failed"))
        assert len(reports) >= 12 and {r.payload["hook"] for r in reports} == {"stuck-watch"}
        assert any("still running" in r.payload["error"] for r in reports)


class SlowEffect:
    """An effect that takes longer than the hooks' limit: effects are not hook time."""

    name = "slow"
    kinds = "task.start.requested"

    def apply(self, ctx: EffectContext) -> Mapping[str, Any] | None:
        time.sleep(LIMIT * 3)
        return None


def test_the_steps_after_an_operator_hook_are_not_counted_against_it(tmp_path: Path) -> None:
    with Armor(state_dir=tmp_path / ".armor", hook_timeout=LIMIT, effects=[SlowEffect()]) as armor:
        armor.use(ops.map(lambda event: event), stage="before", name="pass-through")
        armor.create_task("t1")
        armor.start("t1", timeout=BOUND)
        assert armor.task("t1").state.value == "running"
        assert list(armor.history(kind="hook.vetoed")) == []


def test_an_operator_hook_that_never_returns_is_vetoed_and_its_late_output_dropped(
    tmp_path: Path, forever: threading.Event
) -> None:
    with Armor(state_dir=tmp_path / ".armor", hook_timeout=LIMIT) as armor:
        armor.use(ops.do_action(lambda event: forever.wait() if event.task_id == "t1" else None),
                  stage="before", name="stuck-op")
        armor.create_task("t1")
        with pytest.raises(Vetoed, match="HookTimeout"):
            armor.start("t1", timeout=BOUND)
        forever.set()  # the stuck call now returns and emits the request: it must not run again
        armor.create_task("t2")
        armor.start("t2", timeout=BOUND)
        assert armor.wait_idle(BOUND)
        assert armor.task("t1").state.value == "failed"
        assert [e.task_id for e in armor.history(kind="task.started")] == ["t2"]


def test_hook_registered_states_each_hooks_limit(tmp_path: Path) -> None:
    with Armor(state_dir=tmp_path / ".armor", hook_timeout=5) as armor:
        armor.hook("before_start", lambda event: None, name="default")
        armor.hook("after_start", lambda event: None, name="own", timeout=2)
        armor.hook("after_fail", lambda event: None, name="unbounded", timeout=math.inf)
        armor.use(ops.map(lambda event: event), name="op")
        limits = {e.payload["hook"]: e.payload["timeout"] for e in armor.history(kind="hook.registered")}
    assert limits == {"default": 5, "own": 2, "unbounded": None, "op": 5}
    assert SessionConfig().hook_timeout == DEFAULT_HOOK_TIMEOUT == 30.0


@pytest.mark.parametrize("bad", [0, -1, "30", True, math.nan])
def test_a_bad_global_limit_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="hook_timeout"):
        SessionConfig(hook_timeout=bad)  # type: ignore[arg-type]
