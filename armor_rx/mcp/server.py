"""The MCP server: :class:`armor_rx.tools.ArmorTools` registered on the SDK's ``MCPServer``.

The tools are registered as they are (their signatures are the input
schemas, their docstrings the descriptions); the only wrapper turns an
exception into the SDK's ``ToolError``, so the agent gets an error result
with a one-line message it can act on, and the server goes on serving.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from armor_rx import __version__
from armor_rx.errors import ArmorError
from armor_rx.tools import ArmorTools, tool_specs

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_READ_ONLY = {"task_list", "task_status", "command_output", "file_read", "file_list", "checkpoints", "diff"}
_DESTRUCTIVE = {"file_write", "file_edit", "file_delete", "rollback", "complete", "cancel"}


def instructions(task: str | None = None) -> str:
    """What the server tells an agent about working here (sent when it connects)."""
    first = (
        f"Your task is '{task}': every tool uses it when you leave 'task' out. If task_status says it does not "
        f"exist, make it with task_create(name='{task}')."
        if task
        else "First make a task with task_create (a short name such as 'fix-login'); pass its name as 'task' to every "
        "other tool."
    )
    return f"""armor-rx runs your work in a task: its own git branch (task/NAME), its own worktree and a sandboxed
container with no network. Nothing you do touches the user's checkout until the task is completed and merged.

How to work:
1. {first}
2. Look around with file_list and file_read; change files with file_edit (exact search/replace) or file_write.
   Paths are relative to the task's worktree; '..', absolute paths and symlinks leading out are refused.
3. Run builds and tests with run_command (it waits; output is capped, its full size is stated). For long
   commands use run_command_background, then command_output with the job id.
4. checkpoint before anything risky (a refactor, a dependency change, deleting files). If it goes wrong,
   rollback to the checkpoint instead of repairing by hand; checkpoints lists them, diff shows changes.
5. When the work is done and the tests pass, complete with a commit message and a merge mode: 'none' (the
   default) leaves it on task/NAME for review; 'ff' fast-forwards the base; 'merge' or 'three-way' combines
   changes on different lines; 'first-wins' refuses any file the base changed meanwhile; 'rebase' replays the
   task's commits onto the base; 'manual' leaves the branch and returns the git commands for a person.
   Then read the result: 'merged' false means a refused merge (other tasks may have landed first) that
   changed nothing on the base: 'conflicts' lists the files, the work stays on task/NAME, and 'summary' says
   what to do. The task is over either way. cancel abandons the task.

A refused call (a guard's veto, a bad path, a missing file) comes back as an error whose message says why
and what to do. If one says the armor service went away, call task_status: an 'interrupted' task goes on
after task_resume, with its files as they were. Each result's 'cli' field is the armor-rx command a person
can run to see the same thing."""


def _tool_errors(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``fn`` with every exception turned into a one-line ``ToolError`` (an error result, not a crash)."""

    @functools.wraps(fn)
    async def call(**arguments: Any) -> Any:
        try:
            return await fn(**arguments)
        except ArmorError as exc:
            raise ToolError(_one_line(str(exc))) from None
        except Exception as exc:  # noqa: BLE001 - the agent gets the reason; the server goes on
            raise ToolError(_one_line(f"{type(exc).__name__}: {exc}")) from None

    return call


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "the tool failed without a message"


class ArmorMCPServer(MCPServer):
    """``MCPServer`` whose refused calls read as one line, including the SDK's own argument-validation errors."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            raise type(exc)(_one_line(str(exc))) from exc.__cause__


def build_server(tools: ArmorTools, *, name: str = "armor-rx", log_level: LogLevel = "WARNING") -> MCPServer:
    """An MCP server offering every tool of ``tools`` (run it with ``run_stdio_async``).

    ``log_level`` is the SDK's own logging (to stderr); at ``INFO`` it logs each refused call.
    """
    server = ArmorMCPServer(
        name, instructions=instructions(tools.default_task), version=__version__, log_level=log_level
    )
    for spec in tool_specs(tools):
        hints = ToolAnnotations(
            read_only_hint=spec.name in _READ_ONLY, destructive_hint=spec.name in _DESTRUCTIVE, open_world_hint=False
        )
        server.add_tool(_tool_errors(spec.fn), name=spec.name, description=spec.description, annotations=hints)
    return server


async def serve_stdio(repo: str | Path | None, *, state_dir: str | Path | None = None, task: str | None = None) -> None:
    """Serve the tools on stdin/stdout as a client of the repository's service (started if none runs)."""
    from armor_rx.aio import connect_async

    async with connect_async(repo, state_dir=state_dir) as armor:
        tools = ArmorTools(armor, task=task, repo=armor.sync.repo)
        try:
            await build_server(tools).run_stdio_async()
        finally:
            await tools.aclose()
