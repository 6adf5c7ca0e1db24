"""Task containers on the real daemon: hardening, limits, exec streaming, removal."""

from __future__ import annotations

import time

import pytest

from armor_rx.session import Armor
from armor_rx.sinks.docker import DockerEffect

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup_containers")]


@pytest.fixture
def session(tmp_path, engine, sandbox):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "hello.txt").write_text("hello from the host\n")
    effect = DockerEffect(engine, spec=sandbox, worktree_of=lambda task: workdir, state_dir=tmp_path / ".armor")
    with Armor(state_dir=tmp_path / ".armor", effects=[effect]) as armor, effect:
        yield armor, effect


def _run(armor, task, command, **payload):
    outcome = armor.request(task, "exec.requested", {"command": command, **payload}).result(120)
    armor.wait_idle()
    output = "".join(e.payload["data"] for e in armor.history(task_id=task, kind="exec.output") if e.causation_id == outcome.causation_id)
    return outcome, output


def _started(armor, task):
    armor.create_task(task)
    armor.start(task)
    return next(e for e in armor.history(task_id=task, kind="container.started"))


def test_inspect_shows_every_hardening_default(session, engine):
    armor, effect = session
    started = _started(armor, "harden")
    attrs = engine.api.inspect_container(started.payload["container"])
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["PidsLimit"] == 64
    assert host["Memory"] == 64 * 1024 * 1024 and host["MemorySwap"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 2_000_000_000
    assert host["ReadonlyRootfs"] is True
    assert "/tmp" in host["Tmpfs"]
    assert attrs["Config"]["User"] == "61000:61000"  # never root, never the host user; root's group 0 replaced
    assert attrs["Config"]["WorkingDir"] == "/workspace"
    assert attrs["Config"]["Cmd"] == ["sleep", "120"]
    assert [m["Destination"] for m in attrs["Mounts"]] == ["/workspace"]
    labels = attrs["Config"]["Labels"]
    assert labels["armor.task"] == "harden" and labels["armor.session"] == effect.session.id
    assert {"armor.created", "armor.owner"} <= set(labels)
    settings = started.payload["settings"]
    assert settings["network"] == "none" and settings["read_only"] is True
    assert (settings["user"], settings["uid"], settings["gid"], settings["root"]) == ("61000:61000", 61000, 61000, False)
    assert settings["worktree_mount"] == "nosuid,nodev" and not settings["degraded"]


def test_exec_streams_output_and_exit_code(session):
    armor, _ = session
    _started(armor, "hello")
    outcome, output = _run(armor, "hello", ["sh", "-c", "cat hello.txt; id -u; echo oops >&2; exit 3"])
    assert outcome.payload["exit_code"] == 3 and outcome.payload["reason"] == "exited"
    assert "hello from the host" in output and "61000" in output and "oops" in output
    exited = list(armor.history(task_id="hello", kind="exec.exited"))
    assert exited[-1].payload["exit_code"] == 3


@pytest.mark.parametrize(
    ("command", "limit"),
    [
        ("nc -w 2 1.1.1.1 80 </dev/null", "network_disabled"),
        ("echo x > /home/agent/evil", "read_only_rootfs"),
        ("for i in $(seq 200); do sleep 5 & done; wait", "pids_limit"),
    ],
    ids=["network", "write-root", "fork-bomb"],
)
def test_escape_attempts_fail_and_say_why(session, command, limit):
    armor, _ = session
    _started(armor, "escape")
    outcome, output = _run(armor, "escape", command, timeout=30)
    assert outcome.payload["exit_code"] != 0, output
    assert outcome.payload["limit_hit"] == limit, output


def test_memory_past_the_limit_is_an_oom(session):
    armor, _ = session
    _started(armor, "oom")
    outcome, _ = _run(armor, "oom", "dd if=/dev/zero of=/dev/null bs=200M count=1")
    assert outcome.payload["reason"] == "oom" and outcome.payload["limit_hit"] == "memory_limit"
    assert list(armor.history(task_id="oom", kind="container.oom"))


def test_timeout_kills_the_command_and_says_so(session):
    armor, _ = session
    _started(armor, "slow")
    outcome, _ = _run(armor, "slow", ["sleep", "30"], timeout=1)
    assert outcome.payload["reason"] == "timeout"
    assert "did not finish within 1s" in outcome.payload["message"]
    assert outcome.payload["duration"] < 10
    # Only the command was killed (through the host's /proc): the container goes on.
    again, output = _run(armor, "slow", ["echo", "still here"])
    assert again.payload["exit_code"] == 0 and output == "still here\n"


def test_complete_removes_the_container_and_keep_keeps_it(session, engine):
    armor, _ = session
    first = _started(armor, "gone").payload["container"]
    armor.complete("gone")
    assert not engine.client.containers.list(all=True, filters={"id": first})
    kept = _started(armor, "kept").payload["container"]
    armor.complete("kept", keep=True)
    assert engine.client.containers.list(all=True, filters={"id": kept})
    assert list(armor.history(task_id="kept", kind="container.kept"))


def test_redelivered_requests_do_not_repeat_side_effects(session, engine):
    from armor_rx.model.events import TaskEvent
    from armor_rx.pipeline.effects import EffectContext

    armor, effect = session
    started = _started(armor, "again")
    start_request = next(e for e in armor.history(task_id="again", kind="task.start.requested"))
    emitted = []

    def ctx(request):
        return EffectContext(request=request, task=armor.task("again"), emit=lambda kind, payload: emitted.append(kind))

    # A start re-delivered after a crash finds its container instead of making a second one.
    effect._containers.clear()
    again = effect.apply(ctx(start_request))
    assert started.payload["container"].startswith(again["container"])
    assert len(engine.client.containers.list(all=True, filters={"label": "armor.task=again"})) == 1
    # An exec re-delivered after it finished returns the stored result and runs nothing.
    request = TaskEvent.new("exec.requested", "again", {"command": ["sh", "-c", "echo ran >> /tmp/count"]})
    first = effect.apply(ctx(request))
    second = effect.apply(ctx(request))
    assert first == second and emitted.count("exec.exited") == 1
    _outcome, output = _run(armor, "again", ["cat", "/tmp/count"])
    assert output == "ran\n"
    assert effect.reconcile(start_request)["containers"][0]["status"] == "running"


def test_periodic_sweep_removes_containers_of_finished_tasks(tmp_path, engine, sandbox):
    from armor_rx.model.lifecycle import ACTIVE

    holder = {}
    swept = []

    def active(task):
        return holder["armor"].task(task).state in ACTIVE

    effect = DockerEffect(engine, spec=sandbox.with_overrides({"keep": True}), state_dir=tmp_path / ".armor",
                          sweep_interval=0.2, sweep_grace=0.5, task_active=active,
                          sweep_emit=lambda kind, task, payload: swept.append((kind, task)))
    with Armor(state_dir=tmp_path / ".armor", effects=[effect]) as armor, effect:
        holder["armor"] = armor
        _started(armor, "busy")
        _started(armor, "done")
        armor.complete("done")  # kept by the spec: now an orphan of a finished task
        deadline = time.monotonic() + 20
        # Orphans of dead sessions elsewhere on a shared daemon are swept too: look at this test's tasks only.
        while ("container.swept", "done") not in swept and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [entry for entry in swept if entry[1] in ("busy", "done")] == [("container.swept", "done")]
        assert not engine.client.containers.list(all=True, filters={"label": "armor.task=done"})
        assert engine.client.containers.list(filters={"label": "armor.task=busy"})


def test_wall_clock_limit_stops_the_command_and_the_container(tmp_path, engine, sandbox):
    effect = DockerEffect(engine, spec=sandbox.with_overrides({"wall_clock": 2}), state_dir=tmp_path / ".armor")
    with Armor(state_dir=tmp_path / ".armor", effects=[effect]) as armor, effect:
        started = _started(armor, "clock")
        outcome, _ = _run(armor, "clock", ["sleep", "30"])
        assert outcome.payload["reason"] == "wall_clock" and outcome.payload["limit_hit"] == "wall_clock"
        assert "wall-clock limit of 2s" in outcome.payload["message"]
        time.sleep(0.5)
        assert engine.api.inspect_container(started.payload["container"])["State"]["Running"] is False


def test_ulimits_forbid_core_dumps_and_bound_open_files(session, engine):
    armor, _ = session
    started = _started(armor, "limits")
    host = engine.api.inspect_container(started.payload["container"])["HostConfig"]
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
    assert ulimits["core"] == (0, 0) and ulimits["nofile"] == (1024, 4096)
    _, output = _run(armor, "limits", ["sh", "-c", "ulimit -c; ulimit -Hn; grep 'open files' /proc/1/limits"])
    core, hard, *init_limits = output.split()
    assert (core, hard) == ("0", "4096")
    # The container's own process has the soft limit too. A command's soft limit is not checked: runc 1.1 before
    # 1.1.13 (Debian 12's 1.1.5) now and then leaves an exec'd process at the hard limit
    # (opencontainers/runc#4195, fixed by #4266); the hard limit is what bounds the agent anyway.
    assert init_limits[-3:] == ["1024", "4096", "files"]


def test_output_keeps_every_byte_even_split_or_binary(session):
    armor, _ = session
    _started(armor, "bytes")
    outcome, output = _run(armor, "bytes", ["printf", "ok\\342\\202"])  # ends mid-sequence
    assert outcome.payload["bytes"]["stdout"] == 4
    assert output == "ok\\xe2\\x82"
    _, output = _run(armor, "bytes", ["printf", "caf\\303\\251 \\377"])
    assert output == "café \\xff"


def test_a_container_that_cannot_start_is_not_left_behind(tmp_path, engine, sandbox):
    from armor_rx.errors import ArmorError

    effect = DockerEffect(engine, spec=sandbox.with_overrides({"user": "nosuchuser"}), state_dir=tmp_path / ".armor")
    with Armor(state_dir=tmp_path / ".armor", effects=[effect]) as armor, effect:
        armor.create_task("husk")
        with pytest.raises(ArmorError):
            armor.start("husk")
    assert engine.client.containers.list(all=True, filters={"label": "armor.task=husk"}) == []


def test_sessions_in_another_pid_namespace_are_never_judged_dead():
    from armor_rx.sinks.docker.containers import (
        LABEL_HOST,
        LABEL_PID,
        LABEL_PIDNS,
        LABEL_SESSION,
        SessionIdentity,
        session_alive,
        task_labels,
    )

    me = SessionIdentity.current()
    labels = task_labels("t1", me, request_id="r1", worktree=None, state_dir=None)
    assert session_alive(labels) is True
    foreign = {**labels, LABEL_PIDNS: "another-boot:4026531836"}
    assert session_alive(foreign) is None  # unknown: keep it
    dead = {**labels, LABEL_PID: "999999999", LABEL_SESSION: f"{me.host}-999999999-1"}
    assert session_alive(dead) is False
    assert labels[LABEL_HOST] == me.host
    # A killed session its parent has not reaped yet (a zombie) is dead too.
    import signal
    import subprocess

    child = subprocess.Popen(["sleep", "60"])
    try:
        child_labels = task_labels("t1", SessionIdentity(host=me.host, pid=child.pid, started=_start_of(child.pid), owner=me.owner),
                                   request_id="r1", worktree=None, state_dir=None)
        assert session_alive(child_labels) is True
        child.send_signal(signal.SIGKILL)
        for _ in range(100):
            if open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.02)
        assert session_alive(child_labels) is False
    finally:
        child.kill()
        child.wait()


