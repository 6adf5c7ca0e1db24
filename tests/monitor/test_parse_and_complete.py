"""The command line without a terminal: parsing and completion."""

from __future__ import annotations

from dataclasses import replace

import pytest

from armor_rx.errors import InvalidTaskId, UsageError
from armor_rx.model.events import TaskEvent
from armor_rx.monitor.commands import VERBS, parse
from armor_rx.monitor.completion import candidates
from armor_rx.monitor.state import MonitorState


def test_every_verb_the_issue_names_exists():
    assert set(VERBS) == {"tasks", "show", "events", "filter", "pause", "follow", "checkpoints", "diff", "checkpoint", "rollback",
                          "resume", "cancel", "exec", "shell", "run", "gc", "stats", "help", "quit"}
    assert {v.name for v in VERBS.values() if v.destructive} == {"rollback", "cancel", "gc"}


def test_parse_reads_arguments_and_the_command_after_dashes():
    p = parse("exec t1 -- sh -c 'echo hi'")
    assert (p.verb.name, p.args, p.command) == ("exec", ["t1"], ["sh", "-c", "echo hi"])
    assert parse("exec t1 make test").command == ["make", "test"]
    assert parse("diff t1").args == ["t1"] and parse("diff t1 cp-2").args == ["t1", "cp-2"]
    assert parse("checkpoint t1 before the refactor").args == ["t1", "before", "the", "refactor"]
    assert parse("run fix-login -- true").args == ["fix-login"]


@pytest.mark.parametrize("line, message", [
    ("", "type a command"),
    ("frobnicate", "unknown command 'frobnicate'"),
    ("rollbak t1 cp-1", "did you mean rollback"),
    ("rollback t1", "rollback needs 2 arguments: rollback TASK CHECKPOINT"),
    ("show", "show needs 1 argument: show TASK"),
    ("exec t1", "exec needs a command: exec TASK -- CMD..."),
    ("exec t1 --", "exec needs a command"),
    ("cancel t1 t2", "too many arguments for cancel"),
    ("cancel t1 -- x", "takes no command after '--'"),
    ("show 'a b", "cannot read"),
])
def test_bad_lines_get_one_line_saying_what_to_do(line, message):
    with pytest.raises(UsageError) as err:
        parse(line)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_bad_task_id_is_refused_before_anything_is_sent():
    with pytest.raises(InvalidTaskId):
        parse("cancel ../etc")


def _state_with(tasks_and_cps):
    s = MonitorState()
    seq = 0
    for task, cps in tasks_and_cps.items():
        seq += 1
        s.apply(replace(TaskEvent.new("task.created", task, {}), seq=seq))
        for cp in cps:
            seq += 1
            s.apply(replace(TaskEvent.new("checkpoint.created", task, {"checkpoint": cp}), seq=seq))
    seq += 1
    s.apply(replace(TaskEvent.new("exec.exited", "alpha", {"exit_code": 0}), seq=seq))
    return s


def test_completion_offers_verbs_tasks_checkpoints_and_patterns():
    s = _state_with({"alpha": ["cp-1", "cp-2", "cp-10"], "beta": []})
    assert candidates("", s) == ("", list(VERBS))
    assert candidates("ch", s) == ("ch", ["checkpoints", "checkpoint"])
    assert candidates("show ", s) == ("", ["alpha", "beta"])
    assert candidates("show b", s) == ("b", ["beta"])
    assert candidates("rollback alpha ", s) == ("", ["cp-1", "cp-2", "cp-10"])  # in the order they were made
    assert candidates("rollback alpha cp-1", s) == ("cp-1", ["cp-1", "cp-10"])
    assert candidates("rollback beta ", s) == ("", [])
    typing, found = candidates("filter ex", s)
    assert typing == "ex" and {"exec.*", "exec.exited", "exec.output"} <= set(found)
    assert "*.failed" in candidates("filter ", s)[1]
    assert candidates("help ro", s) == ("ro", ["rollback"])
    assert candidates("exec alpha -- ", s) == ("", [])  # the command is the user's own
    assert candidates("stats ", s) == ("", [])
    assert candidates("nosuch ", s) == ("", [])
