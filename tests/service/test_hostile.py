"""Malformed and hostile requests: each gets a one-line error; the service keeps serving everyone."""

from __future__ import annotations

import json
import random
import socket

import orjson
import pytest

pytestmark = pytest.mark.usefixtures("no_docker")

ROUTES = ["/v1/tasks", "/v1/tasks/t1", "/v1/tasks/t1/start", "/v1/tasks/t1/exec", "/v1/tasks/t1/checkpoint", "/v1/tasks/t1/rollback",
          "/v1/tasks/t1/branch", "/v1/tasks/t1/diff", "/v1/events", "/v1/run", "/v1/sweep", "/v1/dead-letters/x/redrive",
          "/v1/tasks/..%2F..%2Fetc/start", "/v1/tasks/%00/exec", "/v1/nosuch", "/../../etc/passwd", "/v1/tasks/t1/worktree"]
VALUES = [None, True, 0, -1, 2**70, 1.5e308, "", "..", "../../etc/passwd", "/etc/passwd", "\x00", "a" * 10_000, [], {}, [1, "x"],
          {"$ne": 1}, ["sh", "-c", "true"], "t1", "cp-1", "HEAD", "ff"]
KEYS = ["task_id", "command", "checkpoint", "new_task", "message", "merge", "reason", "image", "sandbox", "keep", "timeout", "env",
        "user", "kind", "payload", "metadata", "base_ref", "detach", "now", "dry_run", "grace"]


def _raw(sock_path, data: bytes, timeout=10.0, half_close=False) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            pass
    return b"".join(chunks)


def _request(method: str, path: str, body: bytes) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: armor\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            "Content-Type: application/json\r\n\r\n").encode() + body


def test_a_thousand_malformed_requests_leave_the_service_serving(repo):
    import armor_rx

    rng = random.Random(20261130)
    with armor_rx.connect(repo) as remote:
        remote.create_task("t1")
        remote.start("t1")
        sock = remote.paths.socket
        statuses: dict[int, int] = {}
        for n in range(1000):
            shape = n % 5
            if shape == 0:  # random JSON objects of plausible keys and hostile values
                body = json.dumps({rng.choice(KEYS): rng.choice(VALUES) for _ in range(rng.randint(0, 4))}).encode()
            elif shape == 1:  # not JSON, or not an object
                body = rng.choice([b"{", b"[1,2", b"null", b"42", b'"x"', bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))])
            elif shape == 2:  # wrong types for the one field that matters
                body = json.dumps({"command": rng.choice(VALUES), "checkpoint": rng.choice(VALUES), "task_id": rng.choice(VALUES)}).encode()
            elif shape == 3:  # not HTTP at all
                _raw(sock, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))), timeout=2, half_close=True)
                statuses[0] = statuses.get(0, 0) + 1
                continue
            else:  # a body over the limit
                body = b'{"message": "' + b"x" * (5 * 1024 * 1024) + b'"}'
            method = rng.choice(["POST", "GET", "PUT", "DELETE"])
            answer = _raw(sock, _request(method, rng.choice(ROUTES), body))
            head, _, payload = answer.partition(b"\r\n\r\n")
            status = int(head.split()[1]) if head.startswith(b"HTTP/1.1") else 0
            statuses[status] = statuses.get(status, 0) + 1
            assert status != 500, (method, body[:200], answer[:500])
            if status >= 400 and payload and b"chunked" not in head.lower():
                error = orjson.loads(payload)["error"]
                assert error["type"] and "\n" not in error["message"], error
        # Everyone else is still served, and nothing the fuzz did reached the task.
        assert remote.task("t1").state.value == "running"
        assert all(t.task_id in ("t1", "cp-1", "ff", "head") or t.task_id.startswith("a") for t in remote.tasks())  # well-formed ids only
        remote.emit("t1", "note.added", {"still": "serving"})
    assert statuses.get(400, 0) > 50 and statuses.get(404, 0) > 50 and statuses.get(413, 0) > 10, statuses


def test_paths_a_client_names_are_sanitised(repo):
    import armor_rx
    from armor_rx.errors import BadRequest, InvalidTaskId

    with armor_rx.connect(repo) as remote:
        for bad in ("..", "../x", "a/b", "A", "-x", "x" * 64):
            with pytest.raises((InvalidTaskId, BadRequest)):
                remote.create_task(bad)
        answer = _raw(remote.paths.socket, _request("POST", "/v1/tasks/..%2F..%2Fetc/start", b"{}"))
        assert b" 400 " in answer.split(b"\r\n")[0] and b"InvalidTaskId" in answer
        assert remote.tasks() == []
