"""The incremental scan and its stat cache: what is trusted, what is re-hashed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from armor_rx.sinks.git import GitWorkspace
from armor_rx.sinks.git import scan as scan_module
from armor_rx.sinks.git import statcache
from armor_rx.sinks.git.scan import ScanPolicy, scan_worktree
from armor_rx.sinks.git.statcache import FALLBACK_RACY_NS, StatCache
from armor_rx.sinks.git.trees import diff_trees

from .conftest import git, started

FUTURE_NS = (int(time.time()) + 3600) * 10**9


def fresh_tree(ws: GitWorkspace, path: Path) -> bytes:
    """The worktree's tree from a scan that trusts nothing."""
    return scan_worktree(path, ws.checkpoints_store.store, {}, ScanPolicy()).tree


def settle() -> None:
    # File timestamps come from the kernel's coarse clock (a few ms per tick):
    # after this, a new stamp is in a later tick than anything written before.
    time.sleep(0.05)


def test_files_older_than_the_stamp_are_trusted_next_time(ws: GitWorkspace) -> None:
    path = started(ws, "old")
    for i in range(20):
        (path / "d" / f"{i % 3}").mkdir(parents=True, exist_ok=True)
        (path / "d" / f"{i % 3}" / f"f{i}.txt").write_text(f"{i}\n")
    settle()
    store = ws.checkpoints_store
    first = store.scan("old", path)
    assert first.racy == []
    second = store.scan("old", path)
    assert second.hashed == 0
    assert second.tree == first.tree == fresh_tree(ws, path)
    assert second.trees == first.trees


def test_files_changed_at_or_after_the_stamp_are_hashed_again(ws: GitWorkspace) -> None:
    path = started(ws, "racy")
    (path / "calm").mkdir()
    (path / "calm" / "a.txt").write_text("a\n")
    (path / "busy").mkdir()
    (path / "busy" / "b.txt").write_text("b\n")
    os.utime(path / "busy" / "b.txt", ns=(FUTURE_NS, FUTURE_NS))
    settle()
    store = ws.checkpoints_store
    first = store.scan("racy", path)
    assert first.racy == ["busy/b.txt"]
    second = store.scan("racy", path)
    # Not trusted, so read again, and only its directory's tree (and the root's) rebuilt.
    assert second.hashed == 1
    saved_dirs, saved_trees = store.stat_cache("racy").load_all()
    assert "b.txt" not in saved_dirs.get("busy", {})
    assert "calm" in saved_trees and "busy" not in saved_trees and "" not in saved_trees


def test_save_drops_racy_entries_and_the_trees_above_them(tmp_path: Path) -> None:
    cache = StatCache(tmp_path / "c.json")
    stamp = 1_000
    old: list[object] = [10, 10, 1, 1, 0, 0, 0, 0o100644, "a" * 40]
    by_mtime: list[object] = [stamp, 10, 1, 2, 0, 0, 0, 0o100644, "b" * 40]
    by_ctime: list[object] = [10, stamp + 5, 1, 3, 0, 0, 0, 0o100644, "c" * 40]
    dirs = {"": {"top": old}, "x/y": {"m": by_mtime, "o": old}, "z": {"c": by_ctime}, "w": {"o": old}}
    trees: dict[str, list[object]] = {d: [[], "0" * 40] for d in ("", "x", "x/y", "z", "w")}
    cache.save(dirs, stamp, trees, None)
    loaded, kept = cache.load_all()
    assert loaded == {"": {"top": old}, "x/y": {"o": old}, "z": {}, "w": {"o": old}}
    assert set(kept) == {"w"}
    assert dirs["x/y"] == {"m": by_mtime, "o": old}  # the caller's dict is left alone


