"""armor_rx: run AI coding agents safely, with a durable, replayable ReactiveX pipeline.

The public surface is what ``__all__`` lists. A session::

    from armor_rx import Armor

    with Armor("path/to/repo") as armor:
        armor.create_task("fix-login")
        armor.start("fix-login")
        armor.complete("fix-login")
"""

# Not typing.TYPE_CHECKING: importing typing alone costs a tenth of Python's start-up (mypy knows this name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from armor_rx.aio import AsyncArmor, AsyncRemoteArmor, connect_async
    from armor_rx.api import ArmorAPI, AsyncArmorBase
    from armor_rx.client.sync import RemoteArmor, connect
    from armor_rx.errors import (
        ArmorError,
        BackpressureOverflow,
        ConcurrencyConflict,
        ConfigError,
        DockerUnavailable,
        EffectFailed,
        HookTimeout,
        IllegalTransition,
        InvalidTaskId,
        LogCorrupt,
        ServiceLost,
        ServiceUnavailable,
        StateDirLocked,
        TaskExists,
        TaskNotFound,
        TransientError,
        Vetoed,
    )
    from armor_rx.model import Secret, State, TaskEvent, TaskRecord
    from armor_rx.model.services import HealthCheck, ServiceSpec
    from armor_rx.pipeline.effect_runner import RetryPolicy
    from armor_rx.pipeline.effects import Effect, EffectContext
    from armor_rx.pipeline.hooks import Hook
    from armor_rx.session import Armor, SessionConfig
    from armor_rx.sinks.docker import DockerEffect, Engine, ImageCache, ImageSpec, SandboxSpec, Sweeper

__version__ = "0.1.0"

_ERRORS = ("ArmorError", "BackpressureOverflow", "ConcurrencyConflict", "ConfigError", "DockerUnavailable",
           "EffectFailed", "HookTimeout", "IllegalTransition", "InvalidTaskId", "LogCorrupt", "ServiceLost",
           "ServiceUnavailable", "StateDirLocked", "TaskExists", "TaskNotFound", "TransientError", "Vetoed")

# Where each public name lives. Every one is imported on first use: 'import armor_rx' (which
# 'python -m armor_rx' and the armor-rx command do first) must cost nothing, so the CLI's
# read verbs can answer in about Python's own start-up time (armor_rx/_quick.py).
_HOME: dict[str, str] = {
    **dict.fromkeys(_ERRORS, "armor_rx.errors"),
    **dict.fromkeys(("Secret", "State", "TaskEvent", "TaskRecord"), "armor_rx.model"),
    **dict.fromkeys(("HealthCheck", "ServiceSpec"), "armor_rx.model.services"),
    "RetryPolicy": "armor_rx.pipeline.effect_runner",
    **dict.fromkeys(("Effect", "EffectContext"), "armor_rx.pipeline.effects"),
    "Hook": "armor_rx.pipeline.hooks",
    **dict.fromkeys(("Armor", "SessionConfig"), "armor_rx.session"),
    **dict.fromkeys(("DockerEffect", "Engine", "ImageCache", "ImageSpec", "SandboxSpec", "Sweeper"), "armor_rx.sinks.docker"),
    **dict.fromkeys(("connect", "RemoteArmor"), "armor_rx.client.sync"),
    **dict.fromkeys(("AsyncArmor", "AsyncRemoteArmor", "connect_async"), "armor_rx.aio"),
    **dict.fromkeys(("ArmorAPI", "AsyncArmorBase"), "armor_rx.api"),
}


# The submodules the eager 'import armor_rx' used to bring, which user code reaches as attributes ('armor_rx.errors.X').
_SUBMODULES = ("errors", "model")


# Hidden from type checkers, which see the imports above instead: with a module __getattr__ in
# view, mypy would type every misspelt name ('from armor_rx import Armr') as an object, silently.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        import importlib

        if name in _SUBMODULES:
            return importlib.import_module(f"armor_rx.{name}")  # importing sets the attribute
        home = _HOME.get(name)
        if home is None:
            raise AttributeError(f"module 'armor_rx' has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value  # looked up once
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__, *_SUBMODULES})


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
