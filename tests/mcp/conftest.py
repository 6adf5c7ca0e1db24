"""Fixtures for the MCP server: the SDK's own client, in memory or over a real stdio subprocess."""

from __future__ import annotations

import os
import sys
from contextlib import asynccontextmanager

from tests.service.conftest import kill_service, no_docker, service_info, wait_for  # noqa: F401
from tests.sinks.docker.conftest import engine, test_image  # noqa: F401


def server_params(repo, *args, env=None):
    from mcp import StdioServerParameters

    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "armor_rx", "mcp", "--repo", str(repo), *args],
        env={**os.environ, **(env or {})},
    )


@asynccontextmanager
async def stdio_client(repo, *args, env=None):
    """The mcp SDK's Client on ``armor-rx mcp --repo REPO`` started as a real subprocess."""
    from mcp import Client, stdio_client

    # A Transport (not the parameters themselves): mcp 2.0.0's Client takes no StdioServerParameters.
    async with Client(stdio_client(server_params(repo, *args, env=env)), read_timeout_seconds=120) as client:
        yield client


@asynccontextmanager
async def memory_client(repo, *, task=None, **options):
    """The mcp SDK's Client on a server built in this process over an in-process session (no service)."""
    from mcp import Client

    from armor_rx import AsyncArmor
    from armor_rx.mcp import build_server
    from armor_rx.tools import ArmorTools

    async with AsyncArmor(repo, **options) as armor:
        tools = ArmorTools(armor, task=task, repo=repo)
        async with Client(build_server(tools)) as client:
            client.armor = armor
            yield client
        await tools.aclose()


def result(call):
    """A successful call's structured result (fails the test with the error text otherwise)."""
    assert not call.is_error, call.content[0].text
    return call.structured_content


def error(call):
    """A refused call's one-line message."""
    assert call.is_error, call.structured_content
    text = call.content[0].text
    assert "\n" not in text
    return text
