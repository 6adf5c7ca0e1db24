from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from armor_rx.errors import InvalidBranchName, InvalidTaskId
from armor_rx.sinks.git.names import (
    BRANCH_MAX,
    branch_for_task,
    unique_branch_name,
    validate_branch_name,
)


def test_task_branch_name() -> None:
    assert branch_for_task("fix-login") == "task/fix-login"


@pytest.mark.parametrize(
    "bad",
    ["", "main", "task/", "task/Fix", "task/a..b", "task/-a", "-task/a", "task/a@{1}", "task/a b",
     "task/a\x00", "task/a.lock", "task/a/", "task//a", "task/a~1", "task/a:b", "task/" + "a" * 200],
)
def test_bad_branch_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidBranchName):
        validate_branch_name(bad)


@pytest.mark.parametrize("bad", ["..", "a/b", "-a", "A", "a\n", ""])
def test_bad_task_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidTaskId):
        branch_for_task(bad)


def test_unique_name_is_valid_and_bounded() -> None:
    long_id = "a" * 63
    names = {unique_branch_name(long_id) for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert len(name) <= BRANCH_MAX
        assert re.fullmatch(r"task/a+-\d{14}-[0-9a-f]{6}", name)


@settings(max_examples=60, deadline=None)
@given(hs.text(alphabet="abz09-./@{}~^: \\\x00\x7fA", max_size=30))
def test_accepted_names_satisfy_git(text: str) -> None:
    try:
        name = validate_branch_name("task/" + text)
    except InvalidBranchName:
        return
    ok = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True)
    assert ok.returncode == 0, name
    assert ".." not in name and "@{" not in name
