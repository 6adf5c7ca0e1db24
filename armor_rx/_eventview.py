"""One task's events read through per-segment task indexes, with the standard library alone.

``armor-rx events --task X`` on a large log used to load the package and map
and search every segment (250 MB at a million events), when grep answers in
milliseconds. The log's writer now leaves, next to each sealed segment, an
index of where each task's lines start (``events-N.idx``, written by
:mod:`armor_rx.sinks._taskindex`), keyed to the segment's size and CRC-32.

The CLI's fast path (:mod:`armor_rx._quick`) answers from them only when it
can be sure the full path would print the very same bytes and exit 0: every
segment is vouched for by the writer's ``verified.json`` exactly as the full
reader vouches for it (stat, else CRC) and has no damage on record, every
sealed segment's index matches its bytes, every line it prints passes its
CRC, the unverified end of the last segment is intact lines in seq order, and
the log directory holds nothing else (no quarantine, no foreign file). Any
doubt returns None, and the full path (which reads and warns) answers.
An index is a cache, never a source of truth: a damaged one fails its CRC,
one for other bytes fails the size+CRC key, and either way it is not used.
"""

from __future__ import annotations

import os
import zlib

TYPE_CHECKING = False  # typing itself is not imported: see armor_rx/__init__.py
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

MAGIC = b"armor-rx task index 1"
SUFFIX_LEN = 19  # ,"crc":"xxxxxxxx"}\n (armor_rx.sinks._logfile.SUFFIX_LEN)
_PREFIX = b'{"v":1,"seq":'  # schema 1 (armor_rx.model.events.SCHEMA_VERSION): any other line sends the read to the full path
_MAX_SOCKET_PATH = 107  # armor_rx.service.paths: a longer socket path lives under /tmp, which this module does not look for
_SLUG = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_KIND = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.*?")


def index_name(segment: str) -> str:
    """``events-000000000001.idx`` for ``events-000000000001.jsonl``."""
    return segment[: -len(".jsonl")] + ".idx"


def is_index(name: str) -> bool:
    """An index file or its temporary file (``.events-N.idx.<hex>.tmp``), as the writer names them."""
    if name.startswith(".") and name.endswith(".tmp"):
        name = name[1:].rpartition(".idx.")[0] + ".idx"
    return name.endswith(".idx") and is_segment(name[: -len(".idx")] + ".jsonl")


def is_segment(name: str) -> bool:
    digits = name[len("events-"):-len(".jsonl")]
    return (name.startswith("events-") and name.endswith(".jsonl") and len(digits) >= 12
            and digits.isascii() and digits.isdigit())


def encode_index(size: int, crc: int, tasks: Mapping[str, Iterable[tuple[int, int]]]) -> bytes:
    """An index's bytes, keyed to the segment's ``size`` and ``crc``; ``tasks`` maps a task to its lines' (offset, length).

    A header line (with the lengths of what follows), a directory (``task start length crc`` per task) and
    the records (``offset length ...``), each checksummed, so a reader reads the header, the directory and
    its one record, nothing else.
    """
    records = [b" ".join(b"%d %d" % line for line in lines) + b"\n" for lines in tasks.values()]
    directory, at = [], 0
    for task, record in zip(tasks, records):
        directory.append(b"%s %d %d %08x\n" % (task.encode(), at, len(record), zlib.crc32(record)))
        at += len(record)
    listing = b"".join(directory)
    return b"%s %d %08x %d %08x %d\n" % (MAGIC, size, crc, len(listing), zlib.crc32(listing), at) + listing + b"".join(records)


