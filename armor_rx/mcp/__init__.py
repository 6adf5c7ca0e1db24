"""``armor-rx mcp``: the agent tools (:mod:`armor_rx.tools`) served over MCP on stdio.

One MCP server per agent; each is one more client of the repository's armor
service, so any number of agents work on one repository at once, each in its
own task, branch and container. :func:`build_server` makes the server from an
:class:`armor_rx.tools.ArmorTools` (any session, in-process or remote);
:func:`serve_stdio` is what the command runs; :func:`client_config` prints
the configuration snippet for an MCP client.
"""

from __future__ import annotations

from armor_rx.mcp.config import CLIENTS, client_config
from armor_rx.mcp.server import build_server, instructions, serve_stdio

__all__ = ["CLIENTS", "build_server", "client_config", "instructions", "serve_stdio"]
