"""Review 13: directories the file_write tool makes in a live worktree are the agent's, so host git distrusts them.

``WorktreeFiles.write`` makes missing parents on the host, as the person: an
agent that wrote ``evil/HEAD``, ``evil/objects/..``, ``evil/refs/..`` and
``evil/config`` through the tool got a bare repository the person's ``git
status`` trusted (its ``core.fsmonitor`` ran). ``file_write`` now makes them
in the task's container, as the agent.
"""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from armor_rx import AsyncArmor
from armor_rx.sinks.docker import AGENT_UID, SandboxSpec
from armor_rx.tools import ArmorTools

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup_containers")]


def test_a_bare_repository_written_through_file_write_is_refused_by_host_git(repo, git_image, tmp_path):
    marker = tmp_path / "tool-fsmonitor-ran"
    spec = SandboxSpec(image=git_image, pids_limit=64, mem_limit=128 * 1024 * 1024, wall_clock=300)

    async def go():
        async with AsyncArmor(repo, docker=True, sandbox=spec, sweep_interval=None) as armor:
            await armor.create_task("tooldirs")
            await armor.start("tooldirs")
            tools = ArmorTools(armor, task="tooldirs")
            await tools.file_write("evil/HEAD", "ref: refs/heads/main\n")
            await tools.file_write("evil/objects/keep", "")
            await tools.file_write("evil/refs/keep", "")
            await tools.file_write("evil/config", "[core]\n\trepositoryformatversion = 0\n\tbare = false\n"
                                   f"\tworktree = ..\n\tfsmonitor = touch {marker}; false\n")
            worktree = await armor.worktree("tooldirs")
            assert (worktree / "evil" / "HEAD").read_text() == "ref: refs/heads/main\n"
            status = subprocess.run(["git", "-C", str(worktree / "evil"), "status"], capture_output=True, text=True, timeout=60)
            return worktree, status

    worktree, status = asyncio.run(go())
    assert not marker.exists(), "the person's git status ran a command the agent wrote through file_write"
    assert os.lstat(worktree / "evil").st_uid == AGENT_UID
    assert status.returncode != 0 and "dubious ownership" in status.stderr, status
