"""Review: a directory the agent turns into a git directory must not reach the user's checkout as one.

The agent writes ``HEAD``, ``config``, ``objects/`` and ``refs/`` into a
directory of its worktree (``src/``, which armor made, so on the host it is the
user's). No file is named ``.git``, so nothing was left out: the task merged,
and in the user's own checkout ``cd src && git status`` found ``src`` to be a
(bare) repository owned by the user — trusted — whose ``core.worktree`` and
``core.fsmonitor`` the agent chose: the agent's command ran on the host (seen
on the real dockerd: ``complete --merge ff``, then ``git status`` in ``src``
created the marker, as root). Invariant: after checkpoint, rollback and each
merge mode, no directory of the branch or the user's checkout is a git
directory to git (its ``HEAD`` is left out, reported like a nested
repository), and ``git status`` there runs nothing. Cases: 3 merge modes, and
``commondir`` in place of ``objects``/``refs``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from armor_rx.sinks.git import GitWorkspace

from .conftest import started


def _plant(directory: Path, worktree_of_git: Path, marker: Path, *, commondir: bool = False) -> None:
    (directory / "HEAD").write_text("ref: refs/heads/main\n")
    if commondir:
        (directory / "commondir").write_text(f"{worktree_of_git / '.git'}\n")
    else:
        for sub in ("objects", "refs"):
            (directory / sub).mkdir()
            (directory / sub / ".keep").write_text("")
    (directory / "config").write_text(
        f"[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = {worktree_of_git}\n"
        f"\tfsmonitor = \"touch {marker}; false\"\n")


def _git_status_in(directory: Path) -> None:
    subprocess.run(["git", "status"], cwd=directory, capture_output=True, text=True, timeout=60,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(directory), "GIT_CONFIG_NOSYSTEM": "1"})


@pytest.mark.parametrize("merge,commondir", [("ff", False), ("merge", False), ("none", False), ("ff", True)])
def test_a_directory_made_into_a_git_directory_never_reaches_the_checkout_as_one(
        ws: GitWorkspace, repo: Path, tmp_path: Path, merge: str, commondir: bool) -> None:
    marker = tmp_path / "PWNED"
    worktree = started(ws, "bare")
    _plant(worktree / "src", repo, marker, commondir=commondir)
    cp = ws.checkpoint("bare")
    assert "src" in cp.nested
    (worktree / "src" / "HEAD").unlink()
    ws.restore("bare", cp.id)
    assert not (worktree / "src" / "HEAD").exists()
    (worktree / "src" / "HEAD").write_text("ref: refs/heads/main\n")  # the agent puts it back
    ws.complete("bare", "done", merge=merge)  # type: ignore[arg-type]
    _git_status_in(repo / "src")
    assert not (repo / "src" / "HEAD").exists()
    assert not marker.exists(), "the agent's command ran on the host"
