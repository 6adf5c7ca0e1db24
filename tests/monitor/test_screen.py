"""Every command and key of the monitor, typed into its real screen (pipe input, dummy output) against a real service.

The service runs without containers (ARMOR_RX_DOCKER=0, like the service's own
tests), so the commands that need one (exec, shell, run, gc) are checked for the
one-line error they then give; tests marked ``docker`` check them for real.
"""

from __future__ import annotations

import time

from armor_rx.model.lifecycle import State
from tests.monitor.conftest import Screen


def state_of(screen, task):
    with screen.state.lock:
        row = screen.state.rows.get(task)
        return None if row is None else row.state


def started(client, *tasks):
    for task in tasks:
        client.create_task(task)
        client.start(task)


def test_tasks_started_elsewhere_appear_and_change_state(served, screen):
    _repo, client = served
    started(client, "t1", "t2")
    screen.wait(lambda: state_of(screen, "t2") is State.RUNNING, "t2 running on the monitor")
    client.complete("t1")
    screen.wait(lambda: state_of(screen, "t1") is State.COMPLETED, "t1 completed on the monitor")
    with screen.state.lock:
        assert screen.state.rows["t2"].branch == "task/t2"
    assert screen.state.frames > 0  # the screen was drawn


def test_tasks_show_events_filter_pause_follow(served, screen):
    _repo, client = served
    started(client, "t1", "t2")
    screen.wait(lambda: state_of(screen, "t2") is State.RUNNING, "t2 running")
    screen.keys(":tasks\r")
    screen.said("2 tasks: 2 running")
    screen.keys(":show t1\r")
    screen.wait(lambda: "task t1: running" in screen.detail_text(), "t1's details")
    assert "branch     task/t1" in screen.detail_text() and screen.state.selected == "t1"
    screen.keys(":events t2\r")
    screen.wait(lambda: screen.state.task_filter == "t2", "the task filter")
    assert {e.task_id for e in screen.state.visible_events(100)} == {"t2"}
    screen.keys(":events\r")
    screen.wait(lambda: screen.state.task_filter is None, "the task filter cleared")
    screen.keys(":filter git.*\r")
    screen.wait(lambda: screen.state.kind_filter == "git.*", "the kind filter")
    assert screen.state.visible_events(100) and all(e.kind.startswith("git.") for e in screen.state.visible_events(100))
    screen.keys(":filter Bad.Pattern\r")
    screen.said("invalid kind pattern")
    assert screen.state.kind_filter == "git.*"
    screen.keys(":filter\r")
    screen.wait(lambda: screen.state.kind_filter is None, "the kind filter cleared")
    screen.keys(":pause\r")
    screen.wait(lambda: screen.state.paused_at is not None, "the pane paused")
    client.emit("t1", "note.added", {"n": 1})
    screen.wait(lambda: screen.state.newer_than_pause() == 1, "a newer event counted while paused")
    assert all(e.kind != "note.added" for e in screen.state.visible_events(100))
    screen.keys(":follow\r")
    screen.wait(lambda: screen.state.visible_events(1)[-1].kind == "note.added", "the newest event shown after follow")


