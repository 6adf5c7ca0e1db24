"""armor_rx: run AI coding agents safely, with a durable, replayable ReactiveX pipeline.

The public surface is what ``__all__`` lists. A session::

    from armor_rx import Armor

    with Armor("path/to/repo") as armor:
        armor.create_task("fix-login")
        armor.start("fix-login")
        armor.complete("fix-login")
"""

from armor_rx.errors import (
    ArmorError,
    DockerUnavailable,
    BackpressureOverflow,
    ConcurrencyConflict,
    ConfigError,
    EffectFailed,
    HookTimeout,
    IllegalTransition,
    InvalidTaskId,
    LogCorrupt,
    StateDirLocked,
    TaskExists,
    TaskNotFound,
    TransientError,
    ServiceLost,
    ServiceUnavailable,
    Vetoed,
)
from armor_rx.model import Secret, State, TaskEvent, TaskRecord
from armor_rx.model.services import HealthCheck, ServiceSpec

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported on first use below: the pipeline pulls in reactivex, and the CLI's read verbs need none of it
    from armor_rx.pipeline.effect_runner import RetryPolicy
    from armor_rx.pipeline.effects import Effect, EffectContext
    from armor_rx.pipeline.hooks import Hook

__version__ = "0.1.0"


_DOCKER = ("DockerEffect", "Engine", "ImageCache", "ImageSpec", "SandboxSpec", "Sweeper")


_PIPELINE = {"RetryPolicy": "effect_runner", "Effect": "effects", "EffectContext": "effects", "Hook": "hooks"}


def __getattr__(name: str) -> object:
    if name in _PIPELINE:
        import importlib

        return getattr(importlib.import_module(f"armor_rx.pipeline.{_PIPELINE[name]}"), name)
    # The session pulls in the sinks; import it lazily so 'import armor_rx' stays light.
    if name in ("Armor", "SessionConfig"):
        import armor_rx.session as session

        return getattr(session, name)
    if name in _DOCKER:
        import armor_rx.sinks.docker as docker_sink

        return getattr(docker_sink, name)
    if name in ("connect", "RemoteArmor"):
        import armor_rx.client.sync as remote

        return getattr(remote, name)
    if name in ("AsyncArmor", "AsyncRemoteArmor", "connect_async"):
        import armor_rx.aio as aio

        return getattr(aio, name)
    if name in ("ArmorAPI", "AsyncArmorBase"):
        import armor_rx.api as api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = [
    "Armor",
    "ArmorAPI",
    "ArmorError",
    "AsyncArmor",
    "AsyncArmorBase",
    "AsyncRemoteArmor",
    "BackpressureOverflow",
    "ConcurrencyConflict",
    "ConfigError",
    "RemoteArmor",
    "ServiceLost",
    "ServiceUnavailable",
    "SessionConfig",
    "connect",
    "connect_async",
    "DockerEffect",
    "DockerUnavailable",
    "Engine",
    "ImageCache",
    "ImageSpec",
    "SandboxSpec",
    "Sweeper",
    "Effect",
    "EffectContext",
    "EffectFailed",
    "HealthCheck",
    "Hook",
    "HookTimeout",
    "IllegalTransition",
    "InvalidTaskId",
    "LogCorrupt",
    "RetryPolicy",
    "Secret",
    "ServiceSpec",
    "State",
    "StateDirLocked",
    "TaskEvent",
    "TaskExists",
    "TaskNotFound",
    "TaskRecord",
    "TransientError",
    "Vetoed",
]
