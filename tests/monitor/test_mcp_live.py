"""The MCP issue's 'done when', with the monitor: an agent works through the printed config's server while
the monitor, attached to the same service, shows its task appear, checkpoint, roll back and complete."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from tests.mcp.conftest import result
from tests.service.conftest import wait_for


def test_the_monitor_shows_an_mcp_agents_task_live(monitor, repo, git):
    from mcp import Client, StdioServerParameters, stdio_client

    printed = subprocess.run([sys.executable, "-m", "armor_rx", "mcp", "--repo", str(repo), "--print-config", "claude-code"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    entry = json.loads(printed)["mcpServers"]["armor-rx"]
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env={**os.environ, **entry["env"]})
    rows = monitor.state.rows
    seen_states: list[str] = []

    def state_of(task: str) -> str | None:
        row = rows.get(task)
        if row is not None and (not seen_states or seen_states[-1] != row.state.value):
            seen_states.append(row.state.value)
        return row.state.value if row is not None else None

    async def main() -> None:
        async with Client(stdio_client(params), read_timeout_seconds=120) as client:
            call = client.call_tool
            result(await call("task_create", {"name": "agent-live"}))
            await asyncio.to_thread(wait_for, lambda: state_of("agent-live") == "running", 30, "the monitor to show the task running")
            result(await call("file_write", {"task": "agent-live", "path": "hello.txt", "content": "hello\n"}))
            cp = result(await call("checkpoint", {"task": "agent-live", "message": "hello"}))
            await asyncio.to_thread(wait_for, lambda: cp["checkpoint"] in rows["agent-live"].checkpoints, 30, "the checkpoint on the monitor's row")
            result(await call("file_write", {"task": "agent-live", "path": "hello.txt", "content": "oops\n"}))
            result(await call("rollback", {"task": "agent-live", "checkpoint": cp["checkpoint"]}))
            result(await call("complete", {"task": "agent-live", "message": "say hello", "merge": "ff"}))
            await asyncio.to_thread(wait_for, lambda: state_of("agent-live") == "completed", 30, "the monitor to show it completed")

    asyncio.run(main())
    assert seen_states[0] in ("pending", "starting", "running") and seen_states[-1] == "completed"
    kinds = [line.kind for line in monitor.state.visible_events(5000)]
    assert "checkpoint.restored" in kinds and "task.completed" in kinds
    assert git(repo, "show", "main:hello.txt") == "hello\n"
