"""Services: long-running processes a task declares for its container, and how their health is judged.

A task may run an agent, an MCP server or a dev server beside its commands.
Declared at start (``Armor.start(task, services=[ServiceSpec(...)])``,
``armor-rx start --service NAME='CMD' --health 'CMD'`` or a spec file), they
are recorded in the ``task.start.requested`` payload as plain data, so a
resume starts them again from the log alone. The supervisor that runs them
is :class:`armor_rx.sinks.docker.supervise.ServiceSupervisor`; this module is
only the declaration (no I/O).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from armor_rx.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
Command = str | tuple[str, ...]


def _command(value: object, what: str) -> Command:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(a, str) for a in value):
        return tuple(value)
    raise ConfigError(f"{what} must be a shell string or a non-empty list of arguments, not {value!r}")


# The supervisor waits these out on a thread: past this the wait itself overflows (and NaN never comes due).
MAX_SECONDS = 365 * 24 * 3600


def _positive(value: object, what: str, *, zero: bool = False) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_SECONDS
            or (value == 0 and not zero)):
        raise ConfigError(f"{what} must be a {'non-negative' if zero else 'positive'} number of seconds "
                          f"up to {MAX_SECONDS} (a year), not {value!r}")
    return float(value)


def _count(value: object, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be a whole number of at least {minimum}, not {value!r}")
    return value


@dataclass(frozen=True)
class HealthCheck:
    """How a service's health is checked, every ``interval`` seconds.

    ``command`` (run in the container; exit 0 is healthy) or ``port`` (a TCP
    connect to 127.0.0.1:PORT from inside the container's own network
    namespace, which works with the default ``network="none"``); with
    neither, only that the process is still running is checked. A check
    that takes longer than ``timeout`` is killed and counts as failed;
    ``retries`` failures in a row make the service unhealthy. Failures in
    the first ``start_period`` seconds after a (re)start do not count.
    """

    command: Command | None = None
    port: int | None = None
    interval: float = 5.0
    timeout: float = 3.0
    retries: int = 3
    start_period: float = 0.0

    def __post_init__(self) -> None:
        if self.command is not None:
            object.__setattr__(self, "command", _command(self.command, "a health check's command"))
        if self.port is not None and (isinstance(self.port, bool) or not isinstance(self.port, int)
                                      or not 0 < self.port < 65536):
            raise ConfigError(f"a health check's port must be a TCP port (1-65535), not {self.port!r}")
        if self.command is not None and self.port is not None:
            raise ConfigError("a health check is a command or a port probe, not both")
        _positive(self.interval, "a health check's interval")
        _positive(self.timeout, "a health check's timeout")
        _count(self.retries, "a health check's retries", minimum=1)
        _positive(self.start_period, "a health check's start_period", zero=True)

    @property
    def kind(self) -> Literal["command", "port", "process"]:
        return "command" if self.command is not None else "port" if self.port is not None else "process"

    def probe(self) -> list[str] | None:
        """The command the supervisor runs in the container (None: only the process is watched).

        A port probe tries, in turn, ``nc -z`` (OpenBSD, traditional and nmap
        netcat), busybox ``nc -e true`` (busybox has no ``-z``), Python and
        bash's ``/dev/tcp``, so it works in whatever the image has.
        """
        if self.command is not None:
            return ["sh", "-c", self.command] if isinstance(self.command, str) else list(self.command)
        if self.port is None:
            return None
        p, t = self.port, max(1, int(self.timeout))
        script = (f"nc -z -w {t} 127.0.0.1 {p} </dev/null >/dev/null 2>&1"
                  f" || nc -w {t} 127.0.0.1 {p} -e true </dev/null >/dev/null 2>&1"
                  f" || python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {p}), {t})' >/dev/null 2>&1"
                  f" || bash -c 'exec 3<>/dev/tcp/127.0.0.1/{p}' >/dev/null 2>&1")
        return ["sh", "-c", script]

    def describe(self) -> str:
        if self.command is not None:
            return self.command if isinstance(self.command, str) else shlex.join(self.command)
        return f"tcp:{self.port}" if self.port is not None else "process running"

    def to_payload(self) -> dict[str, Any]:
        return {"command": list(self.command) if isinstance(self.command, tuple) else self.command, "port": self.port,
                "interval": self.interval, "timeout": self.timeout, "retries": self.retries,
                "start_period": self.start_period}

    @classmethod
    def from_payload(cls, value: HealthCheck | Mapping[str, Any] | str | None) -> HealthCheck:
        """A HealthCheck from its payload, a mapping, or a string (``tcp:PORT`` or a shell command)."""
        if value is None:
            return cls()
        if isinstance(value, HealthCheck):
            return value
        if isinstance(value, str):
            return parse_health(value)
        if not isinstance(value, Mapping):
            raise ConfigError(f"a health check must be a mapping, 'tcp:PORT' or a command, not {value!r}")
        known = {"command", "port", "interval", "timeout", "retries", "start_period"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"unknown health check setting(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {k: (tuple(v) if k == "command" and isinstance(v, list) else v)
                                  for k, v in value.items() if v is not None}
        return cls(**values)


@dataclass(frozen=True)
class ServiceSpec:
    """A long-running process in a task's container, supervised for as long as the task runs.

    When it is unhealthy (or its process ends) it is restarted after
    ``backoff`` seconds, doubling each time up to ``backoff_max``; after
    ``max_restarts`` restarts that did not make it healthy for
    ``stable_after`` seconds, the supervisor gives up and the task fails
    with the reason. ``environment`` is added to the task's secrets.
    """

    name: str
    command: Command
    health: HealthCheck = field(default_factory=HealthCheck)
    backoff: float = 1.0
    backoff_max: float = 30.0
    max_restarts: int = 5
    stable_after: float = 60.0
    environment: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or _NAME.fullmatch(self.name) is None:
            raise ConfigError(f"a service name must be 1-64 letters, digits, '.', '_' or '-', not {self.name!r}")
        object.__setattr__(self, "command", _command(self.command, f"service {self.name!r}'s command"))
        _positive(self.backoff, f"service {self.name!r}'s backoff", zero=True)
        _positive(self.backoff_max, f"service {self.name!r}'s backoff_max", zero=True)
        _count(self.max_restarts, f"service {self.name!r}'s max_restarts", minimum=0)
        _positive(self.stable_after, f"service {self.name!r}'s stable_after", zero=True)
        object.__setattr__(self, "environment", {str(k): str(v) for k, v in dict(self.environment).items()})

    def argv(self) -> list[str]:
        return ["sh", "-c", self.command] if isinstance(self.command, str) else list(self.command)

    def backoff_for(self, restart: int) -> float:
        """Seconds to wait before restart number ``restart`` (1, 2, ...): doubled each time, capped."""
        # The exponent is capped: 2 ** 1024 overflows a float, and 2 ** 64 times any backoff is past any backoff_max.
        return float(min(self.backoff * 2 ** min(max(0, restart - 1), 64), self.backoff_max))

    def to_payload(self) -> dict[str, Any]:
        return {"name": self.name, "command": list(self.command) if isinstance(self.command, tuple) else self.command,
                "health": self.health.to_payload(), "backoff": self.backoff, "backoff_max": self.backoff_max,
                "max_restarts": self.max_restarts, "stable_after": self.stable_after,
                "environment": dict(self.environment)}

    @classmethod
    def from_payload(cls, value: ServiceSpec | Mapping[str, Any]) -> ServiceSpec:
        if isinstance(value, ServiceSpec):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"a service must be a mapping with 'name' and 'command', not {value!r}")
        known = {"name", "command", "health", "backoff", "backoff_max", "max_restarts", "stable_after", "environment"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"unknown service setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "name" not in value or "command" not in value:
            raise ConfigError(f"a service needs a 'name' and a 'command', not {dict(value)!r}")
        values = {k: v for k, v in value.items() if v is not None}
        values["health"] = HealthCheck.from_payload(value.get("health"))
        if isinstance(values["command"], list):
            values["command"] = tuple(values["command"])
        return cls(**values)


def parse_services(value: object) -> tuple[ServiceSpec, ...]:
    """Services from a start payload: a list of specs or mappings, or a mapping name -> settings.

    Raises ConfigError for a bad setting or a name given twice.
    """
    if value is None:
        return ()
    items: Iterable[Any]
    if isinstance(value, Mapping):
        items = [{"name": name, **(dict(spec) if isinstance(spec, Mapping) else {"command": spec})}
                 for name, spec in value.items()]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ConfigError(f"services must be a list of services (or a mapping of name to settings), not {value!r}")
    services = tuple(ServiceSpec.from_payload(item) for item in items)
    names = [s.name for s in services]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"service name(s) {', '.join(twice)} given more than once; each service needs its own name")
    return services


def services_payload(value: object) -> list[dict[str, Any]]:
    """The JSON-safe form a start request records (validated: ConfigError before anything is logged)."""
    return [s.to_payload() for s in parse_services(value)]


def parse_health(text: str) -> HealthCheck:
    """``tcp:8080`` (or ``port:8080``) -> a port probe; anything else -> a shell command."""
    head, _, port = text.partition(":")
    if head in ("tcp", "port") and port:
        try:
            return HealthCheck(port=int(port))
        except ValueError:
            raise ConfigError(f"a port probe is 'tcp:PORT' with a number, not {text!r}") from None
    if not text.strip():
        raise ConfigError("a health check command must not be empty")
    return HealthCheck(command=text)


def parse_service_option(text: str) -> tuple[str, str]:
    """``NAME=COMMAND`` (as ``armor-rx start --service`` takes it) -> (name, command)."""
    name, sep, command = text.partition("=")
    if not sep or not name or not command.strip():
        raise ConfigError(f"--service takes NAME=COMMAND (e.g. web='python -m http.server 8000'), not {text!r}")
    return name, command
