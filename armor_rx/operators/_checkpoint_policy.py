"""checkpoint_policy: when to checkpoint, as a before-hook.

The operator sits in the before-stage, so it sees each task's requests in
the task's own lane, before their effects run. To take a checkpoint it does
not call anything: it emits a ``checkpoint.requested`` event (caused by the
request it answers) ahead of the request, and the pipeline runs a request a
before-operator made right there in the lane (see
``Pipeline._run_inline``). Waiting for a checkpoint submitted the usual way
would deadlock: it would queue behind the very request the lane is holding.

What happened in a step (how long it ran, how many files it touched) is only
known from its outcome, which passes the after-stage. The policy's
:attr:`CheckpointPolicyHook.after` half reads those outcomes; the before half
waits briefly for the previous step's outcome before it scores the next one
(the outcome is durable before the caller hears of it, only its publication
may lag a little).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from reactivex import Observable

from armor_rx.errors import ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.model.risk import LONG_STEP_SECONDS, MANY_FILES, PreviousStep, RiskScore, score_request
from armor_rx.operators._per_event import per_event

# Hook points the policy can checkpoint at, and the request each names.
POINTS: Mapping[str, str] = {
    "after_start": "task.start.requested",
    "after_resume": "task.resume.requested",
    "before_exec": "exec.requested",
    "after_exec": "exec.requested",
    "before_complete": "task.complete.requested",
    "before_fail": "task.fail.requested",
    "before_cancel": "task.cancel.requested",
}
_ENDING = frozenset({"task.complete.requested", "task.fail.requested", "task.cancel.requested"})
DEFAULT_RISK_THRESHOLD = 40
# How long the before half waits for the previous step's outcome to pass the after-stage.
OUTCOME_WAIT = 2.0


@dataclass(frozen=True)
class CheckpointTriggers:
    """When to checkpoint: at named hook points, every N execs, every T seconds, before risky execs.

    ``risk_threshold`` turns the adaptive trigger on: an exec whose
    :func:`~armor_rx.model.risk.score_command` score reaches it gets a
    checkpoint before it runs. ``long_step`` and ``many_files`` say when the
    previous step counts as long or as touching many files. Every trigger
    off (the default) means the policy does nothing.

    >>> CheckpointTriggers.parse("risk=40,every=10,interval=600,at=before_complete+after_start").every_execs
    10
    >>> CheckpointTriggers.parse("adaptive").risk_threshold
    40
    """

    at: tuple[str, ...] = ()
    every_execs: int | None = None
    every_seconds: float | None = None
    risk_threshold: int | None = None
    long_step: float = LONG_STEP_SECONDS
    many_files: int = MANY_FILES

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", tuple(self.at))
        for point in self.at:
            if point not in POINTS:
                raise ConfigError(f"unknown checkpoint point {point!r}; use one of: {', '.join(POINTS)}")
        for name in ("every_execs", "risk_threshold"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"checkpoint policy {name} must be a whole number of at least 1, not {value!r}")
        for name in ("every_seconds", "long_step"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ConfigError(f"checkpoint policy {name} must be a positive number of seconds, not {value!r}")
        if isinstance(self.many_files, bool) or not isinstance(self.many_files, int) or self.many_files < 1:
            raise ConfigError(
                f"checkpoint policy many_files must be a whole number of at least 1, not {self.many_files!r}")

    @property
    def active(self) -> bool:
        return bool(self.at) or self.every_execs is not None or self.every_seconds is not None \
            or self.risk_threshold is not None

    @classmethod
    def parse(cls, text: str) -> CheckpointTriggers:
        """From the CLI's form: ``adaptive``, ``off``, or ``key=value`` pairs separated by commas.

        Keys: ``at`` (points joined by ``+``), ``every`` (execs), ``interval``
        (seconds), ``risk`` (threshold, 1-100), ``long_step`` (seconds),
        ``many_files``. ``adaptive`` is ``risk=40,at=before_complete``; it can
        be followed by pairs (``adaptive,every=20``).
        """
        triggers = cls()
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if part == "adaptive":
                triggers = replace(triggers, risk_threshold=DEFAULT_RISK_THRESHOLD,
                                   at=tuple(dict.fromkeys((*triggers.at, "before_complete"))))
                continue
            if part in ("off", "none"):
                triggers = cls()
                continue
            key, sep, value = part.partition("=")
            key = key.strip().replace("-", "_")
            try:
                if not sep:
                    raise ValueError
                if key == "at":
                    triggers = replace(triggers, at=tuple(p for p in value.replace(" ", "+").split("+") if p))
                elif key in ("every", "every_execs"):
                    triggers = replace(triggers, every_execs=int(value))
                elif key in ("interval", "every_seconds"):
                    triggers = replace(triggers, every_seconds=float(value))
                elif key in ("risk", "risk_threshold"):
                    triggers = replace(triggers, risk_threshold=int(value))
                elif key == "long_step":
                    triggers = replace(triggers, long_step=float(value))
                elif key == "many_files":
                    triggers = replace(triggers, many_files=int(value))
                else:
                    raise ConfigError(f"unknown checkpoint policy key {key!r} in {text!r}; use at, every, interval, "
                                      "risk, long_step or many_files (or 'adaptive' / 'off')")
            except ConfigError:
                raise
            except ValueError:
                raise ConfigError(f"checkpoint policy part {part!r} of {text!r} is not key=value with a number; "
                                  "e.g. 'risk=40,every=10,interval=600,at=before_complete'") from None
        return triggers

    def to_payload(self) -> dict[str, Any]:
        return {"at": list(self.at), "every_execs": self.every_execs, "every_seconds": self.every_seconds,
                "risk_threshold": self.risk_threshold, "long_step": self.long_step, "many_files": self.many_files}

    @classmethod
    def from_payload(cls, payload: object) -> CheckpointTriggers:
        """From :meth:`to_payload`'s form (as carried by a start request), or the CLI's string form."""
        if isinstance(payload, str):
            return cls.parse(payload)
        if not isinstance(payload, Mapping):
            raise ConfigError(f"a checkpoint policy is a mapping or a string such as 'adaptive', not {payload!r}")
        known = {"at", "every_execs", "every_seconds", "risk_threshold", "long_step", "many_files"}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise ConfigError(f"unknown checkpoint policy field(s) {unknown}; use {sorted(known)}")
        options = {k: v for k, v in payload.items() if v is not None}
        if "at" in options:
            at = options["at"]
            if isinstance(at, str):
                at = (at,)  # one point (tuple("before_exec") would be its letters)
            if not isinstance(at, (list, tuple)):
                raise ConfigError(f"checkpoint policy 'at' must be a list of points such as ['before_complete'], "
                                  f"not {at!r}")
            options["at"] = tuple(at)
        return cls(**options)


@dataclass
class _TaskState:
    triggers: CheckpointTriggers
    last_checkpoint: float
    execs_since: int = 0
    checkpointed: bool = False  # one was taken (or asked for) since the start or resume
    last_exec: str | None = None
    previous: PreviousStep | None = None
    seen: threading.Event = field(default_factory=threading.Event)


class CheckpointPolicyHook:
    """The operator :func:`~armor_rx.operators.checkpoint_policy` returns (a before-hook), plus its :attr:`after` half.

    Calling it on an observable gives the before-stage transform. State is per
    task and lives here, not in a subscription: the pipeline subscribes a
    lane's hooks afresh after each idle gap.
    """

    def __init__(self, default: CheckpointTriggers, clock: Callable[[], float],
                 scorer: Callable[..., RiskScore], outcome_wait: float) -> None:
        self.default = default
        self.clock = clock
        self.scorer = scorer
        self.outcome_wait = outcome_wait
        self._lock = threading.Lock()
        self._tasks: dict[str, _TaskState] = {}

    # -- state --------------------------------------------------------------
    def _state(self, task_id: str, triggers: CheckpointTriggers | None = None) -> _TaskState:
        with self._lock:
            state = self._tasks.get(task_id)
            if state is None or triggers is not None:
                state = _TaskState(triggers or (state.triggers if state else self.default), self.clock())
                self._tasks[task_id] = state
            return state

    def triggers_for(self, task_id: str) -> CheckpointTriggers:
        """The triggers in force for ``task_id`` (its start's ``checkpoint_policy``, else the default)."""
        return self._state(task_id).triggers

    # -- the before half ----------------------------------------------------
    def __call__(self, source: Observable[TaskEvent]) -> Observable[TaskEvent]:
        # A bad policy in a start request raises from decide: per_event sends it down
        # as on_error, and the pipeline's isolation reports it and subscribes afresh.
        return per_event(self.decide)(source)

    def decide(self, event: TaskEvent) -> list[TaskEvent]:
        """The events to pass on for ``event``: checkpoint requests and decisions around it, and itself."""
        task_id = event.task_id
        if task_id is None or not event.kind.endswith(".requested") or event.payload.get("policy"):
            return [event]
        if event.kind in ("task.start.requested", "task.resume.requested"):
            given = event.payload.get("checkpoint_policy")
            state = self._state(task_id, CheckpointTriggers.from_payload(given) if given is not None else self.default)
            point = "after_start" if event.kind == "task.start.requested" else "after_resume"
            if point in state.triggers.at:
                return [event, self._checkpoint(event, state, [point], after=True)]
            return [event]
        state = self._state(task_id)
        triggers = state.triggers
        if event.kind == "checkpoint.requested":  # the user's own: the clock and count start again
            state.execs_since, state.last_checkpoint, state.checkpointed = 0, self.clock(), True
            return [event]
        if event.kind in _ENDING:
            point = next(p for p, k in POINTS.items() if k == event.kind)
            with self._lock:
                self._tasks.pop(task_id, None)
            return ([self._checkpoint(event, state, [point])] if point in triggers.at else []) + [event]
        if event.kind != "exec.requested" or not triggers.active:
            return [event]
        return self._exec(event, state)

    def _exec(self, event: TaskEvent, state: _TaskState) -> list[TaskEvent]:
        triggers = state.triggers
        because: list[str] = []
        if "before_exec" in triggers.at:
            because.append("before_exec")
        if triggers.every_execs is not None and state.execs_since >= triggers.every_execs:
            because.append(f"every_execs: {state.execs_since} exec(s) since the last checkpoint")
        elapsed = self.clock() - state.last_checkpoint
        if triggers.every_seconds is not None and state.execs_since and elapsed >= triggers.every_seconds:
            because.append(f"every_seconds: {elapsed:.0f}s since the last checkpoint")
        out: list[TaskEvent] = []
        if triggers.risk_threshold is not None:
            if state.last_exec is not None and not state.seen.is_set():
                state.seen.wait(self.outcome_wait)
            risk = self.scorer(event.payload, state.previous, long_step=triggers.long_step,
                               many_files=triggers.many_files)
            risky = risk.score >= triggers.risk_threshold
            note = None
            if risky and state.execs_since == 0 and state.checkpointed and not because:
                # Nothing ran since the last checkpoint: it already holds the state before this command.
                note = "the last checkpoint already holds the state before this command"
            elif risky:
                because.append(f"risk: score {risk.score} >= {triggers.risk_threshold}")
            out.append(event.caused("checkpoint.risk.scored", {
                "request": event.id, "command": _command_text(event.payload.get("command")),
                **risk.to_payload(), "threshold": triggers.risk_threshold,
                "decision": "checkpoint" if because else "none", "because": list(because),
                **({"note": note} if note else {}),
            }))
        if because:
            out.append(self._checkpoint(event, state, because))
        out.append(event)
        with self._lock:
            state.execs_since += 1
            state.last_exec = event.id
            state.seen = threading.Event()
        if "after_exec" in triggers.at:
            out.append(self._checkpoint(event, state, ["after_exec"], after=True))
        return out

    def _checkpoint(self, cause: TaskEvent, state: _TaskState, because: list[str], *, after: bool = False) -> TaskEvent:
        state.execs_since, state.last_checkpoint, state.checkpointed = 0, self.clock(), True
        when = "after" if after else "before"
        payload: dict[str, Any] = {
            "message": f"policy: {when} {cause.kind.removesuffix('.requested')} ({'; '.join(because)})",
            "policy": {"because": because, "when": when, "request": cause.id, "request_kind": cause.kind},
        }
        if after:
            payload["after"] = cause.id
        return cause.caused("checkpoint.requested", payload)

    # -- the after half -----------------------------------------------------
    @property
    def after(self) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
        """An after-stage operator that tells the policy how each exec went (its duration, files touched).

        Every event passes on. Should :meth:`learn` raise, the error goes down
        as ``on_error`` (the session wraps this half in
        :func:`~armor_rx.pipeline.stages.isolated`, which passes the event on
        once and reports ``hook.failed``).
        """

        def passed_on(event: TaskEvent) -> tuple[TaskEvent]:
            self.learn(event)
            return (event,)

        return per_event(passed_on)

    def learn(self, event: TaskEvent) -> None:
        """Note the outcome of a task's last exec (``exec.done``; a veto or failure ends the wait too)."""
        if event.task_id is None or event.causation_id is None:
            return
        if event.kind not in ("exec.done", "hook.vetoed", "effect.failed", "effect.dead_lettered"):
            return
        with self._lock:
            state = self._tasks.get(event.task_id)
        if state is None or state.last_exec != event.causation_id:
            return
        if event.kind == "exec.done":
            duration = event.payload.get("duration")
            touched = event.payload.get("files_touched")
            state.previous = PreviousStep(
                float(duration) if isinstance(duration, (int, float)) else None,
                int(touched) if isinstance(touched, int) and not isinstance(touched, bool) else None,
            )
        state.seen.set()


def _command_text(command: object) -> str:
    import shlex

    if isinstance(command, (list, tuple)):
        return shlex.join(str(w) for w in command)[:500]
    return str(command)[:500]


def checkpoint_policy_(
    triggers: CheckpointTriggers | None,
    at: tuple[str, ...] | None,
    every_execs: int | None,
    every_seconds: float | None,
    risk_threshold: int | None,
    clock: Callable[[], float],
    scorer: Callable[..., RiskScore],
    outcome_wait: float,
) -> CheckpointPolicyHook:
    base = triggers or CheckpointTriggers()
    changes: dict[str, Any] = {}
    if at is not None:
        changes["at"] = tuple(at)
    if every_execs is not None:
        changes["every_execs"] = every_execs
    if every_seconds is not None:
        changes["every_seconds"] = every_seconds
    if risk_threshold is not None:
        changes["risk_threshold"] = risk_threshold
    return CheckpointPolicyHook(replace(base, **changes), clock, scorer, outcome_wait)


__all__ = ["POINTS", "CheckpointPolicyHook", "CheckpointTriggers", "checkpoint_policy_", "score_request"]
