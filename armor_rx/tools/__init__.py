"""The agent tools as plain typed async functions, for any agent framework.

>>> import asyncio, armor_rx
>>> from armor_rx.tools import ArmorTools, tool_specs
>>> async def main(repo):                                       # doctest: +SKIP
...     async with armor_rx.connect_async(repo) as armor:
...         tools = ArmorTools(armor, repo=repo)
...         await tools.task_create("fix-typo")
...         await tools.file_edit("README.md", "teh", "the", task="fix-typo")
...         print((await tools.run_command("grep -c the README.md", task="fix-typo"))["output"])
...         await tools.complete("fix a typo", task="fix-typo")

:func:`tool_specs` gives each tool as (name, description, input/output JSON
schema, coroutine): a LangGraph node or an OpenAI Agents SDK ``FunctionTool``
wraps one in a line. ``armor-rx mcp`` serves these same coroutines over MCP.
Tools raise :class:`armor_rx.errors.ArmorError` (one-line message) for
anything the agent can fix: a refused path, a missing file, a veto.
"""

from __future__ import annotations

from armor_rx.tools.files import ToolInputError, WorktreeFiles
from armor_rx.tools.spec import ToolSpec, spec_of
from armor_rx.tools.toolkit import TOOL_NAMES, ArmorTools


def tool_specs(tools: ArmorTools) -> list[ToolSpec]:
    """Every tool of ``tools`` as a :class:`ToolSpec`, in :data:`TOOL_NAMES` order."""
    return [spec_of(getattr(tools, name)) for name in TOOL_NAMES]


__all__ = ["TOOL_NAMES", "ArmorTools", "ToolInputError", "ToolSpec", "WorktreeFiles", "spec_of", "tool_specs"]
