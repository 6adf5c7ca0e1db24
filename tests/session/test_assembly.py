"""The session is assembled in one place, from one config, with sinks behind one lifecycle."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, get_type_hints

import pytest

from armor_rx import Armor, ConfigError, EffectContext, SessionConfig
from armor_rx.pipeline.effects import Lifecycle
from armor_rx.session.config import SessionOptions


class Recording:
    """An effect with a lifecycle that writes down when it starts and stops."""

    kinds = "task.start.requested"

    def __init__(self, name: str, journal: list[str]) -> None:
        self.name = name
        self.journal = journal

    def start(self) -> Recording:
        self.journal.append(f"start {self.name}")
        return self

    def stop(self) -> None:
        self.journal.append(f"stop {self.name}")

    def apply(self, ctx: EffectContext) -> Mapping[str, Any] | None:
        self.journal.append(f"apply {self.name}")
        return None


def test_the_keywords_are_the_config_fields():
    assert set(get_type_hints(SessionOptions)) == {f.name for f in dataclasses.fields(SessionConfig)}


def test_keywords_and_config_make_the_same_session(tmp_path):
    by_keywords = Armor(state_dir=tmp_path / "a", max_workers=3, snapshot_every=7)
    by_config = Armor(config=SessionConfig(state_dir=tmp_path / "a", max_workers=3, snapshot_every=7))
    assert by_keywords.config == by_config.config
    assert Armor(config=SessionConfig(max_workers=3), state_dir=tmp_path).config.max_workers == 3  # keywords override


def test_the_config_is_frozen_and_keeps_no_list_of_the_callers():
    effects: list[Any] = []
    config = SessionConfig(effects=effects)
    effects.append(object())
    assert config.effects == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.docker = True  # type: ignore[misc]


def test_git_without_a_repository_is_refused_at_construction(tmp_path):
    with pytest.raises(ConfigError, match="git=True needs a repository"):
        Armor(state_dir=tmp_path, git=True)
    with pytest.raises(ConfigError, match="git=True needs a repository"):
        Armor(config=SessionConfig(state_dir=tmp_path, git=True))


def test_sinks_start_in_order_and_stop_in_reverse(tmp_path):
    journal: list[str] = []
    first, second = Recording("first", journal), Recording("second", journal)
    assert isinstance(first, Lifecycle)
    with Armor(state_dir=tmp_path, effects=[first, second]) as armor:
        assert armor.assembly.effects == (first, second)
        armor.create_task("t1")
        armor.start("t1")
    assert journal == ["start first", "start second", "apply first", "apply second", "stop second", "stop first"]
    assert not armor.is_open


def test_a_sink_that_refuses_to_start_stops_the_ones_before_it(tmp_path):
    journal: list[str] = []

    class Refusing(Recording):
        def start(self) -> Recording:
            raise ConfigError("no, not today")

    with pytest.raises(ConfigError, match="not today"):
        Armor(state_dir=tmp_path, effects=[Recording("first", journal), Refusing("second", journal)]).open()
    assert journal == ["start first", "stop first"]
    with Armor(state_dir=tmp_path) as armor:  # the lock and the log were let go
        assert armor.tasks() == []


def test_the_assembly_is_only_there_while_open(tmp_path):
    armor = Armor(state_dir=tmp_path)
    assert not armor.is_open and armor.docker is None and not armor.can_exec
    with armor:
        assert armor.assembly.git is None and armor.assembly.docker is None
    from armor_rx.errors import LogClosed

    with pytest.raises(LogClosed):
        armor.assembly
