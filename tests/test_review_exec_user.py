"""Review: root spelled with leading zeros is still root.

The engine parses a numeric user with strconv.Atoi, so ``docker exec -u 00``
runs as uid 0 and ``-u 1:00`` in root's group (checked on the real dockerd:
``00 -> uid=0(root)``, ``000:1 -> uid=0(root)``, ``1:00 -> gid=0(root)``).
The checks compared spellings ("0"), so an exec's ``user="00"`` (or a sandbox
``user="00"``) passed as "numeric, non-root" without ``allow_root``: a
command as uid 0 owns armor's root-owned worktree files and can chmod u+s
one of them into a setuid-root program on the host. Invariant: every
spelling the engine reads as uid 0 or gid 0 is refused without allow_root;
digits of other scripts (which the engine reads as names) are not numeric.
Cases: 9 refused exec users, 3 refused sandbox users, 2 accepted.
"""

from __future__ import annotations

import pytest

from armor_rx.errors import ConfigError
from armor_rx.sinks.docker.identity import check_exec_user, resolve_identity
from armor_rx.sinks.docker.spec import SandboxSpec


@pytest.mark.parametrize("user", ["00", "000:1", "0000:0000", "1:00", "61000:000", " 00", "\u0660", "61000:\u0660", "0:5"])
def test_every_spelling_of_root_is_refused_for_an_exec(user):
    with pytest.raises(ConfigError):
        check_exec_user(SandboxSpec(), user)


@pytest.mark.parametrize("user", ["00", "000:1234", "1234:00"])
def test_every_spelling_of_root_is_refused_for_the_sandbox(user):
    with pytest.raises(ConfigError):
        resolve_identity(SandboxSpec().with_overrides({"user": user}))


def test_ordinary_numeric_users_still_pass():
    check_exec_user(SandboxSpec(), "1234:5678")
    assert resolve_identity(SandboxSpec().with_overrides({"user": "0100:0200"})).uid == 100
