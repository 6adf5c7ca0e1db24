"""Review 13: the worktree root stays the person's, so its ``.git`` link must never be the agent's to remove.

With ``git_data=False`` the link was not bound read-only: the agent deleted it
and made the root itself a bare repository, which the person's ``git status``
there trusted (the root is theirs) and ran the agent's fsmonitor command.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from armor_rx import Armor
from armor_rx.sinks.docker import SandboxSpec

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup_containers")]


def test_without_git_data_the_agent_still_cannot_remove_the_link_and_plant_a_bare_root(repo, git_image, tmp_path):
    marker = tmp_path / "root-fsmonitor-ran"
    spec = SandboxSpec(image=git_image, pids_limit=64, mem_limit=128 * 1024 * 1024, wall_clock=300, git_data=False)
    plant = ("rm -f .git; mkdir -p objects refs && printf 'ref: refs/heads/main\\n' > HEAD && "
             f"printf '[core]\\n\\trepositoryformatversion = 0\\n\\tbare = false\\n\\tworktree = ..\\n\\tfsmonitor = touch {marker}; false\\n' > config")
    with Armor(repo, docker=True, sandbox=spec, sweep_interval=None) as armor:
        armor.create_task("bareroot")
        armor.start("bareroot")
        worktree = armor.worktree("bareroot")
        armor.exec("bareroot", ["sh", "-c", plant])
        status = subprocess.run(["git", "-C", str(worktree), "status"], capture_output=True, text=True, timeout=60)
        assert not marker.exists(), "the person's git status ran the agent's command"
        assert (worktree / ".git").is_file(), "the agent removed the worktree's .git link"
        assert status.returncode == 0, status.stderr
