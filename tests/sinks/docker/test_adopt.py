"""The in-container pass that hands armor's directories to the agent (a plain-user armor cannot chown).

Run here with the host's busybox as the agent's uid, the way the container runs
it: what it must survive are odd names, big directories and a pass killed
half-way. The real-container path is tested in test_hostile_worktree.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import signal
import time
from pathlib import Path

import pytest

from armor_rx.sinks.docker import AGENT_UID
from armor_rx.sinks.docker.adopt import ADOPT_SCRIPT, SUFFIX

GID = 62010


def _busybox() -> str:
    found = shutil.which("busybox") or ("/bin/busybox" if os.path.exists("/bin/busybox") else None)
    if os.geteuid() != 0 or found is None or shutil.which("setpriv") is None:
        pytest.skip("needs root, busybox and setpriv to act as the agent's uid")
    return found


def adopt(root: Path) -> str:
    done = subprocess.run(["setpriv", f"--reuid={AGENT_UID}", f"--regid={GID}", "--clear-groups", _busybox(), "sh", "-c",
                           ADOPT_SCRIPT, "sh", str(AGENT_UID)], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def tree(tmp_path):
    _busybox()
    os.chmod(tmp_path, 0o755)
    root = tmp_path / "wt"
    names = ["src/pkg/deep", "we ird\nname", "-dash", ".hidden", "big"]
    for name in names:
        (root / name).mkdir(parents=True)
    (root / "src" / "pkg" / "deep" / "f.py").write_text("x\n")
    (root / ".hidden" / ".dot").write_text("d\n")
    (root / "-dash" / "..odd").write_text("o\n")
    for i in range(450):
        (root / "big" / f"f{i}").write_text(str(i))
    (root / "big" / "sub").mkdir()
    os.symlink("/etc", root / "src" / "link")
    for path in [root, *root.rglob("*")]:
        os.lchown(path, -1, GID)
        if path.is_dir() and not path.is_symlink():
            os.chmod(path, 0o2775)
        elif not path.is_symlink():
            os.chmod(path, 0o664)
    return root


def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry below root: its type and content (files) or target (links); ownership left out."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", oct(os.lstat(path).st_mode & 0o7777))
        else:
            out[rel] = ("file", path.read_text())
    return out


def test_every_directory_below_the_root_becomes_the_agents_and_nothing_else_changes(tree):
    before = snapshot(tree)
    out = adopt(tree)
    dirs = [p for p in tree.rglob("*") if p.is_dir() and not p.is_symlink()]
    assert f"adopted {len(dirs)} failed 0" in out
    assert {os.lstat(p).st_uid for p in dirs} == {AGENT_UID}
    assert os.lstat(tree).st_uid == 0  # the root stays the person's
    assert snapshot(tree) == before  # same entries, contents, link targets and modes (setgid kept)
    assert os.readlink(tree / "src" / "link") == "/etc"
    assert "adopted 0 failed 0" in adopt(tree) or adopt(tree).strip() == ""  # a second pass has nothing to do


def test_a_pass_killed_half_way_is_finished_by_the_next(tree):
    before = snapshot(tree)
    # Killed after moving src's entries aside and removing src; and half-way through moving -dash's.
    os.rename(tree / "src", tree / f"src{SUFFIX}.aB3xYz")
    (tree / f"-dash{SUFFIX}.Q9w_e1").mkdir()
    os.rename(tree / "-dash" / "..odd", tree / f"-dash{SUFFIX}.Q9w_e1" / "..odd")
    for made in (tree / f"src{SUFFIX}.aB3xYz", tree / f"-dash{SUFFIX}.Q9w_e1"):  # the pass made these, as the agent
        os.chown(made, AGENT_UID, GID)
        os.chmod(made, 0o2775)
    adopt(tree)
    assert snapshot(tree) == before
    assert not list(tree.glob(f"*{SUFFIX}*"))
    assert {os.lstat(p).st_uid for p in tree.rglob("*") if p.is_dir() and not p.is_symlink()} == {AGENT_UID}


def test_a_directory_the_agent_may_not_change_is_left_whole_and_counted(tree):
    os.chmod(tree / "big" / "sub", 0o755)  # no group write: the agent cannot move it (its '..' changes)
    before = snapshot(tree)
    out = adopt(tree)
    assert "failed 1" in out
    assert snapshot(tree) == before  # what could not move was put back
    assert os.lstat(tree / "big").st_uid == 0 and os.lstat(tree / "src").st_uid == AGENT_UID


def test_a_name_the_agent_took_first_does_not_keep_a_directory_the_persons(tmp_path):
    """Review 13: a file 'src.armor-adopt' (say from a checkpoint a rollback brought back) made the pass fail on src.

    And a repository's own directory of such a name is neither renamed nor merged into its namesake.
    """
    _busybox()
    os.chmod(tmp_path, 0o755)
    root = tmp_path / "wt"
    for name in ("src/pkg", f"notes{SUFFIX}", "docs"):
        (root / name).mkdir(parents=True)
    (root / f"src{SUFFIX}").write_text("the agent's\n")
    os.mkdir(root / f"docs{SUFFIX}")  # the agent's own directory, not a killed pass's
    (root / f"docs{SUFFIX}" / "mine").write_text("m\n")
    (root / f"notes{SUFFIX}" / "n.md").write_text("n\n")
    for path in [root, *root.rglob("*")]:
        os.lchown(path, -1, GID)
        os.chmod(path, 0o2775 if path.is_dir() else 0o664)
    os.chown(root / f"docs{SUFFIX}", AGENT_UID, GID)
    before = snapshot(root)
    out = adopt(root)
    assert "failed 0" in out, out
    assert {os.lstat(root / d).st_uid for d in ("src", "src/pkg", "docs", f"notes{SUFFIX}")} == {AGENT_UID}
    assert snapshot(root) == before


def test_a_pass_killed_while_moving_leaves_the_persons_files_readable_and_the_next_finishes(tmp_path):
    """Review 13: kill -9 mid-pass. The directory entries were moved into must already carry the shared mode."""
    busybox = _busybox()
    os.chmod(tmp_path, 0o755)
    root = tmp_path / "wt"
    (root / "src" / "pkg").mkdir(parents=True)
    for i in range(20000):
        (root / "src" / f"f{i}").write_text("")
    for path in [root, root / "src", root / "src" / "pkg"]:
        os.chown(path, -1, GID)
        os.chmod(path, 0o2775)
    before = snapshot(root)
    proc = subprocess.Popen(["setpriv", f"--reuid={AGENT_UID}", f"--regid={GID}", "--clear-groups", busybox, "sh", "-c",
                             ADOPT_SCRIPT, "sh", str(AGENT_UID)], cwd=root, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    aside: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        aside = [p for p in root.glob(f"src{SUFFIX}*") if len(os.listdir(p)) > 0]
        if aside:
            break
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not aside:
        pytest.skip("the pass ended before it could be caught half-way")
    assert os.lstat(aside[0]).st_mode & 0o070 == 0o070, oct(os.lstat(aside[0]).st_mode)
    adopt(root)
    assert snapshot(root) == before
    assert not list(root.glob(f"*{SUFFIX}*"))


@pytest.mark.docker
def test_the_pass_beside_a_frozen_container_takes_every_directory_and_leaves_nothing(engine, test_image, tree):
    """After a rollback the pass runs in a container beside the task's, which stays paused: nothing can race it."""
    import docker.types

    from armor_rx.sinks.docker.adopt import adopt_beside

    before = snapshot(tree)
    task = engine.client.containers.run(test_image, ["sleep", "300"], user=f"{AGENT_UID}:{GID}", network_mode="none",
                                        mounts=[docker.types.Mount(target="/workspace", source=str(tree), type="bind")],
                                        labels={"armor.test": "adopt-beside"}, detach=True)
    try:
        task.pause()
        stats = adopt_beside(task, AGENT_UID, "/workspace", str(tree))
        assert task.client.containers.get(task.id).status == "paused"  # frozen the whole time
    finally:
        task.remove(force=True)
    dirs = [p for p in tree.rglob("*") if p.is_dir() and not p.is_symlink()]
    assert (stats.adopted, stats.failed, stats.notes) == (len(dirs), 0, [])
    assert {os.lstat(p).st_uid for p in dirs} == {AGENT_UID}
    assert snapshot(tree) == before
    assert not engine.client.containers.list(all=True, filters={"label": f"armor.adopt-for={task.id}"})
