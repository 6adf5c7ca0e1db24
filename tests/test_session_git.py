"""The session with its git workspace, on real repositories checked with the git CLI."""

import os
import subprocess
import sys

import orjson
import pytest

from armor_rx import Armor, EffectFailed, State
from armor_rx.testing import crash


def test_task_gets_branch_worktree_checkpoints_and_merge(repo, git):
    with Armor(repo) as armor:
        armor.create_task("fix-login")
        started = armor.start("fix-login")
        worktree = armor.worktree("fix-login")
        assert started.payload["branch"] == "task/fix-login"
        assert armor.task("fix-login").metadata["worktree"] == str(worktree)
        assert str(worktree) in git(repo, "worktree", "list")

        (worktree / "login.py").write_text("def login(): return True\n")
        cp = armor.checkpoint("fix-login", "first try")
        first = cp.payload["checkpoint"]
        (worktree / "login.py").write_text("broken\n")
        (worktree / "README.md").unlink()
        armor.rollback("fix-login", first)
        assert (worktree / "login.py").read_text() == "def login(): return True\n"
        assert (worktree / "README.md").exists()
        assert [c.id for c in armor.checkpoints("fix-login")][0] == first

        done = armor.complete("fix-login", message="Fix login", merge="ff")
        assert done.payload["merged"] is True
        assert armor.task("fix-login").state is State.COMPLETED
        kinds = [e.kind for e in armor.history(task_id="fix-login")]
    assert "git.branch.created" in kinds and "checkpoint.created" in kinds and "checkpoint.restored" in kinds
    assert "Fix login" in git(repo, "log", "--format=%s", "main")
    assert (repo / "login.py").exists() or "login.py" in git(repo, "ls-tree", "-r", "--name-only", "main")
    git(repo, "fsck", "--strict")
    assert "refs/armor/checkpoints/fix-login" in git(repo, "for-each-ref", "refs/armor")
    assert git(repo, "status", "--porcelain") == ""  # .armor/ is ignored


def test_branch_from_a_checkpoint(repo, git):
    with Armor(repo) as armor:
        armor.create_task("a")
        armor.start("a")
        (armor.worktree("a") / "idea.txt").write_text("v1\n")
        cp = armor.checkpoint("a").payload["checkpoint"]
        armor.branch_from("a", cp, "b")
        assert (armor.worktree("b") / "idea.txt").read_text() == "v1\n"
        assert armor.task("b").state is State.RUNNING
    git(repo, "fsck", "--strict")


