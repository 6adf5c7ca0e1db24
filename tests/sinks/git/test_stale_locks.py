"""Locks a killed writer left behind are recovered; live ones are not touched (issue 14 item 7).

A kill during worktree creation left the worktree's ``index.lock`` (and no
index), and the resumed task then failed at completion. The git sink now
removes locks no live process holds, when it starts and before it writes, and
finishes a checkout that was cut short.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from dulwich.file import FileLocked

from armor_rx.sinks.git import GitWorkspace
from armor_rx.sinks.git import worktrees
from armor_rx.sinks.git.recovery import recover_stale_lock

from .conftest import Events, fsck, git, started


def test_a_lock_no_process_holds_is_removed_and_completion_works(
    ws: GitWorkspace, repo: Path, events: Events
) -> None:
    path = started(ws, "t")
    admin = worktrees.admin_dir(ws.repo, path)
    assert admin is not None
    (admin / "index.lock").write_bytes(b"left by a killed writer")
    branch_lock = Path(ws.repo.commondir()) / "refs" / "heads" / "task" / "t.lock"
    branch_lock.write_bytes(b"")
    (path / "work.txt").write_text("work\n")
    done = ws.complete("t", "done", merge="ff")
    assert done.merged
    assert not (admin / "index.lock").exists() and not branch_lock.exists()
    recovered = {p["path"] for p in events.of("git.lock.recovered")}
    assert recovered == {str(admin / "index.lock"), str(branch_lock)}
    assert git(path, "status", "--porcelain") == ""
    fsck(repo)


def test_a_lock_a_live_process_holds_is_left_alone(ws: GitWorkspace) -> None:
    path = started(ws, "t")
    admin = worktrees.admin_dir(ws.repo, path)
    assert admin is not None
    lock = admin / "index.lock"
    with open(lock, "wb"):  # held open, as git and dulwich hold the locks they write
        assert recover_stale_lock(admin / "index") is False
        with pytest.raises(FileLocked):
            ws.complete("t", "done")
    assert recover_stale_lock(admin / "index") is True
    assert not lock.exists()


_CREATE_AND_DIE = textwrap.dedent("""
    import os, signal, sys
    from dulwich import file as dulwich_file
    from armor_rx.sinks.git import GitWorkspace

    repo, state = sys.argv[1], sys.argv[2]
    real_open = dulwich_file.GitFile

    def dying_open(filename, *args, **kwargs):
        f = real_open(filename, *args, **kwargs)
        if os.fsdecode(filename).endswith("index"):
            os.kill(os.getpid(), signal.SIGKILL)  # mid-write: index.lock made, index not yet
        return f

    import dulwich.index
    dulwich.index.GitFile = dying_open
    with GitWorkspace(repo, state) as ws:
        ws.add_worktree("t", ws.create_branch("t"))
""")


def test_a_kill_during_worktree_creation_is_recovered_on_start(repo: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = subprocess.run([sys.executable, "-c", _CREATE_AND_DIE, str(repo), str(state)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    path = state / "worktrees" / "t"
    # What the kill left: the worktree linked, its index lock, no index yet.
    (admin,) = [a for a in (repo / ".git" / "worktrees").iterdir()
                if (a / "gitdir").read_text().strip() == str(path / ".git")]
    assert (admin / "index.lock").exists() and not (admin / "index").exists()
    events = Events()
    with GitWorkspace(repo, state, emit=events) as ws:
        assert [p["path"] for p in events.of("git.lock.recovered")] == [str(admin / "index.lock")]
        assert events.of("git.worktree.recovered")[0]["path"] == str(path)
        assert (path / "README.md").read_text() == "hello\n"
        assert git(path, "status", "--porcelain") == ""
        (path / "work.txt").write_text("work\n")
        done = ws.complete("t", "done", merge="ff")
        assert done.merged
    fsck(repo)
    assert git(repo, "show", "main:work.txt") == "work\n"
    assert str(path) in git(repo, "worktree", "list")
