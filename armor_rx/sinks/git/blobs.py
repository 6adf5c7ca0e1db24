"""Writing and reading blobs without holding a whole file in memory.

Git's loose object format is ``zlib("blob <size>\\0" + content)`` stored at
``objects/<2 hex>/<38 hex>`` where the name is the SHA-1 of the uncompressed
bytes. Because ``lstat`` gives the size up front, the header can be written
first and the content streamed through SHA-1 and a zlib compressor in fixed
chunks: peak memory is one chunk, whatever the file size.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterator

from dulwich.object_store import DiskObjectStore
from dulwich.objects import Blob, ObjectID

from armor_rx.errors import GitError

CHUNK = 1 << 20
#: Files up to this size are read in one go: one read() is faster than a loop
#: and the memory is bounded by this constant anyway.
SMALL_FILE = 1 << 20
#: Git's default core.looseCompression: favour speed, packs recompress later.
LOOSE_LEVEL = 1


class FileChanged(Exception):
    """The file changed size while it was being read; the caller re-stats and retries."""


def _object_path(store: DiskObjectStore, sha: bytes) -> str:
    hexsha = sha.decode()
    return os.path.join(os.fspath(store.path), hexsha[:2], hexsha[2:])


def has_object(store: DiskObjectStore, sha: bytes) -> bool:
    """Whether ``sha`` is stored (loose, packed or in an alternate)."""
    return os.path.exists(_object_path(store, sha)) or ObjectID(sha) in store


def _install(store: DiskObjectStore, tmp: str, sha: bytes) -> int:
    """Move a finished temp object into place; return bytes added (0 if it existed)."""
    final = _object_path(store, sha)
    if os.path.exists(final) or ObjectID(sha) in store:
        os.unlink(tmp)
        return 0
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.chmod(tmp, 0o444)
    size = os.path.getsize(tmp)
    # rename is atomic: a concurrent writer of the same object produces the
    # same bytes, so whoever wins, the object is whole.
    os.replace(tmp, final)
    return size


def write_blob_bytes(store: DiskObjectStore, data: bytes) -> tuple[bytes, int]:
    """Store ``data`` as a blob; return ``(sha, bytes added to the store)``."""
    return write_object_bytes(store, b"blob", data)


def write_object_bytes(store: DiskObjectStore, kind: bytes, data: bytes) -> tuple[bytes, int]:
    """Store ``data`` as a loose object of type ``kind``; return ``(sha, bytes added)``."""
    header = kind + b" %d\x00" % len(data)
    sha = hashlib.sha1(header + data).hexdigest().encode()
    if has_object(store, sha):
        return sha, 0
    return sha, _write_loose(store, sha, zlib.compress(header + data, LOOSE_LEVEL))


def _write_loose(store: DiskObjectStore, sha: bytes, compressed: bytes) -> int:
    """Write one small object's compressed bytes into place; return their size.

    Checkpoints write tens of these each time, so this is kept to the fewest
    system calls: created read-only as git leaves them, renamed into place,
    and the fan-out directory made only when the rename finds it missing.
    """
    base = os.fspath(store.path)
    tmp = os.path.join(base, f"tmp_obj_{os.urandom(8).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    try:
        view = memoryview(compressed)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    final = _object_path(store, sha)
    try:
        try:
            # A concurrent writer of the same object wrote the same bytes, so
            # replacing it is harmless.
            os.replace(tmp, final)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(tmp, final)
    except BaseException:
        os.unlink(tmp)
        raise
    return len(compressed)


def write_blob_from_fd(store: DiskObjectStore, fd: int, size: int, name: str) -> tuple[bytes, int]:
    """Store the open file ``fd`` (of ``size`` bytes, from lstat) as a blob, reading from its start.

    Returns ``(sha, bytes added)``. Raises :class:`FileChanged` when the file
    does not have ``size`` bytes any more, so the caller can re-stat and retry
    instead of storing a blob whose header lies. ``name`` is for messages.
    """
    if size <= SMALL_FILE:
        data = _read_exactly(fd, size + 1)
        if len(data) != size:
            raise FileChanged(name)
        return write_blob_bytes(store, data)
    header = b"blob %d\x00" % size
    hasher = hashlib.sha1(header)
    compressor = zlib.compressobj(LOOSE_LEVEL)
    out_fd, tmp = tempfile.mkstemp(prefix="tmp_obj_", dir=os.fspath(store.path))
    try:
        with os.fdopen(out_fd, "wb") as out:
            out.write(compressor.compress(header))
            remaining = size
            while remaining:
                chunk = os.read(fd, min(CHUNK, remaining))
                if not chunk:
                    raise FileChanged(name)
                remaining -= len(chunk)
                hasher.update(chunk)
                out.write(compressor.compress(chunk))
            if os.read(fd, 1):
                raise FileChanged(name)
            out.write(compressor.flush())
    except BaseException:
        os.unlink(tmp)
        raise
    sha = hasher.hexdigest().encode()
    return sha, _install(store, tmp, sha)


def _read_exactly(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd`` (fewer only at end of file)."""
    data = os.read(fd, limit)
    if len(data) == limit or not data:
        return data
    parts = [data]
    got = len(data)
    while got < limit:
        more = os.read(fd, limit - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def iter_blob(store: DiskObjectStore, sha: bytes) -> Iterator[bytes]:
    """The content of blob ``sha`` in chunks.

    Loose objects are decompressed as a stream; packed ones (after ``git gc``)
    go through dulwich, which holds that one object in memory.
    """
    path = _object_path(store, sha)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        try:
            obj = store[ObjectID(sha)]
        except KeyError:
            raise GitError(f"blob {sha.decode()} is missing from {store.path}; run 'git fsck'") from None
        if not isinstance(obj, Blob):
            raise GitError(f"object {sha.decode()} is a {obj.type_name.decode()}, not a blob")
        yield from obj.chunked
        return
    with f:
        decompressor = zlib.decompressobj()
        header_done = False
        pending = b""
        while True:
            raw = f.read(CHUNK)
            if not raw:
                break
            # Bound each output to one chunk so a highly compressible file
            # does not inflate into memory all at once.
            data = decompressor.decompress(raw, CHUNK)
            while True:
                if not header_done:
                    pending += data
                    nul = pending.find(b"\x00")
                    if nul < 0:
                        data = b""
                    else:
                        if not pending.startswith(b"blob "):
                            raise GitError(f"object {sha.decode()} is not a blob")
                        header_done = True
                        data, pending = pending[nul + 1 :], b""
                if header_done and data:
                    yield data
                if not decompressor.unconsumed_tail:
                    break
                data = decompressor.decompress(decompressor.unconsumed_tail, CHUNK)
        tail = decompressor.flush()
        if tail:
            yield tail
