"""Running the git CLI on a task's worktree without running what the agent put there.

armor itself never runs the git CLI: its git work goes through dulwich, with no
hook, filter, fsmonitor or pager (see docs/git.md). This is for the places
that must run ``git`` on a worktree (tools, tests, a user's script): the git
directory is named explicitly (the worktree's admin directory in the user's
``.git``, never whatever the worktree's ``.git`` file says, which the agent
can rewrite), the environment carries no ``GIT_*`` variable of the caller,
no system or global configuration is read, and the configuration keys that
run commands on their own are switched off.

What it cannot make safe: a repository whose *own* configuration an agent
wrote (a nested repository in the worktree) names filter drivers under any
name, and ``git status`` runs them. Never run git inside such a repository
on the host; armor reports them (``git.nested_repository``) and leaves them be.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["SAFE_CONFIG", "git_command", "run_git", "safe_env"]

#: ``-c`` settings that switch off every configuration key that runs a command by itself.
SAFE_CONFIG: tuple[str, ...] = (
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.pager=cat",
    "core.untrackedCache=false",
    "protocol.ext.allow=never",
    "credential.helper=",
)
# Subcommands that could run diff.external or a textconv driver.
_DIFFING = frozenset({"diff", "log", "show", "diff-tree", "diff-index", "diff-files", "whatchanged"})


def safe_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) without any ``GIT_*`` variable, reading no system or global config."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("GIT_")}
    env.update({
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_PAGER": "cat",
        "PAGER": "cat",
        "GIT_OPTIONAL_LOCKS": "0",
    })
    return env


def git_command(git_dir: str | os.PathLike[str], work_tree: str | os.PathLike[str], args: Sequence[str]) -> list[str]:
    """The argv for ``git args`` on ``work_tree`` with ``git_dir``, every command-running key off."""
    argv = ["git", f"--git-dir={os.fspath(git_dir)}", f"--work-tree={os.fspath(work_tree)}", "--no-pager"]
    for setting in SAFE_CONFIG:
        argv += ["-c", setting]
    if args and args[0] in _DIFFING:
        argv += [args[0], "--no-ext-diff", "--no-textconv", *args[1:]]
    else:
        argv += list(args)
    return argv


def run_git(
    git_dir: str | os.PathLike[str], work_tree: str | os.PathLike[str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git args`` on ``work_tree`` (see :func:`git_command`) and return the finished process (bytes out).

    ``git_dir`` must come from the user's repository (for a task's worktree:
    its admin directory, ``.git/worktrees/<id>``), never from the worktree.
    Raises ``subprocess.CalledProcessError`` when ``check`` and git fails.
    """
    return subprocess.run(
        git_command(git_dir, work_tree, args), cwd=Path(work_tree), env=safe_env(),
        stdin=subprocess.DEVNULL, capture_output=True, check=check,
    )
