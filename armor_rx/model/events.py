"""The event: an immutable record of one thing that happened to one task."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Union

import orjson

from armor_rx.errors import InvalidEventKind, InvalidPayload
from armor_rx.model.ids import new_event_id, validate_task_id
from armor_rx.model.secrets import REDACTED, Secret, is_reference_key, is_sensitive_key, redact_text

SCHEMA_VERSION = 1

JSONValue = Union[None, bool, int, float, str, tuple["JSONValue", ...], Mapping[str, "JSONValue"]]
Payload = Mapping[str, JSONValue]

_KIND = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
_EMPTY: Payload = MappingProxyType({})


def validate_kind(kind: object) -> str:
    if not isinstance(kind, str) or _KIND.fullmatch(kind) is None:
        raise InvalidEventKind(kind)
    return kind


def freeze_payload(value: Any, path: str = "payload", *, check_keys: bool = True) -> JSONValue:
    """A deep, read-only, JSON-safe copy of ``value`` with secrets redacted.

    Redacted: :class:`Secret` values, values under keys that look sensitive,
    and credentials written into text (:func:`~armor_rx.model.secrets.redact_text`).

    Dicts become read-only mappings and lists become tuples, so an event cannot
    be changed after it is made. Raises :class:`InvalidPayload` naming the first
    value that JSON cannot carry.
    """
    if isinstance(value, str):
        return redact_text(value)  # a password in a URL, a bearer token
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidPayload(f"{path} is {value!r}; JSON has no NaN or infinity")
        return value
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, Mapping):
        frozen: dict[str, JSONValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidPayload(f"{path} has key {key!r}; JSON object keys must be strings")
            if check_keys and is_sensitive_key(key) and item is not None:
                frozen[key] = REDACTED
            else:  # under a reference key (secret_refs) the keys are secrets' names and the values references
                frozen[key] = freeze_payload(item, f"{path}.{key}", check_keys=check_keys and not is_reference_key(key))
        return MappingProxyType(frozen)
    if isinstance(value, (list, tuple)):
        return tuple(freeze_payload(item, f"{path}[{i}]", check_keys=check_keys) for i, item in enumerate(value))
    raise InvalidPayload(
        f"{path} is a {type(value).__name__} ({value!r:.60}); payloads take only "
        "None, bool, int, float, str, lists and dicts with string keys"
    )


def _frozen(value: Any) -> Any:
    """Read-only copy of parsed JSON (dicts to mappings, lists to tuples), nothing redacted."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) if isinstance(v, (dict, list)) else v for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) if isinstance(v, (dict, list)) else v for v in value)
    return value


def _default(obj: Any) -> Any:
    if isinstance(obj, MappingProxyType):
        return dict(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One lifecycle event.

    ``seq`` is ``None`` until the event log assigns it; every other field is
    fixed at creation. Make events with :meth:`TaskEvent.new`, which validates.

    >>> ev = TaskEvent.new("task.created", "fix-login", {"repo": "."})
    >>> ev.kind, ev.task_id, ev.payload["repo"], ev.seq
    ('task.created', 'fix-login', '.', None)
    """

    id: str
    kind: str
    task_id: str | None
    ts: float
    # MappingProxyType is unhashable before 3.12, so dataclasses calls it mutable.
    payload: Payload = field(default_factory=lambda: _EMPTY)
    causation_id: str | None = None
    seq: int | None = None
    schema: int = SCHEMA_VERSION

    @classmethod
    def new(
        cls,
        kind: str,
        task_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
        *,
        causation_id: str | None = None,
    ) -> TaskEvent:
        frozen = freeze_payload(payload or {})
        assert isinstance(frozen, Mapping)
        return cls(
            id=new_event_id(),
            kind=validate_kind(kind),
            task_id=None if task_id is None else validate_task_id(task_id),
            ts=time.time(),
            payload=frozen,
            causation_id=causation_id,
        )

    def caused(self, kind: str, payload: Mapping[str, Any] | None = None, *, task_id: str | None = None) -> TaskEvent:
        """A new event for the same task whose ``causation_id`` is this event's id."""
        return TaskEvent.new(kind, task_id or self.task_id, payload, causation_id=self.id)

    def with_seq(self, seq: int) -> TaskEvent:
        return replace(self, seq=seq)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (the serialised form, before the checksum)."""
        return {
            "v": self.schema,
            "seq": self.seq,
            "id": self.id,
            "kind": self.kind,
            "task_id": self.task_id,
            "ts": self.ts,
            "causation_id": self.causation_id,
            "payload": self.payload,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), default=_default)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskEvent:
        """Rebuild an event from its serialised form; raises InvalidPayload if malformed."""
        try:
            schema = data["v"]
            if schema != SCHEMA_VERSION:
                raise InvalidPayload(f"event schema version {schema!r} is not supported (this armor_rx reads {SCHEMA_VERSION})")
            payload = freeze_payload(data.get("payload") or {})
            if not isinstance(payload, Mapping):
                raise InvalidPayload(f"serialised event's payload is a {type(payload).__name__}, not an object")
            return cls(
                id=str(data["id"]),
                kind=validate_kind(data["kind"]),
                task_id=data["task_id"],
                ts=float(data["ts"]),
                payload=payload,
                causation_id=data.get("causation_id"),
                seq=data.get("seq"),
                schema=schema,
            )
        except KeyError as exc:
            raise InvalidPayload(f"serialised event lacks field {exc.args[0]!r}") from None

    @classmethod
    def from_logged(cls, data: Mapping[str, Any]) -> TaskEvent:
        """Rebuild an event armor_rx itself logged (a line whose checksum verified), without redacting again.

        Its payload was redacted when the event was made (:meth:`new`); a line
        that does not verify is never read, so scanning every string of every
        payload again on each read would only cost time. Anything from outside
        (a client, a file someone wrote) goes through :meth:`from_dict`.
        """
        try:
            schema = data["v"]
            if schema != SCHEMA_VERSION:
                raise InvalidPayload(f"event schema version {schema!r} is not supported (this armor_rx reads {SCHEMA_VERSION})")
            return cls(str(data["id"]), data["kind"], data["task_id"], float(data["ts"]),
                       _frozen(data.get("payload") or {}), data.get("causation_id"), data.get("seq"), schema)
        except KeyError as exc:
            raise InvalidPayload(f"serialised event lacks field {exc.args[0]!r}") from None

    @classmethod
    def from_json(cls, raw: bytes | str) -> TaskEvent:
        return cls.from_dict(orjson.loads(raw))


def to_plain(value: Any) -> Any:
    """Thaw a frozen payload into ordinary dicts and lists (for printing, hooks)."""
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [to_plain(v) for v in value]
    return value
