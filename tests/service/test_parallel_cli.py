"""Parallel tasks through the service and the CLI: conflicts seen early, merge strategies, fork and compare."""

from __future__ import annotations

import orjson

from tests.service.conftest import armor_cli, wait_for

LINES = "".join(f"line {i}\n" for i in range(1, 21))


def ok(*args):
    done = armor_cli(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def test_conflicts_strategies_fork_and_compare_through_the_cli(repo, git, no_docker):
    (repo / "app.py").write_text(LINES)
    git(repo, "add", "app.py")
    git(repo, "commit", "-qm", "app")
    worktrees = repo / ".armor" / "worktrees"
    for name in ("a", "b"):
        ok("start", name, "--repo", repo)
    (worktrees / "a" / "app.py").write_text(LINES.replace("line 4\n", "a 4\n"))
    (worktrees / "b" / "app.py").write_text(LINES.replace("line 4\n", "b 4\n"))
    ok("checkpoint", "a", "--repo", repo)
    ok("checkpoint", "b", "--repo", repo)

    def detected():
        out = ok("events", "--kind", "conflict.detected", "--json", "--repo", repo)
        return [orjson.loads(line) for line in out.splitlines() if line.strip()]

    event = wait_for(detected, what="conflict.detected")[0]
    assert event["payload"]["tasks"] == ["a", "b"] and event["payload"]["files"][0]["overlap"] is True
    listed = orjson.loads(ok("conflicts", "--json", "--repo", repo))
    assert listed[0]["paths"] == ["app.py"]
    assert "a and b: app.py (overlapping lines)" in ok("conflicts", "--repo", repo)

    ok("complete", "a", "--merge", "first-wins", "--repo", repo)
    main = git(repo, "rev-parse", "main").strip()
    refused = armor_cli("complete", "b", "--merge", "three-way", "--repo", repo)
    assert refused.returncode == 1 and "not merged" in refused.stderr and "app.py" in refused.stderr
    assert git(repo, "rev-parse", "main").strip() == main and git(repo, "status", "--porcelain") == ""
    resolved = ok("events", "--kind", "conflict.resolved", "--json", "--repo", repo)
    assert '"a"' in resolved  # a's completion ended the conflict

    ok("start", "c", "--repo", repo)
    (worktrees / "c" / "idea.txt").write_text("idea\n")
    ok("checkpoint", "c", "--repo", repo)
    forked = orjson.loads(ok("fork", "c", "cp-1", "--into", "2", "--json", "--repo", repo))
    assert [e["task_id"] for e in forked] == ["c-1", "c-2"]
    (worktrees / "c-1" / "idea.txt").write_text("idea\nfirst\n")
    (worktrees / "c-2" / "other.txt").write_text("second\n")
    compared = orjson.loads(ok("compare", "c-1", "c-2", "--json", "--repo", repo))
    files = {t["task_id"]: {f["path"]: (f["added"], f["removed"]) for f in t["files"]} for t in compared["tasks"]}
    assert files["c-1"] == {"idea.txt": (1, 0)} and files["c-2"] == {"other.txt": (1, 0)}
    manual = ok("complete", "c-2", "--merge", "manual", "--repo", repo)
    assert "git merge --no-ff task/c-2" in manual
    assert git(repo, "rev-parse", "main").strip() == main
    assert "c-1" in git(repo, "worktree", "list")
    git(repo, "fsck", "--strict")


def test_the_service_refuses_an_unknown_merge_mode_and_forks_remotely(repo, no_docker):
    import pytest

    import armor_rx
    from armor_rx.errors import ArmorError

    with armor_rx.connect(repo) as remote:
        remote.create_task("t")
        remote.start("t")
        (remote.worktree("t") / "x.txt").write_text("x\n")
        cp = remote.checkpoint("t").payload["checkpoint"]
        with pytest.raises(ArmorError, match="'merge' must be one of none, ff, merge, first-wins"):
            remote.complete("t", merge="octopus")
        assert remote.task("t").state.value == "running"  # refused before anything happened
        with pytest.raises(ArmorError, match="cp-9"):
            remote.fork("t", "cp-9", into=2)
        assert [r.task_id for r in remote.tasks()] == ["t"]
        assert [e.task_id for e in remote.fork("t", cp, names=["u", "v"])] == ["u", "v"]
        assert remote.compare(["u", "v"]).shared == {}
        assert remote.conflicts() == []


def test_the_service_refuses_merging_a_task_that_started_from_a_commit_and_keeps_it_running(repo, git, no_docker):
    head = git(repo, "rev-parse", "HEAD").strip()
    ok("start", "d", "--base", head, "--repo", repo)
    refused = armor_cli("complete", "d", "--merge", "ff", "--repo", repo)
    assert refused.returncode != 0 and "not a branch" in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
    rows = orjson.loads(ok("tasks", "--json", "--repo", repo))
    assert [(r["task_id"], r["state"]) for r in rows] == [("d", "running")]
    ok("complete", "d", "--merge", "none", "--repo", repo)
    assert orjson.loads(ok("tasks", "--json", "--repo", repo))[0]["state"] == "completed"
