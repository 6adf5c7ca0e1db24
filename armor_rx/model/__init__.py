"""The model floor: events, lifecycle, identifiers, secrets, registry. No I/O."""

from armor_rx.model.events import SCHEMA_VERSION, TaskEvent, freeze_payload, to_plain, validate_kind
from armor_rx.model.ids import new_event_id, validate_task_id
from armor_rx.model.lifecycle import ACTIVE, HOOK_POINTS, KIND_TO_STATE, REQUEST_OUTCOME, TERMINAL, TRANSITIONS, State
from armor_rx.model.patterns import kind_matcher
from armor_rx.model.registry import Registry, TaskRecord
from armor_rx.model.secrets import Secret

__all__ = [
    "ACTIVE",
    "HOOK_POINTS",
    "KIND_TO_STATE",
    "REQUEST_OUTCOME",
    "SCHEMA_VERSION",
    "TERMINAL",
    "TRANSITIONS",
    "Registry",
    "Secret",
    "State",
    "TaskEvent",
    "TaskRecord",
    "freeze_payload",
    "kind_matcher",
    "new_event_id",
    "to_plain",
    "validate_kind",
    "validate_task_id",
]
