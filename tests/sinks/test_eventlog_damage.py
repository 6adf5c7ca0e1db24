"""A damaged log line in a session's state directory: reported everywhere, and it costs only itself.

The session keeps its snapshot (seq continuity holds: nothing valid is cut),
records ``log.corruption.quarantined`` once, and the read verbs of the CLI
print what they can, warn on stderr and exit 3 (see armor_rx/cli.py)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from armor_rx import Armor
from armor_rx.cli import EXIT_DAMAGED, main
from armor_rx.sinks.snapshot import SNAPSHOT_PLUS_TAIL
from armor_rx.testing import crash


def flip_line(state: Path, seq: int) -> tuple[Path, int]:
    """Flip a byte in the middle of the line of event ``seq``; returns (segment, line offset)."""
    for segment in sorted((state / "events").glob("events-*.jsonl")):
        raw = bytearray(segment.read_bytes())
        offset = 0
        for line in bytes(raw).splitlines(keepends=True):
            if orjson.loads(line)["seq"] == seq:
                raw[offset + len(line) // 2] ^= 0x04
                segment.write_bytes(bytes(raw))
                return segment, offset
            offset += len(line)
    raise AssertionError(f"no line with seq {seq}")


def seq_of(armor: Armor, kind: str, task_id: str) -> int:
    (event,) = [e for e in armor.history(task_id=task_id, kind=kind)]
    assert event.seq is not None
    return event.seq


@pytest.mark.parametrize("victim", ["t03", "t10", "t17"])
def test_damage_before_the_snapshot_keeps_the_snapshot_and_every_other_event(tmp_path: Path, victim: str) -> None:
    """Invariant (3 cases: a task created early, mid-log, last): after one damaged line in the newest segment,
    the snapshot is still used, every other event is read, every task is known, and the damage is recorded once."""
    state = tmp_path / ".armor"
    with Armor(state_dir=state) as armor:
        for i in range(18):
            armor.create_task(f"t{i:02d}")
        damaged_seq = seq_of(armor, "task.created", victim)
        last = armor.log.last_seq
    segment, offset = flip_line(state, damaged_seq)

    with Armor(state_dir=state) as armor:
        assert armor.recovery is not None and armor.recovery.chosen == SNAPSHOT_PLUS_TAIL, armor.recovery
        assert [t.task_id for t in armor.tasks()] == [f"t{i:02d}" for i in range(18)]
        seqs = [e.seq for e in armor.history()]
        assert set(range(1, last + 1)) - set(seqs) == {damaged_seq}
        reports = [e for e in armor.history(kind="log.corruption.quarantined")]
        assert len(reports) == 1
        payload = reports[0].payload
        assert (payload["segment"], payload["offset"]) == (segment.name, offset)
        assert (payload["missing_from"], payload["missing_to"]) == (damaged_seq, damaged_seq)
        copy = Path(payload["quarantined"])
        assert copy.parent == state / "events" / "quarantine" and copy.read_bytes() in segment.read_bytes()
    with Armor(state_dir=state) as armor:  # the same damage is not news the second time
        assert len(list(armor.history(kind="log.corruption.quarantined"))) == 1
        assert armor.recovery is not None and armor.recovery.chosen == SNAPSHOT_PLUS_TAIL


def test_a_lost_event_after_the_snapshot_is_folded_past_not_a_reason_to_rebuild(tmp_path: Path) -> None:
    """Invariant: when the event lost to damage was in the tail replayed after the snapshot, the later events
    still apply (counted as forced) and the task ends in the state the log says."""
    state = tmp_path / ".armor"
    armor = Armor(state_dir=state).open()
    armor.create_task("t1")
    armor.snapshot()
    armor.start("t1")
    armor.complete("t1")
    started = seq_of(armor, "task.started", "t1")
    crash(armor)
    flip_line(state, started)

    with Armor(state_dir=state) as reopened:
        assert reopened.recovery is not None
        assert reopened.recovery.chosen == SNAPSHOT_PLUS_TAIL and reopened.recovery.forced == 1, reopened.recovery
        assert reopened.task("t1").state.value == "completed"


def test_read_verbs_print_what_they_can_warn_and_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / ".armor"
    with Armor(state_dir=state) as armor:
        for i in range(6):
            armor.create_task(f"t{i}")
        damaged = seq_of(armor, "task.created", "t2")
        last = armor.log.last_seq
    flip_line(state, damaged)
    before = {p.name: p.read_bytes() for p in (state / "events").iterdir() if p.is_file()}

    assert main(["events", "--json", "--state-dir", str(state)]) == EXIT_DAMAGED == 3
    out, err = capsys.readouterr()
    assert [orjson.loads(line)["seq"] for line in out.splitlines()] == [s for s in range(1, last + 1) if s != damaged]
    assert "warning: the event log is damaged" in err and f"events {damaged}-{damaged} could not be read" in err
    assert sum(line.startswith("armor-rx: warning:") for line in err.splitlines()) == 1

    assert main(["tasks", "--json", "--state-dir", str(state)]) == EXIT_DAMAGED
    out, err = capsys.readouterr()
    assert [row["task_id"] for row in orjson.loads(out)] == [f"t{i}" for i in range(6)]
    assert "damaged" in err
    # A read-only verb changes nothing, not even a quarantine copy.
    assert {p.name: p.read_bytes() for p in (state / "events").iterdir() if p.is_file()} == before
    assert not (state / "events" / "quarantine").exists()


def test_files_armor_did_not_write_are_reported_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A stray file that looks like a segment, a segment under a name armor_rx never uses, and a snapshot in
    the wrong place are never merged into the log: they are named in a warning."""
    state = tmp_path / ".armor"
    with Armor(state_dir=state) as armor:
        armor.create_task("t1")
    events = state / "events"
    segment = min(events.glob("events-*.jsonl"))
    (events / "events-2.jsonl").write_bytes(segment.read_bytes())
    (events / "events-000000000001.jsonl.orig").write_bytes(segment.read_bytes())
    (events / "snapshot.json").write_bytes((state / "snapshot.json").read_bytes())

    assert main(["events", "--state-dir", str(state)]) == 0
    out, err = capsys.readouterr()
    assert out.count("task.created") == 1
    for name in ("events-2.jsonl", "events-000000000001.jsonl.orig", "snapshot.json"):
        assert f"{name} is not an event log segment" in err
    with Armor(state_dir=state) as armor:
        assert sorted(p.name for p in armor.log.unexpected) == sorted(
            ["events-2.jsonl", "events-000000000001.jsonl.orig", "snapshot.json"])
        assert [e.kind for e in armor.history(kind="task.*")] == ["task.created"]


