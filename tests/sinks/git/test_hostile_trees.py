"""Tree shapes an agent can make in its worktree never stop armor (issue 13 item 5).

Each shape goes through checkpoint, rollback and completion (each merge mode
where it can be merged); the result is checked with the real git CLI.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from armor_rx.sinks.git import GitWorkspace
from armor_rx.sinks.git.beneath import remove_tree

from .conftest import Events, fsck, git, started

DEPTH = 1500


@pytest.fixture(autouse=True)
def _remove_deep_trees(tmp_path: Path) -> Iterator[None]:
    """pytest's own clean-up recurses once per level: deep trees are removed here, even after a failure."""
    yield
    for chain in [tmp_path / "repo" / "d", *tmp_path.glob("state/worktrees/*/d")]:
        if chain.exists():
            remove_tree(chain)


def _make_deep(root: Path, depth: int = DEPTH) -> bytes:
    """``d/d/.../d/bottom.txt``, made one level at a time (os.makedirs recurses); return its relative path."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            try:
                os.mkdir("d", dir_fd=fd)
            except FileExistsError:
                pass
            sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        out = os.open("bottom.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd)
        os.write(out, b"at the bottom\n")
        os.close(out)
    finally:
        os.close(fd)
    return b"d/" * depth + b"bottom.txt"


def _read_deep(root: Path, depth: int = DEPTH) -> bytes | None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            try:
                sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                return None
            os.close(fd)
            fd = sub
        try:
            f = os.open("bottom.txt", os.O_RDONLY, dir_fd=fd)
        except FileNotFoundError:
            return None
        data = os.read(f, 100)
        os.close(f)
        return data
    finally:
        os.close(fd)


@pytest.mark.parametrize("merge", ["none", "ff", "merge"])
def test_a_directory_1500_levels_deep_round_trips(ws: GitWorkspace, repo: Path, merge: str) -> None:
    path = started(ws, "deep")
    rel = _make_deep(path)
    cp = ws.checkpoint("deep", "deep")
    assert cp.left_out_count == 0
    assert git(repo, "cat-file", "-p", f"refs/armor/checkpoints/deep:{rel.decode()}") == "at the bottom\n"
    remove_tree(path / "d")
    assert [f.status for f in ws.diff("deep", cp.id).files] == ["deleted"]
    ws.restore("deep", cp.id)
    assert _read_deep(path) == b"at the bottom\n"
    assert ws.diff("deep", cp.id).files == ()
    if merge == "merge":
        (repo / "user.txt").write_text("user\n")
        git(repo, "add", "user.txt")
        git(repo, "commit", "-q", "-m", "user work")
    done = ws.complete("deep", "deep tree", merge=merge)  # type: ignore[arg-type]
    assert done.committed
    assert git(repo, "cat-file", "-p", f"task/deep:{rel.decode()}") == "at the bottom\n"
    if merge != "none":
        assert done.merged, done
        assert git(repo, "cat-file", "-p", f"main:{rel.decode()}") == "at the bottom\n"
        assert _read_deep(repo) == b"at the bottom\n"
        assert git(repo, "status", "--porcelain") == ""
    assert git(path, "status", "--porcelain") == ""
    fsck(repo)
    ws.remove_worktree("deep")
    assert not path.exists()




def test_a_tree_deeper_than_the_limit_is_left_out_with_a_reason(
    ws: GitWorkspace, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from armor_rx.sinks.git import scan

    monkeypatch.setattr(scan, "MAX_DEPTH", 20)
    path = started(ws, "deeper")
    _make_deep(path, 30)
    (path / "ok.txt").write_text("ok\n")
    cp = ws.checkpoint("deeper")
    (too_deep,) = [p for p, why in cp.left_out if why == "deeper than 20 directories"]
    assert too_deep == "d/" * 19 + "d"
    done = ws.complete("deeper", "ok", merge="ff")
    assert done.merged and dict(done.left_out)[too_deep]
    fsck(repo)


def test_a_directory_path_longer_than_the_limit_is_left_out_with_a_reason(
    ws: GitWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from armor_rx.sinks.git import scan

    monkeypatch.setattr(scan, "MAX_PATH_BYTES", 600)
    path = started(ws, "long")
    name = "x" * 200
    (path / name / name / name / name).mkdir(parents=True)
    (path / name / name / "kept.txt").write_text("kept\n")
    (path / name / name / name / name / "lost.txt").write_text("lost\n")
    cp = ws.checkpoint("long")
    assert dict(cp.left_out) == {f"{name}/{name}/{name}": "its path is longer than 600 bytes"}
    assert cp.files == 4 + 1


def _specials(path: Path) -> dict[str, str]:
    made = {}
    os.mkfifo(path / "a-fifo")
    made["a-fifo"] = "a fifo"
    (path / "sockets").mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path / "sockets" / "a-socket"))
    s.close()
    made["sockets/a-socket"] = "a socket"
    if os.geteuid() == 0:
        os.mknod(path / "a-char-device", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        os.mknod(path / "a-block-device", stat.S_IFBLK | 0o600, os.makedev(7, 0))
        made["a-char-device"] = "a character device"
        made["a-block-device"] = "a block device"
    return made


@pytest.mark.parametrize("merge", ["none", "ff"])
def test_fifos_sockets_and_devices_are_left_out_with_a_reason(
    ws: GitWorkspace, repo: Path, events: Events, merge: str
) -> None:
    path = started(ws, "special")
    made = _specials(path)
    long_name = "n" * 255
    (path / long_name).write_text("a name as long as Linux allows\n")
    (path / "many").mkdir()
    for i in range(3000):
        (path / "many" / f"f{i:05d}").write_text(f"{i}\n")
    cp = ws.checkpoint("special")
    assert dict(cp.left_out) == made and cp.left_out_count == len(made)
    assert events.of("checkpoint.created")[-1]["left_out"] == made
    (path / long_name).write_text("changed\n")
    (path / "many" / "f00007").unlink()
    ws.restore("special", cp.id)
    assert (path / long_name).read_text() == "a name as long as Linux allows\n"
    assert (path / "many" / "f00007").read_text() == "7\n"
    assert stat.S_ISFIFO(os.lstat(path / "a-fifo").st_mode)  # left alone, never opened
    done = ws.complete("special", "special files", merge=merge)  # type: ignore[arg-type]
    assert dict(done.left_out) == made
    names = git(repo, "ls-tree", "-r", "--name-only", "task/special").splitlines()
    assert long_name in names and "many/f02999" in names and not set(made) & set(names)
    fsck(repo)


def test_the_left_out_list_is_capped_but_counted(ws: GitWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from armor_rx.sinks.git import scan

    monkeypatch.setattr(scan, "LEFT_OUT_LIMIT", 5)
    path = started(ws, "fifos")
    for i in range(12):
        os.mkfifo(path / f"fifo{i}")
    cp = ws.checkpoint("fifos")
    assert len(cp.left_out) == 5 and cp.left_out_count == 12


def test_deep_directories_in_a_scan_hold_few_descriptors(ws: GitWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """With fewer descriptors allowed than levels, the walk still reads everything (it reopens what it closed)."""
    import resource

    path = started(ws, "fds")
    _make_deep(path, 300)
    for level in (1, 50, 150, 299):
        (path.joinpath(*["d"] * level) / f"side{level}.txt").write_text(f"{level}\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 250), hard))
    try:
        cp = ws.checkpoint("fds")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert cp.files == 4 + 1 + 4 and cp.left_out_count == 0  # the repository's 4, the bottom, 4 on the way
