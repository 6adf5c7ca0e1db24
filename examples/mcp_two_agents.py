"""Two agents at once on one repository, each through its own ``armor-rx mcp`` server process.

    python examples/mcp_two_agents.py        # needs a Docker engine (DOCKER_HOST) and busybox-static

Each agent here is the mcp SDK's own client, starting ``armor-rx mcp --repo
REPO --task NAME`` over stdio exactly as Claude Code or Codex would from the
printed configuration (``armor-rx mcp --print-config claude-code``). Both
servers are clients of the repository's one armor service, so each agent gets
its own task, branch, worktree and container, and neither sees the other's
files until their work is merged.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from dulwich.repo import Repo
from mcp import Client, StdioServerParameters, stdio_client

from armor_rx.demo import make_sample_repo


def busybox_image() -> str:
    from armor_rx.sinks.docker import Engine
    from armor_rx.sinks.docker.rootfs import import_busybox_image

    engine = Engine.connect(timeout=10)
    try:
        return import_busybox_image(engine)
    finally:
        engine.close()


async def agent(repo: Path, name: str, image: str, work: dict[str, str]) -> dict[str, Any]:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "armor_rx", "mcp", "--repo", str(repo), "--task", name],
        env=dict(os.environ),
    )
    async with Client(stdio_client(server), read_timeout_seconds=120) as client:

        async def call(tool: str, **arguments: Any) -> dict[str, Any]:
            answer = await client.call_tool(tool, arguments)
            if answer.is_error:
                raise RuntimeError(f"{name}: {tool} refused: {answer.content[0].text}")
            return dict(answer.structured_content or {})

        await call("task_create", name=name, image=image)
        for path, content in work.items():
            await call("file_write", path=path, content=content)
        seen = await call("run_command", command="ls; cat *.md | wc -l")
        print(f"{name} sees in its worktree: {seen['output'].split()}")
        await call("checkpoint", message="work written")
        return await call("complete", message=f"{name}: {', '.join(work)}")


async def main() -> None:
    image = busybox_image()
    with tempfile.TemporaryDirectory(prefix="armor-two-") as tmp:
        repo = make_sample_repo(Path(tmp) / "repo")
        try:
            done = await asyncio.gather(
                agent(repo, "docs-writer", image, {"USAGE.md": "# Usage\n\nRun app.py.\n"}),
                agent(repo, "test-writer", image, {"TESTS.md": "# Tests\n", "test_app.sh": "true\n"}),
            )
            for outcome in done:
                print(f"{outcome['task']}: {outcome['state']}, commit {str(outcome['detail']['commit'])[:12]}")
            with Repo(str(repo)) as git:
                for name in ("docs-writer", "test-writer"):
                    tree = git[git[git.refs[f"refs/heads/task/{name}".encode()]].tree]
                    print(f"branch task/{name}: {sorted(entry.path.decode() for entry in tree.items())}")
        finally:
            # The servers started the repository's service; stop it before its directory goes.
            stop = [sys.executable, "-m", "armor_rx", "serve", "--stop", "--repo", str(repo)]
            await asyncio.to_thread(subprocess.run, stop, capture_output=True, timeout=60, check=False)


if __name__ == "__main__":
    asyncio.run(main())
