"""The pipeline floor: wiring requests -> intent -> hooks -> effects -> outcome -> bus."""

from armor_rx.pipeline.bus import EventBus
from armor_rx.pipeline.core import Pipeline
from armor_rx.pipeline.effect_runner import RetryPolicy
from armor_rx.pipeline.effects import Effect, EffectContext
from armor_rx.pipeline.hooks import Hook, HookSet, classic_hook

__all__ = ["Effect", "EffectContext", "EventBus", "Hook", "HookSet", "Pipeline", "RetryPolicy", "classic_hook"]
