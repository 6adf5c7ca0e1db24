"""``armor-rx mcp`` as a real stdio subprocess, driven by the mcp SDK's own client, on the real service and dockerd."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from tests.mcp.conftest import error, result, service_info, stdio_client

TESTS = (
    "#!/bin/sh\n# the project's test suite: greet must say hello\n"
    "grep -q 'hello' greet.sh && sh greet.sh | grep -qx 'hello world'\n"
)


def run(coroutine):
    return asyncio.run(coroutine)


def _run_hints(hints, repo):
    """Every 'cli' hint is a command a person can run: it exits 0 and names the same things."""
    import shlex

    assert len(hints) >= 6, hints
    for hint in sorted(hints):
        argv = shlex.split(hint)
        assert argv[0] == "armor-rx" and argv[-2:] == ["--repo", str(repo)], hint
        proc = subprocess.run(
            [sys.executable, "-m", "armor_rx", *argv[1:]], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, (hint, proc.stderr)
        assert proc.stdout.strip(), hint


def test_the_subprocess_lists_its_tools_and_instructions(repo, no_docker):
    from armor_rx.tools import TOOL_NAMES

    async def main():
        async with stdio_client(repo) as client:
            tools = (await client.list_tools()).tools
            return [t.name for t in tools], client.instructions, client.server_info

    names, instructions, info = run(main())
    assert names == list(TOOL_NAMES)
    assert "task_create" in instructions and info.name == "armor-rx"


@pytest.mark.docker
@pytest.mark.slow
def test_an_agents_whole_task_through_mcp_then_checked_with_git(repo, git, test_image, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep\n")

    async def main():
        async with stdio_client(repo) as client:
            call = client.call_tool
            created = result(await call("task_create", {"name": "greet", "image": test_image}))
            assert created["state"] == "running" and created["branch"] == "task/greet"
            result(await call("file_write", {"task": "greet", "path": "run_tests.sh", "content": TESTS}))
            result(await call("file_write", {"task": "greet", "path": "greet.sh", "content": "echo hello world\n"}))
            tests = result(await call("run_command", {"task": "greet", "command": "sh run_tests.sh && echo PASS"}))
            assert tests["exit_code"] == 0 and tests["output"] == "PASS\n", tests
            assert tests["cli"] == f"armor-rx events --task greet --kind 'exec.*' --repo {repo}"
            good = result(await call("checkpoint", {"task": "greet", "message": "tests pass"}))
            # The mistake: an edit that breaks the tests, then the rollback.
            result(await call("file_edit", {"task": "greet", "path": "greet.sh", "old": "hello", "new": "goodbye"}))
            failing = result(await call("run_command", {"task": "greet", "command": "sh run_tests.sh"}))
            assert failing["exit_code"] == 1
            result(await call("rollback", {"task": "greet", "checkpoint": good["checkpoint"]}))
            assert result(await call("run_command", {"task": "greet", "command": "sh run_tests.sh"}))["exit_code"] == 0
            # Output is capped and its full size stated.
            big = result(await call("run_command", {"task": "greet", "command": "seq 1 20000"}))
            assert big["truncated"] and big["output_bytes"] == len("".join(f"{i}\n" for i in range(1, 20001)))
            assert (
                big["output"].startswith("1\n2\n")
                and big["output"].endswith("19999\n20000\n")
                and "left out" in big["output"]
            )
            # A background command, read later.
            job = result(
                await call(
                    "run_command_background", {"task": "greet", "command": "echo started; sleep 1; echo finished"}
                )
            )
            done = result(await call("command_output", {"job": job["job"], "wait": 60}))
            assert not done["running"] and done["exit_code"] == 0 and done["output"] == "started\nfinished\n"
            # What a command can plant to lure the file tools out of the worktree.
            planted = result(
                await call(
                    "run_command",
                    {
                        "task": "greet",
                        "command": f"ln -s {outside}/secret planted && ln -s {outside} planted-dir && ln -s / root",
                    },
                )
            )
            assert planted["exit_code"] == 0
            refusals = [
                error(await call("file_read", {"task": "greet", "path": "planted"})),
                error(await call("file_write", {"task": "greet", "path": "planted", "content": "x"})),
                error(await call("file_write", {"task": "greet", "path": "planted-dir/new", "content": "x"})),
                error(await call("file_write", {"task": "greet", "path": "root/tmp/x", "content": "x"})),
                error(await call("file_read", {"task": "greet", "path": "/etc/passwd"})),
                error(await call("file_read", {"task": "greet", "path": "../../../README.md"})),
            ]
            for path in ("planted", "planted-dir", "root"):
                result(await call("file_delete", {"task": "greet", "path": path}))
            status = result(await call("task_status", {"task": "greet", "events": 50}))
            assert any(e["kind"] == "checkpoint.created" for e in status["recent_events"])
            hints = {
                status["cli"],
                tests["cli"],
                good["cli"],
                result(await call("diff", {"task": "greet"}))["cli"],
                result(await call("diff", {"task": "greet", "checkpoint": good["checkpoint"]}))["cli"],
                result(await call("file_write", {"task": "greet", "path": "n.txt", "content": "n"}))["cli"],
                result(await call("task_list", {}))["cli"],
            }
            await asyncio.to_thread(_run_hints, hints, repo)
            result(await call("file_delete", {"task": "greet", "path": "n.txt"}))
            done = result(await call("complete", {"task": "greet", "message": "greet says hello world", "merge": "ff"}))
            assert done["state"] == "completed" and done["detail"]["merged"] is True
            return refusals

    refusals = run(main())
    assert all("refused" in message for message in refusals), refusals
    assert (outside / "secret").read_text() == "keep\n" and not os.path.exists("/tmp/x")
    assert git(repo, "log", "-1", "--format=%s", "main").strip() == "greet says hello world"
    assert git(repo, "show", "main:greet.sh") == "echo hello world\n"
    assert set(git(repo, "ls-tree", "--name-only", "main").split()) == {"README.md", "greet.sh", "run_tests.sh"}
    git(repo, "fsck", "--strict")


@pytest.mark.docker
@pytest.mark.slow
def test_two_agents_on_one_repository_through_two_mcp_servers(repo, git, test_image):
    async def agent(name):
        async with stdio_client(repo, "--task", name) as client:
            call = client.call_tool
            result(await call("task_create", {"name": name, "image": test_image}))
            for i in range(3):
                result(await call("file_write", {"path": f"{name}/{i}.txt", "content": f"{name} {i}\n"}))
                ran = result(await call("run_command", {"command": f"cat {name}/{i}.txt"}))
                assert ran["output"] == f"{name} {i}\n"
            result(await call("checkpoint", {"message": "three files"}))
            return result(await call("complete", {"message": f"work of {name}"}))

    async def main():
        return await asyncio.gather(agent("agent-a"), agent("agent-b"))

    outcomes = run(main())
    assert [o["state"] for o in outcomes] == ["completed", "completed"]
    for name in ("agent-a", "agent-b"):
        assert git(repo, "log", "-1", "--format=%s", f"task/{name}").strip() == f"work of {name}"
        assert git(repo, "ls-tree", "--name-only", f"task/{name}", f"{name}/").split() == [
            f"{name}/{i}.txt" for i in range(3)
        ]
    git(repo, "fsck", "--strict")


@pytest.mark.docker
@pytest.mark.slow
def test_killing_the_service_mid_call_gives_an_error_result_not_a_hang(repo, test_image):
    from tests.service.conftest import kill_service

    async def main():
        async with stdio_client(repo, "--task", "longjob") as client:
            result(await client.call_tool("task_create", {"name": "longjob", "image": test_image}))
            call = asyncio.ensure_future(client.call_tool("run_command", {"command": "echo begun; sleep 120"}))
            deadline = time.monotonic() + 60
            events = [sys.executable, "-m", "armor_rx", "events", "--repo", str(repo), "--task", "longjob"]
            while (
                "exec.output"
                not in (await asyncio.to_thread(subprocess.run, events, capture_output=True, text=True)).stdout
            ):
                assert time.monotonic() < deadline, "the command never started"
                await asyncio.sleep(0.2)
            killed_at = time.monotonic()
            await asyncio.to_thread(kill_service, repo / ".armor")
            outcome = await asyncio.wait_for(call, 30)
            waited = time.monotonic() - killed_at
            message = error(outcome)
            # The server lives on: the next call starts a new service, which found the task interrupted.
            status = result(await client.call_tool("task_status", {}))
            resumed = result(await client.call_tool("task_resume", {}))
            assert resumed["state"] == "running"
            assert result(await client.call_tool("run_command", {"command": "echo again"}))["output"] == "again\n"
            result(await client.call_tool("cancel", {"reason": "test over"}))
            return message, waited, status

    message, waited, status = run(main())
    assert "went away" in message and "run it again" in message, message
    assert waited < 30
    assert status["state"] == "interrupted"
    assert service_info(repo / ".armor") is not None


def test_print_config_gives_valid_snippets_that_start_this_installation(repo):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib

    def config(client, *extra):
        proc = subprocess.run(
            [sys.executable, "-m", "armor_rx", "mcp", "--repo", str(repo), "--print-config", client, *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    claude = json.loads(config("claude-code"))["mcpServers"]["armor-rx"]
    opencode = json.loads(config("opencode"))["mcp"]["armor-rx"]
    codex = tomllib.loads(config("codex", "--task", "fix-it"))["mcp_servers"]["armor-rx"]
    assert claude["type"] == "stdio" and claude["args"][-3:] == ["mcp", "--repo", str(repo)]
    assert (
        opencode["type"] == "local" and opencode["command"][-3:] == ["mcp", "--repo", str(repo)] and opencode["enabled"]
    )
    assert codex["args"][-5:] == ["mcp", "--repo", str(repo), "--task", "fix-it"]
    for argv in ([claude["command"], *claude["args"]], opencode["command"], [codex["command"], *codex["args"]]):
        assert os.access(argv[0], os.X_OK), argv
        # The printed command is a working one: it answers --help for the same verb.
        helped = subprocess.run([*argv[: argv.index("mcp") + 1], "--help"], capture_output=True, text=True, timeout=60)
        assert helped.returncode == 0 and "--print-config" in helped.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "armor_rx", "mcp", "--repo", str(repo), "--print-config", "vscode"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and bad.stderr.count("\n") == 1


@pytest.mark.docker
@pytest.mark.slow
def test_a_new_user_pastes_the_printed_config_and_watches_the_agent_live(repo, git, test_image):
    """The issue's 'done when': the printed Claude Code config starts a server an agent works through, seen live."""
    from mcp import Client, StdioServerParameters, stdio_client

    printed = subprocess.run(
        [sys.executable, "-m", "armor_rx", "mcp", "--repo", str(repo), "--print-config", "claude-code"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    entry = json.loads(printed)["mcpServers"]["armor-rx"]
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env={**os.environ, **entry["env"]})

    async def main():
        async with Client(stdio_client(params), read_timeout_seconds=120) as client:
            call = client.call_tool
            result(await call("task_create", {"name": "pasted", "image": test_image}))
            # A person watching: 'armor-rx events --follow' (the monitor's feed) sees the task as it goes.
            watcher = subprocess.Popen(
                [sys.executable, "-m", "armor_rx", "events", "--repo", str(repo), "--follow", "--task", "pasted"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                result(await call("file_write", {"task": "pasted", "path": "hello.txt", "content": "hello\n"}))
                cp = result(await call("checkpoint", {"task": "pasted", "message": "hello"}))
                result(await call("run_command", {"task": "pasted", "command": "echo oops > hello.txt"}))
                result(await call("rollback", {"task": "pasted", "checkpoint": cp["checkpoint"]}))
                assert (
                    result(await call("run_command", {"task": "pasted", "command": "cat hello.txt"}))["output"]
                    == "hello\n"
                )
                result(await call("complete", {"task": "pasted", "message": "say hello", "merge": "ff"}))
                seen = []
                deadline = time.monotonic() + 60
                while not any("task.completed" in line for line in seen):
                    assert time.monotonic() < deadline, seen
                    seen.append(await asyncio.to_thread(watcher.stdout.readline))
            finally:
                watcher.terminate()
                watcher.wait(30)
            return "".join(seen)

    seen = run(main())
    for kind in ("checkpoint.created", "exec.requested", "checkpoint.restored", "task.completed"):
        assert kind in seen, (kind, seen)
    assert git(repo, "show", "main:hello.txt") == "hello\n"
    git(repo, "fsck", "--strict")


@pytest.mark.docker
@pytest.mark.slow
def test_a_call_the_client_abandons_stops_its_command(repo, test_image):
    import anyio

    async def main():
        async with stdio_client(repo, "--task", "abandoned") as client:
            result(await client.call_tool("task_create", {"name": "abandoned", "image": test_image}))
            with anyio.move_on_after(5):  # the client gives up (a user pressed Esc): MCP cancels the request
                await client.call_tool("run_command", {"command": "sleep 120"})
            began = time.monotonic()
            # Commands of one task run one at a time: this one waits for the first unless it was stopped.
            after = result(await client.call_tool("run_command", {"command": "echo after"}))
            waited = time.monotonic() - began
            status = result(await client.call_tool("task_status", {"events": 30}))
            result(await client.call_tool("cancel", {}))
            return after, waited, status

    after, waited, status = run(main())
    assert after["output"] == "after\n" and waited < 60
    exits = [e["summary"] for e in status["recent_events"] if e["kind"] == "exec.exited"]
    assert exits and exits[0].startswith("exit_code=137, reason=interrupted"), exits  # stopped after ~5 s, not 120