def test_checkpoints_diff_checkpoint_and_rollback_with_a_question(served, screen):
    _repo, client = served
    started(client, "t1")
    worktree = client.worktree("t1")
    (worktree / "notes.txt").write_text("one\n")
    screen.wait(lambda: state_of(screen, "t1") is State.RUNNING, "t1 running")
    screen.keys(":checkpoint t1 first\r")
    screen.said("checkpoint cp-1")
    screen.wait(lambda: screen.state.rows["t1"].checkpoints == {"cp-1"}, "the checkpoint counted")
    (worktree / "notes.txt").write_text("two\n")
    screen.keys(":checkpoints t1\r")
    screen.wait(lambda: "1 checkpoints of t1" in screen.detail_text(), "the checkpoint list")
    assert "cp-1" in screen.detail_text() and "first" in screen.detail_text()
    screen.keys(":diff t1 cp-1\r")
    screen.wait(lambda: "against cp-1" in screen.detail_text(), "the diff against cp-1")
    assert "-one" in screen.detail_text() and "+two" in screen.detail_text()
    screen.keys(":diff t1\r")
    screen.wait(lambda: "against its base" in screen.detail_text(), "the diff against the base")
    # Rollback asks first; 'n' leaves the worktree alone.
    screen.keys(":rollback t1 cp-1\r")
    screen.wait(lambda: screen.monitor.engine.pending is not None, "the question")
    assert "roll task t1 back to cp-1?" in screen.monitor.engine.pending.question
    screen.keys("n")
    screen.said("not done")
    time.sleep(0.5)
    assert (worktree / "notes.txt").read_text() == "two\n"
    screen.keys(":rollback t1 cp-1\r")
    screen.wait(lambda: screen.monitor.engine.pending is not None, "the question again")
    screen.keys("y")
    screen.said("rollback to cp-1 done")
    assert (worktree / "notes.txt").read_text() == "one\n"


def test_cancel_asks_first_and_resume_works(served, screen):
    _repo, client = served
    started(client, "t1", "t2")
    screen.wait(lambda: state_of(screen, "t2") is State.RUNNING, "t2 running")
    screen.keys(":cancel t2\r")
    screen.wait(lambda: screen.monitor.engine.pending is not None, "the question")
    screen.keys("\x1b")  # anything but y is no
    screen.said("not done")
    assert client.task("t2").state is State.RUNNING
    screen.keys(":cancel t2\r")
    screen.wait(lambda: screen.monitor.engine.pending is not None, "the question again")
    screen.keys("y")
    screen.wait(lambda: state_of(screen, "t2") is State.CANCELLED, "t2 cancelled on the monitor")
    assert client.task("t2").state is State.CANCELLED
    client.interrupt("t1", "testing resume")
    screen.wait(lambda: state_of(screen, "t1") is State.INTERRUPTED, "t1 interrupted on the monitor")
    assert "waiting" in dict((r.task_id, f) for r, f in screen.state.table())["t1"]
    screen.keys(":resume t1\r")
    screen.wait(lambda: state_of(screen, "t1") is State.RUNNING, "t1 resumed")


def test_commands_that_need_containers_say_so_in_one_line(served, screen):
    _repo, client = served
    started(client, "t1")
    screen.wait(lambda: state_of(screen, "t1") is State.RUNNING, "t1 running")
    screen.keys(":exec t1 -- echo hi\r")
    screen.said("runs no containers")
    assert "$ echo hi" in screen.detail_text()
    screen.keys(":run r1 -- true\r")
    screen.said("error:")
    assert all(t.task_id != "r1" for t in client.tasks())  # refused before the task was made
    screen.keys(":gc\r")
    screen.said("error:")
    assert screen.monitor.engine.pending is None  # nothing to confirm when nothing could be listed
    screen.keys(":shell t1\r")
    screen.said("shell in t1:")
    assert "no containers" in screen.state.message or "container" in screen.state.message


def test_stats_help_and_errors(served, screen):
    _repo, client = served
    started(client, "t1")
    screen.wait(lambda: state_of(screen, "t1") is State.RUNNING, "t1 running")
    screen.keys(":stats\r")
    screen.wait(lambda: screen.state.detail_title == "stats", "the stats")
    text = screen.detail_text()
    for line in ("events/s", "tasks by state       running 1", "image-cache hit rate n/a", "dead letters         0",
                 "dropped events       0 skipped by this monitor"):
        assert line in text, text
    screen.keys(":help\r")
    screen.wait(lambda: screen.state.detail_title == "help", "the help")
    assert "rollback TASK CHECKPOINT" in screen.detail_text() and "cancel the selected task" in screen.detail_text()
    screen.keys(":help rollback\r")
    screen.wait(lambda: screen.state.detail_title == "help rollback", "one verb's help")
    screen.keys(":nosuch\r")
    screen.said("unknown command 'nosuch'")


