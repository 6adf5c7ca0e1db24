"""The event stream over the wire: durable history, then live, no gaps, no duplicates; a slow client is lagged, not buffered."""

from __future__ import annotations

import socket
import threading
import time

import orjson
import pytest

pytestmark = pytest.mark.usefixtures("no_docker")


def test_history_then_live_with_concurrent_writers_has_no_gap_and_no_duplicate(repo):
    import armor_rx

    with armor_rx.connect(repo) as remote:
        for n in range(3):
            remote.create_task(f"w{n}")
        before = [e.seq for e in remote.history()]
        stop = threading.Event()

        def writer(task):
            with armor_rx.connect(repo) as mine:
                n = 0
                while not stop.is_set() and n < 400:
                    mine.emit(task, "note.added", {"n": n})
                    n += 1

        writers = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(3)]
        for w in writers:
            w.start()
        time.sleep(0.2)  # the stream starts while the writers are busy: part history, part live
        seqs = []
        for key, value in remote.follow("*", from_seq=1):
            assert key == "event"
            seqs.append(value.seq)
            if len(seqs) >= len(before) + 1200:
                break
        stop.set()
        for w in writers:
            w.join()
    assert seqs == list(range(1, len(seqs) + 1))


def test_filters_and_resume_from_a_seq(repo):
    import armor_rx

    with armor_rx.connect(repo) as remote:
        remote.create_task("a")
        remote.create_task("b")
        for n in range(10):
            remote.emit("a" if n % 2 else "b", "note.added", {"n": n})
        only_a = [e.payload["n"] for e in remote.history(task_id="a", kind="note.*")]
        assert only_a == [1, 3, 5, 7, 9]
        middle = [e for e in remote.history() if e.kind == "note.added"][5].seq
        resumed = []
        for key, value in remote.follow("note.*", from_seq=middle):
            resumed.append(value.payload["n"])
            if len(resumed) == 5:
                break
        assert resumed == [5, 6, 7, 8, 9]


def test_a_client_that_does_not_read_is_lagged_and_told_what_it_missed(repo):
    """The client stops reading; the service keeps its memory bounded, skips it ahead and says which seqs it skipped."""
    import armor_rx

    with armor_rx.connect(repo) as remote:
        remote.create_task("t1")
        start = remote.tasks() and max(e.seq for e in remote.history())
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(str(remote.paths.socket))
            s.sendall(f"GET /v1/events?follow=1&max_behind=500&from_seq={start + 1} HTTP/1.1\r\nHost: armor\r\n\r\n".encode())
            payload = {"text": "x" * 2000}
            for _ in range(6):
                remote._send(remote._ops.emit("t1", "note.added", payload))
            # Flood while the client reads nothing: far more than its window and the socket buffers.
            with armor_rx.connect(repo) as writer:
                for n in range(3000):
                    writer.emit("t1", "note.added", {**payload, "n": n})
            s.settimeout(10)
            data = b""
            deadline = time.monotonic() + 30
            while b'"lagged"' not in data and time.monotonic() < deadline:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        lines = [line for line in data.split(b"\n") if line.startswith(b"{")]
        lagged = [orjson.loads(line)["lagged"] for line in lines if line.startswith(b'{"lagged"')]
        assert lagged, f"no lagged notice in {len(data)} bytes"
        notice = lagged[0]
        assert notice["count"] == notice["to_seq"] - notice["from_seq"] + 1 > 0
        # The events it skipped are still in the log for it to fetch by seq.
        missed = list(remote.history(start_seq=notice["from_seq"]))[: notice["count"]]
        assert [e.seq for e in missed] == list(range(notice["from_seq"], notice["to_seq"] + 1))
