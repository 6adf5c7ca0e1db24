"""The Docker sink: one hardened container per task, streamed exec, orphan sweep, image cache.

Floors: :class:`Engine` (connect + detect), :class:`SandboxSpec` (settings),
:mod:`.containers` / :mod:`.exec` (machinery), :class:`DockerEffect` (the
pipeline effect), :class:`Sweeper` (orphans) and :class:`ImageCache`.
The docker SDK is imported only when this package is.
"""

from armor_rx.sinks.docker.containers import SessionIdentity
from armor_rx.sinks.docker.effect import DockerEffect
from armor_rx.sinks.docker.engine import Engine, EngineInfo, connect, detect
from armor_rx.sinks.docker.exec import ExecResult, ExecRun
from armor_rx.sinks.docker.identity import AGENT_GID, AGENT_UID
from armor_rx.sinks.docker.images import CacheResult, ImageCache, ImageSpec
from armor_rx.sinks.docker.spec import SandboxSpec
from armor_rx.sinks.docker.sweep import Sweeper, SweepDecision

__all__ = [
    "AGENT_GID",
    "AGENT_UID",
    "CacheResult",
    "DockerEffect",
    "Engine",
    "EngineInfo",
    "ExecResult",
    "ExecRun",
    "ImageCache",
    "ImageSpec",
    "SandboxSpec",
    "SessionIdentity",
    "SweepDecision",
    "Sweeper",
    "connect",
    "detect",
]
