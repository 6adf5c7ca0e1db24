"""``armor-rx mcp``: serve the agent tools over MCP on stdio, or print a client's configuration for it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from armor_rx.errors import ConfigError


def register(verbs: Any, common: argparse.ArgumentParser) -> dict[str, Callable[[argparse.Namespace], int]]:
    from armor_rx.mcp.config import CLIENTS

    mcp = verbs.add_parser("mcp", parents=[common], help="serve the agent tools over MCP (stdio), one server per agent")
    mcp.add_argument("--task", metavar="TASK", help="the task every tool uses when the agent names none")
    mcp.add_argument(
        "--print-config",
        metavar="CLIENT",
        choices=sorted(CLIENTS),
        help=f"print the configuration for an MCP client ({', '.join(sorted(CLIENTS))}) and exit",
    )
    return {"mcp": cmd_mcp}


def _repo(args: argparse.Namespace) -> Path:
    if args.repo:
        return Path(args.repo).resolve()
    from armor_rx.sinks.statedir import StateDir

    state = StateDir.resolve(args.state_dir, None)
    if (state.parent / ".git").exists():
        return state.parent
    raise ConfigError("armor-rx mcp needs a git repository: run it inside one or pass --repo PATH")


def cmd_mcp(args: argparse.Namespace) -> int:
    from armor_rx.model.ids import validate_task_id

    task = validate_task_id(args.task) if args.task else None
    repo = _repo(args)
    if args.print_config:
        from armor_rx.mcp.config import CLIENTS, client_config

        print(client_config(args.print_config, repo, task=task))
        print(f"# put this in {CLIENTS[args.print_config]}", file=sys.stderr)
        return 0
    from armor_rx.mcp.server import serve_stdio

    asyncio.run(serve_stdio(repo, state_dir=args.state_dir, task=task))
    return 0
