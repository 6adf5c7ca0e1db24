"""Stream transforms for armor_rx pipelines: hooks, retry, backpressure, ordering.

Every operator takes its options and returns a function from an observable to
an observable, so it goes straight into ``source.pipe(...)`` next to the
operators of :mod:`reactivex.operators`. Operators do no I/O of their own.
Errors travel down the stream as ``on_error``; nothing raises out of a
subscription. Bad options raise :class:`~armor_rx.errors.ConfigError` when
the operator is made, not when the first item arrives.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal, TypeVar

from reactivex import Observable, abc

from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import State
from armor_rx.operators._backpressure_stats import BackpressureStats, DropReport
from armor_rx.operators._checkpoint_policy import CheckpointPolicyHook, CheckpointTriggers
from armor_rx.operators._by_task import task_id_of as _task_id_of
from armor_rx.operators._dedup import event_id as _event_id
from armor_rx.operators._retry import default_is_transient

_T = TypeVar("_T")
_U = TypeVar("_U")

__all__ = [
    "BackpressureStats",
    "CheckpointPolicyHook",
    "CheckpointTriggers",
    "DropReport",
    "backpressure",
    "by_task",
    "checkpoint_policy",
    "dedup",
    "default_is_transient",
    "guard",
    "hook_timeout",
    "kinds",
    "observe",
    "retry_with_backoff",
    "track_plans",
    "stalled",
]


def kinds(pattern: str) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    """Keep only the events whose kind matches ``pattern`` (see :func:`~armor_rx.model.kind_matcher`).

    >>> import reactivex
    >>> from reactivex import operators as ops
    >>> from armor_rx.model import TaskEvent
    >>> events = [TaskEvent.new(k, "t1") for k in ("task.started", "exec.output", "task.failed")]
    >>> reactivex.from_iterable(events).pipe(kinds("task.*"), ops.map(lambda e: e.kind), ops.to_list()).run()
    ['task.started', 'task.failed']

    Raises ConfigError at once for a malformed pattern.
    """
    from armor_rx.operators._kinds import kinds_

    return kinds_(pattern)


def guard(
    check: Callable[[TaskEvent], bool | str | None],
    *,
    kinds: str = "*",
    name: str | None = None,
    on_error: Literal["fail_closed", "fail_open"] = "fail_closed",
    timeout: float | None = None,
) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    """A before-hook: ``check`` each matching event and let it pass or veto it.

    ``check`` allows an event by returning None or True, and vetoes it by
    returning False (reason ``"refused by <name>"``), a reason string, or by
    raising :class:`~armor_rx.errors.Vetoed`. A vetoed event is replaced by
    ``hook.vetoed`` (payload: hook, reason, vetoed_kind, vetoed_id), caused by
    it. Events whose kind does not match ``kinds``, and all ``hook.*`` events,
    pass untouched.

    If ``check`` raises anything else, returns something else, or outlives
    ``timeout`` seconds (:class:`~armor_rx.errors.HookTimeout`), ``on_error``
    decides: ``"fail_closed"`` (default) vetoes with reason
    ``"guard '<name>' failed closed: <Type>: <message>"`` and an
    ``error_type`` in the payload; ``"fail_open"`` emits ``hook.failed``
    and then the event. ``name`` defaults to ``check.__qualname__``. An
    overrunning call is abandoned (it runs on in the background); while two
    of them still run, each new event gets ``HookTimeout`` at once, so a check
    stuck for good costs no more waiting (``timeout=None``: no limit).

    >>> import reactivex
    >>> from reactivex import operators as ops
    >>> from armor_rx.model import TaskEvent
    >>> def weekdays_only(event):
    ...     return "no starts at the weekend" if event.payload.get("day") == "sat" else None
    >>> starts = [TaskEvent.new("task.start.requested", t, {"day": d}) for t, d in (("a", "sat"), ("b", "mon"))]
    >>> out = reactivex.from_iterable(starts).pipe(
    ...     guard(weekdays_only, kinds="task.start.requested"), ops.to_list()).run()
    >>> [(e.kind, e.task_id, e.payload.get("reason")) for e in out]
    [('hook.vetoed', 'a', 'no starts at the weekend'), ('task.start.requested', 'b', None)]
    """
    from armor_rx.operators._guard import guard_

    return guard_(check, kinds, name, on_error, timeout)


def observe(
    fn: Callable[[TaskEvent], object],
    *,
    kinds: str = "*",
    name: str | None = None,
    on_error: Literal["fail_open", "fail_closed"] = "fail_open",
    timeout: float | None = None,
) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    """An after-hook: call ``fn`` on each matching event; every event passes on.

    ``hook.*`` events are not shown to ``fn``. If ``fn`` raises or outlives
    ``timeout`` seconds, the event is emitted and then a ``hook.failed`` event
    (payload: hook, error, error_type, policy, fatal, event_kind, event_id;
    ``fatal`` is True when ``on_error="fail_closed"``, for the pipeline to
    act on). The stream itself never fails because of ``fn``. As for
    :func:`guard`, while two overrun calls still run, each new event is
    reported at once instead of waited on.

    >>> import reactivex
    >>> from reactivex import operators as ops
    >>> from armor_rx.model import TaskEvent
    >>> seen = []
    >>> def flaky(event):
    ...     seen.append(event.task_id)
    ...     if event.task_id == "a":
    ...         raise RuntimeError("monitor offline")
    >>> events = [TaskEvent.new("task.started", t) for t in ("a", "b")]
    >>> out = reactivex.from_iterable(events).pipe(observe(flaky), ops.to_list()).run()
    >>> seen, [(e.kind, e.task_id) for e in out]
    (['a', 'b'], [('task.started', 'a'), ('hook.failed', 'a'), ('task.started', 'b')])
    """
    from armor_rx.operators._observe import observe_

    return observe_(fn, kinds, name, on_error, timeout)


def track_plans(
    write: Callable[[Any], None],
    *,
    load: Callable[[str], Any] | None = None,
    history: Callable[[str, int], Any] | None = None,
    tasks: Literal["all", "requested"] = "all",
    location: Literal["state", "worktree"] = "state",
    name: str = "plan-file",
    changes: Callable[[str | None, str], list[str]] | None = None,
) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    """An after-hook that keeps each task's :class:`~armor_rx.model.plan.Plan` and hands every new version to ``write``.

    The plan starts at the task's start request, gains a step per finished
    command (command, exit code, duration, and files changed when the exec
    event says) and per checkpoint, rollback, interruption and resume, and
    is final at completion, failure or cancellation (then forgotten from
    memory). ``tasks="requested"`` tracks only tasks whose start payload says
    ``plan=True`` (or ``"state"`` / ``"worktree"``, which also sets where the
    plan goes; ``location`` is the default). A task not in memory is rebuilt
    from ``load(task_id)`` (the last plan written) and ``history(task_id,
    start_seq)`` (its logged events since); events are folded once, by seq.
    ``changes(since, tree)`` (optional) lists the paths a checkpoint changed
    since the last checkpoint or rollback. Every event passes on; ``write`` raising becomes ``hook.failed``. The
    operator does no I/O itself: :func:`armor_rx.hooks.plan_file` gives it
    the files.

    >>> import reactivex
    >>> from reactivex import operators as ops
    >>> from armor_rx.model import TaskEvent
    >>> written = []
    >>> start = TaskEvent.new("task.start.requested", "t1", {"goal": "fix login"})
    >>> ran = TaskEvent.new("exec.requested", "t1", {"command": ["pytest", "-q"]})
    >>> events = [start, start.caused("task.started"), ran,
    ...           ran.caused("exec.exited", {"exit_code": 0, "duration": 1.5, "reason": "exited"}),
    ...           TaskEvent.new("task.completed", "t1")]
    >>> logged = [event.with_seq(seq) for seq, event in enumerate(events, 1)]
    >>> _ = reactivex.from_iterable(logged).pipe(track_plans(written.append), ops.to_list()).run()
    >>> [(p.status, len(p.steps)) for p in written]
    [('planned', 0), ('running', 0), ('running', 0), ('running', 1), ('completed', 1)]
    >>> written[-1].steps[0]["command"], written[-1].steps[0]["exit_code"], written[-1].goal
    ('pytest -q', 0, 'fix login')
    """
    from armor_rx.operators._plan import track_plans as track_plans_

    return track_plans_(write, load=load, history=history, tasks=tasks, location=location, name=name, changes=changes)


def hook_timeout(
    fn: Callable[[_T], _U], seconds: float, *, name: str | None = None
) -> Callable[[Observable[_T]], Observable[_U]]:
    """Like ``ops.map(fn)``, but a call that takes longer than ``seconds`` ends
    the stream with :class:`~armor_rx.errors.HookTimeout` ``(name, seconds)``.

    The overrunning call is abandoned, not stopped (Python cannot kill a
    thread): it finishes in the background and its result is discarded. Each
    call runs on a pooled daemon thread. ``name`` defaults to
    ``fn.__qualname__``.

    >>> import reactivex, time
    >>> def slow_double(x):
    ...     time.sleep(0.5 if x == 3 else 0)
    ...     return 2 * x
    >>> out = []
    >>> _ = reactivex.from_iterable([1, 2, 3]).pipe(hook_timeout(slow_double, 0.1)).subscribe(
    ...     out.append, lambda error: out.append(f"{type(error).__name__}: {error}"))
    >>> out
    [2, 4, "HookTimeout: hook 'slow_double' did not finish within 0.1s"]
    """
    from armor_rx.operators._hook_timeout import hook_timeout_

    return hook_timeout_(fn, seconds, name)


def retry_with_backoff(
    *,
    max_attempts: int = 5,
    initial_delay: float = 0.05,
    multiplier: float = 2.0,
    max_delay: float = 5.0,
    jitter: float = 0.5,
    is_transient: Callable[[BaseException], bool] = default_is_transient,
    dead_letter: Callable[[BaseException, int], None] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    random: Callable[[], float] = _random.random,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Like ``ops.retry``: resubscribe to the source after a transient error,
    waiting ``min(max_delay, initial_delay * multiplier**(n-1)) * (1 - jitter * random())``
    seconds before retry ``n`` (``n = 1`` for the first retry).

    An error that ``is_transient`` rejects, or the error of the last of
    ``max_attempts`` subscriptions, goes down as ``on_error`` after
    ``dead_letter(error, attempts)`` is called (if given). If ``dead_letter``
    or ``is_transient`` itself raises, that error goes down instead, chained
    to the original. Waits run on ``scheduler`` (default: the subscriber's,
    else reactivex's TimeoutScheduler); disposing cancels a pending retry.
    Items of a failed attempt have already been emitted, as with ``ops.retry``.

    >>> import reactivex
    >>> from armor_rx.errors import TransientError
    >>> calls = []
    >>> def flaky_push():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         return reactivex.throw(TransientError("remote busy"))
    ...     return reactivex.of("pushed")
    >>> reactivex.defer(lambda _: flaky_push()).pipe(retry_with_backoff(initial_delay=0.01)).run()
    'pushed'
    >>> len(calls)
    3
    """
    from armor_rx.operators._retry import retry_with_backoff_

    return retry_with_backoff_(
        max_attempts, initial_delay, multiplier, max_delay, jitter, is_transient, dead_letter, scheduler, random
    )


