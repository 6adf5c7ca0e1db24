"""The checkpoint policy and tags through the service: CLI verbs, real processes."""

from __future__ import annotations

import orjson

from .conftest import armor_cli


def test_start_with_a_policy_and_tagged_checkpoints_through_the_cli(repo, no_docker):
    def cli(*args):
        return armor_cli(*args, "--repo", repo)

    try:
        bad = cli("start", "t2", "--checkpoint-policy", "bogus=1")
        assert bad.returncode != 0 and "unknown checkpoint policy key 'bogus'" in bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

        started = cli("start", "t1", "--checkpoint-policy", "at=before_complete")
        assert started.returncode == 0, started.stderr
        (repo / ".armor" / "worktrees" / "t1" / "notes.txt").write_text("mine\n")
        bad_tag = cli("checkpoint", "t1", "--tag", "not a tag")
        assert bad_tag.returncode != 0 and "checkpoint tag" in bad_tag.stderr and "Traceback" not in bad_tag.stderr
        tagged = cli("checkpoint", "t1", "-m", "by hand", "--tag", "keep-me", "--json")
        assert tagged.returncode == 0, tagged.stderr
        assert orjson.loads(tagged.stdout)["tags"] == ["keep-me"]
        done = cli("complete", "t1")
        assert done.returncode == 0, done.stderr
        listed = cli("checkpoints", "t1", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = orjson.loads(listed.stdout)
        assert [(r["message"], r["tags"]) for r in rows] == [
            ("by hand", ["keep-me"]), ("policy: before task.complete (before_complete)", [])]
        events = cli("events", "--task", "t1", "--json")
        assert events.returncode == 0, events.stderr
        requested = [orjson.loads(line) for line in events.stdout.splitlines() if b'"checkpoint.requested"' in line.encode()]
        assert [r["payload"].get("policy", {}).get("because") for r in requested] == [None, ["before_complete"]]
    finally:
        cli("serve", "--stop")
