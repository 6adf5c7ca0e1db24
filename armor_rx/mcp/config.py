"""Configuration snippets that make an MCP client start ``armor-rx mcp`` (``armor-rx mcp --print-config CLIENT``).

The command is the absolute path of this installation's ``armor-rx`` when
there is one (a client started from a desktop does not see a venv's PATH),
else ``python -m armor_rx`` with this interpreter.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from armor_rx.errors import ConfigError

#: Client name -> where its snippet goes.
CLIENTS = {
    "claude-code": ".mcp.json in the repository (or: claude mcp add-json armor-rx '<the inner object>')",
    "opencode": "opencode.json in the repository (or ~/.config/opencode/opencode.json)",
    "codex": "~/.codex/config.toml (or .codex/config.toml in a trusted project)",
}


def server_command(repo: Path, task: str | None = None) -> list[str]:
    """The argv that starts this installation's MCP server for ``repo``."""
    script = Path(sys.executable).parent / "armor-rx"
    found = str(script) if script.exists() else shutil.which("armor-rx")
    base = [found] if found else [sys.executable, "-m", "armor_rx"]
    return [*base, "mcp", "--repo", str(repo)] + (["--task", task] if task else [])


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def client_config(client: str, repo: str | Path, *, task: str | None = None, name: str = "armor-rx") -> str:
    """The snippet for ``client`` (one of :data:`CLIENTS`) that starts ``armor-rx mcp --repo REPO``."""
    argv = server_command(Path(repo).resolve(), task)
    if client == "claude-code":
        return json.dumps(
            {"mcpServers": {name: {"type": "stdio", "command": argv[0], "args": argv[1:], "env": {}}}}, indent=2
        )
    if client == "opencode":
        return json.dumps(
            {
                "$schema": "https://opencode.ai/config.json",
                "mcp": {name: {"type": "local", "command": argv, "enabled": True}},
            },
            indent=2,
        )
    if client == "codex":
        args = ", ".join(_toml_string(a) for a in argv[1:])
        return f"[mcp_servers.{name}]\ncommand = {_toml_string(argv[0])}\nargs = [{args}]\nstartup_timeout_sec = 30\n"
    raise ConfigError(f"unknown MCP client {client!r}; known: {', '.join(CLIENTS)}")
