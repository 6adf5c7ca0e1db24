"""``armor-rx mcp``: the agent tools (:mod:`armor_rx.tools`) served over MCP on stdio.

One MCP server per agent; each is one more client of the repository's armor
service, so any number of agents work on one repository at once, each in its
own task, branch and container. :func:`build_server` makes the server from an
:class:`armor_rx.tools.ArmorTools` (any session, in-process or remote);
:func:`serve_stdio` is what the command runs; :func:`client_config` prints
the configuration snippet for an MCP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from armor_rx.mcp.config import CLIENTS, client_config

if TYPE_CHECKING:
    from armor_rx.mcp.server import build_server, instructions, serve_stdio

__all__ = ["CLIENTS", "build_server", "client_config", "instructions", "serve_stdio"]


def __getattr__(name: str) -> Any:
    # The mcp SDK (with pydantic and starlette) takes a second or more to import: every
    # armor-rx verb registers 'mcp', so the SDK is loaded only when a server is built.
    if name in ("build_server", "instructions", "serve_stdio"):
        from armor_rx.mcp import server

        return getattr(server, name)
    raise AttributeError(f"module 'armor_rx.mcp' has no attribute {name!r}")
