"""One API: the in-process session, the service's client and their async faces cannot drift apart."""

from __future__ import annotations

import inspect

import pytest

from armor_rx.api import ArmorAPI, AsyncArmorBase
from armor_rx.client.sync import RemoteArmor
from armor_rx.session import Armor

METHODS = sorted(name for name, value in vars(ArmorAPI).items() if callable(value) and not name.startswith("_"))


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values() if p.name != "self"]


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("impl", [Armor, RemoteArmor], ids=["Armor", "RemoteArmor"])
def test_every_operation_has_the_protocols_signature(impl, name):
    wanted = _params(getattr(ArmorAPI, name))
    got = _params(getattr(impl, name))
    # An implementation may take more keyword-only options, never fewer or different ones.
    assert got[: len(wanted)] == wanted or [p for p in got if p in wanted] == wanted, (impl.__name__, name, got)


@pytest.mark.parametrize("name", [m for m in METHODS if m != "close"])
def test_the_async_face_has_every_operation_awaitable(name):
    method = getattr(AsyncArmorBase, name)
    assert inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method), name
    sync = {p[0] for p in _params(getattr(ArmorAPI, name))}
    awaited = {p[0] for p in _params(method)}
    assert sync - {"since"} <= awaited | {"since"}, (name, sync - awaited)


def test_both_sessions_are_instances_of_the_protocol(repo, no_docker):
    import armor_rx

    with Armor(repo) as armor:
        assert isinstance(armor, ArmorAPI)
    with armor_rx.connect(repo) as remote:
        assert isinstance(remote, ArmorAPI)
