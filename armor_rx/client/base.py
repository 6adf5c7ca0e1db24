"""What the sync and async clients share: every call's route, body and decoding.

Like httpx's ``Client`` and ``AsyncClient`` over one ``BaseClient``, the two
flavours only differ in how they send a :class:`Call`; what to send and how
to read the answer is written once here, so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from armor_rx.model.ids import validate_task_id
from armor_rx.model.secrets import SecretSource, describe, resolve_all
from armor_rx.service import wire

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: ``method path`` with a JSON ``body`` or ``query``, its answer read by ``decode``."""

    method: str
    path: str
    decode: Callable[[Any], T]
    body: Mapping[str, Any] | None = None
    query: Mapping[str, str] = field(default_factory=dict)

    @property
    def idempotent(self) -> bool:
        return self.method == "GET"


def _task(task_id: str) -> str:
    return f"{wire.PREFIX}/tasks/{quote(validate_task_id(task_id))}"


def _event(data: Any) -> Any:
    return wire.event_in(data)


class Operations:
    """The calls of the API (see :class:`armor_rx.api.ArmorAPI` for what each does)."""

    def health(self) -> Call[dict[str, Any]]:
        return Call("GET", f"{wire.PREFIX}/health", dict)

    def create_task(self, task_id: str, base_ref: str, metadata: Mapping[str, Any] | None) -> Call[Any]:
        body = {"task_id": validate_task_id(task_id), "base_ref": base_ref, "metadata": dict(metadata) if metadata else None}
        return Call("POST", f"{wire.PREFIX}/tasks", wire.record_in, body)

    def task(self, task_id: str) -> Call[Any]:
        return Call("GET", _task(task_id), wire.record_in)

    def tasks(self) -> Call[list[Any]]:
        return Call("GET", f"{wire.PREFIX}/tasks", lambda rows: [wire.record_in(r) for r in rows])

    def lifecycle(self, task_id: str, verb: str, body: Mapping[str, Any] | None = None) -> Call[Any]:
        return Call("POST", f"{_task(task_id)}/{verb}", _event, dict(body or {}))

    def fork(self, task_id: str, checkpoint: str, into: int | None, names: Sequence[str] | None) -> Call[list[Any]]:
        body = {"checkpoint": checkpoint, "into": into, "names": list(names) if names is not None else None}
        return Call("POST", f"{_task(task_id)}/fork", lambda rows: [wire.event_in(r) for r in rows], body)

    def stop_command(self, task_id: str, reason: str) -> Call[bool]:
        return Call("POST", f"{_task(task_id)}/stop-command", lambda d: bool(d["stopped"]), {"reason": reason})

    def exec(self, task_id: str, command: Sequence[str] | str, options: Mapping[str, Any]) -> Call[Any]:
        body = {"command": command if isinstance(command, str) else list(command), **options}
        return Call("POST", f"{_task(task_id)}/exec", _event, body)

    def checkpoints(self, task_id: str) -> Call[list[Any]]:
        return Call("GET", f"{_task(task_id)}/checkpoints", lambda rows: [wire.checkpoint_in(r) for r in rows])

    def diff(self, task_id: str, checkpoint: str | None) -> Call[Any]:
        from armor_rx.sinks.git import TaskDiff

        return Call("GET", f"{_task(task_id)}/diff", TaskDiff.from_payload, query={"checkpoint": checkpoint} if checkpoint else {})

    def worktree(self, task_id: str) -> Call[Path]:
        return Call("GET", f"{_task(task_id)}/worktree", lambda d: Path(d["path"]))

    def container(self, task_id: str) -> Call[dict[str, Any]]:
        return Call("GET", f"{_task(task_id)}/container", dict)

    def emit(self, task_id: str | None, kind: str, payload: Mapping[str, Any] | None) -> Call[Any]:
        body = {"task_id": None if task_id is None else validate_task_id(task_id), "kind": kind, "payload": dict(payload or {})}
        return Call("POST", f"{wire.PREFIX}/events", _event, body)

    def conflicts(self) -> Call[list[dict[str, Any]]]:
        return Call("GET", f"{wire.PREFIX}/conflicts", lambda rows: [dict(r) for r in rows])

    def dead_letters(self, include_redriven: bool) -> Call[list[Any]]:
        return Call("GET", f"{wire.PREFIX}/dead-letters", lambda rows: [wire.letter_in(r) for r in rows],
                    query={"all": "1"} if include_redriven else {})

    def redrive(self, letter_id: str) -> Call[Any]:
        return Call("POST", f"{wire.PREFIX}/dead-letters/{quote(letter_id, safe='')}/redrive", _event, {})

    def sweep(self, now: bool, dry_run: bool, grace: float | None) -> Call[list[Any]]:
        return Call("POST", f"{wire.PREFIX}/sweep", lambda rows: [wire.decision_in(r) for r in rows],
                    {"now": now, "dry_run": dry_run, "grace": grace})

    def events_query(self, kind: str | None, task_id: str | None, from_seq: int | None, follow: bool, max_behind: int | None) -> dict[str, str]:
        query = {"follow": "1" if follow else "0"}
        if kind:
            query["kind"] = kind
        if task_id:
            query["task"] = validate_task_id(task_id)
        if from_seq is not None:
            query["from_seq"] = str(from_seq)
        if max_behind is not None:
            query["max_behind"] = str(max_behind)
        return query


def start_body(payload: Mapping[str, Any], secrets: Mapping[str, SecretSource] | None = None) -> dict[str, Any]:
    # A CheckpointTriggers (checkpoint_policy=...) travels in its JSON form.
    body = {k: (v.to_payload() if hasattr(v, "to_payload") else v) for k, v in payload.items() if v is not None}
    if "services" in body:  # ServiceSpec values as the plain data the wire carries (ConfigError here, before sending)
        from armor_rx.model.services import services_payload

        body["services"] = services_payload(body["services"])
    if secrets:
        body["secrets"] = secrets_body(secrets)
    return body


def secrets_body(secrets: Mapping[str, SecretSource] | None) -> dict[str, dict[str, str]]:
    """Secrets read here, in the client — its environment and files are the user's — for the service.

    They travel over the service's owner-only socket (or the token-guarded TCP
    listener) and are held in the service's memory, never in its log.
    """
    return {name: {"reference": describe(secret), "value": secret.reveal()} for name, secret in resolve_all(secrets).items()}


def parse_line(line: bytes | str) -> tuple[str, Any]:
    """One NDJSON line of a stream: ("event", TaskEvent) | ("lagged"|"outcome"|"result"|"task"|"error", value)."""
    data = wire.orjson.loads(line)
    if not isinstance(data, dict):
        return "error", wire.ServiceError(f"the service sent a stream line that is not an object: {line!r:.80}")
    if "kind" in data and "seq" in data:
        return "event", wire.event_in(data)
    for key in ("lagged", "outcome", "result", "task"):
        if key in data:
            return key, data[key]
    if "error" in data:
        return "error", wire.error_from(data, 200)
    return "unknown", data