def index_offsets(path: str, size: int, crc: int, task: str) -> list[tuple[int, int]] | None:
    """``(offset, length)`` of ``task``'s lines in the segment indexed by ``path``, if it indexes ``size`` bytes of CRC ``crc``."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            cut = head.find(b"\n") + 1
            fields = head[:cut].split()
            if not cut or len(fields) != 9 or b" ".join(fields[:4]) != MAGIC:
                return None
            length = int(fields[6])
            # Keyed to the segment's bytes, and whole (a cut-off file is not mistaken for one with fewer tasks).
            if int(fields[4]) != size or int(fields[5], 16) != crc or os.fstat(f.fileno()).st_size != cut + length + int(fields[8]):
                return None
            if cut + length > len(head):
                head += f.read(cut + length - len(head))
            listing = head[cut : cut + length]
            if len(listing) != length or zlib.crc32(listing) != int(fields[7], 16):
                return None
            key = task.encode() + b" "
            at = 0 if listing.startswith(key) else listing.find(b"\n" + key) + 1
            if at == 0 and not listing.startswith(key):
                return []
            entry = listing[at : listing.find(b"\n", at)].split(b" ")
            start, count, check = int(entry[1]), int(entry[2]), int(entry[3], 16)
            f.seek(cut + length + start)
            record = f.read(count)
    except (OSError, ValueError, IndexError):
        return None
    if len(record) != count or zlib.crc32(record) != check:
        return None
    numbers = [int(n) for n in record.split()]
    return list(zip(numbers[::2], numbers[1::2]))


def valid_task_id(value: str) -> bool:
    """A task id :func:`armor_rx.model.ids.validate_task_id` accepts for sure (others go the full path)."""
    return (0 < len(value) <= 63 and set(value) <= _SLUG and not value.startswith("-")
            and not value.endswith("-") and "--" not in value)


def kind_filter(pattern: str) -> list[str] | None:
    """The parts of a kind pattern :func:`armor_rx.model.kind_matcher` accepts (None: let it report the error)."""
    parts = [p.strip() for p in pattern.split(",")]
    if any(not p or not set(p) <= _KIND for p in parts):
        return None
    return parts


def _glob(pattern: str, text: str) -> bool:
    """fnmatch for patterns of ``[a-z0-9_.*?]``: ``*`` any run (dots too), ``?`` one character."""
    p = t = 0
    star = mark = -1
    while t < len(text):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == text[t]):
            p += 1
            t += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark = p, t
            p += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            t = mark
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def _check(raw: bytes) -> int | None:
    """The seq of an intact line of the current schema (CRC and fixed prefix), else None."""
    n = len(raw)
    if n < SUFFIX_LEN + 2 or raw[n - SUFFIX_LEN : n - 11] != b',"crc":"' or raw[n - 3 :] != b'"}\n':
        return None
    if b"%08x" % zlib.crc32(b"}", zlib.crc32(raw[: n - SUFFIX_LEN])) != raw[n - 11 : n - 3]:
        return None
    if not raw.startswith(_PREFIX):
        return None
    digits = raw[len(_PREFIX) : raw.find(b",", len(_PREFIX))]
    return int(digits) if digits.isascii() and digits.isdigit() else None


class _Unsure(Exception):
    """Something the full path would read differently, or warn about: hand the verb over."""


def _header() -> Any:
    import re  # json imports it anyway

    # The keys before the payload, in the order TaskEvent.to_dict writes them; ids and kinds never need escapes.
    return re.compile(
        rb'\{"v":1,"seq":(\d+),"id":"[^"\\]*","kind":"([^"\\]*)","task_id":(?:"([^"\\]*)"|null),'
        rb'"ts":(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?),"causation_id":(?:null|"(?:[^"\\]|\\.)*"),"payload":\{'
    ).match


def _fields(match: Any, raw: bytes, seq: int) -> tuple[bytes | None, bytes, bytes]:
    """``(task_id, kind, payload JSON)`` of an intact line, parsed by its fixed key order; _Unsure if unusual."""
    found = match(raw)
    # A float always prints with '.' or 'e'; anything else would not come back byte for byte from TaskEvent.
    if found is None or int(found[1]) != seq or not (b"." in found[4] or b"e" in found[4]):
        raise _Unsure
    return found[3], found[2], raw[found.end() - 1 : len(raw) - SUFFIX_LEN]


def _sha256() -> Any:
    """hashlib's SHA-256, without loading OpenSSL (several times the cost of the rest of the read) where Python has its own."""
    for name in ("_sha256", "_sha2"):  # the built-in module, before and since Python 3.12
        try:
            return __import__(name).sha256
        except ImportError:
            pass
    import hashlib

    return hashlib.sha256


def _load_verified(events: str) -> dict[str, dict[str, Any]] | None:
    """``verified.json``'s entries by segment name, if it checks out (see armor_rx.sinks._verified.load) and
    records no damage; read by its fixed layout (orjson's, keys in order) rather than by the json module."""
    try:
        with open(os.path.join(events, "verified.json"), "rb") as f:
            raw = f.read()
    except OSError:
        return None
    cut = raw.rfind(b',"sha256":"')
    body = raw[:cut] + b"}"
    if cut < 0 or not raw.endswith(b'"}') or _sha256()(body).hexdigest().encode() != raw[cut + 11 : -2]:
        return None
    head = b'{"format":1,"segments":['
    if not body.startswith(head) or not body.endswith(b"]}"):
        return None
    inner = body[len(head) : -2]
    entries: dict[str, dict[str, Any]] = {}
    if not inner:
        return entries
    if not inner.startswith(b"{") or not inner.endswith(b',"damage":[]}'):
        return None
    for part in inner[1 : -len(',"damage":[]}')].split(b',"damage":[]},{'):
        fields, _, stat = part.partition(b',"stat":')
        pairs = [field.split(b":", 1) for field in fields.split(b",")]
        if [p[0] for p in pairs] != [b'"name"', b'"first"', b'"size"', b'"crc"', b'"end"'] or b"{" in part:
            return None  # damage recorded (or a layout this reader does not know): the full path reads it
        name = pairs[0][1]
        if not (name.startswith(b'"') and name.endswith(b'"')):
            return None
        entry: dict[str, Any] = {key[1:-1].decode(): int(value) for key, value in (p for p in pairs[1:] if len(p) == 2)}
        if len(entry) != 4:
            return None
        if stat == b"null":
            entry["stat"] = None
        elif stat.startswith(b"[") and stat.endswith(b"]"):
            entry["stat"] = [int(n) for n in stat[1:-1].split(b",")]
        else:
            return None
        entries[name[1:-1].decode()] = entry
    return entries


