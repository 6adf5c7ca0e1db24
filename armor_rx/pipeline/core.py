"""The pipeline: requests -> intent (write-ahead) -> per-task lanes -> before-hooks
-> effects -> outcome (logged) -> after-hooks -> bus.

Two kinds of thread carry events: the *lanes* (one task's requests, in order,
on a shared pool, so different tasks proceed concurrently) and the single
*publisher*, which takes committed events in seq order once they are durable,
runs the after-hooks and publishes to the bus. Only durable events are ever
published, and always in seq order, which is what makes replay seamless.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import reactivex
import structlog
from reactivex import operators as ops
from reactivex.disposable import Disposable
from reactivex.scheduler import ThreadPoolScheduler
from reactivex.subject import Subject

from armor_rx.errors import ArmorError, EffectFailed, LogClosed, TaskNotFound, Vetoed
from armor_rx.model.events import TaskEvent
from armor_rx.model.lifecycle import ACTIVE, KIND_TO_STATE, REQUEST_OUTCOME, State, check_transition
from armor_rx.model.registry import Registry, TaskRecord
from armor_rx.operators import by_task, dedup
from armor_rx.operators._deadline import release_idle_workers
from armor_rx.pipeline.bus import EventBus
from armor_rx.pipeline.effect_runner import RetryPolicy, run_effects
from armor_rx.pipeline.effects import Effect
from armor_rx.pipeline.hooks import HookSet
from armor_rx.pipeline.requests import UNSTOPPABLE, DeadLetters, Log, Outcome, outcome_kind, running_future
from armor_rx.pipeline.stages import hook_stage

_log = structlog.get_logger("armor_rx.pipeline")

# Requests a before-operator may make that the lane runs itself, at once (see Pipeline._run_inline).
INLINE_REQUESTS = frozenset({"checkpoint.requested"})

@dataclass
class _InFlight:
    event: TaskEvent
    future: Outcome


class Pipeline:
    """Wires the log, registry, hooks, effects and bus together. Use through :class:`armor_rx.Armor`."""

    def __init__(
        self,
        *,
        log: Log,
        registry: Registry,
        hooks: HookSet,
        effects: Sequence[Effect] = (),
        dead_letters: DeadLetters | None = None,
        retry: RetryPolicy = RetryPolicy(),
        max_workers: int = 8,
        max_pending: int = 10_000,
        memory_events: int = 10_000,
        memory_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.log = log
        self.registry = registry
        self.hooks = hooks
        self.effects = list(effects)
        self.dead_letters = dead_letters
        self.retry = retry
        self.bus = EventBus(lambda a, b: log.read(a, b), memory_events=memory_events, memory_bytes=memory_bytes, last_seq=log.last_seq)
        self._registry_lock = threading.RLock()
        self._commit_lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._inflight: dict[str, _InFlight] = {}
        self._inflight_lock = threading.Lock()
        self._idle = threading.Condition(self._inflight_lock)
        self._room = threading.BoundedSemaphore(max_pending)
        self._publish_q: queue.SimpleQueue[tuple[Future[TaskEvent], bool] | threading.Event | None] = queue.SimpleQueue()
        self._max_workers = max_workers
        self._requests: Subject[TaskEvent] = Subject()
        self._after: Subject[TaskEvent] = Subject()
        self._publisher: threading.Thread | None = None
        self._pool: ThreadPoolScheduler | None = None
        # Callers' done-callbacks may block (on another request): a roomy pool keeps one
        # from starving the next. It is this pipeline's, and ends with stop().
        self._callbacks: ThreadPoolExecutor | None = None
        self._lanes: reactivex.abc.DisposableBase = Disposable()
        self._after_sub: reactivex.abc.DisposableBase = Disposable()
        self._running = False
        self._generation: dict[str, int] = {}
        self._commits = 0
        self._followups = 0  # fail requests that fatal after-hooks are about to start
        # Per lane thread: the last request it finished successfully (for inline requests marked 'after').
        self._lane_ok = threading.local()

    # -- life cycle -------------------------------------------------------
    def start(self) -> Pipeline:
        if self._running:
            return self
        self._pool = ThreadPoolScheduler(self._max_workers)
        self._callbacks = ThreadPoolExecutor(64, thread_name_prefix="armor-callback")
        self._subscribe_lanes()
        self._subscribe_after()
        self._publisher = threading.Thread(target=self._publish_loop, name="armor-publisher", daemon=True)
        self._running = True
        self._publisher.start()
        return self

    def _subscribe_lanes(self) -> None:
        lanes = self._requests.pipe(
            # A re-drive delivers the same event again on purpose: its generation
            # makes it distinct, while an accidental duplicate is still dropped.
            dedup(key=lambda e: (e.id, self._generation.get(e.id, 0))),
            by_task(lambda lane: lane.pipe(hook_stage(self.hooks, "before"), ops.do_action(self._effect_stage)), scheduler=self._pool),
        )
        self._lanes = lanes.subscribe(on_error=self._lane_failed)

    def _subscribe_after(self) -> None:
        after = self._after.pipe(hook_stage(self.hooks, "after"))
        self._after_sub = after.subscribe(self._after_out, self._after_failed)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is in flight (up to ``timeout`` seconds), then stop every thread."""
        if not self._running:
            return
        with self._idle:
            self._idle.wait_for(self._quiet, timeout=timeout)
            abandoned = list(self._inflight.values())
        self._running = False
        for item in abandoned:
            try:
                item.future.set_exception(LogClosed(f"session stopped before {item.event.kind} {item.event.id} finished"))
            except InvalidStateError:
                pass  # its lane finished after all
        self._requests.on_completed()
        self._publish_q.put(None)
        if self._publisher is not None:
            self._publisher.join(timeout)
        self._lanes.dispose()
        self._after_sub.dispose()
        if self._pool is not None:
            self._pool.executor.shutdown(wait=True)
        self.bus.close()
        if self._callbacks is not None:
            self._callbacks.shutdown(wait=True)
        release_idle_workers()  # hooks called with a time limit ran on these

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request is in flight and everything committed so far is published."""
        # After-hooks may commit new events (hook.failed) or start requests (a
        # fail-closed observer) while we wait, so go round until a whole round
        # passes with nothing in flight and no new commit.
        while True:
            with self._idle:
                if not self._idle.wait_for(self._quiet, timeout=timeout):
                    return False
            before = self._commits
            published = threading.Event()
            self._publish_q.put(published)
            if not published.wait(timeout):
                return False
            with self._inflight_lock:
                if self._commits == before and self._quiet():
                    return True

    # -- entry points -----------------------------------------------------
    def submit(self, request: TaskEvent) -> Future[TaskEvent]:
        """Log ``request`` durably (write-ahead), then run it through its task's lane.

        Raises at once (nothing logged) if the request is illegal for the task's
        state. The returned future gives the logged outcome event, or raises
        :class:`Vetoed` / :class:`EffectFailed`.
        """
        self._ensure_running()
        if request.task_id is not None:
            with self._registry_lock:
                record = self.registry.tasks.get(request.task_id)
                if record is None:
                    raise TaskNotFound(request.task_id)  # a request for no task is refused, not logged
                outcome_of = REQUEST_OUTCOME.get(request.kind)
                if outcome_of is not None and request.kind not in KIND_TO_STATE:
                    # A request that moves the task only by its outcome (cancel) is checked
                    # now: logged, it would run its effects and then have its outcome refused.
                    check_transition(request.task_id, record.state, KIND_TO_STATE[outcome_of])
        outcome = running_future(self._callbacks)
        logged = self._commit_external(request).result()
        self._enqueue(logged, outcome)
        return outcome

    def redrive(self, request: TaskEvent) -> Future[TaskEvent]:
        """Run an already-logged request through its lane again (effects are idempotent by id)."""
        self._ensure_running()
        outcome = running_future(self._callbacks)
        with self._inflight_lock:
            if request.id in self._inflight:
                raise ArmorError(f"request {request.kind} {request.id} is already running; wait for its outcome")
        self._generation[request.id] = self._generation.get(request.id, 0) + 1
        self._enqueue(request, outcome)
        return outcome

    def record(self, event: TaskEvent) -> Future[TaskEvent]:
        """Log a fact (no before-hooks, no effects); it goes to after-hooks and the bus.

        Blocks while ``max_pending`` committed events wait to be published, so a
        fast producer is slowed rather than buffered without bound.
        """
        self._ensure_running()
        return self._commit_external(event)

    def _commit_external(self, event: TaskEvent) -> Future[TaskEvent]:
        # The publisher gives the room back once the event is out (or refused);
        # here only when the commit failed before it was queued. The publisher
        # itself (a bus subscriber or after-hook that records) must never wait
        # for room only it can make.
        if threading.current_thread() is self._publisher:
            return self._commit(event)
        self._room.acquire()
        try:
            return self._commit(event, external=True)
        except BaseException:
            self._room.release()
            raise

    def _ensure_running(self) -> None:
        if not self._running:
            raise LogClosed("the session is not started (use 'with Armor(...) as armor:')")

    def _enqueue(self, event: TaskEvent, outcome: Outcome) -> None:
        with self._inflight_lock:
            if event.id in self._inflight:
                raise ArmorError(f"request {event.kind} {event.id} is already running; wait for its outcome")
            self._inflight[event.id] = _InFlight(event, outcome)
        outcome._add_internal_callback(lambda _: self._done(event.id))
        with self._submit_lock:  # a Subject's on_next must not be called concurrently
            self._requests.on_next(event)

    def _done(self, event_id: str) -> None:
        with self._idle:
            self._inflight.pop(event_id, None)
            if self._quiet():
                self._idle.notify_all()

    def _quiet(self) -> bool:
        return not self._inflight and not self._followups

    # -- commit and publish -----------------------------------------------
    def _apply(self, event: TaskEvent) -> None:
        # Runs before the write: raising here refuses the event and leaves no trace of it.
        with self._registry_lock:
            self.registry.apply(event)

    def _commit(self, event: TaskEvent, *, external: bool = False) -> Future[TaskEvent]:
        with self._commit_lock:  # seq order == publish-queue order
            future = self.log.append_async(event, on_append=self._apply)
            self._commits += 1
            self._publish_q.put((future, external))
        return future

    def _publish_loop(self) -> None:
        while True:
            item = self._publish_q.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            future, external = item
            try:
                event = future.result()
            except BaseException:
                event = None  # refused before it was written: nothing to publish
            if external:
                self._room.release()
            if event is None:
                continue
            try:
                self._after.on_next(event)
            except Exception as exc:  # the publisher must outlive any one event
                _log.error("after-stage failed; the event is published without it", kind=event.kind, error=repr(exc))
                self._publish_safely(event)

    def _publish_safely(self, event: TaskEvent) -> None:
        if event.seq is not None:
            self.bus.publish(event)

    def _after_failed(self, error: Exception) -> None:
        _log.error("after-stage failed; resubscribing it", error=repr(error))
        if self._running:
            self._subscribe_after()

    def _after_out(self, event: TaskEvent) -> None:
        if event.seq is None:  # made by an after-hook (hook.failed): log it first
            self._commit(event)
            if event.kind == "hook.failed" and event.payload.get("fatal") and event.task_id:
                with self._idle:
                    self._followups += 1  # counted as work in flight until its fail has finished
                threading.Thread(target=self._fail_quietly, args=(event,), daemon=True).start()
            return
        self.bus.publish(event)

    def _fail_quietly(self, cause: TaskEvent) -> None:
        assert cause.task_id is not None
        try:
            record = self.task(cause.task_id)
            if record.state in ACTIVE or record.state == State.INTERRUPTED:
                reason = f"hook {cause.payload.get('hook')} failed closed: {cause.payload.get('error')}"
                self.submit(cause.caused("task.fail.requested", {"reason": reason})).exception()
        except ArmorError as exc:
            _log.warning("could not fail task after a fatal hook", task_id=cause.task_id, error=str(exc))
        finally:
            with self._idle:
                self._followups -= 1
                self._idle.notify_all()

    def _lane_failed(self, error: Exception) -> None:
        _log.error("a lane failed; in-flight requests are failed and the lanes resubscribed", error=repr(error))
        with self._inflight_lock:
            pending = list(self._inflight.values())
        for item in pending:
            self._resolve(item.future, error=error)
        if self._running:
            self._subscribe_lanes()

    def _resolve(self, future: Future[TaskEvent], result: TaskEvent | None = None, *, error: BaseException | None = None) -> None:
        try:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]
        except InvalidStateError:
            pass  # already failed by stop() while the lane still finished

    def task(self, task_id: str) -> TaskRecord:
        with self._registry_lock:
            return self.registry.get(task_id)

    # -- the lane: runs in a task's lane thread ----------------------------
    def _effect_stage(self, event: TaskEvent) -> None:
        try:
            if event.kind == "hook.vetoed":
                self._vetoed(event)
            elif event.kind == "hook.failed":
                self._commit(event).result()
            else:
                with self._inflight_lock:
                    item = self._inflight.get(event.id)
                if item is None:
                    if event.seq is None and event.kind in INLINE_REQUESTS and event.task_id is not None:
                        self._run_inline(event)
                    elif event.seq is None:  # a new event made by a before-operator
                        self._commit(event).result()
                    return
                self._run(item)
        except Exception as exc:  # never let one request break the lane
            _log.error("lane error", kind=event.kind, task_id=event.task_id, error=repr(exc))
            with self._inflight_lock:
                item = self._inflight.get(str(event.payload.get("vetoed_id", event.id)))
            if item is not None and not item.future.done():
                self._resolve(item.future, error=exc)

    def _run_inline(self, request: TaskEvent) -> None:
        """Run a request a before-operator made (a checkpoint policy's) here, in the task's lane.

        It runs before whatever the operator passes on after it, which is the
        point: a checkpoint *before* a risky exec. Submitting it instead and
        waiting would deadlock (it would queue behind the request this lane
        holds). No caller waits for it: it is logged, its effects run and its
        outcome is logged; a failure is logged (``effect.failed``) and the
        task goes on. One marked ``after`` (a request id) runs only if that
        request was the last this lane finished successfully, and is logged
        as ``checkpoint.skipped`` otherwise.
        """
        after = request.payload.get("after")
        if after is not None and getattr(self._lane_ok, "request_id", None) != after:
            skipped = {"request": request.id, "after": after, "reason": "the request it was to follow did not succeed"}
            self._commit(request.caused("checkpoint.skipped", skipped)).result()
            return
        logged = self._commit(request).result()
        try:
            extra = self._run_effects(logged)
        except EffectFailed as exc:
            self._commit(logged.caused("effect.failed", {
                "effect": exc.kind, "error": str(exc.cause), "error_type": type(exc.cause).__name__,
                "attempts": exc.attempts, "dead_letter": None})).result()
            return
        self._commit(logged.caused(outcome_kind(logged.kind), dict(extra))).result()

    def _vetoed(self, veto: TaskEvent) -> None:
        with self._inflight_lock:
            item = self._inflight.get(str(veto.payload.get("vetoed_id")))
        self._commit(veto).result()
        if item is None:
            return
        reason = str(veto.payload.get("reason"))
        hook = str(veto.payload.get("hook"))
        if item.event.kind in UNSTOPPABLE:
            self._commit(veto.caused("hook.veto_ignored", {"hook": hook, "reason": reason, "why": "a fail or cancel cannot be vetoed"})).result()
            self._run(item)
            return
        error = Vetoed(reason, hook=hook, task_id=item.event.task_id)
        if item.event.task_id is not None and item.event.kind in REQUEST_OUTCOME:
            follow = veto.caused("task.fail.requested", {"reason": f"vetoed by {hook}: {reason}", "vetoed": True})
            self._follow_up(follow, item.future, error)
        else:
            self._resolve(item.future, error=error)

    def _follow_up(self, request: TaskEvent, original: Future[TaskEvent], error: BaseException) -> None:
        """Submit ``request`` and fail ``original`` with ``error`` once it has finished."""
        try:
            logged = self._commit(request).result()
        except ArmorError as exc:
            _log.warning("follow-up request refused", kind=request.kind, error=str(exc))
            self._resolve(original, error=error)
            return
        follow = running_future(self._callbacks)
        follow._add_internal_callback(lambda _: self._resolve(original, error=error))
        with self._inflight_lock:
            self._inflight[logged.id] = _InFlight(logged, follow)
        follow._add_internal_callback(lambda _: self._done(logged.id))
        with self._submit_lock:
            self._requests.on_next(logged)

    def _run(self, item: _InFlight) -> None:
        request = item.event
        try:
            extra = self._run_effects(request)
        except EffectFailed as exc:
            self._effect_failed(item, exc)
            return
        payload = dict(extra)
        if request.kind in ("task.fail.requested", "task.cancel.requested") and "reason" in request.payload:
            payload.setdefault("reason", request.payload["reason"])
        outcome = self._commit(request.caused(outcome_kind(request.kind), payload)).result()
        self._lane_ok.request_id = request.id
        self._resolve(item.future, outcome)

    def _effect_failed(self, item: _InFlight, exc: EffectFailed) -> None:
        request = item.event
        transient = self.retry.is_transient(exc.cause)
        letter_id = None
        if transient and self.dead_letters is not None:
            letter_id = getattr(self.dead_letters.add(request, exc.cause, exc.attempts), "id", None)
        self._commit(
            request.caused(
                "effect.dead_lettered" if letter_id else "effect.failed",
                {"effect": exc.kind, "error": str(exc.cause), "error_type": type(exc.cause).__name__, "attempts": exc.attempts, "dead_letter": letter_id},
            )
        ).result()
        if request.kind in UNSTOPPABLE:
            outcome = self._commit(request.caused(outcome_kind(request.kind), {"reason": request.payload.get("reason"), "effect_error": str(exc)})).result()
            self._resolve(item.future, outcome)
        elif letter_id is None and request.task_id is not None and request.kind in REQUEST_OUTCOME:
            follow = request.caused("task.fail.requested", {"reason": str(exc)})
            self._follow_up(follow, item.future, exc)
        else:
            # Transient and exhausted: the task waits where it is for a re-drive.
            self._resolve(item.future, error=exc)

    def _run_effects(self, request: TaskEvent) -> Mapping[str, Any]:
        task = None
        if request.task_id is not None:
            with self._registry_lock:
                task = self.registry.tasks.get(request.task_id)

        def emit(kind: str, payload: Mapping[str, Any]) -> TaskEvent:
            # Effects can produce without end (exec.output): they wait for room
            # like any producer, so a slow subscriber slows them, not memory.
            return self._commit_external(request.caused(kind, payload)).result()

        return run_effects(self.effects, request, task, emit, self.retry)
