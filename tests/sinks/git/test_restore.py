"""Restoring a worktree while something in it races the restore: nothing outside is ever touched."""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dulwich.objects import Tree

from armor_rx.errors import ArmorError, GitError, PathEscape
from armor_rx.sinks.git import GitWorkspace
from armor_rx.sinks.git import beneath
from armor_rx.sinks.git import restore as restore_module
from armor_rx.sinks.git.blobs import write_blob_bytes
from armor_rx.sinks.git.restore import flatten_tree, materialize

from .conftest import fsck, git, started


def listing(root: Path) -> dict[str, tuple[int, bytes]]:
    """Everything under ``root`` (nothing followed): mode and content, or link target."""
    out: dict[str, tuple[int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                body = os.fsencode(os.readlink(full))
            elif stat.S_ISREG(info.st_mode):
                body = Path(full).read_bytes()
            else:
                body = b""
            out[os.path.relpath(full, root)] = (info.st_mode, body)
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the worktree holding the same names as its ``sub``."""
    out = tmp_path / "outside"
    (out / "deep").mkdir(parents=True)
    for name in ("edit.txt", "gone.txt", "run.sh", "keep.txt", "new.txt", "deep/x.txt"):
        (out / name).write_text("outside\n")
        (out / name).chmod(0o644)
    return out


def swap_for_symlink(directory: Path, target: Path) -> None:
    """What a hostile process does: move the directory aside, put a symlink in its place."""
    os.rename(directory, directory.with_name(directory.name + ".moved"))
    os.symlink(target, directory)


# One change of each kind, all below 'sub': (worktree at the checkpoint, worktree edited after it).
KINDS: dict[str, tuple[Callable[[Path], None], Callable[[Path], None]]] = {
    "write": (lambda sub: (sub / "edit.txt").write_text("v1\n"), lambda sub: (sub / "edit.txt").write_text("v2\n")),
    "delete": (lambda sub: None, lambda sub: (sub / "gone.txt").write_text("new since\n")),
    "chmod": (lambda sub: (sub / "run.sh").chmod(0o755), lambda sub: (sub / "run.sh").chmod(0o644)),
}


def prepared(ws: GitWorkspace, task: str, kind: str) -> tuple[Path, str]:
    """A worktree one ``kind`` of change away from its checkpoint; returns it and the checkpoint id."""
    path = started(ws, task)
    sub = path / "sub"
    sub.mkdir()
    (sub / "keep.txt").write_text("keep\n")
    (sub / "edit.txt").write_text("v0\n")
    (sub / "run.sh").write_text("#!/bin/sh\n")
    at_checkpoint, after = KINDS[kind]
    at_checkpoint(sub)
    cp = ws.checkpoint(task)
    after(sub)
    return path, cp.id


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_directory_swapped_after_the_check_stops_the_restore(
    ws: GitWorkspace, outside: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, cp = prepared(ws, f"swap-{kind}", kind)
    before = listing(outside)
    check = restore_module._unsaved_in_the_way

    def check_then_swap(root: Path, current: Any, target: Any) -> list[str]:
        blocked = check(root, current, target)
        swap_for_symlink(path / "sub", outside)
        return blocked

    monkeypatch.setattr(restore_module, "_unsaved_in_the_way", check_then_swap)
    with pytest.raises(PathEscape, match=r"'sub' in .* is a symlink"):
        ws.restore(f"swap-{kind}", cp)
    assert listing(outside) == before


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_directory_swapped_at_the_last_moment_is_written_where_it_went(
    ws: GitWorkspace, outside: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap happens as the restore touches the file itself: it lands in the moved directory."""
    path, cp = prepared(ws, f"late-{kind}", kind)
    before = listing(outside)
    leaf = {"write": ".armor-tmp-", "delete": "gone.txt", "chmod": "run.sh"}[kind]
    armed = [False]

    def swapping(call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(name: Any, *args: Any, **kwargs: Any) -> Any:
            if armed[0] and isinstance(name, (str, bytes, os.PathLike)) \
                    and os.path.basename(os.fsdecode(name)).startswith(leaf):
                armed[0] = False
                swap_for_symlink(path / "sub", outside)
            return call(name, *args, **kwargs)
        return wrapper

    # Every call that could be the last look before the change: today's and the old path-based code's.
    for call in ("open", "unlink", "chmod", "stat", "lstat"):
        monkeypatch.setattr(os, call, swapping(getattr(os, call)))
    check = restore_module._unsaved_in_the_way

    def check_then_arm(root: Path, current: Any, target: Any) -> list[str]:
        blocked = check(root, current, target)
        armed[0] = True
        return blocked

    monkeypatch.setattr(restore_module, "_unsaved_in_the_way", check_then_arm)
    ws.restore(f"late-{kind}", cp)
    monkeypatch.undo()
    assert not armed[0], "the restore never reached the hook"
    assert listing(outside) == before
    moved = path / "sub.moved"
    if kind == "write":
        assert (moved / "edit.txt").read_text() == "v1\n"
    elif kind == "delete":
        assert not (moved / "gone.txt").exists() and (moved / "keep.txt").exists()
    else:
        assert (moved / "run.sh").stat().st_mode & 0o111
    assert not [n for n in os.listdir(moved) if n.startswith(".armor-tmp-")]


def test_restores_racing_a_symlink_swapper_never_touch_the_outside(
    ws: GitWorkspace, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = started(ws, "stress")
    sub = path / "sub"
    (sub / "deep").mkdir(parents=True)
    for name in ("edit.txt", "gone.txt", "keep.txt", "deep/x.txt"):
        (sub / name).write_text(f"{name} one\n")
    (sub / "run.sh").write_text("#!/bin/sh\n")
    one = ws.checkpoint("stress")
    (sub / "edit.txt").write_text("two\n")
    (sub / "gone.txt").unlink()
    (sub / "new.txt").write_text("new\n")
    (sub / "deep" / "x.txt").write_text("two\n")
    (sub / "run.sh").chmod(0o755)
    two = ws.checkpoint("stress")
    store = ws.checkpoints_store.store
    trees = [flatten_tree(store, one.tree.encode()), flatten_tree(store, two.tree.encode())]
    before = listing(outside)
    # The up-front check reads paths and refuses most runs once the swaps have
    # scrambled the worktree; containment must not depend on it, so it is off.
    monkeypatch.setattr(restore_module, "_unsaved_in_the_way", lambda root, current, target: [])
    stop = threading.Event()

    def swapper() -> None:
        swaps = 0
        while not stop.is_set():
            swaps += 1
            aside = path / f"sub.{swaps}"  # a fresh name: a failed swap back leaves the old one behind
            try:
                os.rename(sub, aside)
                os.symlink(outside, sub)
                time.sleep(0.0005)
                os.unlink(sub)
                os.rename(aside, sub)
                time.sleep(0.0005)
            except OSError:
                pass  # the restore made or removed 'sub' meanwhile: go again with what is there

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    runs = refused = 0
    deadline = time.monotonic() + 1.5
    try:
        while time.monotonic() < deadline:
            current, target = trees[runs % 2], trees[(runs + 1) % 2]
            runs += 1
            try:
                materialize(path, store, current, target, {})
            except (ArmorError, OSError):
                refused += 1
    finally:
        stop.set()
        thread.join()
    assert listing(outside) == before
    assert runs > 20 and refused > 0, (runs, refused)


def test_a_saved_symlink_to_outside_is_replaced_by_a_directory_not_followed(
    ws: GitWorkspace, outside: Path
) -> None:
    path = started(ws, "saved-link")
    (path / "d").mkdir()
    (path / "d" / "new.txt").write_text("inside\n")
    (path / "d" / "deep").mkdir()
    (path / "d" / "deep" / "x.txt").write_text("inside\n")
    as_dir = ws.checkpoint("saved-link")
    (path / "d" / "deep" / "x.txt").unlink()
    (path / "d" / "deep").rmdir()
    (path / "d" / "new.txt").unlink()
    (path / "d").rmdir()
    os.symlink(outside, path / "d")
    ws.checkpoint("saved-link")  # the symlink is saved
    before = listing(outside)
    ws.restore("saved-link", as_dir.id)
    assert not (path / "d").is_symlink()
    assert (path / "d" / "new.txt").read_text() == "inside\n"
    assert (path / "d" / "deep" / "x.txt").read_text() == "inside\n"
    assert listing(outside) == before


def test_a_mode_change_never_reaches_a_hard_link_outside(ws: GitWorkspace, outside: Path) -> None:
    path = started(ws, "hardlink")
    (path / "run.sh").write_text("outside\n")
    (path / "run.sh").chmod(0o755)
    cp = ws.checkpoint("hardlink")
    (path / "run.sh").unlink()
    os.link(outside / "run.sh", path / "run.sh")  # same content, mode 644: only the mode differs
    before = listing(outside)
    ws.restore("hardlink", cp.id)
    assert listing(outside) == before
    assert (path / "run.sh").stat().st_mode & 0o111 and (path / "run.sh").stat().st_nlink == 1


def test_a_worktree_root_that_is_a_symlink_is_refused(ws: GitWorkspace, tmp_path: Path, outside: Path) -> None:
    os.symlink(outside, tmp_path / "fake-worktree")
    before = listing(outside)
    with pytest.raises(GitError, match="cannot open the worktree"):
        materialize(tmp_path / "fake-worktree", ws.checkpoints_store.store, {"keep.txt": (0o100644, b"1" * 40)}, {}, {})
    assert listing(outside) == before


def test_empty_directories_where_a_file_goes_are_removed(ws: GitWorkspace) -> None:
    path = started(ws, "dir-to-file")
    (path / "out").write_text("a file\n")
    cp = ws.checkpoint("dir-to-file")
    (path / "out").unlink()
    (path / "out" / "a" / "b").mkdir(parents=True)  # empty directories: no scan records them
    ws.restore("dir-to-file", cp.id)
    assert (path / "out").read_text() == "a file\n"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_many_directories_and_no_descriptor_left_open(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "wide")
    for i in range(3 * beneath._MAX_OPEN_DIRS):
        d = path / f"d{i % 7}" / f"e{i}"
        d.mkdir(parents=True)
        (d / "f.txt").write_text(f"{i}\n")
    full = ws.checkpoint("wide")
    for d in path.glob("d*"):
        shutil.rmtree(d)
    empty = ws.checkpoint("wide")
    fds = _open_fds()
    ws.restore("wide", full.id)
    assert _open_fds() == fds
    assert all((path / f"d{i % 7}" / f"e{i}" / "f.txt").read_text() == f"{i}\n"
               for i in range(3 * beneath._MAX_OPEN_DIRS))
    ws.restore("wide", empty.id)
    assert _open_fds() == fds
    assert not list(path.glob("d*"))  # emptied directories are pruned
    fsck(repo)


def test_no_descriptor_left_open_when_refusing(ws: GitWorkspace, outside: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path, cp = prepared(ws, "fds", "write")
    check = restore_module._unsaved_in_the_way

    def check_then_swap(root: Path, current: Any, target: Any) -> list[str]:
        blocked = check(root, current, target)
        swap_for_symlink(path / "sub", outside)
        return blocked

    monkeypatch.setattr(restore_module, "_unsaved_in_the_way", check_then_swap)
    fds = _open_fds()
    with pytest.raises(PathEscape):
        ws.restore("fds", cp)
    assert _open_fds() == fds


@pytest.mark.parametrize("bad", ["../escape.txt", "a/../../escape.txt", ".git/hooks/post-checkout",
                                 "a/.GIT/config", "git~1/x", "a/.git", "a//b"])
def test_names_that_leave_the_worktree_or_mean_dot_git_are_refused(
    ws: GitWorkspace, tmp_path: Path, bad: str
) -> None:
    path = started(ws, "names")
    store = ws.checkpoints_store.store
    sha, _ = write_blob_bytes(store, b"evil\n")
    before = listing(tmp_path / "repo"), listing(path)
    with pytest.raises((PathEscape, GitError)):  # the up-front check may see some first
        materialize(path, store, {}, {bad: (0o100644, sha)}, {})
    assert (listing(tmp_path / "repo"), listing(path)) == before
    assert not (tmp_path / "escape.txt").exists()


def test_a_submodule_spot_holding_a_file_is_refused(ws: GitWorkspace) -> None:
    path = started(ws, "gitlink")
    (path / "mod").write_text("a file\n")
    with pytest.raises(GitError, match="cannot restore submodule 'mod'"):
        materialize(path, ws.checkpoints_store.store, {}, {"mod": (0o160000, b"1" * 40)}, {})


def _reference_flatten(store: Any, tree_id: bytes, prefix: str = "") -> dict[str, tuple[int, bytes]]:
    """flatten_tree as dulwich's objects spell it (the implementation before the fast one)."""
    out: dict[str, tuple[int, bytes]] = {}
    tree = store[tree_id]
    assert isinstance(tree, Tree)
    for item in tree.iteritems():
        name = item.path.decode("utf-8", "surrogateescape")
        path = f"{prefix}/{name}" if prefix else name
        if stat.S_ISDIR(item.mode):
            out.update(_reference_flatten(store, item.sha, path))
        else:
            out[path] = (item.mode, item.sha)
    return out


def test_flatten_tree_matches_dulwich_loose_and_packed(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "flat")
    raw = os.fsencode(path)
    os.mkdir(os.path.join(raw, b"d\xff"))
    with open(os.path.join(raw, b"d\xff", b"caf\xe9.txt"), "wb") as f:
        f.write(b"x\n")
    (path / "a" / "b" / "c").mkdir(parents=True)
    (path / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    (path / "a" / "tool").write_text("#!/bin/sh\n")
    (path / "a" / "tool").chmod(0o755)
    os.symlink("../README.md", path / "a" / "readme")
    tree = ws.checkpoint("flat").tree.encode()
    store = ws.checkpoints_store.store
    expected = _reference_flatten(store, tree)
    assert "d\udcff/caf\udce9.txt" in expected and expected["a/tool"][0] == 0o100755
    assert flatten_tree(store, tree) == expected
    assert list(flatten_tree(store, tree)) == list(expected)  # same order too
    assert flatten_tree(store, tree, "top") == {f"top/{p}": v for p, v in expected.items()}
    git(repo, "gc", "-q", "--prune=now")
    hexsha = tree.decode()
    assert not os.path.exists(os.path.join(os.fspath(store.path), hexsha[:2], hexsha[2:]))
    assert flatten_tree(store, tree) == expected  # read from the pack now
    blob = expected["a/tool"][1]
    with pytest.raises(GitError, match="is not a tree"):
        flatten_tree(store, blob)
