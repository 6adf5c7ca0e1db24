"""The MCP server over the SDK's in-memory transport, on an in-process session (no service, no Docker)."""

from __future__ import annotations

import asyncio
import os

from tests.mcp.conftest import error, memory_client, result


def run(coroutine):
    return asyncio.run(coroutine)


def test_every_tool_is_listed_with_the_schema_of_its_one_definition(repo):
    from armor_rx.model.merge import MERGE_MODES
    from armor_rx.tools import TOOL_NAMES, ArmorTools, tool_specs

    async def main():
        async with memory_client(repo) as client:
            listed = (await client.list_tools()).tools
            specs = {s.name: s for s in tool_specs(ArmorTools(client.armor))}
            return listed, specs, client.instructions

    listed, specs, instructions = run(main())
    assert [t.name for t in listed] == list(TOOL_NAMES)
    for tool in listed:
        spec = specs[tool.name]
        assert tool.input_schema == spec.input_schema, tool.name
        assert tool.description == spec.description and len(tool.description) > 30, tool.name
        assert tool.output_schema is not None and "cli" in tool.output_schema["properties"], tool.name
    by_name = {t.name: t for t in listed}
    assert set(by_name["file_write"].input_schema["required"]) == {"path", "content"}
    assert set(by_name["file_edit"].input_schema["required"]) == {"path", "old", "new"}
    assert by_name["complete"].input_schema["properties"]["merge"]["enum"] == list(MERGE_MODES)
    assert "task" not in by_name["run_command"].input_schema["required"]
    assert by_name["file_read"].annotations.read_only_hint and by_name["file_delete"].annotations.destructive_hint
    assert "task_create" in instructions and "checkpoint" in instructions and "rollback" in instructions


def test_a_task_worked_through_the_file_tools_then_checked_with_git(repo, git):
    async def main():
        async with memory_client(repo) as client:
            call = client.call_tool
            created = result(await call("task_create", {"name": "notes"}))
            assert created["state"] == "running" and created["branch"] == "task/notes"
            assert (
                result(await call("file_write", {"task": "notes", "path": "docs/a.txt", "content": "one\ntwo\ntwo\n"}))[
                    "action"
                ]
                == "created"
            )
            assert "occurs 2 times" in error(
                await call("file_edit", {"task": "notes", "path": "docs/a.txt", "old": "two", "new": "2"})
            )
            result(
                await call(
                    "file_edit", {"task": "notes", "path": "docs/a.txt", "old": "two", "new": "2", "occurrence": 2}
                )
            )
            read = result(
                await call("file_read", {"task": "notes", "path": "docs/a.txt", "start_line": 2, "end_line": 3})
            )
            assert read["content"] == "two\n2\n" and read["total_lines"] == 3
            long_line = "y" * 100_000 + "\n"
            result(await call("file_write", {"task": "notes", "path": "big.txt", "content": long_line * 5}))
            big = result(await call("file_read", {"task": "notes", "path": "big.txt"}))
            assert big["total_lines"] == 5 and big["end_line"] == 3 and big["content"] == long_line * 3
            past_end = result(await call("file_read", {"task": "notes", "path": "big.txt", "start_line": 9}))
            assert past_end["content"] == "" and past_end["end_line"] == 8
            result(await call("file_write", {"task": "notes", "path": "bin.dat", "content": "x"}))
            (await client.armor.worktree("notes")).joinpath("bin.dat").write_bytes(b"\xff\xfe")
            assert "not UTF-8 text" in error(
                await call("file_edit", {"task": "notes", "path": "bin.dat", "old": "a", "new": "b"})
            )
            result(await call("file_delete", {"task": "notes", "path": "big.txt"}))
            result(await call("file_delete", {"task": "notes", "path": "bin.dat"}))
            cp = result(await call("checkpoint", {"task": "notes", "message": "good"}))
            assert cp["cli"].startswith("armor-rx checkpoints notes")
            result(await call("file_write", {"task": "notes", "path": "docs/a.txt", "content": "broken\n"}))
            result(await call("file_delete", {"task": "notes", "path": "README.md"}))
            diff = result(await call("diff", {"task": "notes", "checkpoint": cp["checkpoint"]}))
            assert {f["path"] for f in diff["files"]} == {"docs/a.txt", "README.md"}
            assert diff["cli"] == f"armor-rx diff notes {cp['checkpoint']} --repo {repo}"
            result(await call("rollback", {"task": "notes", "checkpoint": cp["checkpoint"]}))
            assert (
                result(await call("file_read", {"task": "notes", "path": "docs/a.txt"}))["content"] == "one\ntwo\n2\n"
            )
            listing = result(await call("file_list", {"task": "notes", "recursive": True}))
            assert [e["path"] for e in listing["entries"]] == ["README.md", "docs", "docs/a.txt"]
            status = result(await call("task_status", {"task": "notes"}))
            assert any(e["kind"] == "checkpoint.created" for e in status["recent_events"])
            done = result(await call("complete", {"task": "notes", "message": "notes by the agent"}))
            assert done["state"] == "completed"
            assert [t["task"] for t in result(await call("task_list", {}))["tasks"]] == ["notes"]

    run(main())
    assert git(repo, "log", "-1", "--format=%s", "task/notes").strip() == "notes by the agent"
    assert git(repo, "show", "task/notes:docs/a.txt") == "one\ntwo\n2\n"
    git(repo, "fsck", "--strict")


