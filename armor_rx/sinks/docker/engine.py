"""Connecting to a Docker engine and finding out what it is and what it can do.

The client negotiates the API version with the daemon (``version="auto"``), so
an old engine (Debian's speaks 1.41) works with a new SDK; features that need a
newer API or a kernel feature the engine lacks are listed in
:attr:`EngineInfo.unsupported` and degraded by the callers with a message.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from armor_rx.errors import DockerUnavailable

# Minimum API version of each hardening option the sandbox uses.
_API_NEEDS: dict[str, tuple[int, int]] = {
    "read_only": (1, 17),
    "cap_drop": (1, 2),
    "tmpfs": (1, 22),
    "pids_limit": (1, 23),
    "no_new_privileges": (1, 23),
    "nano_cpus": (1, 25),
    "init": (1, 25),
    "exec_workdir": (1, 35),
}


def _parse(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    try:
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


@dataclass(frozen=True)
class EngineInfo:
    """What :func:`detect` found: flavour, versions and supported options."""

    flavour: str  # "Docker Engine" | "Docker Desktop" | "rootless Docker" | "Podman"
    server_version: str
    api_version: str
    min_api_version: str
    operating_system: str
    cgroup_version: str
    security_options: tuple[str, ...]
    supported: dict[str, bool] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def unsupported(self) -> list[str]:
        return sorted(k for k, ok in self.supported.items() if not ok)

    def to_payload(self) -> dict[str, Any]:
        return {
            "flavour": self.flavour,
            "server_version": self.server_version,
            "api_version": self.api_version,
            "cgroup_version": self.cgroup_version,
            "unsupported": self.unsupported,
            "notes": list(self.notes),
        }


def describe_target(base_url: str | None = None) -> str:
    """Where a connection attempt goes, for error messages."""
    if base_url:
        return base_url
    host = os.environ.get("DOCKER_HOST")
    if host:
        return f"{host} (from DOCKER_HOST)"
    return "unix:///var/run/docker.sock (the default; DOCKER_HOST is not set)"


def connect(base_url: str | None = None, *, timeout: float = 60.0) -> docker.DockerClient:
    """A client that has answered a ping, with the API version negotiated.

    Raises :class:`DockerUnavailable` (one line: what was tried, why it failed,
    what to do) when no engine answers or it is too old.
    """
    tried = describe_target(base_url)
    try:
        if base_url:
            client = docker.DockerClient(base_url=base_url, version="auto", timeout=int(timeout))
        else:
            client = docker.from_env(version="auto", timeout=int(timeout))
        client.ping()
    except docker.errors.DockerException as exc:
        raise DockerUnavailable(tried, _reason(exc)) from None
    except (requests.exceptions.RequestException, OSError) as exc:
        raise DockerUnavailable(tried, _reason(exc)) from None
    if _parse(client.api.api_version) < (1, 24):
        client.close()
        raise DockerUnavailable(tried, f"the engine speaks API {client.api.api_version}, armor_rx needs 1.24 or newer")
    return client


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("No such file or directory", "Connection refused", "Permission denied", "timed out", "Name or service not known"):
        if marker in text:
            return marker.lower()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:200]


def detect(client: docker.DockerClient) -> EngineInfo:
    """Find the engine's flavour, versions and which hardening options it supports."""
    info: dict[str, Any] = client.info()
    version: dict[str, Any] = client.version()
    components = " ".join(str(c.get("Name", "")) for c in version.get("Components") or [])
    security = tuple(str(s) for s in info.get("SecurityOptions") or [])
    os_name = str(info.get("OperatingSystem", ""))
    if "podman" in components.lower() or "podman" in os_name.lower():
        flavour = "Podman"
    elif "Docker Desktop" in os_name:
        flavour = "Docker Desktop"
    elif any("rootless" in s for s in security):
        flavour = "rootless Docker"
    else:
        flavour = "Docker Engine"
    api = str(client.api.api_version)
    supported = {name: _parse(api) >= need for name, need in _API_NEEDS.items()}
    # The engine reports the cgroup controllers it can use; without them a
    # limit is accepted but not enforced, so it counts as unsupported.
    supported["memory_limit"] = bool(info.get("MemoryLimit", True))
    supported["swap_limit"] = bool(info.get("SwapLimit", True))
    supported["cpu_quota"] = bool(info.get("CpuCfsQuota", True))
    supported["pids_limit"] = supported["pids_limit"] and bool(info.get("PidsLimit", True))
    notes = [f"{name} is not supported by this engine (API {api}); it is left out" for name, ok in sorted(supported.items()) if not ok]
    return EngineInfo(
        flavour=flavour,
        server_version=str(version.get("Version", "?")),
        api_version=api,
        min_api_version=str(version.get("MinAPIVersion", "?")),
        operating_system=os_name,
        cgroup_version=str(info.get("CgroupVersion", "1")),
        security_options=security,
        supported=supported,
        notes=tuple(notes),
    )


def is_engine_lost(error: BaseException) -> bool:
    """Did the engine go away (refused, reset or aborted connection, socket gone, stream cut),
    as opposed to answering with a refusal (an APIError)?"""
    if isinstance(error, docker.errors.APIError):
        return False
    if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                          urllib3.exceptions.ProtocolError, ConnectionError)):
        return True
    return isinstance(error, OSError) and error.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE, errno.ENOENT)


class Engine:
    """A connected client plus what the engine is; the one handle the other modules share.

    >>> # engine = Engine.connect()        # raises DockerUnavailable if nothing answers
    >>> # engine.info.flavour, engine.info.api_version
    """

    def __init__(self, client: docker.DockerClient, info: EngineInfo | None = None) -> None:
        self.client = client
        self.info = info if info is not None else detect(client)

    @classmethod
    def connect(cls, base_url: str | None = None, *, timeout: float = 60.0) -> Engine:
        client = connect(base_url, timeout=timeout)
        try:
            return cls(client)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            client.close()
            raise DockerUnavailable(describe_target(base_url), _reason(exc)) from None

    @property
    def api(self) -> Any:
        return self.client.api

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
