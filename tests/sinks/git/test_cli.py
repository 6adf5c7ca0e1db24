"""The sanitised git CLI runs nothing a worktree names (issue 13 item 4)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from armor_rx.sinks.git import GitWorkspace, worktrees
from armor_rx.sinks.git.cli import run_git, safe_env

from .conftest import started


def test_run_git_ignores_a_rewritten_git_file_and_runs_no_configured_command(
    ws: GitWorkspace, repo: Path, tmp_path: Path
) -> None:
    path = started(ws, "t")
    marker = tmp_path / "RAN"
    # The agent points its worktree's .git at a repository of its own, configured to run commands.
    evil = path / "evil"
    subprocess.run(["git", "init", "-q", str(evil)], env=safe_env(), check=True)
    for key, value in {"core.fsmonitor": f"touch {marker}", "core.pager": f"touch {marker}; cat",
                       "diff.external": f"touch {marker}", "core.hooksPath": str(evil / "hooks")}.items():
        subprocess.run(["git", "-C", str(evil), "config", key, value], env=safe_env(), check=True)
    (path / ".git").write_text(f"gitdir: {evil / '.git'}\n")
    (path / "README.md").write_text("changed\n")
    # Plain git in the worktree would now run the agent's fsmonitor (git 2.39 honours it):
    subprocess.run(["git", "status"], cwd=path, env=safe_env(), capture_output=True)
    assert marker.exists()
    marker.unlink()
    admin = worktrees.admin_dir(ws.repo, path)
    assert admin is not None
    status = run_git(admin, path, "status", "--porcelain").stdout
    # The task's own index, through the admin directory: README.md modified, the agent's repository untracked.
    assert b" M README.md\n" in status and b"?? evil/\n" in status
    diff = run_git(admin, path, "diff").stdout
    assert b"+changed" in diff
    run_git(admin, path, "log", "-p", "-1")
    assert not marker.exists()


def test_safe_env_drops_the_callers_git_variables() -> None:
    env = safe_env({"GIT_DIR": "/x", "GIT_WORK_TREE": "/y", "GIT_EXTERNAL_DIFF": "z", "PATH": os.defpath})
    assert "GIT_DIR" not in env and "GIT_WORK_TREE" not in env and "GIT_EXTERNAL_DIFF" not in env
    assert env["GIT_CONFIG_NOSYSTEM"] == "1" and env["GIT_CONFIG_GLOBAL"] == os.devnull and env["PATH"] == os.defpath
