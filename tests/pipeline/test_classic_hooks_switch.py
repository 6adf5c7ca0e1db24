"""The classic hook API switch (issue 12 item 8): on, classic hooks work and are dual-written as
``hook.registered``; off, registering one raises ClassicHooksOff naming the operator to write."""

from __future__ import annotations

from pathlib import Path

import pytest

from armor_rx import Armor, Vetoed
from armor_rx.errors import ClassicHooksOff, ConfigError
from armor_rx.model.lifecycle import HOOK_POINTS
from armor_rx.operators import guard, observe
from armor_rx.pipeline.hooks import HookSet, classic_hook, operator_equivalent
from armor_rx.session import SessionConfig


def test_on_by_default_and_dual_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARMOR_RX_CLASSIC_HOOKS", raising=False)
    seen: list[str] = []
    with Armor(state_dir=tmp_path / "s") as armor:
        assert armor.config.classic_hooks is True
        armor.hook("after_start", lambda e: seen.append(e.kind), name="watch")
        armor.create_task("t1")
        armor.start("t1")
        armor.wait_idle()
        registered = [e.payload for e in armor.history(kind="hook.registered")]
    assert seen == ["task.started"]
    assert [(p["hook"], p["api"], p["point"]) for p in registered] == [("watch", "classic", "after_start")]


@pytest.mark.parametrize("point", list(HOOK_POINTS))
def test_off_refuses_every_point_and_records_nothing(tmp_path: Path, point: str) -> None:
    kind, stage = HOOK_POINTS[point]
    with Armor(state_dir=tmp_path / "s", classic_hooks=False) as armor:
        with pytest.raises(ClassicHooksOff) as caught:
            armor.hook(point, lambda e: None, name="legacy")
        with pytest.raises(ConfigError):  # the decorator form and the named shortcut too
            getattr(armor, point)(lambda e: None)
        with pytest.raises(ConfigError):
            armor.hook(point)(lambda e: None)
        assert armor.hooks.list(point=point) == []
        assert list(armor.history(kind="hook.registered")) == []
    message = str(caught.value)
    assert "legacy" in message and "ARMOR_RX_CLASSIC_HOOKS" in message
    wrapper = "guard" if stage == "before" else "observe"
    assert f"armor.use({wrapper}(fn, kinds='{kind}'), stage='{stage}')" in message
    assert "\n" not in message


def test_the_operator_the_message_names_does_the_job(tmp_path: Path) -> None:
    """The migration works: the suggested operator vetoes exactly as the classic before_start did."""
    def no_fridays(event: object) -> str:
        return "not on a Friday"

    with Armor(state_dir=tmp_path / "s", classic_hooks=False) as armor:
        with pytest.raises(ClassicHooksOff):
            armor.hook("before_start", no_fridays)
        # What the message says to write:
        assert operator_equivalent("before_start") == "armor.use(guard(fn, kinds='task.start.requested'), stage='before')"
        armor.use(guard(no_fridays, kinds="task.start.requested"), stage="before")
        seen: list[str] = []
        armor.use(observe(lambda e: seen.append(e.kind), kinds="task.failed"), stage="after", name="failures")
        armor.create_task("t1")
        with pytest.raises(Vetoed, match="not on a Friday"):
            armor.start("t1")
        armor.wait_idle()
        apis = [e.payload["api"] for e in armor.history(kind="hook.registered")]
    assert apis == ["operator", "operator"]
    assert seen == ["task.failed"]


def test_the_hook_set_itself_refuses_classic_hooks() -> None:
    """The switch sits where every hook is added, so no path around the session API gets one in."""
    hooks = HookSet(classic=False)
    with pytest.raises(ClassicHooksOff):
        hooks.add(classic_hook("after_fail", lambda e: None))
    assert hooks.list() == []
    assert HookSet().add(classic_hook("after_fail", lambda e: None)).api == "classic"


@pytest.mark.parametrize(("raw", "expected"), [("0", False), ("off", False), ("no", False), ("1", True), ("on", True), ("", True)])
def test_environment_variable(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("ARMOR_RX_CLASSIC_HOOKS", raw)
    assert SessionConfig().classic_hooks is expected
    assert SessionConfig(classic_hooks=True).classic_hooks is True  # an explicit value wins


def test_bad_values_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARMOR_RX_CLASSIC_HOOKS", "maybe")
    with pytest.raises(ConfigError, match="ARMOR_RX_CLASSIC_HOOKS must be 1 or 0.*'maybe'"):
        SessionConfig()
    monkeypatch.delenv("ARMOR_RX_CLASSIC_HOOKS")
    with pytest.raises(ConfigError, match="classic_hooks must be True, False or None"):
        SessionConfig(classic_hooks="off")  # type: ignore[arg-type]
