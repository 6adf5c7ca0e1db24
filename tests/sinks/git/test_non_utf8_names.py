"""File names that are not UTF-8 survive checkpoint, restore, completion and merge (issue 14 item 6).

Git names are bytes; any byte string git accepts must come back byte for byte.
Before the fix, completion crashed writing the index and the task failed for good.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from armor_rx.sinks.git import GitWorkspace

from .conftest import GIT_ENV, fsck, git, started

NAMES = [
    b"caf\xe9.txt",  # latin-1
    b"\xff\xfe",  # nothing decodable at all
    b"\xc3\x28-bad-sequence",
    b"euro-\xe2\x82.txt",  # a truncated sequence
    b"dir\x80/x\x81y",  # in a directory whose own name is not UTF-8
    b"dir\x80/deeper\xfe/z",
]


def _ls(cwd: Path, ref: str) -> set[bytes]:
    out = subprocess.run(["git", "ls-tree", "-r", "-z", "--name-only", ref], cwd=cwd,
                         env={**os.environ, **GIT_ENV}, capture_output=True, check=True).stdout
    return set(out.split(b"\0")) - {b""}


def _write(root: Path, names: list[bytes], tag: bytes) -> None:
    for name in names:
        full = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(tag + name + b"\n")


def _read(root: Path, name: bytes) -> bytes:
    with open(os.path.join(os.fsencode(root), name), "rb") as f:
        return f.read()


@pytest.mark.parametrize("merge", ["none", "ff", "merge"])
def test_non_utf8_names_survive_checkpoint_restore_completion_and_merge(
    ws: GitWorkspace, repo: Path, merge: str
) -> None:
    path = started(ws, "bytes")
    _write(path, NAMES, b"v1 ")
    os.symlink(b"caf\xe9.txt", os.path.join(os.fsencode(path), b"link-\xe9"))
    cp = ws.checkpoint("bytes")
    assert set(NAMES) | {b"link-\xe9"} <= _ls(repo, cp.commit)
    # Rollback: change one, delete the rest, restore.
    _write(path, NAMES[:1], b"v2 ")
    for name in NAMES[1:]:
        os.unlink(os.path.join(os.fsencode(path), name))
    assert {f.path.encode("utf-8", "surrogateescape") for f in ws.diff("bytes", cp.id).files} == set(NAMES)
    ws.restore("bytes", cp.id)
    assert all(_read(path, n) == b"v1 " + n + b"\n" for n in NAMES)
    assert os.readlink(os.path.join(os.fsencode(path), b"link-\xe9")) == b"caf\xe9.txt"
    if merge == "merge":
        _write(repo, [b"user-\xe9.txt"], b"user ")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "user work with a latin-1 name")
    done = ws.complete("bytes", "bytes", merge=merge)  # type: ignore[arg-type]
    assert done.committed
    assert set(NAMES) <= _ls(repo, "task/bytes")
    assert git(path, "status", "--porcelain") == ""  # the worktree's index names the same bytes
    if merge != "none":
        assert done.merged
        assert set(NAMES) <= _ls(repo, "main")
        assert all(_read(repo, n) == b"v1 " + n + b"\n" for n in NAMES)
        assert git(repo, "status", "--porcelain") == ""
    fsck(repo)
    # A branch from the checkpoint carries them too.
    branch = ws.branch_from_checkpoint(cp.id, "copy", source_task_id="bytes")
    assert set(NAMES) <= _ls(repo, branch)