def _start_of(pid):
    from armor_rx.sinks.docker.containers import _proc_start

    return _proc_start(pid)


def test_timeout_also_kills_what_the_command_detached(session, engine):
    armor, _ = session
    started = _started(armor, "detach")
    outcome, _ = _run(armor, "detach", ["sh", "-c", '(sh -c "sleep 300" >/dev/null 2>&1 &); sleep 100'], timeout=2)
    assert outcome.payload["reason"] == "timeout"
    container = engine.client.containers.get(started.payload["container"])
    assert container.status == "running"  # only the command died, not the task's container
    procs = [" ".join(p) for p in container.top()["Processes"]]
    assert not any("sleep 300" in p or "sleep 100" in p for p in procs), procs
    again, output = _run(armor, "detach", ["echo", "still usable"])
    assert again.payload["exit_code"] == 0 and "still usable" in output


def test_a_worktree_whose_path_has_a_colon_is_mounted_whole(tmp_path, engine, sandbox):
    workdir = tmp_path / "odd:name"
    workdir.mkdir()
    (workdir / "f.txt").write_text("found\n")
    effect = DockerEffect(engine, spec=sandbox, worktree_of=lambda task: workdir, state_dir=tmp_path / ".armor")
    with Armor(state_dir=tmp_path / ".armor", effects=[effect]) as armor, effect:
        _started(armor, "colon")
        outcome, output = _run(armor, "colon", ["cat", "f.txt"])
        assert outcome.payload["exit_code"] == 0 and output == "found\n"
