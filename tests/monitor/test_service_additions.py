"""The two small client/service additions the monitor needed: health's last_seq, and a typed error for a dropped stream."""

from __future__ import annotations

import socket
import threading

import orjson
import pytest

from armor_rx.errors import ServiceLost


def test_health_says_where_the_log_ends(served):
    _repo, client = served
    before = client.health()["last_seq"]
    client.create_task("t1")
    event = client.emit("t1", "note.added", {})
    assert client.health()["last_seq"] == event.seq > before


def test_a_stream_dropped_before_its_answer_is_service_lost(tmp_path):
    """A service that accepts the events request and hangs up (as one stopping does) gives ServiceLost, not httpx's error."""
    from armor_rx.client.sync import RemoteArmor
    from armor_rx.service.paths import ServicePaths

    state = tmp_path / ".armor"
    paths = ServicePaths.of(state)
    paths.prepare()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(paths.socket))
    server.listen(8)
    health = orjson.dumps({"service": "armor-rx", "state_dir": str(paths.state), "pid": 1, "repo": None, "last_seq": 0})

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(65536)
                if b"/health" in request:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                                 + f"Content-Length: {len(health)}\r\n\r\n".encode() + health)
                # anything else: hang up without a word

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client = RemoteArmor(state_dir=state, autostart=False)
        with pytest.raises(ServiceLost) as err:
            list(client.follow("*"))
        assert "went away" in str(err.value)
        client.close()
    finally:
        server.close()
