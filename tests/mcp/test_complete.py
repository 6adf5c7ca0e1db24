"""The ``complete`` tool's merge modes: one per mode in process, a conflict over real stdio, checked with the git CLI.

Each scenario is two (or three) tasks forked from the same ``main``: the first
lands, then the next is completed with the mode under test, so the base has
moved under it as it does when agents work in parallel.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import get_args

import pytest

from tests.mcp.conftest import error, memory_client, result, stdio_client

LINES = "".join(f"line {i}\n" for i in range(1, 11))


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def lines_repo(repo, git):
    """``repo`` with a ten-line file on main, so two tasks can change the same or different lines."""
    (repo / "lines.txt").write_text(LINES)
    git(repo, "add", "lines.txt")
    git(repo, "commit", "-qm", "ten lines")
    return repo


@asynccontextmanager
async def toolkit(repo):
    from armor_rx import AsyncArmor
    from armor_rx.tools import ArmorTools

    async with AsyncArmor(repo) as armor:
        tools = ArmorTools(armor, repo=repo)
        try:
            yield tools
        finally:
            await tools.aclose()


async def edit(tools, task, line, text, path="lines.txt"):
    """Make ``task`` (created now if new) change ``line`` of ``path`` to ``text``."""
    if task not in [t["task"] for t in (await tools.task_list())["tasks"]]:
        await tools.task_create(task)
    await tools.file_edit(path, f"line {line}\n", f"{text}\n", task=task)


def state(git, repo):
    """main's tip, its parents, and whether the user's checkout is clean (the real git CLI)."""
    tip = git(repo, "rev-parse", "main").strip()
    parents = git(repo, "log", "-1", "--format=%P", "main").split()
    git(repo, "fsck", "--strict")
    return tip, parents, git(repo, "status", "--porcelain")


# -- the modes the tool offers are the session's, with a description for each --------------------------------


def test_the_tools_merge_modes_are_the_sessions_and_each_is_described(repo):
    from armor_rx import AsyncArmor
    from armor_rx.mcp.server import instructions
    from armor_rx.model.merge import MERGE_MODES, MergeMode
    from armor_rx.tools import ArmorTools, tool_specs
    from armor_rx.tools.toolkit import MERGE_HELP

    async def main():
        async with AsyncArmor(repo) as armor:
            return {s.name: s for s in tool_specs(ArmorTools(armor, repo=repo))}

    merge = run(main())["complete"].input_schema["properties"]["merge"]
    assert get_args(MergeMode) == MERGE_MODES
    assert merge["enum"] == list(MERGE_MODES) and merge["default"] == "none"
    assert set(MERGE_HELP) == set(MERGE_MODES)
    for mode in MERGE_MODES:
        assert f"'{mode}': {MERGE_HELP[mode]}" in merge["description"], mode
        assert f"'{mode}'" in instructions(), f"the server's instructions never mention {mode!r}"


# -- one scenario per mode, in process ------------------------------------------------------------------------


def test_none_commits_to_the_task_branch_and_merges_nothing(lines_repo, git):
    before = state(git, lines_repo)

    async def main():
        async with toolkit(lines_repo) as tools:
            await edit(tools, "a", 1, "one")
            return await tools.complete("first line", task="a")

    done = run(main())
    assert (done["state"], done["merge"], done["merged"], done["conflicts"]) == ("completed", "none", False, [])
    assert done["commit"] == git(lines_repo, "rev-parse", "task/a").strip() and done["merge_commit"] is None
    assert "nothing merged" in done["summary"] and done["branch"] == "task/a"
    assert state(git, lines_repo) == before
    assert git(lines_repo, "show", "task/a:lines.txt").startswith("one\nline 2\n")


def test_ff_fast_forwards_then_refuses_a_base_that_moved(lines_repo, git):
    async def main():
        async with toolkit(lines_repo) as tools:
            await edit(tools, "a", 1, "one")
            await edit(tools, "b", 10, "ten")
            first = await tools.complete("a", merge="ff", task="a")
            after_first = state(git, lines_repo)
            second = await tools.complete("b", merge="ff", task="b")
            return first, after_first, second

    first, after_first, second = run(main())
    assert first["merged"] and first["reason"] == "fast-forward" and first["base_branch"] == "refs/heads/main"
    assert first["merge_commit"] == first["commit"] == after_first[0] and after_first[2] == ""
    assert "Merged into main" in first["summary"]
    assert not second["merged"] and second["reason"] == "not-fast-forward" and second["state"] == "completed"
    assert "NOT merged into main" in second["summary"] and "'three-way'" in second["summary"]
    assert state(git, lines_repo) == after_first  # main did not move
    assert second["commit"] == git(lines_repo, "rev-parse", "task/b").strip()


@pytest.mark.parametrize("mode", ["merge", "three-way"])
def test_merge_and_three_way_combine_other_lines_and_refuse_the_same_lines(lines_repo, git, mode):
    async def main():
        async with toolkit(lines_repo) as tools:
            await edit(tools, "a", 1, "one")
            await edit(tools, "b", 10, "ten")
            await edit(tools, "c", 1, "uno")
            first = await tools.complete("a", merge=mode, task="a")
            second = await tools.complete("b", merge=mode, task="b")
            after_second = state(git, lines_repo)
            third = await tools.complete("c", merge=mode, task="c")
            return first, second, after_second, third

    first, second, after_second, third = run(main())
    assert first["merged"] and first["reason"] == "fast-forward"
    assert second["merged"] and second["reason"] == "merge" and second["merge_commit"] == after_second[0]
    assert after_second[1] == [first["commit"], second["commit"]] and after_second[2] == ""
    assert (lines_repo / "lines.txt").read_text() == "one\n" + LINES[len("line 1\n"):-len("line 10\n")] + "ten\n"
    assert not third["merged"] and third["reason"] == "conflict" and third["conflicts"] == ["lines.txt"]
    assert third["merge_commit"] is None and "same lines of lines.txt" in third["summary"]
    assert state(git, lines_repo) == after_second
    assert git(lines_repo, "show", "task/c:lines.txt").startswith("uno\n")


def test_first_wins_refuses_a_file_the_base_changed_even_on_other_lines_and_names_the_winner(lines_repo, git):
    async def main():
        async with toolkit(lines_repo) as tools:
            await edit(tools, "a", 1, "one")
            await edit(tools, "b", 10, "ten")
            await tools.task_create("c")
            await tools.file_write("other.txt", "c's own file\n", task="c")
            first = await tools.complete("a wins", merge="first-wins", task="a")
            after_first = state(git, lines_repo)
            second = await tools.complete("b", merge="first-wins", task="b")
            third = await tools.complete("c", merge="first-wins", task="c")
            return first, after_first, second, third

    first, after_first, second, third = run(main())
    assert first["merged"]
    assert not second["merged"] and second["reason"] == "conflict" and second["conflicts"] == ["lines.txt"]
    assert second["landed"] == {"lines.txt": {"commit": first["commit"], "subject": "a wins"}}
    assert "first-wins" in second["summary"] and "lines.txt" in second["summary"]
    assert third["merged"] and third["reason"] == "merge"  # a file nobody else touched still lands
    tip, parents, clean = state(git, lines_repo)
    assert parents == [after_first[0], third["commit"]] and clean == ""
    assert git(lines_repo, "show", "main:lines.txt") == "one\n" + LINES[len("line 1\n"):]


def test_rebase_replays_onto_the_base_linearly_and_refuses_a_conflicting_replay(lines_repo, git):
    async def main():
        async with toolkit(lines_repo) as tools:
            await edit(tools, "a", 1, "one")
            await edit(tools, "b", 10, "ten")
            await edit(tools, "c", 1, "uno")
            first = await tools.complete("a", merge="rebase", task="a")
            second = await tools.complete("b replayed", merge="rebase", task="b")
            after_second = state(git, lines_repo)
            third = await tools.complete("c", merge="rebase", task="c")
            return first, second, after_second, third

    first, second, after_second, third = run(main())
    assert first["merged"] and second["merged"] and second["reason"] == "rebase"
    tip, parents, clean = after_second
    assert second["merge_commit"] == tip and parents == [first["commit"]] and clean == ""  # linear: one parent
    assert tip != second["commit"]  # a new commit on main; task/b keeps its own
    assert git(lines_repo, "log", "-1", "--format=%s", "main").strip() == "b replayed"
    assert git(lines_repo, "show", "main:lines.txt").endswith("line 9\nten\n")
    assert not third["merged"] and third["reason"] == "conflict" and third["conflicts"] == ["lines.txt"]
    assert state(git, lines_repo) == after_second


def test_manual_leaves_the_branch_and_returns_the_commands_for_a_person(lines_repo, git):
    before = state(git, lines_repo)

    async def main():
        async with toolkit(lines_repo) as tools:
            await edit(tools, "a", 1, "one")
            return await tools.complete("for review", merge="manual", task="a")

    done = run(main())
    assert not done["merged"] and done["reason"] == "manual" and done["state"] == "completed"
    assert done["base_branch"] == "refs/heads/main" and done["branch"] == "task/a"
    assert done["how"]["merge"] == "git switch main && git merge --no-ff task/a"
    assert set(done["how"]) == {"merge", "rebase", "inspect"} and done["how"]["merge"] in done["summary"]
    assert state(git, lines_repo) == before


def test_an_unknown_mode_is_refused_before_anything_happens(lines_repo):
    from armor_rx.tools import ToolInputError

    async def main():
        async with toolkit(lines_repo) as tools:
            await edit(tools, "a", 1, "one")
            with pytest.raises(ToolInputError, match="merge must be one of none, ff, merge, first-wins"):
                await tools.complete("x", merge="octopus", task="a")
            return (await tools.task_status("a"))["state"]

    assert run(main()) == "running"


def test_through_mcp_in_memory_every_mode_is_accepted_and_an_unknown_one_is_an_error_result(lines_repo):
    async def main():
        async with memory_client(lines_repo) as client:
            call = client.call_tool
            result(await call("task_create", {"name": "a"}))
            refused = error(await call("complete", {"task": "a", "merge": "octopus"}))
            status = result(await call("task_status", {"task": "a"}))
            result(await call("file_edit", {"task": "a", "path": "lines.txt", "old": "line 3", "new": "three"}))
            done = result(await call("complete", {"task": "a", "merge": "rebase"}))
            return refused, status, done

    refused, status, done = run(main())
    assert "merge" in refused and "three-way" in refused and status["state"] == "running"
    assert done["merged"] and done["reason"] == "fast-forward" and done["merge"] == "rebase"


# -- a conflict over real stdio, the way an agent meets it ---------------------------------------------------


def test_a_three_way_conflict_over_stdio_is_a_result_and_main_is_untouched(lines_repo, git, no_docker):
    async def main():
        async with stdio_client(lines_repo) as client:
            call = client.call_tool
            for name, text in (("first", "one"), ("second", "uno")):
                result(await call("task_create", {"name": name}))
                edit = {"task": name, "path": "lines.txt", "old": "line 1\n", "new": text + "\n"}
                result(await call("file_edit", edit))
            landed = result(await call("complete", {"task": "first", "message": "first", "merge": "three-way"}))
            log_before = await asyncio.to_thread(git, lines_repo, "log", "--format=%H %P %s", "main")
            refused = await call("complete", {"task": "second", "message": "second", "merge": "three-way"})
            # The server goes on serving after it.
            listed = result(await call("task_list", {}))
            return landed, log_before, refused, listed

    landed, log_before, refused, listed = run(main())
    assert landed["merged"] and landed["reason"] == "fast-forward"
    outcome = result(refused)  # a result the agent reads, not an error, not a crash
    assert (outcome["merged"], outcome["reason"], outcome["conflicts"]) == (False, "conflict", ["lines.txt"])
    assert outcome["state"] == "completed" and outcome["merge_commit"] is None
    assert outcome["summary"].startswith("NOT merged into main") and "lines.txt" in outcome["summary"]
    assert json.loads(refused.content[0].text) == outcome  # what a client showing only text gives the model
    assert {t["task"]: t["state"] for t in listed["tasks"]} == {"first": "completed", "second": "completed"}
    # The base branch is as the first task left it, checked with the real git CLI.
    assert git(lines_repo, "log", "--format=%H %P %s", "main") == log_before
    assert git(lines_repo, "rev-parse", "main").strip() == landed["commit"]
    assert git(lines_repo, "show", "main:lines.txt") == "one\n" + LINES[len("line 1\n"):]
    assert (lines_repo / "lines.txt").read_text() == "one\n" + LINES[len("line 1\n"):]
    assert git(lines_repo, "status", "--porcelain") == ""
    assert git(lines_repo, "show", "task/second:lines.txt").startswith("uno\n")
    git(lines_repo, "fsck", "--strict")
