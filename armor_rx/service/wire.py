"""The service's JSON forms, shared by the server and its clients.

Everything that crosses the socket is one of: a :class:`TaskEvent` (its log
form), a :class:`TaskRecord` (``to_dict``), a checkpoint, a dead letter, a
sweep decision, a diff, or an error ``{"error": {"type", "message", "details"}}``.
Errors come back as the same exception classes the in-process API raises, so
``except TaskNotFound`` works over either transport.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import orjson

import armor_rx.errors as errors_module
from armor_rx.errors import ArmorError, ServiceError

__all__ = ["API_VERSION", "PREFIX", "ServiceError", "dumps", "error_body", "error_from", "orjson"]
from armor_rx.model.events import TaskEvent, to_plain
from armor_rx.model.registry import TaskRecord

API_VERSION = 1
PREFIX = f"/v{API_VERSION}"


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (tuple, frozenset, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-safe")


# -- errors -----------------------------------------------------------------
def error_body(exc: BaseException) -> dict[str, Any]:
    details = {k: v for k, v in vars(exc).items() if not k.startswith("_") and isinstance(v, (str, int, float, bool, type(None)))}
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return {"error": {"type": type(exc).__name__, "message": message, "details": details}}


@functools.lru_cache(maxsize=None)  # type: ignore[arg-type]
def _remote_class(cls: type[ArmorError]) -> type[ArmorError]:
    # The typed errors build their message from constructor arguments; a remote
    # one already has its message, so it is an instance of a subclass that
    # takes the message as is (isinstance checks still see the original type).
    def __init__(self: ArmorError, message: str) -> None:
        Exception.__init__(self, message)

    def __str__(self: ArmorError) -> str:
        return str(self.args[0])

    return type(cls.__name__, (cls,), {"__init__": __init__, "__str__": __str__, "remote": True, "__module__": cls.__module__})


def error_from(body: Any, status: int) -> ArmorError:
    """The exception a service error response stands for."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return ServiceError(f"the service answered HTTP {status} without an error description")
    name = str(error.get("type", ""))
    message = str(error.get("message") or name)
    found = getattr(errors_module, name, None)
    cls: type[ArmorError] = found if isinstance(found, type) and issubclass(found, ArmorError) else ServiceError
    exc = _remote_class(cls)(message)  # type: ignore[arg-type]
    details = error.get("details")
    if isinstance(details, Mapping):
        for key, value in details.items():
            if isinstance(key, str) and not key.startswith("_"):
                try:
                    setattr(exc, key, value)
                except AttributeError:
                    pass
    return exc


# -- values -----------------------------------------------------------------
def event_out(event: TaskEvent) -> dict[str, Any]:
    return to_plain(event.to_dict())  # type: ignore[no-any-return]


def event_in(data: Any) -> TaskEvent:
    return TaskEvent.from_dict(data)


def record_out(record: TaskRecord) -> dict[str, Any]:
    return record.to_dict()


def record_in(data: Any) -> TaskRecord:
    return TaskRecord.from_dict(data)


def checkpoint_out(cp: Any) -> dict[str, Any]:
    from armor_rx.sinks.git.paths import printable

    out = dataclasses.asdict(cp)
    # Names that are not UTF-8 are held with surrogates, which JSON cannot carry: shown escaped.
    out["skipped"] = [printable(p) for p in cp.skipped]
    out["left_out"] = [[printable(p), why] for p, why in cp.left_out]
    out["nested"] = [printable(p) for p in cp.nested]
    out["holds"] = cp.holds
    return out


def checkpoint_in(data: Mapping[str, Any]) -> Any:
    from armor_rx.sinks.git import Checkpoint

    values = dict(data)
    values["skipped"] = tuple(values.get("skipped") or ())
    values["left_out"] = tuple((str(p), str(why)) for p, why in values.get("left_out") or ())
    values["nested"] = tuple(values.get("nested") or ())
    values["tags"] = tuple(values.get("tags") or ())
    values.pop("holds", None)  # derived from ``container``
    return Checkpoint(**values)


def letter_out(letter: Any) -> dict[str, Any]:
    return {"id": letter.id, "event": event_out(letter.event), "error": letter.error, "error_type": letter.error_type,
            "attempts": letter.attempts, "ts": letter.ts, "redriven_by": letter.redriven_by}


def letter_in(data: Mapping[str, Any]) -> Any:
    from armor_rx.sinks.deadletter import DeadLetter

    return DeadLetter(id=data["id"], event=event_in(data["event"]), error=data["error"], error_type=data["error_type"],
                      attempts=int(data["attempts"]), ts=float(data["ts"]), redriven_by=data.get("redriven_by"))


def decision_out(decision: Any) -> dict[str, Any]:
    return dataclasses.asdict(decision)  # type: ignore[no-any-return]


def decision_in(data: Mapping[str, Any]) -> Any:
    from armor_rx.sinks.docker.sweep import SweepDecision

    return SweepDecision(**data)