def backpressure(
    max_items: int,
    policy: Literal["block", "drop_oldest", "drop_newest", "latest", "error"] = "block",
    *,
    on_drop: Callable[[DropReport], None] | None = None,
    report_interval: float = 1.0,
    stats: BackpressureStats | None = None,
    name: str = "backpressure",
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Put a bounded queue (at most ``max_items``) and one drain thread between
    the producer and the consumer; ``policy`` says what a full queue does:

    - ``"block"`` (default): the producer's ``on_next`` waits for room. Nothing is lost.
    - ``"drop_oldest"``: the oldest queued item is evicted for the new one.
    - ``"drop_newest"``: the incoming item is dropped.
    - ``"latest"``: everything pending is dropped; the queue keeps only the newest item.
    - ``"error"``: the stream ends at once with :class:`~armor_rx.errors.BackpressureOverflow`
      (queued items are dropped) and nothing more is accepted.

    Downstream is called only from the drain thread, never concurrently, and
    completion or an upstream error is delivered after the queued items. The
    drain thread ends with the stream (completion, error or dispose).
    ``stats`` (a :class:`BackpressureStats`) counts received, delivered, dropped
    and the queue's high water mark. ``on_drop`` gets a :class:`DropReport` on
    the drain thread at most every ``report_interval`` seconds while items
    are dropped, and a last one at the end if drops went unreported; if it
    raises, the stream ends with that error. Under ``"block"``, do not feed
    the output back into the input on the drain thread: it would wait for
    itself.

    >>> import reactivex
    >>> from reactivex import operators as ops
    >>> stats = BackpressureStats()
    >>> reactivex.from_iterable(range(10)).pipe(backpressure(3, stats=stats), ops.to_list()).run()
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    >>> stats.received, stats.delivered, stats.dropped, stats.high_water <= 3
    (10, 10, 0, True)
    """
    from armor_rx.operators._backpressure import backpressure_

    return backpressure_(max_items, policy, on_drop, report_interval, stats, name)


def dedup(
    window: int = 10_000, key: Callable[[Any], Hashable] = _event_id
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Drop an item whose key (default: the event id) is among the last
    ``window`` distinct keys seen (a bounded LRU; a repeat refreshes its key).

    >>> import reactivex
    >>> from reactivex import operators as ops
    >>> reactivex.from_iterable([1, 2, 1, 3, 4, 1]).pipe(dedup(window=2, key=lambda x: x), ops.to_list()).run()
    [1, 2, 3, 4, 1]

    A key function that raises ends the stream with its error. (``key`` takes
    ``Any`` so that a lambda type-checks: mypy cannot infer a lambda's
    parameter from a type variable.)
    """
    from armor_rx.operators._dedup import dedup_

    return dedup_(window, key)


def by_task(
    inner: Callable[[Observable[Any]], Observable[_U]],
    *,
    key: Callable[[Any], Hashable] = _task_id_of,
    scheduler: abc.SchedulerBase | None = None,
    max_workers: int = 8,
) -> Callable[[Observable[_T]], Observable[_U]]:
    """Run items through ``inner`` one at a time and in order per ``key``
    (default: the task id), with different keys concurrently.

    Each busy key gets its own copy of ``inner``; at most ``max_workers`` keys
    are worked on at once, on a thread pool made per subscription and shut
    down with it, or as jobs on ``scheduler`` if one is given. When a key has
    nothing pending, its copy of ``inner`` is completed and forgotten, so idle
    keys cost no memory; its next item starts a fresh copy. ``inner`` should therefore keep no state
    it needs across idle gaps, and per-key order is strict when ``inner``
    handles each item synchronously. Outputs of all keys reach downstream one
    at a time; the output completes when the source has and every key is
    done; an error from ``inner`` or ``key`` ends the output with it.
    (``inner`` and ``key`` take ``Any`` items so that lambdas type-check.)

    >>> import reactivex
    >>> from reactivex import operators as ops
    >>> from armor_rx.model import TaskEvent
    >>> events = [TaskEvent.new("exec.output", t, {"n": n}) for n in range(3) for t in ("a", "b")]
    >>> out = reactivex.from_iterable(events).pipe(
    ...     by_task(ops.map(lambda e: (e.task_id, e.payload["n"]))), ops.to_list()).run()
    >>> [n for t, n in out if t == "a"], [n for t, n in out if t == "b"]
    ([0, 1, 2], [0, 1, 2])
    """
    from armor_rx.operators._by_task import by_task_

    return by_task_(inner, key, scheduler, max_workers)


def checkpoint_policy(
    triggers: CheckpointTriggers | None = None,
    *,
    at: tuple[str, ...] | None = None,
    every_execs: int | None = None,
    every_seconds: float | None = None,
    risk_threshold: int | None = None,
    clock: Callable[[], float] | None = None,
    outcome_wait: float = 2.0,
) -> CheckpointPolicyHook:
    """A before-hook that decides when a task is checkpointed, and asks for it in the task's own lane.

    Triggers (see :class:`CheckpointTriggers`; keywords override ``triggers``):
    hook points ``at`` (``after_start``, ``after_resume``, ``before_exec``,
    ``after_exec``, ``before_complete``, ``before_fail``, ``before_cancel``),
    every ``every_execs`` execs, every ``every_seconds`` seconds (checked at
    the next exec), and adaptively by risk: an exec whose
    :func:`~armor_rx.model.risk.score_command` score reaches ``risk_threshold``
    gets a checkpoint *before* it runs. A checkpoint is a
    ``checkpoint.requested`` event (``policy`` in its payload says why)
    emitted ahead of the request (behind it for ``after_*``); the pipeline
    runs it in the lane before the request. With the risk trigger on, every
    exec also gets a ``checkpoint.risk.scored`` event: score, reasons,
    threshold and the decision. A task started with ``checkpoint_policy`` in
    its start request uses that instead of these defaults. The returned
    hook's :attr:`~CheckpointPolicyHook.after` is the after-stage half that
    feeds it each exec's duration and files touched (``Armor.use_checkpoint_policy``
    registers both). Bad options raise ConfigError at once.

    >>> import reactivex
    >>> from reactivex import operators as ops
    >>> from armor_rx.model import TaskEvent
    >>> policy = checkpoint_policy(risk_threshold=40, every_execs=3)
    >>> steps = [TaskEvent.new("task.start.requested", "t")] + [
    ...     TaskEvent.new("exec.requested", "t", {"command": c})
    ...     for c in (["make"], ["make", "test"], ["sh", "-c", "git reset --hard && make"])]
    >>> out = reactivex.from_iterable(steps).pipe(policy, ops.to_list()).run()
    >>> [e.kind for e in out]  # doctest: +NORMALIZE_WHITESPACE
    ['task.start.requested', 'checkpoint.risk.scored', 'exec.requested', 'checkpoint.risk.scored',
     'exec.requested', 'checkpoint.risk.scored', 'checkpoint.requested', 'exec.requested']
    >>> out[-3].payload["score"], out[-3].payload["decision"], list(out[-2].payload["policy"]["because"])
    (60, 'checkpoint', ['risk: score 60 >= 40'])
    """
    from armor_rx.operators._checkpoint_policy import checkpoint_policy_
    from armor_rx.model.risk import score_request
    import time as _time

    return checkpoint_policy_(triggers, at, every_execs, every_seconds, risk_threshold,
                              clock or _time.monotonic, score_request, outcome_wait)
def stalled(
    quiet: float,
    *,
    scheduler: abc.SchedulerBase | None = None,
    seed: Mapping[str, State] | None = None,
    clock: Callable[[], float] | None = None,
) -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    """Watch a task event stream and emit ``task.stalled`` for an active task that
    has had no event for ``quiet`` seconds, then ``task.unstalled`` (caused by the
    event that moved it) on its next event.

    A task is active in the states of :data:`armor_rx.model.lifecycle.ACTIVE`,
    folded from the lifecycle kinds it sees; ``seed`` gives the states of tasks
    already known when the watch begins (they are timed from then). Pending,
    interrupted and finished tasks are never flagged: they wait for a person,
    not for the agent. The output carries only the flags (record them to log
    them); the flags themselves are not movement. Timers run on ``scheduler``
    (default: the subscription's, else a timeout scheduler); disposing the
    subscription cancels them.

    >>> import reactivex
    >>> from reactivex import operators as ops
    >>> from reactivex.scheduler import HistoricalScheduler
    >>> from armor_rx.model import TaskEvent
    >>> clock = HistoricalScheduler()
    >>> seen = []
    >>> feed = reactivex.subject.Subject()
    >>> _ = feed.pipe(stalled(30, scheduler=clock, clock=lambda: clock.now.timestamp())).subscribe(
    ...     lambda e: seen.append((e.kind, e.payload.get("quiet_for"))))
    >>> feed.on_next(TaskEvent.new("task.started", "t1"))
    >>> clock.advance_by(31.0)
    >>> feed.on_next(TaskEvent.new("exec.output", "t1"))
    >>> seen
    [('task.stalled', 30.0), ('task.unstalled', 31.0)]

    Raises ConfigError at once for a quiet time that is not a positive number.
    """
    from armor_rx.operators._stalled import stalled_

    return stalled_(quiet, scheduler=scheduler, seed=seed, clock=clock)
