"""A custom guard that refuses commands matching a pattern, as an agent sees it through MCP: a refused tool call.

    python examples/mcp_guard.py        # needs a Docker engine (DOCKER_HOST) and busybox-static

The guard is a reactivex operator on ``exec.requested`` (see
``armor_rx.operators.guard``); the MCP server is built in this process over
the same session, and the agent is the mcp SDK's own client over its
in-memory transport. The refused call carries the guard's reason, so the
model can change course; the task goes on.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

from mcp import Client

from armor_rx import AsyncArmor
from armor_rx.demo import make_sample_repo, sandbox_options
from armor_rx.mcp import build_server
from armor_rx.model.events import TaskEvent
from armor_rx.operators import guard
from armor_rx.tools import ArmorTools

DENIED = re.compile(r"\brm\s+-[a-z]*r|\bcurl\b|\bwget\b|git\s+push")


def no_dangerous_commands(event: TaskEvent) -> str | None:
    """The veto reason for a command that matches DENIED, else None (allowed)."""
    command = event.payload.get("command")
    text = command if isinstance(command, str) else " ".join(map(str, command or ()))
    found = DENIED.search(text)
    return (
        f"commands matching {found.group(0)!r} are not allowed in this repository; ask the user to run it"
        if found
        else None
    )


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="armor-guard-") as tmp:
        repo = make_sample_repo(Path(tmp) / "repo")
        async with AsyncArmor(repo, **sandbox_options()) as armor:
            armor.sync.use(guard(no_dangerous_commands, kinds="exec.requested", name="no-dangerous-commands"))
            tools = ArmorTools(armor, task="tidy", repo=repo)
            async with Client(build_server(tools)) as agent:
                await agent.call_tool("task_create", {"name": "tidy"})
                for command in ("rm -rf /workspace/*", "ls"):
                    answer = await agent.call_tool("run_command", {"command": command})
                    if answer.is_error:
                        print(f"refused tool call: {command!r}: {answer.content[0].text}")
                    else:
                        print(
                            f"ran: {command!r}: exit {answer.structured_content['exit_code']}, "
                            f"output {answer.structured_content['output'].split()}"
                        )
                status = await agent.call_tool("task_status", {})
                print(
                    f"task tidy is {status.structured_content['state']}; "
                    f"README.md still there: {(await armor.worktree('tidy') / 'README.md').exists()}"
                )
                await agent.call_tool("cancel", {"reason": "example over"})
            await tools.aclose()


if __name__ == "__main__":
    asyncio.run(main())
