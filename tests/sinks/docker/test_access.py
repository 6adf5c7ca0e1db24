"""Sharing a worktree through a group (no Docker needed): what changes, what is never followed."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from armor_rx.sinks.docker.access import DEFAULT_ACL, share_worktree

GROUP = 61000


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "wt"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "src" / "a.py").write_text("a\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)
    (root / ".git").write_text("gitdir: /somewhere\n")
    os.chmod(root / ".git", 0o644)
    return root


def _needs_root():
    if os.geteuid() != 0:
        pytest.skip("changing a file's group to another group needs root (a plain user shares through its own group)")


def test_armor_owned_entries_get_the_group_group_write_setgid_and_a_default_acl(tree):
    _needs_root()
    stats = share_worktree(tree, GROUP)
    for path in (tree, tree / "src", tree / "src" / "deep"):
        assert os.lstat(path).st_gid == GROUP and _mode(path) & 0o2070 == 0o2070
        if stats.acl:
            assert os.getxattr(path, "system.posix_acl_default") == DEFAULT_ACL
    assert _mode(tree / "src" / "a.py") & 0o060 == 0o060 and os.lstat(tree / "src" / "a.py").st_gid == GROUP
    assert _mode(tree / "run.sh") & 0o070 == 0o070  # executable for the group too
    assert _mode(tree / ".git") == 0o644 and os.lstat(tree / ".git").st_gid != GROUP  # the link is left as armor made it
    assert stats.changed > 0
    again = share_worktree(tree, GROUP)
    assert again.changed == 0  # idempotent: a second pass finds nothing to do


def test_new_files_in_a_shared_directory_are_group_writable_whatever_the_umask(tree):
    _needs_root()
    stats = share_worktree(tree, GROUP)
    if not stats.acl:
        pytest.skip("this filesystem has no POSIX ACLs")
    old = os.umask(0o077)
    try:
        (tree / "src" / "made").mkdir()
        (tree / "src" / "made" / "f").write_text("x")
    finally:
        os.umask(old)
    assert _mode(tree / "src" / "made") & 0o070 == 0o070
    assert _mode(tree / "src" / "made" / "f") & 0o060 == 0o060
    assert os.lstat(tree / "src" / "made" / "f").st_gid == GROUP  # setgid directory


def test_set_id_bits_are_cleared(tree):
    os.chmod(tree / "run.sh", 0o6755)
    stats = share_worktree(tree, os.getegid() or GROUP)
    assert not _mode(tree / "run.sh") & 0o6000
    assert stats.setid_cleared == 1


def test_symlinks_and_hard_links_are_never_followed_out_of_the_worktree(tree, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("s")
    os.chmod(secret, 0o4600)
    os.chmod(outside, 0o700)
    os.symlink(outside, tree / "dir-link")
    os.symlink(secret, tree / "file-link")
    os.link(secret, tree / "hard")
    before = {p: (os.lstat(p).st_mode, os.lstat(p).st_gid) for p in (outside, secret)}
    share_worktree(tree, os.getegid() or GROUP)
    assert {p: (os.lstat(p).st_mode, os.lstat(p).st_gid) for p in (outside, secret)} == before
    assert os.path.islink(tree / "dir-link") and os.path.islink(tree / "file-link")


def test_a_very_deep_tree_does_not_crash_the_share(tmp_path):
    root = tmp_path / "wt"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    for _ in range(1500):  # deeper than Python's recursion limit; made through descriptors (paths get too long)
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)
    try:
        stats = share_worktree(root, os.getegid() or GROUP)
        assert stats.changed >= 1  # the levels it could open were shared; the rest are counted, not a crash
        assert stats.changed + stats.skipped >= 1500 or stats.notes
    finally:
        _remove_deep(root)


def _remove_deep(root):
    """Remove a chain of nested 'd' directories without recursion (pytest's own cleanup would recurse)."""
    fds = [os.open(root, os.O_RDONLY)]
    while True:
        try:
            fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
        except FileNotFoundError:
            break
    os.close(fds.pop())
    while fds:
        os.rmdir("d", dir_fd=fds[-1])
        os.close(fds.pop())


def test_a_plain_user_shares_what_it_owns_and_leaves_the_agents_files_alone(tmp_path):
    """armor as a plain user: its own files get group write; another uid's are not touched (and not an error)."""
    if os.geteuid() != 0 or not subprocess.run(["which", "setpriv"], capture_output=True).returncode == 0:
        pytest.skip("needs root and setpriv to act as a plain user")
    import sys

    root = tmp_path / "wt"
    root.mkdir()
    (root / "mine.txt").write_text("m")
    (root / "agents").mkdir()
    (root / "agents" / "f").write_text("a")
    os.chmod(tmp_path, 0o755)
    for path in (root, root / "mine.txt"):
        os.chown(path, 62003, 62003)
    os.chown(root / "agents", 61000, 62003)
    os.chown(root / "agents" / "f", 61000, 62003)
    os.chmod(root / "agents", 0o700)
    script = ("import sys; sys.path[:0] = sys.argv[2:]; from armor_rx.sinks.docker.access import share_worktree; "
              "print(share_worktree(__import__('pathlib').Path(sys.argv[1]), 62003).to_payload())")
    import sysconfig

    import armor_rx

    paths = [sysconfig.get_paths()["purelib"], os.path.dirname(os.path.dirname(armor_rx.__file__))]
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    # It starts in the worktree: the test's tmp directories above it are root's alone.
    done = subprocess.run(["setpriv", "--reuid=62003", "--regid=62003", "--clear-groups", python, "-c", script,
                           ".", *paths], cwd=root, capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "Permission denied" in done.stderr and python == sys.executable:
        pytest.skip("the test's Python is not readable by another user")
    assert done.returncode == 0, done.stderr
    assert _mode(root / "mine.txt") & 0o060 == 0o060
    assert _mode(root / "agents") == 0o700  # the agent's own: not ours to change
