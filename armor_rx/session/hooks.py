"""Hook registration for a session: operators and the six classic hook points.

Both ways end in the same :class:`~armor_rx.pipeline.hooks.HookSet` and are
recorded as the same ``hook.registered`` event, so code written either way
sees the same history. ``SessionConfig.classic_hooks=False`` (or
``ARMOR_RX_CLASSIC_HOOKS=0``) switches the classic half off: :meth:`HookRegistry.hook`
then raises :class:`~armor_rx.errors.ClassicHooksOff` naming the operator to write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, overload

from armor_rx.errors import ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import HOOK_POINTS
from armor_rx.operators import CheckpointPolicyHook
from armor_rx.pipeline.core import Pipeline
from armor_rx.pipeline.hooks import ErrorPolicy, Hook, HookSet, Operator, Stage, classic_hook
from armor_rx.pipeline.stages import isolated
from armor_rx.session.config import SessionConfig

HookFn = Callable[[TaskEvent], Any]


class HookSession(Protocol):
    """What hook registration needs: the hook set, the default timeout, and the pipeline to record changes in."""

    hooks: HookSet
    config: SessionConfig

    @property
    def is_open(self) -> bool: ...

    @property
    def pipeline(self) -> Pipeline: ...


class HookRegistry:
    """The hook half of :class:`armor_rx.Armor`; ``self`` is a :class:`HookSession`.

    Hooks may be added before the session opens: they wait in the hook set,
    and only changes made while it is open are logged.
    """

    def use(self: HookSession, operator: Operator, *, stage: Stage = "before", priority: int = 0,
            name: str | None = None, timeout: float | None = None) -> Hook:
        """Add a reactivex operator as a hook; higher priority runs first.

        The operator sees every event of its stage and must pass on what it does
        not mean to change (an after-stage filter hides events from the bus;
        filter in a subscription instead). A before-stage operator must answer
        each request synchronously, passing it on (changed or not) or vetoing
        it; a request it drops is vetoed in its name, so the caller gets
        :class:`~armor_rx.errors.Vetoed` rather than waiting forever. If it
        raises, a before-hook vetoes the event (fails closed) and an
        after-hook reports ``hook.failed`` (fails open); either way it is
        subscribed afresh and the pipeline goes on. Each event may take it
        ``timeout`` seconds (default: the session's ``hook_timeout``;
        ``math.inf`` for no limit); an overrun counts as such an error.
        """
        hook_name = name or str(getattr(operator, "__qualname__", None) or repr(operator))
        policy: ErrorPolicy = "fail_closed" if stage == "before" else "fail_open"
        seconds = timeout if timeout is not None else self.config.hook_timeout
        safe = isolated(operator, name=hook_name, on_error=policy, timeout=seconds)
        return _register(self, Hook(name=hook_name, stage=stage, operator=safe, priority=priority, on_error=policy,
                                    timeout=seconds if seconds != float("inf") else None))

    @overload
    def hook(
        self: HookSession, point: str, fn: None = None, *, priority: int = 0, name: str | None = None,
        on_error: ErrorPolicy | None = None, timeout: float | None = None,
    ) -> Callable[[HookFn], HookFn]: ...

    @overload
    def hook(
        self: HookSession, point: str, fn: HookFn, *, priority: int = 0, name: str | None = None,
        on_error: ErrorPolicy | None = None, timeout: float | None = None,
    ) -> HookFn: ...

    def hook(
        self: HookSession,
        point: str,
        fn: HookFn | None = None,
        *,
        priority: int = 0,
        name: str | None = None,
        on_error: ErrorPolicy | None = None,
        timeout: float | None = None,
    ) -> HookFn | Callable[[HookFn], HookFn]:
        """Register a plain function at a classic hook point (also usable as a decorator).

        ``point`` is one of before_start, after_start, before_complete,
        after_complete, before_fail, after_fail. Before-hooks veto by returning
        False or a reason (or raising Vetoed) and fail closed; after-hooks fail
        open. Each call may take ``timeout`` seconds (default: the session's
        ``hook_timeout``, 30 s; ``math.inf`` for no limit): a before-hook that
        overruns it vetoes, an after-hook is reported (``hook.failed``) and
        skipped. Registration is recorded as a ``hook.registered`` event
        (with the timeout), exactly as for :meth:`use`. With the session's
        ``classic_hooks`` off this raises :class:`~armor_rx.errors.ClassicHooksOff`
        (a ConfigError) whose message gives the operator to register instead.
        """
        if point not in HOOK_POINTS:
            raise ConfigError(f"unknown hook point {point!r}; use one of: {', '.join(HOOK_POINTS)}")

        def register(f: HookFn) -> HookFn:
            seconds = timeout if timeout is not None else self.config.hook_timeout
            _register(self, classic_hook(point, f, priority=priority, name=name, on_error=on_error, timeout=seconds))
            return f

        return register(fn) if fn is not None else register

    def before_start(self: HookSession, fn: HookFn, **options: Any) -> HookFn:
        return HookRegistry.hook(self, "before_start", fn, **options)

    def after_start(self: HookSession, fn: HookFn, **options: Any) -> HookFn:
        return HookRegistry.hook(self, "after_start", fn, **options)

    def before_complete(self: HookSession, fn: HookFn, **options: Any) -> HookFn:
        return HookRegistry.hook(self, "before_complete", fn, **options)

    def after_complete(self: HookSession, fn: HookFn, **options: Any) -> HookFn:
        return HookRegistry.hook(self, "after_complete", fn, **options)

    def before_fail(self: HookSession, fn: HookFn, **options: Any) -> HookFn:
        return HookRegistry.hook(self, "before_fail", fn, **options)

    def after_fail(self: HookSession, fn: HookFn, **options: Any) -> HookFn:
        return HookRegistry.hook(self, "after_fail", fn, **options)

    def use_checkpoint_policy(self: HookSession, policy: CheckpointPolicyHook) -> None:
        """Make ``policy`` (from :func:`armor_rx.operators.checkpoint_policy`) the session's checkpoint policy.

        It replaces the one a git session has from its config
        (``checkpoint_when``): its before half goes last among the
        before-hooks, its after half first among the after-hooks.
        """
        from armor_rx.session.assembly import CHECKPOINT_POLICY

        for old in self.hooks.list():
            if old.name == CHECKPOINT_POLICY:
                HookRegistry.remove_hook(self, old)
        before = isolated(policy, name=CHECKPOINT_POLICY, on_error="fail_open")
        after = isolated(policy.after, name=CHECKPOINT_POLICY, on_error="fail_open")
        _register(self, Hook(name=CHECKPOINT_POLICY, stage="before", operator=before, priority=-1_000_000,
                             on_error="fail_open"))
        _register(self, Hook(name=CHECKPOINT_POLICY, stage="after", operator=after, priority=1_000_000,
                             on_error="fail_open"))

    def remove_hook(self: HookSession, hook: Hook) -> bool:
        removed = self.hooks.remove(hook)
        if removed and self.is_open:
            self.pipeline.record(TaskEvent.new("hook.removed", None, hook.describe())).result()
        return removed


def _register(session: HookSession, hook: Hook) -> Hook:
    # Logged only while open: a hook added before open() is in place before the first event.
    session.hooks.add(hook)
    if session.is_open:
        session.pipeline.record(TaskEvent.new("hook.registered", None, hook.describe())).result()
    return hook
