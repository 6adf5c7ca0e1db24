"""Loose objects written by armor_rx: valid for git, read-only, nothing left behind."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from dulwich.repo import Repo

from armor_rx.sinks.git import blobs
from armor_rx.sinks.git.blobs import iter_blob, write_blob_bytes, write_blob_from_fd, write_object_bytes

from .conftest import fsck, git


def test_objects_are_what_git_reads(repo: Path, tmp_path: Path) -> None:
    with Repo(str(repo)) as r:
        store = r.object_store
        data = b"hello loose object\n"
        sha, added = write_blob_bytes(store, data)
        (tmp_path / "data").write_bytes(data)
        assert sha.decode() == git(repo, "hash-object", str(tmp_path / "data")).strip()
        assert added > 0
        path = Path(store.path) / sha.decode()[:2] / sha.decode()[2:]
        assert stat.S_IMODE(path.stat().st_mode) == 0o444  # as git leaves them
        assert write_blob_bytes(store, data) == (sha, 0)  # already there: nothing added
        assert git(repo, "cat-file", "-p", sha.decode()) == data.decode()
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(3 * blobs.CHUNK + 5))
        with open(big, "rb") as f:
            big_sha, _ = write_blob_from_fd(store, f.fileno(), big.stat().st_size, str(big))
        assert b"".join(iter_blob(store, big_sha)) == big.read_bytes()
        tree, _ = write_object_bytes(store, b"tree", b"100644 a\x00" + bytes.fromhex(sha.decode()))
        assert git(repo, "ls-tree", tree.decode()).split() == ["100644", "blob", sha.decode(), "a"]
        assert not [n for n in os.listdir(store.path) if n.startswith("tmp_obj_")]
    fsck(repo)


def test_a_missing_fan_out_directory_is_made(repo: Path) -> None:
    with Repo(str(repo)) as r:
        store = r.object_store
        objects = Path(store.path)
        # Content whose objects/<2 hex>/ directory does not exist yet.
        data = next(
            d for d in (f"fan-out {i}\n".encode() for i in range(1000))
            if not (objects / hashlib.sha1(b"blob %d\x00" % len(d) + d).hexdigest()[:2]).exists()
        )
        sha, _ = write_blob_bytes(store, data)
        assert (objects / sha.decode()[:2]).is_dir()
        assert git(repo, "cat-file", "-p", sha.decode()) == data.decode()
    fsck(repo)
