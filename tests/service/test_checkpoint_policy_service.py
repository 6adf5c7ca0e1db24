"""The checkpoint policy, retention and tags through the service: CLI verbs, real processes."""

from __future__ import annotations

import orjson

from .conftest import armor_cli


def test_policy_retention_and_tags_through_the_cli_and_the_services_environment(repo, no_docker):
    env = {"ARMOR_RX_CHECKPOINT_POLICY": "at=before_complete", "ARMOR_RX_CHECKPOINT_RETENTION": "keep_last=1"}

    def cli(*args):
        return armor_cli(*args, "--repo", repo, env=env)

    try:
        bad = cli("start", "t2", "--checkpoint-policy", "bogus=1")
        assert bad.returncode != 0 and "unknown checkpoint policy key 'bogus'" in bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

        started = cli("start", "t1")  # the service's default policy: before_complete
        assert started.returncode == 0, started.stderr
        (repo / ".armor" / "worktrees" / "t1" / "notes.txt").write_text("mine\n")
        bad_tag = cli("checkpoint", "t1", "--tag", "not a tag")
        assert bad_tag.returncode != 0 and "checkpoint tag" in bad_tag.stderr and "Traceback" not in bad_tag.stderr
        tagged = cli("checkpoint", "t1", "-m", "by hand", "--tag", "keep-me", "--json")
        assert tagged.returncode == 0, tagged.stderr
        assert orjson.loads(tagged.stdout)["tags"] == ["keep-me"]
        assert cli("checkpoint", "t1", "-m", "scratch").returncode == 0
        done = cli("complete", "t1")
        assert done.returncode == 0, done.stderr
        listed = cli("checkpoints", "t1", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = orjson.loads(listed.stdout)
        # keep_last=1: the scratch one went; the tagged one and the newest (the policy's) stay
        assert [(r["message"], r["tags"]) for r in rows] == [
            ("by hand", ["keep-me"]), ("policy: before task.complete (before_complete)", [])]
        events = cli("events", "--task", "t1", "--json")
        assert events.returncode == 0, events.stderr
        lines = [orjson.loads(line) for line in events.stdout.splitlines() if line.strip()]
        requested = [e for e in lines if e["kind"] == "checkpoint.requested"]
        assert [dict(r["payload"].get("policy") or {}).get("because") for r in requested] == [None, None, ["before_complete"]]
        assert any(e["kind"] == "checkpoint.pruned" and e["payload"]["checkpoints"] == ["cp-2"] for e in lines)

        assert cli("start", "t3", "--checkpoint-policy", "off").returncode == 0
        assert cli("complete", "t3").returncode == 0
        none = cli("checkpoints", "t3", "--json")
        assert none.returncode == 0 and orjson.loads(none.stdout or "[]") == [], none.stdout
    finally:
        cli("serve", "--stop")
