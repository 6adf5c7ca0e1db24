import os
import subprocess
import sys

import orjson
import pytest

from armor_rx import Armor
from armor_rx.cli import main


def run_cli(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "armor_rx", *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    return proc


def test_tasks_json_on_new_state_dir_is_empty_list(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    assert main(["tasks", "--json", "--state-dir", str(tmp_path / "nothing")]) == 0
    assert orjson.loads(capsys.readouterr().out) == []
    assert list((tmp_path / "nothing").iterdir()) == []  # reading made nothing


def test_events_and_tasks_read_the_state_dir(tmp_path, capsys):
    state = tmp_path / ".armor"
    with Armor(state_dir=state) as armor:
        armor.create_task("t1")
        armor.start("t1")
        armor.create_task("t2")
    assert main(["events", "--json", "--state-dir", str(state)]) == 0
    lines = capsys.readouterr().out.splitlines()
    events = [orjson.loads(line) for line in lines]
    assert [e["kind"] for e in events if e["task_id"]] == ["task.created", "task.start.requested", "task.started", "task.created"]
    assert main(["events", "--json", "--task", "t2", "--state-dir", str(state)]) == 0
    assert [orjson.loads(x)["task_id"] for x in capsys.readouterr().out.splitlines()] == ["t2"]
    assert main(["events", "--kind", "*.started", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "task.started" in out and "task.created" not in out
    assert main(["tasks", "--json", "--state-dir", str(state)]) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert [(r["task_id"], r["state"]) for r in rows] == [("t1", "running"), ("t2", "pending")]


def test_reads_while_a_session_holds_the_lock(tmp_path, capsys):
    state = tmp_path / ".armor"
    with Armor(state_dir=state) as armor:
        armor.create_task("t1")
        assert main(["tasks", "--json", "--state-dir", str(state)]) == 0
        assert orjson.loads(capsys.readouterr().out)[0]["task_id"] == "t1"


def test_default_state_dir_is_in_the_repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "sub").mkdir()
    with Armor(repo) as armor:
        armor.create_task("t1")
    assert (repo / ".armor" / "events").is_dir()
    proc = run_cli("tasks", "--json", cwd=repo / "sub")
    assert proc.returncode == 0 and orjson.loads(proc.stdout)[0]["task_id"] == "t1"
    proc = run_cli("tasks", "--json", "--repo", str(repo), cwd=tmp_path)
    assert orjson.loads(proc.stdout)[0]["task_id"] == "t1"


@pytest.mark.parametrize("args", [["events", "--task", "../x"], ["events", "--kind", "Bad Pattern!"]])
def test_bad_argument_is_one_line_no_traceback(tmp_path, args):
    proc = run_cli(*args, "--state-dir", str(tmp_path))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "armor-rx: error:" in lines[0]


def test_task_id_error_says_what_is_allowed(tmp_path):
    proc = run_cli("events", "--task", "../x", "--state-dir", str(tmp_path))
    assert "lowercase letters, digits" in proc.stderr


def test_follow_prints_new_events(tmp_path):
    state = tmp_path / ".armor"
    with Armor(state_dir=state) as armor:
        armor.create_task("t1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "armor_rx", "events", "--follow", "--json", "--state-dir", str(state)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            first = orjson.loads(proc.stdout.readline())
            armor.emit("t1", "note.added", {"n": 1})
            second = orjson.loads(proc.stdout.readline())
        finally:
            proc.terminate()
            proc.wait(10)
    assert first["kind"] == "task.created" and second["kind"] == "note.added"


def test_demo_runs_end_to_end():
    proc = run_cli("demo")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for kind in ("git.branch.created", "git.worktree.created", "checkpoint.created", "checkpoint.restored", "git.merge.completed", "task.completed"):
        assert kind in out, kind
    assert "hook.vetoed" in out and "tasks may not ask for network access" in out
    assert "after_complete hook: write-notes finished, merged=True" in out
    assert "NOTES.md merged into the sample repository's branch: True" in out
    if os.environ.get("DOCKER_HOST"):  # scripts/test.sh starts a daemon: the container part runs too
        assert "container.started" in out and "hello from agent in /workspace" in out
    assert "Traceback" not in proc.stderr
    # The closing hint never names a directory the demo then deletes.
    closing = out.strip().splitlines()[-2:]
    named = [word for line in closing for word in line.split() if word.startswith("/tmp/armor-demo-")]
    assert all(os.path.exists(path) for path in named), named


def test_corrupt_log_tail_is_reported_not_a_traceback(tmp_path):
    state = tmp_path / ".armor"
    with Armor(state_dir=state) as armor:
        armor.create_task("t1")
    segment = sorted((state / "events").glob("*.jsonl"))[-1]
    with open(segment, "ab") as fh:
        fh.write(b'{"v":1,"seq":99,"garbage')
    proc = run_cli("tasks", "--json", "--state-dir", str(state))
    assert proc.returncode == 0 and orjson.loads(proc.stdout)[0]["task_id"] == "t1"
    with Armor(state_dir=state) as armor:
        assert [t.task_id for t in armor.tasks()] == ["t1"]
        armor.create_task("t2")
    assert os.path.getsize(segment) > 0


@pytest.mark.parametrize("args", [["run", "--task", "-b", "--repo", ".", "--", "true"], ["nosuchverb"], ["tasks", "--bogus"],
                                  ["image", "frobnicate"]])
def test_usage_errors_are_one_line(args):
    done = run_cli(*args)
    code, out, err = done.returncode, done.stdout, done.stderr
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("armor-rx") and "--help" in lines[0], err


@pytest.mark.parametrize("verb", ["tasks", "events"])
def test_a_named_state_dir_that_is_not_there_is_an_error_not_no_tasks(tmp_path, verb):
    done = run_cli(verb, "--state-dir", str(tmp_path / "typo"))
    assert done.returncode != 0 and "does not exist" in done.stderr and "no tasks" not in done.stdout
    (tmp_path / "file").write_text("x")
    done = run_cli(verb, "--state-dir", str(tmp_path / "file"))
    assert done.returncode != 0 and "is not a directory" in done.stderr


def test_options_after_an_image_action_are_accepted(tmp_path):
    done = run_cli("image", "stats", "--state-dir", str(tmp_path / "s"), "--json")
    assert "unrecognized arguments" not in done.stderr  # it may still fail for want of a Docker engine, in one line
    assert done.returncode == 0 or len(done.stderr.strip().splitlines()) == 1
