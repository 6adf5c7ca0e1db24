"""kinds: a filter by kind pattern."""

from __future__ import annotations

import pytest
import reactivex
from reactivex import operators as ops

from armor_rx.errors import ConfigError
from armor_rx.model import TaskEvent
from armor_rx.operators import kinds

KINDS = ["task.started", "exec.output", "task.failed", "hook.failed", "exec.exited"]


def kinds_through(pattern):
    events = [TaskEvent.new(kind, "t1") for kind in KINDS]
    return reactivex.from_iterable(events).pipe(kinds(pattern), ops.map(lambda e: e.kind), ops.to_list()).run()


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", KINDS),
        ("task.*", ["task.started", "task.failed"]),
        ("*.failed", ["task.failed", "hook.failed"]),
        ("exec.output,task.started", ["task.started", "exec.output"]),
        ("checkpoint.*", []),
    ],
)
def test_only_matching_kinds_pass_in_order(pattern, expected):
    assert kinds_through(pattern) == expected


def test_a_malformed_pattern_is_a_config_error_at_once():
    with pytest.raises(ConfigError):
        kinds("Task/*")
