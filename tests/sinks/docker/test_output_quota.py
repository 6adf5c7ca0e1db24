"""Output can fill the disk (issue 14 item 9): a per-task quota on recorded output.

Invariant: past the quota the log grows by a bounded amount however much a
command prints, while an attached caller still gets every byte, in order.
"""

from __future__ import annotations

import signal

import orjson
import pytest

from armor_rx import Armor
from tests.service.conftest import armor_cli, kill_service

pytestmark = [pytest.mark.docker]

QUOTA = 64 * 1024
PRINTED = 2 * 1024 * 1024
EXPECTED = ("armor\n" * (PRINTED // 6 + 1))[:PRINTED]
FLOOD = ["sh", "-c", f"yes armor | head -c {PRINTED}"]


def _log_bytes(state):
    return sum(p.stat().st_size for p in (state / "events").rglob("*") if p.is_file())


def _recorded(armor, task):
    return [e for e in armor.history(task_id=task) if e.kind.startswith("exec.output")]


def test_past_the_quota_output_is_shown_not_recorded(repo, test_image):
    with Armor(repo, docker=True, output_quota=QUOTA) as armor:
        armor.create_task("flood")
        armor.start("flood", image=test_image)
        before = _log_bytes(repo / ".armor")
        seen: list[str] = []
        outcome = armor.exec("flood", FLOOD, on_output=lambda e: seen.append(str(e.payload["data"])))
        assert outcome.payload["exit_code"] == 0
        assert "".join(seen) == EXPECTED  # every byte reached the caller, in order
        grown = _log_bytes(repo / ".armor") - before
        assert grown < QUOTA * 4, grown  # the quota, one frame over at most, and the events' framing
        events = _recorded(armor, "flood")
        marks = [e for e in events if e.kind == "exec.output.truncated"]
        assert len(marks) == 1 and marks[0].payload["quota_bytes"] == QUOTA
        recorded = sum(int(e.payload["bytes"]) for e in events if e.kind == "exec.output")
        assert recorded == marks[0].payload["recorded_bytes"]
        # The chunk that crossed the quota is kept whole; each chunk is charged its event's framing too.
        from armor_rx.sinks.docker.quota import EVENT_OVERHEAD

        chunks = sum(1 for e in events if e.kind == "exec.output")
        assert QUOTA <= recorded + chunks * EVENT_OVERHEAD < QUOTA + 64 * 1024 + EVENT_OVERHEAD
        assert outcome.payload["not_recorded_bytes"] == PRINTED - recorded
        assert outcome.payload["output_tail"].endswith("armor\n"[: (PRINTED % 6) or 6])
        # The budget is the task's, not the command's: the next command records nothing.
        armor.exec("flood", ["sh", "-c", "echo after"])
        later = _recorded(armor, "flood")[len(events):]
        assert [e.kind for e in later] == ["exec.output.truncated"]
    with Armor(repo, docker=True, output_quota=QUOTA) as again:  # and a new session does not reset it
        if again.task("flood").state.value == "interrupted":  # its container went with the first session
            again.resume("flood")
        again.exec("flood", ["sh", "-c", "echo still"])
        assert _recorded(again, "flood")[-1].kind == "exec.output.truncated"


def test_the_cli_shows_everything_and_says_what_was_not_recorded(repo, test_image, monkeypatch):
    monkeypatch.setenv("ARMOR_RX_DOCKER", "1")
    monkeypatch.setenv("ARMOR_RX_IMAGE", test_image)
    monkeypatch.setenv("ARMOR_RX_OUTPUT_QUOTA", "64k")
    try:
        done = armor_cli("run", "--repo", repo, "--task", "cli-flood", "--", *FLOOD, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout == EXPECTED
        assert "bytes of output were shown but not recorded" in done.stderr
        events = [orjson.loads(line) for line in armor_cli("events", "--repo", repo, "--json", "--task", "cli-flood").stdout.splitlines()]
        recorded = sum(e["payload"]["bytes"] for e in events if e["kind"] == "exec.output")
        assert recorded < QUOTA + 64 * 1024
        assert [e["kind"] for e in events].count("exec.output.truncated") == 1
    finally:
        kill_service(repo / ".armor", signal.SIGTERM)


def test_the_kept_tail_never_starts_with_the_rest_of_a_secret(repo, test_image):
    """Invariant (review finding): exec.exited's output_tail holds no part of a secret's value.
    The tail is the last 4096 bytes printed; a secret that straddled its start was masked only
    after the cut, so all but its first character reached the log. One case, placed exactly."""
    from armor_rx import Secret

    value = "S3kr1t-VALUE-0123456789abcdef"
    filler = 4096 - (len(value) - 1)
    with Armor(repo, docker=True, output_quota=0) as armor:
        armor.create_task("tail-secret")
        armor.start("tail-secret", image=test_image, secrets={"TOKEN": Secret(value)})
        done = armor.exec("tail-secret", ["sh", "-c", f'printf %s "$TOKEN"; head -c {filler} /dev/zero | tr "\\0" x'])
        tail = done.payload["output_tail"]
        assert tail.endswith("x" * 100)
        assert value[1:12] not in tail, tail[:60]
        log = b"".join(p.read_bytes() for p in (repo / ".armor").rglob("*") if p.is_file())
        assert value[1:12].encode() not in log


def test_output_printed_a_byte_at_a_time_grows_the_log_by_about_the_quota(repo, test_image):
    """Invariant (review finding): the quota bounds what the log grows by, however the output is
    cut into frames. A command writing one byte per frame made one ~230-byte event per byte: 3000
    bytes printed grew the log by 574 KB, so the default 32 MiB quota let ~6 GB through. One case."""
    quota = 16 * 1024
    with Armor(repo, docker=True, output_quota=quota) as armor:
        armor.create_task("drip")
        armor.start("drip", image=test_image)
        before = _log_bytes(repo / ".armor")
        armor.exec("drip", ["sh", "-c", "i=0; while [ $i -lt 1500 ]; do printf x; usleep 200; i=$((i+1)); done"])
        grown = _log_bytes(repo / ".armor") - before
        assert grown < quota * 3, grown