def test_through_the_service_the_read_verbs_exit_3_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a live service the CLI reads through it: the service skips the damage and records it, and the verb
    still warns and exits 3 (the quarantine holds a copy of what was skipped)."""
    import subprocess
    import sys

    import armor_rx

    monkeypatch.setenv("ARMOR_RX_DOCKER", "0")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "init"], check=True)
    state = repo / ".armor"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "armor_rx", *args, "--repo", str(repo)],
                              capture_output=True, text=True, timeout=120)

    try:
        with armor_rx.connect(repo) as remote:
            for i in range(4):
                remote.create_task(f"t{i}")
        assert cli("serve", "--stop").returncode == 0
        damaged = 3
        flip_line(state, damaged)
        with armor_rx.connect(repo) as remote:  # a new service: it sets the damage aside
            assert [t.task_id for t in remote.tasks()] == ["t0", "t1", "t2", "t3"]
        events = cli("events", "--json")
        assert events.returncode == EXIT_DAMAGED, events.stderr
        kinds = [orjson.loads(line)["kind"] for line in events.stdout.splitlines()]
        assert "log.corruption.quarantined" in kinds
        assert "damaged stretch" in events.stderr
        tasks = cli("tasks")
        assert tasks.returncode == EXIT_DAMAGED and "t3" in tasks.stdout
        assert cli("damage", "--acknowledge").returncode == 0  # a person has looked: reads pass again
        assert cli("tasks").returncode == 0 and cli("events").returncode == 0
    finally:
        cli("serve", "--stop")


def test_acknowledged_damage_stops_failing_reads_and_new_damage_fails_them_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Invariant: exit 3 means 'damage nobody has looked at yet'. After 'armor-rx damage --acknowledge' the read
    verbs exit 0 and still say damaged stretches were skipped; a stretch damaged later makes them exit 3 again."""
    state = tmp_path / ".armor"
    with Armor(state_dir=state) as armor:
        for i in range(6):
            armor.create_task(f"t{i}")
        first, second = seq_of(armor, "task.created", "t1"), seq_of(armor, "task.created", "t4")
    flip_line(state, first)
    assert main(["damage", "--json", "--state-dir", str(state)]) == 0
    listed = orjson.loads(capsys.readouterr()[0])
    assert len(listed) == 1 and listed[0]["acknowledged"] is False
    assert main(["damage", "--acknowledge", "--state-dir", str(state)]) == 0
    capsys.readouterr()
    for verb in ("events", "tasks"):
        assert main([verb, "--state-dir", str(state)]) == 0
        assert "1 acknowledged damaged stretch(es) skipped" in capsys.readouterr()[1]
    flip_line(state, second)
    assert main(["events", "--state-dir", str(state)]) == EXIT_DAMAGED
    err = capsys.readouterr()[1]
    assert err.count("warning: the event log is damaged") == 1 and "damage --acknowledge" in err
