"""Retention: keep last N, one per hour/day, tagged; byte limits per task and overall; real git after pruning."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from armor_rx.errors import ConfigError
from armor_rx.sinks.git import CheckpointPolicy, GitWorkspace
from armor_rx.sinks.git import checkpoints as checkpoints_module
from armor_rx.sinks.git.retention import DAY, HOUR, plan_retention, plan_total

from .conftest import Events, fsck, git, started


@dataclass(frozen=True)
class Cp:
    seq: int
    created_at: float
    bytes_added: int = 10
    tags: tuple[str, ...] = ()


NOW = 1_700_000_000.0 - (1_700_000_000.0 % DAY) + 12 * HOUR  # noon, UTC


def test_keep_last_and_the_newest_and_tagged():
    history = [Cp(i, NOW - (10 - i) * 60, tags=("x",) if i == 2 else ()) for i in range(1, 11)]
    plan = plan_retention(history, now=NOW, keep_last=3)
    assert plan.drop == (1, 3, 4, 5, 6, 7) and 2 in plan.keep
    assert set(plan.why.values()) == {"retention"}
    untagged = plan_retention(history, now=NOW, keep_last=3, keep_tagged=False)
    assert 2 in untagged.drop


def test_one_per_hour_and_per_day_within_their_windows():
    # four checkpoints an hour for the last 5 hours, then one a day for 10 days before that
    history = [Cp(s, NOW - d * DAY - HOUR * 6) for s, d in zip(range(1, 11), range(10, 0, -1))]
    seq = 11
    for hour in range(5, 0, -1):
        for quarter in range(4):
            history.append(Cp(seq, NOW - hour * HOUR + quarter * 900 + 1))
            seq += 1
    plan = plan_retention(history, now=NOW, keep_last=1, keep_hourly=3, keep_daily=4)
    hourly_kept = [cp.seq for cp in history if cp.seq in plan.keep and cp.created_at > NOW - 5 * HOUR]
    # the newest of each of the last 3 hours, this one counted (it has none)
    assert len(hourly_kept) == 2 and hourly_kept[-1] == history[-1].seq
    assert hourly_kept[0] == history[-5].seq
    daily_kept = [cp.seq for cp in history if cp.seq in plan.keep and cp.created_at <= NOW - DAY]
    assert daily_kept == [8, 9, 10]  # the 3 days before today (today, the 4th, keeps the newest)
    assert len(plan.keep) == 5


def test_the_batch_waits_and_max_bytes_is_exact_but_spares_the_newest():
    history = [Cp(i, NOW - 100 + i, bytes_added=100) for i in range(1, 6)]
    assert not plan_retention(history, now=NOW, keep_last=4, batch=2).due
    assert plan_retention(history, now=NOW, keep_last=3, batch=2).drop == (1, 2)
    tight = plan_retention(history, now=NOW, keep_last=None, max_bytes=250)
    assert tight.drop == (1, 2, 3) and tight.why[1] == "max_bytes"
    nothing_fits = plan_retention(history, now=NOW, keep_last=None, max_bytes=0)
    assert nothing_fits.keep == {5}


def test_the_overall_limit_drops_the_oldest_of_any_task_but_never_a_newest():
    histories = {
        "a": [Cp(1, 10, 100), Cp(2, 40, 100)],
        "b": [Cp(1, 20, 100), Cp(2, 30, 100, tags=("keep",)), Cp(3, 50, 100)],
    }
    assert plan_total(histories, max_total_bytes=300) == {"a": [1], "b": [1]}
    assert plan_total(histories, max_total_bytes=0) == {"a": [1], "b": [1]}  # b's cp-2 is tagged, newest ones stay


def test_retention_spec_strings():
    policy = CheckpointPolicy.parse("keep_last=20,hourly=24,daily=7,max_bytes=10m,total_bytes=1g,tagged=no")
    assert (policy.keep_last, policy.keep_hourly, policy.keep_daily, policy.keep_tagged) == (20, 24, 7, False)
    assert policy.max_bytes == 10 * 1024 * 1024 and policy.max_total_bytes == 1024 ** 3
    assert CheckpointPolicy.parse("keep_last=none").keep_last is None
    with pytest.raises(ConfigError, match="hourly=N"):
        CheckpointPolicy.parse("weekly=3")
    with pytest.raises(ConfigError, match="whole number"):
        CheckpointPolicy(keep_last=-1)


def _workspace(repo: Path, tmp_path: Path, events: Events, **policy: object) -> GitWorkspace:
    return GitWorkspace(repo, tmp_path / "state", emit=events, author="Armor Test <armor@example.com>",
                        checkpoint_policy=CheckpointPolicy(**policy))  # type: ignore[arg-type]


def test_tagged_and_newest_survive_real_pruning_and_git_stays_sound(repo: Path, tmp_path: Path, events: Events) -> None:
    with _workspace(repo, tmp_path, events, keep_last=2) as ws:
        path = started(ws, "t")
        made = []
        for i in range(8):
            (path / "work.txt").write_text(f"step {i}\n")
            made.append(ws.checkpoint("t", f"step {i}", tags=("release",) if i == 2 else ()))
        kept = ws.checkpoints("t")
        assert [cp.id for cp in kept] == ["cp-3", "cp-7", "cp-8"]
        assert kept[0].tags == ("release",)
        pruned = [cp for p in events.of("checkpoint.pruned") for cp in p["checkpoints"]]
        assert sorted(pruned, key=lambda c: int(c[3:])) == ["cp-1", "cp-2", "cp-4", "cp-5", "cp-6"]
        assert all(p["reason"] == "retention" for p in events.of("checkpoint.pruned"))
        log = git(repo, "log", "--first-parent", "--format=%s", "refs/armor/checkpoints/t").splitlines()
        assert log[:3] == ["step 7", "step 6", "step 2"] and "step 3" not in log
        assert "Armor-Tag: release" in git(repo, "log", "-1", "--format=%B", kept[0].commit)
        fsck(repo)
        # the tagged one still restores what it held
        ws.restore("t", "cp-3")
        assert (path / "work.txt").read_text() == "step 2\n"
    fsck(repo)


def test_hourly_retention_with_real_commits(repo: Path, tmp_path: Path, events: Events,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [NOW - 10 * HOUR]
    monkeypatch.setattr(checkpoints_module.time, "time", lambda: clock[0])
    with _workspace(repo, tmp_path, events, keep_last=1, keep_hourly=4) as ws:
        path = started(ws, "h")
        for i in range(20):  # two an hour for ten hours
            (path / "f.txt").write_text(f"{i}\n")
            ws.checkpoint("h", f"n{i}")
            clock[0] += HOUR / 2
        kept = ws.checkpoints("h")
        # now is NOW: the hours NOW-4h .. NOW-1h each keep their newest; the newest overall stays
        assert [cp.message for cp in kept] == ["n13", "n15", "n17", "n19"]
        assert git(repo, "log", "--first-parent", "--format=%s", "refs/armor/checkpoints/h").splitlines()[:4] == [
            "n19", "n17", "n15", "n13"]
    fsck(repo)


def test_the_overall_byte_limit_across_tasks(repo: Path, tmp_path: Path, events: Events) -> None:
    with _workspace(repo, tmp_path, events, keep_last=None, max_total_bytes=1) as ws:
        a, b = started(ws, "a"), started(ws, "b")
        for i in range(3):
            (a / f"a{i}.bin").write_bytes(bytes([i]) * 5000)
            ws.checkpoint("a", f"a{i}")
            (b / f"b{i}.bin").write_bytes(bytes([i + 50]) * 5000)
            ws.checkpoint("b", f"b{i}")
        # a limit nothing can meet: every task keeps only its newest
        assert [cp.message for cp in ws.checkpoints("a")] == ["a2"]
        assert [cp.message for cp in ws.checkpoints("b")] == ["b2"]
        reasons = {p["reason"] for p in events.of("checkpoint.pruned")}
        assert reasons == {"max_total_bytes"}
        dropped = {(t, cp) for k, t, p in events.items if k == "checkpoint.pruned" for cp in p["checkpoints"]}
        assert dropped == {("a", "cp-1"), ("a", "cp-2"), ("b", "cp-1"), ("b", "cp-2")}
        assert git(repo, "log", "--format=%s", "refs/armor/checkpoints/a").splitlines()[0] == "a2"
    fsck(repo)


def test_a_bad_tag_is_refused_before_anything_is_made(repo: Path, tmp_path: Path, events: Events) -> None:
    with _workspace(repo, tmp_path, events) as ws:
        started(ws, "t")
        with pytest.raises(ConfigError, match="checkpoint tag"):
            ws.checkpoint("t", "x", tags=("no spaces please",))
        assert ws.checkpoints("t") == []