def test_stamp_reads_the_filesystem_clock_not_ours(ws: GitWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    path = started(ws, "clock")
    cache = ws.checkpoints_store.stat_cache("clock")
    before = time.time_ns()
    # A wall clock an hour behind the filesystem's (an NFS server's, say) must not matter.
    monkeypatch.setattr(statcache.time, "time_ns", lambda: before - 3600 * 10**9)
    stamp = cache.stamp(path)
    marker = cache.path.with_name(cache.path.name + ".stamp")
    assert stamp == marker.stat().st_mtime_ns
    assert abs(stamp - before) < 5 * 10**9
    (path / "after.txt").write_text("written after the stamp\n")
    assert (path / "after.txt").stat().st_mtime_ns >= stamp


def test_stamp_falls_back_to_a_wide_window_on_another_filesystem(
    ws: GitWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = started(ws, "elsewhere")
    cache = ws.checkpoints_store.stat_cache("elsewhere")
    real_stat = os.stat

    def stat(target: Any, *args: Any, **kwargs: Any) -> Any:
        info = real_stat(target, *args, **kwargs)
        if Path(target) == path:
            return os.stat_result((info.st_mode, info.st_ino, info.st_dev + 1, *tuple(info)[3:]))
        return info

    monkeypatch.setattr(statcache.os, "stat", stat)
    now = time.time_ns()
    stamp = cache.stamp(path)
    assert now - FALLBACK_RACY_NS <= stamp <= time.time_ns() - FALLBACK_RACY_NS


def _random_change(rng: random.Random, root: Path, step: int) -> None:
    files = sorted(p for p in root.rglob("*") if ".git" not in p.parts and (p.is_file() or p.is_symlink()))
    dirs = sorted(p for p in root.rglob("*") if ".git" not in p.parts and p.is_dir() and not p.is_symlink())
    op = rng.choice(["add", "same_size", "grow", "delete", "rename", "chmod", "link", "file_to_dir", "rmtree", "mvdir"])
    if op == "add" or not files:
        where = rng.choice([root, *dirs]) / f"n{step}"
        if rng.random() < 0.5:
            where.mkdir()
            where = where / "inner.txt"
        where.write_text(f"new {step}\n")
        return
    target = rng.choice(files)
    if op == "same_size" and not target.is_symlink():
        data = bytearray(target.read_bytes() or b"x")
        data[0] = (data[0] + 1) % 256 or 1
        target.write_bytes(bytes(data))
    elif op == "grow" and not target.is_symlink():
        with open(target, "ab") as f:
            f.write(b"more\n")
    elif op == "delete":
        target.unlink()
    elif op == "rename":
        target.rename(target.with_name(f"r{step}-{target.name}"))
    elif op == "chmod" and not target.is_symlink():
        target.chmod(target.stat().st_mode ^ 0o100)
    elif op == "link":
        target.unlink()
        os.symlink(f"points-{step}", target)
    elif op == "file_to_dir":
        target.unlink()
        target.mkdir()
        (target / "now-a-dir.txt").write_text("d\n")
    elif op in ("rmtree", "mvdir") and dirs:
        chosen = rng.choice(dirs)
        if op == "mvdir":
            chosen.rename(chosen.with_name(f"m{step}-{chosen.name}"))
        else:
            for sub in sorted(chosen.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                sub.rmdir() if sub.is_dir() and not sub.is_symlink() else sub.unlink()
            chosen.rmdir()


@pytest.mark.parametrize("seed", range(6))
def test_incremental_scan_equals_a_full_scan(ws: GitWorkspace, repo: Path, seed: int) -> None:
    """Whatever changes and however fast, the cache never hides a change."""
    rng = random.Random(seed)
    path = started(ws, f"inv{seed}")
    for i in range(12):
        d = path / f"d{i % 3}" / f"e{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n")
    store = ws.checkpoints_store
    for step in range(25):
        for k in range(rng.randint(1, 3)):
            _random_change(rng, path, step * 10 + k)
        if rng.random() < 0.3:
            settle()
        result = store.scan(f"inv{seed}", path)
        assert result.tree == fresh_tree(ws, path), f"step {step}"
    cp = ws.checkpoint(f"inv{seed}")
    assert git(repo, "rev-parse", f"{cp.commit}^{{tree}}").strip() == fresh_tree(ws, path).decode()


def test_after_a_restore_only_what_it_wrote_is_read_again(ws: GitWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    path = started(ws, "back")
    for d in ("a", "b", "c"):
        (path / d).mkdir()
        for i in range(5):
            (path / d / f"{i}.txt").write_text(f"{d}{i}\n")
    settle()
    first = ws.checkpoint("back")
    (path / "b" / "0.txt").write_text("changed\n")
    ws.checkpoint("back")
    ws.restore("back", first.id)
    settle()
    built: list[int] = []
    real = scan_module._Scan._write_tree
    monkeypatch.setattr(scan_module._Scan, "_write_tree", lambda self, *a: built.append(1) or real(self, *a))
    result = ws.checkpoints_store.scan("back", path)
    assert len(built) == 2  # b/ and the root; a/, c/ and src/ come from the checkpoint's trees
    assert result.hashed == 1  # b/0.txt, written by the restore
    assert result.tree.decode() == first.tree == fresh_tree(ws, path).decode()


@pytest.mark.parametrize("seed", range(4))
def test_scans_after_restores_equal_a_full_scan(ws: GitWorkspace, seed: int) -> None:
    rng = random.Random(seed)
    task = f"rr{seed}"
    path = started(ws, task)
    for i in range(10):
        d = path / f"d{i % 3}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n")
    saved = []
    for step in range(12):
        for k in range(rng.randint(1, 3)):
            _random_change(rng, path, step * 10 + k)
        if rng.random() < 0.5:
            saved.append(ws.checkpoint(task))
        elif saved:
            target = rng.choice(saved)
            ws.restore(task, target.id)
            assert fresh_tree(ws, path).decode() == target.tree
        if rng.random() < 0.3:
            settle()
        assert ws.checkpoints_store.scan(task, path).tree == fresh_tree(ws, path), f"step {step}"


@pytest.mark.parametrize("seed", range(4))
def test_diff_trees_agrees_with_git(ws: GitWorkspace, repo: Path, seed: int) -> None:
    rng = random.Random(seed)
    task = f"diff{seed}"
    path = started(ws, task)
    for i in range(10):
        d = path / f"d{i % 3}" / f"e{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n")
    trees = [ws.checkpoint(task).tree]
    for step in range(8):
        for k in range(rng.randint(1, 4)):
            _random_change(rng, path, step * 10 + k)
        trees.append(ws.checkpoint(task).tree)
    store = ws.checkpoints_store.store
    pairs = list(zip(trees, trees[1:])) + [(rng.choice(trees), rng.choice(trees)) for _ in range(8)]
    for old, new in pairs:
        diff = diff_trees(store, old.encode(), new.encode())
        expected: dict[str, tuple[str, str]] = {}
        for line in git(repo, "diff-tree", "-r", "--no-renames", old, new).splitlines():
            meta, name = line.split("\t")
            old_mode, new_mode, old_sha, new_sha, _ = meta[1:].split()
            expected[name] = (old_mode, new_mode)
            if old_mode != "000000":
                assert diff.old[name] == (int(old_mode, 8), old_sha.encode())
            if new_mode != "000000":
                assert diff.new[name] == (int(new_mode, 8), new_sha.encode())
        assert set(diff.old) | set(diff.new) == set(expected)
        # The directory entries given are those of the new tree.
        for rel, (subs, sha) in diff.trees.items():
            assert git(repo, "rev-parse", f"{new}:{rel}" if rel else f"{new}^{{tree}}").strip() == sha
        assert all(git(repo, "cat-file", "-t", f"{new}:{d}", check=False).strip() != "tree" for d in diff.gone)


def test_a_directory_swapped_for_a_symlink_mid_scan_is_not_followed(
    ws: GitWorkspace, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = started(ws, "swap")
    (path / "inner").mkdir()
    (path / "inner" / "mine.txt").write_text("mine\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = b"host secret that must never enter the repository\n"
    (outside / "secret.txt").write_bytes(secret)
    real_scandir = os.scandir
    swapped: list[bool] = []

    def scandir_then_swap(target: Any) -> Any:
        with real_scandir(target) as listing:
            entries = list(listing)
        if not swapped and any(e.name == "inner" for e in entries):
            # Listed as a directory; now an agent swaps it for a symlink out.
            (path / "inner").rename(path / "moved")
            os.symlink(outside, path / "inner")
            swapped.append(True)
        return contextlib.nullcontext(entries)

    monkeypatch.setattr(os, "scandir", scandir_then_swap)
    result = ws.checkpoints_store.scan("swap", path)
    monkeypatch.undo()
    assert swapped
    secret_sha = hashlib.sha1(b"blob %d\x00" % len(secret) + secret).hexdigest()
    assert subprocess.run(["git", "cat-file", "-e", secret_sha], cwd=repo).returncode != 0
    assert git(repo, "ls-tree", result.tree.decode(), "inner").split()[:2] == ["120000", "blob"]
    # The next scan sees the worktree as it is now: the symlink, and 'moved/'.
    assert ws.checkpoints_store.scan("swap", path).tree == fresh_tree(ws, path)
    assert subprocess.run(["git", "cat-file", "-e", secret_sha], cwd=repo).returncode != 0


def test_a_deleted_file_with_an_undecodable_name_is_seen(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "bytes")
    (path / "d").mkdir()
    (path / "d" / "ok.txt").write_text("ok\n")
    bad = os.path.join(os.fsencode(path / "d"), b"bad\xff.txt")
    with open(bad, "wb") as f:
        f.write(b"not utf-8 named\n")
    settle()
    first = ws.checkpoint("bytes")
    os.unlink(bad)
    second = ws.checkpoint("bytes")
    assert second.tree != first.tree
    assert second.tree.encode() == fresh_tree(ws, path)
    assert git(repo, "ls-tree", "-r", "--name-only", second.commit).split() .count("d/ok.txt") == 1
    assert "bad" not in git(repo, "ls-tree", "-r", "--name-only", second.commit)


@pytest.mark.parametrize("kind", ["directory", "loop", "fifo", "outside"])
def test_a_gitignore_that_is_not_a_regular_file_is_not_read(
    ws: GitWorkspace, repo: Path, tmp_path: Path, kind: str
) -> None:
    path = started(ws, f"gi-{kind}")
    (path / "sub").mkdir()
    (path / "sub" / "keep.log").write_text("kept\n")
    target = path / "sub" / ".gitignore"
    if kind == "directory":
        target.mkdir()
    elif kind == "loop":
        os.symlink(".gitignore", target)
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        (tmp_path / "patterns").write_text("*.log\n")
        os.symlink(tmp_path / "patterns", target)
    cp = ws.checkpoint(f"gi-{kind}")  # neither raises nor hangs on a fifo
    assert "sub/keep.log" in git(repo, "ls-tree", "-r", "--name-only", cp.commit).split()


def test_temp_files_left_by_a_crashed_restore_are_not_checkpointed(ws: GitWorkspace, repo: Path) -> None:
    path = started(ws, "crashed")
    (path / ".armor-tmp-0123456789ab-1").write_text("half a file\n")
    cp = ws.checkpoint("crashed")
    assert ".armor-tmp" not in git(repo, "ls-tree", "-r", "--name-only", cp.commit)


def test_files_on_another_filesystem_are_never_trusted(ws: GitWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Their timestamps come from another clock than the stamp (a mount inside the worktree)."""
    path = started(ws, "mounted")
    (path / "a.txt").write_text("a\n")
    settle()
    real_fstat = os.fstat
    calls: list[int] = []

    def fstat(fd: int) -> os.stat_result:
        info = real_fstat(fd)
        calls.append(fd)
        if len(calls) == 1:  # the worktree root: pretend the files live on another device
            return os.stat_result((info.st_mode, info.st_ino, info.st_dev + 1, *tuple(info)[3:]))
        return info

    store = ws.checkpoints_store
    monkeypatch.setattr(os, "fstat", fstat)
    first = store.scan("mounted", path)
    monkeypatch.undo()
    assert "a.txt" in first.racy
    assert store.scan("mounted", path).hashed >= 1  # read again, not taken from the cache
