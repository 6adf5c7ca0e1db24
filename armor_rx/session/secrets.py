"""Where a session keeps the secret values its tasks were given: in memory, nowhere else.

A request records which secrets it carries (``secret_refs``: name ->
reference, or ``value`` for a :class:`Secret` given directly), never what
they are. The values wait here until the docker effect builds the command
that needs them, which gets them in its environment (not the container's,
whose settings anyone with the engine can inspect) and has them masked out
of its recorded output. A restarted service has forgotten them: resuming
such a task asks for them again (:meth:`SecretVault.missing`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from armor_rx.model.secrets import Secret, SecretSource, describe, resolve_all

# Secrets given to exec requests that never ran (vetoed, the session closed) must not pile up.
_MAX_PENDING_REQUESTS = 10_000


class SecretVault:
    """Per task and per exec request: name -> :class:`Secret`. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, dict[str, Secret]] = {}
        self._requests: dict[str, dict[str, Secret]] = {}

    def bind_task(self, task_id: str, secrets: Mapping[str, SecretSource] | None) -> dict[str, str]:
        """Resolve ``secrets`` now and keep them for every command of the task; returns what may be recorded."""
        resolved = resolve_all(secrets)
        if resolved:
            with self._lock:
                self._tasks.setdefault(task_id, {}).update(resolved)
        return {name: describe(secret) for name, secret in resolved.items()}

    def bind_request(self, request_id: str, resolved: Mapping[str, Secret]) -> None:
        """Keep resolved secrets for one exec request only (made with :func:`resolve_all` before
        the request, whose payload records their references)."""
        if resolved:
            with self._lock:
                self._requests[request_id] = dict(resolved)
                while len(self._requests) > _MAX_PENDING_REQUESTS:
                    self._requests.pop(next(iter(self._requests)))

    def for_exec(self, task_id: str, request_id: str) -> dict[str, Secret]:
        """The secrets a command gets: the task's, then the request's own (which win). The request's are used once."""
        with self._lock:
            return {**self._tasks.get(task_id, {}), **self._requests.pop(request_id, {})}

    def missing(self, task_id: str, names: list[str]) -> list[str]:
        """Which of ``names`` this vault does not hold for the task (e.g. after a service restart)."""
        with self._lock:
            held = self._tasks.get(task_id, {})
            return [n for n in names if n not in held]

    def forget(self, task_id: str) -> None:
        """Drop the task's secrets (it is over)."""
        with self._lock:
            self._tasks.pop(task_id, None)
