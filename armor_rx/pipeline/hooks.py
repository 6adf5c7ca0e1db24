"""Hooks: operators placed before or after the effect stage, in priority order.

A hook is a reactivex operator plus where it goes (``before``/``after``), its
priority (higher runs first; ties run in registration order) and a name. The
six classic hook points (``before_start`` ... ``after_fail``) are compiled into
the same operators, so code written either way sees the same history.

The classic API is on its way out (the migration is in docs/hooks.md): a
:class:`HookSet` made with ``classic=False`` refuses classic hooks with a
:class:`~armor_rx.errors.ConfigError` that shows the operator to write
instead, so a code base can be checked for leftovers before the API goes.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from reactivex import Observable

from armor_rx.errors import ClassicHooksOff, ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import HOOK_POINTS
from armor_rx.operators import guard, observe
from armor_rx.operators._deadline import limit

Stage = Literal["before", "after"]
ErrorPolicy = Literal["fail_closed", "fail_open"]
Operator = Callable[[Observable[TaskEvent]], Observable[TaskEvent]]

_order = itertools.count()


@dataclass(frozen=True)
class Hook:
    """A registered hook. ``api`` says how it was registered (``classic`` or ``operator``)."""

    name: str
    stage: Stage
    operator: Operator
    priority: int = 0
    api: Literal["classic", "operator"] = "operator"
    point: str | None = None
    on_error: ErrorPolicy | None = None
    order: int = field(default_factory=lambda: next(_order))
    timeout: float | None = None  # seconds each call may take; None: no limit

    def describe(self) -> dict[str, Any]:
        return {
            "hook": self.name,
            "stage": self.stage,
            "priority": self.priority,
            "api": self.api,
            "point": self.point,
            "on_error": self.on_error,
            "timeout": limit(self.timeout),
        }


def classic_hook(
    point: str,
    fn: Callable[[TaskEvent], Any],
    *,
    priority: int = 0,
    name: str | None = None,
    on_error: ErrorPolicy | None = None,
    timeout: float | None = None,
) -> Hook:
    """Compile a plain function registered at a classic hook point into a :class:`Hook`.

    ``before_*`` functions are guards: return ``None``/``True`` to allow,
    ``False`` or a reason string (or raise :class:`armor_rx.Vetoed`) to veto;
    they fail closed by default. ``after_*`` functions are observers: their
    return value is ignored and a raise becomes ``hook.failed``; they fail open
    by default. ``timeout`` (seconds; None or ``math.inf`` for no limit) bounds
    each call: a guard that overruns it vetoes (fail closed, the reason says
    so), an observer is reported and skipped (fail open); either way its stuck
    call is abandoned and does not hold the task's lane.
    """
    if point not in HOOK_POINTS:
        raise ConfigError(f"unknown hook point {point!r}; use one of: {', '.join(HOOK_POINTS)}")
    kind, stage = HOOK_POINTS[point]
    hook_name = name or getattr(fn, "__qualname__", None) or repr(fn)
    operator: Operator
    if stage == "before":
        policy: ErrorPolicy = on_error or "fail_closed"
        operator = guard(fn, kinds=kind, name=hook_name, on_error=policy, timeout=timeout)
    else:
        policy = on_error or "fail_open"
        operator = observe(fn, kinds=kind, name=hook_name, on_error=policy, timeout=timeout)
    return Hook(
        name=hook_name,
        stage="before" if stage == "before" else "after",
        operator=operator,
        priority=priority,
        api="classic",
        point=point,
        on_error=policy,
        timeout=limit(timeout),
    )


def operator_equivalent(point: str) -> str:
    """The operator registration that replaces a classic hook at ``point`` (for messages and docs).

    >>> operator_equivalent("before_start")
    "armor.use(guard(fn, kinds='task.start.requested'), stage='before')"
    """
    kind, stage = HOOK_POINTS[point]
    wrapper = "guard" if stage == "before" else "observe"
    return f"armor.use({wrapper}(fn, kinds={kind!r}), stage={stage!r})"


class HookSet:
    """The hooks of one session, kept sorted; ``version`` changes on every edit.

    ``classic=False`` refuses hooks registered through the classic API
    (:class:`ClassicHooksOff`, a :class:`~armor_rx.errors.ConfigError`).
    """

    def __init__(self, *, classic: bool = True) -> None:
        self._lock = threading.Lock()
        self._hooks: list[Hook] = []
        self.version = 0
        self.classic = classic

    def add(self, hook: Hook) -> Hook:
        if hook.stage not in ("before", "after"):
            raise ConfigError(f"hook stage {hook.stage!r} is not 'before' or 'after'")
        if hook.api == "classic" and not self.classic:
            point = hook.point or ""
            instead = operator_equivalent(point) if point in HOOK_POINTS else "armor.use(operator, stage=...)"
            raise ClassicHooksOff(hook.point, hook.name, instead)
        with self._lock:
            if any(h.name == hook.name and h.stage == hook.stage for h in self._hooks):
                raise ConfigError(f"a {hook.stage}-hook named {hook.name!r} is already registered; pass name=... to tell them apart")
            self._hooks.append(hook)
            self._hooks.sort(key=lambda h: (-h.priority, h.order))
            self.version += 1
        return hook

    def remove(self, hook: Hook) -> bool:
        with self._lock:
            try:
                self._hooks.remove(hook)
            except ValueError:
                return False
            self.version += 1
            return True

    def operators(self, stage: Stage) -> tuple[int, list[Operator]]:
        """The version and the operators of ``stage`` in the order they run."""
        with self._lock:
            return self.version, [h.operator for h in self._hooks if h.stage == stage]

    def list(self, stage: Stage | None = None, point: str | None = None) -> list[Hook]:
        """Registered hooks in run order, optionally only one stage or classic point."""
        with self._lock:
            return [h for h in self._hooks if (stage is None or h.stage == stage) and (point is None or h.point == point)]