def test_keys_act_on_the_selected_task(served, screen):
    _repo, client = served
    started(client, "a1", "b2")
    screen.wait(lambda: state_of(screen, "b2") is State.RUNNING, "b2 running")
    with screen.state.lock:
        screen.state.selected = "a1"
    screen.keys("j")
    screen.wait(lambda: screen.state.selected == "b2", "j moves down")
    screen.keys("k")
    screen.wait(lambda: screen.state.selected == "a1", "k moves up")
    screen.keys("\x1b[B")  # down arrow
    screen.wait(lambda: screen.state.selected == "b2", "the down arrow moves down")
    screen.keys("\r")
    screen.wait(lambda: "task b2: running" in screen.detail_text(), "Enter shows details")
    screen.keys("c")
    screen.said("task b2: checkpoint cp-1")
    screen.keys("r")
    screen.wait(lambda: screen.app.command.text == "rollback b2 ", "r asks which checkpoint")
    screen.keys("\t")  # completion offers the task's checkpoints
    screen.wait(lambda: screen.app.command.text == "rollback b2 cp-1", "Tab completes the checkpoint")
    screen.keys("\r")
    screen.wait(lambda: screen.monitor.engine.pending is not None, "the rollback question")
    screen.keys("n")
    screen.said("not done")
    screen.keys("x")
    screen.wait(lambda: screen.monitor.engine.pending is not None, "the cancel question")
    assert "cancel task b2?" in screen.monitor.engine.pending.question
    screen.keys("y")
    screen.wait(lambda: state_of(screen, "b2") is State.CANCELLED, "x cancelled b2")
    screen.keys("/")
    screen.wait(lambda: screen.app.command.text == "filter ", "/ starts a filter")
    screen.keys("task.*\r")
    screen.wait(lambda: screen.state.kind_filter == "task.*", "the filter typed after /")
    screen.keys("p")
    screen.wait(lambda: screen.state.paused_at is not None, "p pauses")
    screen.keys("f")
    screen.wait(lambda: screen.state.paused_at is None, "f follows")
    screen.keys("s")
    screen.said("shell in b2:")  # the selection is still b2
    screen.keys("q")
    screen.wait(lambda: not screen.app.app.is_running, "q quits")
    assert client.task("a1").state is State.RUNNING  # quitting touched no task


def test_quit_command_leaves_tasks_alone(served, monitor):
    _repo, client = served
    started(client, "t1")
    screen = Screen(monitor)
    try:
        screen.wait(lambda: state_of(screen, "t1") is State.RUNNING, "t1 running")
        screen.keys(":quit\r")
        screen.wait(lambda: not screen.app.app.is_running, "quit")
    finally:
        screen.close()
    assert screen.error is None
    assert client.task("t1").state is State.RUNNING


def test_history_persists_in_the_xdg_state_dir(served, monitor, tmp_path):
    from armor_rx.monitor.app import file_history, history_path

    path = history_path()
    assert path == tmp_path / "xdg" / "armor-rx" / "monitor-history"
    screen = Screen(monitor, history=file_history(None))
    try:
        screen.keys(":pause\r")
        screen.wait(lambda: screen.state.paused_at is not None, "pause")
    finally:
        screen.close()
    assert "pause" in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = Screen(monitor, history=file_history(None))
    try:
        screen = again
        again.keys(":")
        again.wait(lambda: again.app.app.layout.has_focus(again.app.command), "the command line")
        again.wait(lambda: "pause" in list(again.app.command.history.get_strings()), "the history loaded")
        again.keys("\x1b[A")  # up arrow recalls it
        again.wait(lambda: again.app.command.text == "pause", "the last command recalled")
    finally:
        again.close()