def test_paths_outside_the_worktree_are_refused_and_nothing_outside_changes(repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep\n")

    async def main():
        async with memory_client(repo, task="esc") as client:
            call = client.call_tool
            result(await call("task_create", {"name": "esc"}))
            worktree = await client.armor.worktree("esc")
            # What a command in the container could plant: symlinks leading out, to a file and to a directory.
            os.symlink(outside / "secret", worktree / "to-secret")
            os.symlink(outside, worktree / "to-dir")
            messages = [
                error(await call("file_write", {"path": "../escape", "content": "x"})),
                error(await call("file_write", {"path": str(outside / "abs"), "content": "x"})),
                error(await call("file_write", {"path": "to-secret", "content": "x"})),
                error(await call("file_write", {"path": "to-dir/new", "content": "x"})),
                error(await call("file_edit", {"path": "to-secret", "old": "keep", "new": "lost"})),
                error(await call("file_read", {"path": "to-secret"})),
                error(await call("file_read", {"path": ".git/config"})),
                error(await call("file_list", {"path": "to-dir"})),
                error(await call("file_delete", {"path": "to-dir/secret"})),
            ]
            for message in messages:
                assert "refused" in message or "no directory" in message, message
            # Deleting the planted link removes the link itself, never what it points at.
            assert result(await call("file_delete", {"path": "to-secret"}))["detail"] == "symlink"
            return messages

    messages = run(main())
    assert "'..'" in messages[0] and "absolute" in messages[1] and "outside" in messages[2]
    assert (outside / "secret").read_text() == "keep\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def test_a_guards_veto_reaches_the_agent_as_an_error_with_its_reason(repo):
    from armor_rx.operators import guard

    async def main():
        async with memory_client(repo) as client:
            client.armor.sync.use(
                guard(
                    lambda e: "no tasks named after production" if "prod" in (e.task_id or "") else None,
                    kinds="task.start.requested",
                    name="no-prod",
                )
            )
            message = error(await client.call_tool("task_create", {"name": "prod-fix"}))
            ok = result(await client.call_tool("task_create", {"name": "dev-fix"}))
            return message, ok

    message, ok = run(main())
    assert "vetoed by hook 'no-prod': no tasks named after production" in message
    assert ok["state"] == "running"


def test_bad_calls_are_one_line_errors_and_the_server_goes_on(repo):
    async def main():
        async with memory_client(repo) as client:
            call = client.call_tool
            messages = [
                error(await call("file_read", {"path": "a.txt"})),  # no task and no --task
                error(await call("task_status", {"task": "nope"})),
                error(await call("task_create", {"name": "Bad Name"})),
                error(await call("file_read", {"task": "x", "path": 3})),  # wrong type: the schema refuses it
                error(await call("command_output", {"job": "job-9"})),
            ]
            result(await call("task_create", {"name": "x"}))
            messages.append(error(await call("file_read", {"task": "x", "path": "missing.txt"})))
            messages.append(
                error(await call("file_edit", {"task": "x", "path": "README.md", "old": "absent", "new": "y"}))
            )
            messages.append(error(await call("task_create", {"name": "x"})))
            assert result(await call("task_list", {}))["tasks"][0]["task"] == "x"
            return messages

    messages = run(main())
    assert "no task given" in messages[0]
    assert "nope" in messages[1]
    assert "no background job 'job-9'" in messages[4]
    assert "no file 'missing.txt'" in messages[5]
    assert "was not found" in messages[6]
    assert "already exists" in messages[7]


def test_the_default_task_lets_the_agent_leave_it_out(repo):
    async def main():
        async with memory_client(repo, task="solo") as client:
            assert "Your task is 'solo'" in client.instructions
            result(await client.call_tool("task_create", {"name": "solo"}))
            result(await client.call_tool("file_write", {"path": "f.txt", "content": "hi\n"}))
            return result(await client.call_tool("diff", {"stat_only": True}))

    diff = run(main())
    assert diff["task"] == "solo" and diff["patch"] == "" and [f["path"] for f in diff["files"]] == ["f.txt"]