def test_cli_checkpoints_rollback_resume(repo):
    with Armor(repo) as armor:
        armor.create_task("t1")
        armor.start("t1")
        (armor.worktree("t1") / "a.txt").write_text("1\n")
        cp = armor.checkpoint("t1").payload["checkpoint"]
        (armor.worktree("t1") / "a.txt").write_text("2\n")
        armor.interrupt("t1", "laptop lid closed")
        worktree = armor.worktree("t1")

    # The CLI's verbs go through the armor service, which gives tasks containers when a Docker
    # engine answers (scripts/test.sh starts one) and the default image is not loaded there (no
    # registry): this test is about checkpoints, so its service runs without Docker.
    env = {**os.environ, "ARMOR_RX_DOCKER": "0"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "armor_rx", *args, "--repo", str(repo)], capture_output=True, text=True, timeout=60, env=env)

    listed = cli("checkpoints", "t1", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = orjson.loads(listed.stdout)
    # The interrupt took a final checkpoint of the worktree as it was left.
    assert [c["checkpoint"] for c in rows] == [cp, "cp-2"] and rows[1]["message"].startswith("final checkpoint (user)")
    resumed = cli("resume", "t1")
    assert resumed.returncode == 0 and "running" in resumed.stdout, resumed.stderr
    rolled = cli("rollback", "t1", cp)
    assert rolled.returncode == 0, rolled.stderr
    assert (worktree / "a.txt").read_text() == "1\n"
    bad = cli("rollback", "t1", "cp-999")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_not_a_repository_is_a_clear_error(tmp_path):
    from armor_rx.errors import GitError

    with pytest.raises(GitError, match="not a git repository"):
        Armor(tmp_path).open()


def test_branch_name_guard_runs_first(repo):
    with Armor(repo) as armor:
        assert [h.name for h in armor.hooks.list(stage="before")][0] == "git-branch-name"
        armor.create_task("ok-name")
        armor.start("ok-name")
        assert armor.task("ok-name").state is State.RUNNING


def test_crash_mid_start_is_reconciled_and_resumable(repo, git):
    from armor_rx.model.events import TaskEvent

    armor = Armor(repo).open()
    armor.create_task("t1")
    armor.log.append(TaskEvent.new("task.start.requested", "t1"), on_append=armor.pipeline._apply)
    crash(armor)
    with Armor(repo) as again:
        assert again.task("t1").state is State.INTERRUPTED
        again.resume("t1")
        assert again.task("t1").state is State.RUNNING
        assert again.worktree("t1").is_dir()
        assert str(again.worktree("t1")) in git(repo, "worktree", "list")
    git(repo, "fsck", "--strict")


def test_prune_stale_worktrees_keeps_known_tasks_and_saves_work(repo, git):
    with Armor(repo) as armor:
        armor.create_task("kept")
        armor.start("kept")
        # A worktree whose task this state directory does not know (e.g. its log was reset).
        branch = armor.git.create_branch("ghost")
        ghost = armor.git.add_worktree("ghost", branch)
        (ghost / "unsaved.txt").write_text("precious\n")
        pruned = armor.prune_stale_worktrees()
        assert pruned == ["ghost"]
        assert not ghost.exists() and armor.worktree("kept").is_dir()
        pruned_events = list(armor.history(kind="git.worktree.pruned"))
        assert pruned_events and pruned_events[0].task_id == "ghost"
    listing = git(repo, "worktree", "list")
    assert "ghost" not in listing and "kept" in listing
    # The unsaved file was checkpointed before removal.
    files = git(repo, "ls-tree", "-r", "--name-only", "refs/armor/checkpoints/ghost")
    assert "unsaved.txt" in files
    git(repo, "fsck", "--strict")


def test_a_second_state_directory_cannot_reuse_a_task_id_with_checkpoints(repo, tmp_path, git):
    with Armor(repo, state_dir=tmp_path / "first") as first:
        first.create_task("shared")
        first.start("shared")
        first.checkpoint("shared")
    tip = git(repo, "rev-parse", "refs/armor/checkpoints/shared")
    with Armor(repo, state_dir=tmp_path / "second") as second:
        second.create_task("shared")
        with pytest.raises(EffectFailed, match="git update-ref -d refs/armor/checkpoints/shared"):
            second.start("shared")
        assert second.task("shared").state is State.FAILED
    assert git(repo, "rev-parse", "refs/armor/checkpoints/shared") == tip
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/task").split() == ["refs/heads/task/shared"]


def test_a_stale_index_lock_does_not_stop_the_session_or_the_completion(repo, git):
    """Issue 14 item 7: a lock left by a killed writer is recovered when the session opens."""
    with Armor(repo) as armor:
        armor.create_task("locked")
        armor.start("locked")
        worktree = armor.worktree("locked")
        (worktree / "work.txt").write_text("work\n")
    admin = next(a for a in (repo / ".git" / "worktrees").iterdir()
                 if (a / "gitdir").read_text().strip() == str(worktree / ".git"))
    (admin / "index.lock").write_bytes(b"")  # as a kill -9 mid-write leaves it
    with Armor(repo) as armor:
        if armor.task("locked").state is State.INTERRUPTED:
            armor.resume("locked")
        done = armor.complete("locked", message="done", merge="ff")
        assert done.payload["merged"] is True
        recovered = [e for e in armor.history(task_id="locked") if e.kind == "git.lock.recovered"]
    assert [e.payload["path"] for e in recovered] == [str(admin / "index.lock")]
    assert git(repo, "show", "main:work.txt") == "work\n"
    git(repo, "fsck", "--strict")


def test_a_nested_repository_is_reported_in_the_log(repo, git):
    """Issue 13 item 4: a repository the agent makes in its worktree is reported, never followed."""
    with Armor(repo) as armor:
        armor.create_task("nest")
        armor.start("nest")
        inner = armor.worktree("nest") / "vendor" / "lib"
        inner.mkdir(parents=True)
        git(inner, "init", "-q")
        (inner / "code.py").write_text("x = 1\n")
        payload = armor.checkpoint("nest").payload
        armor.checkpoint("nest")  # reported once per task, not on every checkpoint
        reports = [e for e in armor.history(task_id="nest") if e.kind == "git.nested_repository"]
    assert [e.payload["path"] for e in reports] == ["vendor/lib"]
    assert reports[0].payload["followed"] is False and reports[0].payload["checkpoint"] == payload["checkpoint"]
    assert "vendor/lib/code.py" in git(repo, "ls-tree", "-r", "--name-only", "refs/armor/checkpoints/nest")


def test_names_that_are_not_utf8_do_not_break_the_log(repo, git):
    """Issue 14 item 6: events carry such names escaped; the effect does not fail on them."""
    with Armor(repo) as armor:
        armor.create_task("bytes")
        armor.start("bytes")
        raw = os.fsencode(armor.worktree("bytes"))
        os.mkfifo(os.path.join(raw, b"fifo\xe9"))
        os.makedirs(os.path.join(raw, b"nest\xe9", b".git"))
        with open(os.path.join(raw, b"nest\xe9", b"caf\xe9"), "wb") as f:
            f.write(b"x\n")
        armor.checkpoint("bytes")
        assert [c.path for c in armor.diff("bytes").files] == ["nest\udce9/caf\udce9"]
        done = armor.complete("bytes", message="bytes", merge="ff")
        assert done.payload["merged"] is True
        history = {e.kind: e.payload for e in armor.history(task_id="bytes")}
    assert history["checkpoint.created"]["left_out"]["fifo\\xe9"] == "a fifo"
    assert history["git.nested_repository"]["path"] == "nest\\xe9"
    git(repo, "fsck", "--strict")