def _vouched(path: str, entry: Any, st: os.stat_result) -> bool:
    """Like armor_rx.sinks._verified.vouched: the recorded bytes are unchanged (stat, else CRC)."""
    size = entry["size"]
    if st.st_size < size:
        return False
    if entry["stat"] == [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]:
        return True
    crc = 0
    with open(path, "rb") as f:
        left = size
        while left:
            chunk = f.read(min(left, 1 << 22))
            if not chunk:
                return False
            crc = zlib.crc32(chunk, crc)
            left -= len(chunk)
    return bool(crc == entry["crc"])


def _map(path: str, size: int) -> Any:
    """The file's bytes, mapped (only the pages of the lines wanted are ever read)."""
    if size == 0:
        return b""
    import mmap

    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)


def _service_running(state: str) -> bool:
    socket = os.path.join(state, "run", "armor.sock")
    return len(os.fsencode(socket)) > _MAX_SOCKET_PATH or os.path.exists(socket)


def _segment_lines(events: str, names: list[str], task: str, since: int) -> list[tuple[int, bytes]]:
    """``(seq, line)`` of every intact line that may be ``task``'s, in seq order; _Unsure at any doubt."""
    entries = _load_verified(events)
    if entries is None:
        raise _Unsure
    needle = b'"task_id":"%s"' % task.encode()
    found: list[tuple[int, bytes]] = []
    for i, name in enumerate(names):
        path = os.path.join(events, name)
        first = int(name[7:-6])
        entry = entries.get(name)
        st = os.stat(path)
        last = i == len(names) - 1
        if entry is not None and entry["first"] != first:
            raise _Unsure
        if entry is not None and not _vouched(path, entry, st):
            entry = None
        if not last:
            if entry is None or entry["size"] != st.st_size or entry["end"] != int(names[i + 1][7:-6]):
                raise _Unsure
            if entry["end"] <= since:
                continue  # vouched for, and holds nothing asked for
            offsets = index_offsets(os.path.join(events, index_name(name)), entry["size"], entry["crc"], task)
            if offsets is None:
                raise _Unsure
            if offsets:
                fd = os.open(path, os.O_RDONLY)
                try:
                    for offset, length in offsets:
                        if offset + length > st.st_size:
                            raise _Unsure
                        raw = os.pread(fd, length, offset)
                        seq = _check(raw)
                        if seq is None:
                            raise _Unsure
                        found.append((seq, raw))
                finally:
                    os.close(fd)
            continue
        data = _map(path, st.st_size)
        verified, expected = (entry["size"], entry["end"]) if entry is not None else (0, first)
        # The verified bytes: only the lines that hold the task's JSON, as the full reader greps them.
        hit = data.find(needle, 0, verified)
        while hit >= 0:
            begin = data.rfind(b"\n", 0, hit) + 1
            end = data.find(b"\n", hit, verified) + 1
            seq = _check(data[begin:end]) if end else None
            if seq is None:
                raise _Unsure
            found.append((seq, data[begin:end]))
            hit = data.find(needle, end, verified)
        # The rest, line by line, as the full reader checks it: intact lines with consecutive seqs.
        at = verified
        while at < len(data):
            end = data.find(b"\n", at) + 1
            if not end:
                raise _Unsure  # torn (or being written): the full path decides
            raw = data[at:end]
            if _check(raw) != expected:
                raise _Unsure
            if needle in raw:
                found.append((expected, raw))
            expected += 1
            at = end
    return found


def read(state: str, task: str, kinds: list[str] | None, since: int, as_json: bool) -> bytes | str | None:
    """What ``armor-rx events --task`` prints for this log (bytes with ``as_json``), or None when unsure."""
    events = os.path.join(state, "events")
    try:
        names = os.listdir(events)
    except OSError:
        return None
    segments = []
    for name in names:
        if is_segment(name):
            segments.append(name)
        elif name != "verified.json" and not is_index(name) and not (name.startswith(".verified.json.") and name.endswith(".tmp")):
            return None  # quarantine, a foreign file ...: the full path reports it
    if not segments or _service_running(state):
        return None
    segments.sort(key=lambda n: int(n[7:-6]))
    try:
        lines = _segment_lines(events, segments, task, since)
        out: list[Any] = []
        match, own = _header(), task.encode()
        previous = 0
        for seq, raw in lines:
            if seq <= previous:
                raise _Unsure  # the log's order is seq order: an index that says otherwise is not the log's
            previous = seq
            if seq < since:
                continue
            owner, kind, payload = _fields(match, raw, seq)
            if owner != own or (kinds is not None and not any(_glob(k, kind.decode()) for k in kinds)):
                continue
            if as_json:
                out.append(raw[: len(raw) - SUFFIX_LEN] + b"}\n")
            else:
                text = payload.decode()
                if len(text) > 160:
                    text = text[:157] + "..."
                out.append(f"{seq:>6}  {task:<24} {kind.decode():<26} {text}\n")
    except (_Unsure, OSError, ValueError, IndexError, UnicodeDecodeError):
        return None
    return b"".join(out) if as_json else "".join(out)
