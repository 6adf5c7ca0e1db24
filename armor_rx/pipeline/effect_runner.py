"""Running the effects that match one request, each with retry and backoff."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import reactivex

from armor_rx.errors import EffectFailed
from armor_rx.model.events import TaskEvent
from armor_rx.model.patterns import kind_matcher
from armor_rx.model.registry import TaskRecord
from armor_rx.operators import default_is_transient, retry_with_backoff
from armor_rx.pipeline.effects import Effect, EffectContext


@dataclass(frozen=True)
class RetryPolicy:
    """How effects are retried: exponential backoff with jitter and a cap."""

    max_attempts: int = 5
    initial_delay: float = 0.05
    multiplier: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.5
    is_transient: Callable[[BaseException], bool] = default_is_transient


def run_effects(
    effects: Sequence[Effect],
    request: TaskEvent,
    task: TaskRecord | None,
    emit: Callable[[str, Mapping[str, Any]], TaskEvent],
    retry: RetryPolicy,
) -> Mapping[str, Any]:
    """Apply every effect whose kinds match, in order; their results merged.

    ``metadata`` mappings are merged rather than replaced, so each effect can
    add its facts (branch, worktree, container ...) to the task record. Raises
    :class:`EffectFailed` for the first effect that fails for good.
    """
    result: dict[str, Any] = {}
    for effect in effects:
        if not kind_matcher(effect.kinds)(request.kind):
            continue
        extra = dict(_apply(effect, request, task, emit, retry))
        metadata = extra.pop("metadata", None)
        result.update(extra)
        if isinstance(metadata, Mapping):
            result["metadata"] = {**result.get("metadata", {}), **metadata}
    return result


def _apply(
    effect: Effect,
    request: TaskEvent,
    task: TaskRecord | None,
    emit: Callable[[str, Mapping[str, Any]], TaskEvent],
    policy: RetryPolicy,
) -> Mapping[str, Any]:
    attempts = 0

    def attempt() -> Mapping[str, Any]:
        nonlocal attempts
        attempts += 1
        return effect.apply(EffectContext(request=request, task=task, emit=emit, attempt=attempts)) or {}

    # The lane waits here on purpose: the task's next request must not start
    # before this one's effect has finished or given up.
    source = reactivex.defer(lambda _: reactivex.from_callable(attempt)).pipe(
        retry_with_backoff(
            max_attempts=policy.max_attempts,
            initial_delay=policy.initial_delay,
            multiplier=policy.multiplier,
            max_delay=policy.max_delay,
            jitter=policy.jitter,
            is_transient=policy.is_transient,
        )
    )
    try:
        result: Mapping[str, Any] = source.run()
        return result
    except Exception as exc:
        raise EffectFailed(effect.name, exc, attempts) from exc
