"""armor_rx.tools without MCP: the specs a framework wraps, the bounded output, and the worktree file rules."""

from __future__ import annotations

import asyncio
import os

import pytest

from armor_rx.errors import PathEscape
from armor_rx.tools import ToolInputError, WorktreeFiles
from armor_rx.tools.output import OutputBuffer


def test_tool_specs_are_callable_with_schemas_a_framework_can_take(repo):
    from armor_rx import AsyncArmor
    from armor_rx.tools import TOOL_NAMES, ArmorTools, tool_specs

    async def main():
        async with AsyncArmor(repo) as armor:
            specs = tool_specs(ArmorTools(armor, repo=repo))
            by_name = {s.name: s for s in specs}
            made = await by_name["task_create"](name="spec-call")
            listed = await by_name["file_list"](task="spec-call")
            return specs, made, listed

    specs, made, listed = asyncio.run(main())
    assert [s.name for s in specs] == list(TOOL_NAMES)
    for spec in specs:
        assert spec.input_schema["type"] == "object" and spec.output_schema["type"] == "object", spec.name
        assert "cli" in spec.output_schema["required"], spec.name
        assert spec.description and not spec.description.startswith(" "), spec.name
        for name, prop in spec.input_schema["properties"].items():
            assert prop.get("description"), f"{spec.name}.{name} has no description for the model"
    assert made["branch"] == "task/spec-call" and [e["path"] for e in listed["entries"]] == ["README.md"]


def test_output_keeps_its_start_and_end_within_the_limit_and_states_the_whole_size():
    buffer = OutputBuffer(1000)
    for i in range(100_000):
        buffer.add(f"line {i}\n")
    text = buffer.text()
    total = sum(len(f"line {i}\n") for i in range(100_000))
    assert buffer.total_bytes == total and buffer.truncated
    assert text.startswith("line 0\nline 1\n") and text.endswith("line 99999\n")
    assert f"{total - 1000} characters left out; {total} bytes in all" in text
    assert len(text) < 1200
    small = OutputBuffer(1000)
    small.add("héllo\n")
    assert small.text() == "héllo\n" and not small.truncated and small.total_bytes == 7


@pytest.fixture
def worktree(tmp_path):
    root = tmp_path / "wt"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / ".git").write_text("gitdir: elsewhere\n")
    return root


def test_a_hard_link_a_command_planted_keeps_its_content(worktree, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep\n")
    os.link(outside, worktree / "linked.txt")
    files = WorktreeFiles(worktree)
    assert files.write("linked.txt", b"new\n") is False
    assert outside.read_text() == "keep\n" and (worktree / "linked.txt").read_text() == "new\n"


def test_writes_keep_the_mode_and_make_parents(worktree):
    files = WorktreeFiles(worktree)
    os.chmod(worktree / "src" / "app.py", 0o755)
    files.write("src/app.py", b"print('bye')\n")
    assert oct(os.stat(worktree / "src" / "app.py").st_mode & 0o777) == "0o755"
    assert files.write("a/b/c.txt", b"deep\n") is True and (worktree / "a" / "b" / "c.txt").read_text() == "deep\n"
    assert not [p for p in os.listdir(worktree) if p.startswith(".armor-tmp-")]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand files to another user")
def test_files_made_as_root_belong_to_the_worktrees_owner(worktree):
    os.chown(worktree, 1000, 1000)
    WorktreeFiles(worktree).write("new/dir/f.txt", b"x\n")
    for path in (worktree / "new", worktree / "new" / "dir", worktree / "new" / "dir" / "f.txt"):
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (1000, 1000), path


def test_refusals_and_missing_things(worktree, tmp_path):
    files = WorktreeFiles(worktree)
    os.symlink(tmp_path, worktree / "out")
    os.symlink("src", worktree / "src-link")
    for bad in ("../x", "/etc/passwd", ".git", ".git/config", "out/x", "src/../../x", "C:/x", "con.txt", "a\x00b"):
        with pytest.raises(PathEscape):
            files.write(bad, b"x")
        with pytest.raises(PathEscape):
            files.read(bad)
    with pytest.raises(PathEscape):
        files.list("out")
    with pytest.raises(ToolInputError, match="no file 'nope.txt'"):
        files.read("nope.txt")
    with pytest.raises(ToolInputError, match="is a directory"):
        files.read("src")
    with pytest.raises(ToolInputError, match="no file 'src/app.py/x'"):
        files.read("src/app.py/x")
    with pytest.raises(ToolInputError, match="no file 'src/app.py/x'"):
        files.delete("src/app.py/x")
    with pytest.raises(ToolInputError, match="a component of its directory is a file"):
        files.write("src/app.py/x", b"x")
    with pytest.raises(ToolInputError, match="not empty"):
        files.delete("src")
    # A symlink inside the worktree is followed while it stays inside.
    assert files.read("src-link/app.py") == b"print('hi')\n"
    assert [e.path for e in files.list("", recursive=True)[0]] == ["out", "src", "src/app.py", "src-link"]
    assert files.list("", recursive=True, limit=2) == (files.list("", recursive=True)[0][:2], True)
    assert files.delete("out") == "symlink" and tmp_path.is_dir()


def test_the_cli_does_not_load_the_mcp_sdk_until_a_server_is_built():
    """Every verb registers 'mcp'; loading the SDK (pydantic, starlette) there slowed every command by seconds."""
    import subprocess
    import sys

    probe = (
        "import sys, armor_rx, armor_rx.cli, armor_rx.mcp; armor_rx.cli._parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'mcp', 'pydantic', 'starlette'}))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"
    from armor_rx.mcp import build_server

    assert callable(build_server)


@pytest.mark.docker
def test_a_cancelled_call_stops_its_command_in_the_container(repo, test_image):
    """An agent's client that gives up on run_command must not leave the command running unseen."""
    import time

    from armor_rx import AsyncArmor
    from armor_rx.sinks.docker import SandboxSpec
    from armor_rx.tools import ArmorTools

    async def main():
        sandbox = SandboxSpec(image=test_image, wall_clock=300)
        async with AsyncArmor(repo, docker=True, sandbox=sandbox, sweep_interval=None) as armor:
            tools = ArmorTools(armor)
            await tools.task_create("cancelled")
            call = asyncio.ensure_future(tools.run_command("echo begun; sleep 120", task="cancelled"))
            deadline = time.monotonic() + 60
            while not any(e.kind == "exec.output" for e in await armor.history(task_id="cancelled")):
                assert time.monotonic() < deadline, "the command never started"
                await asyncio.sleep(0.1)
            started = time.monotonic()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            while not [e for e in await armor.history(task_id="cancelled") if e.kind == "exec.exited"]:
                assert time.monotonic() - started < 30, "the command ran on after its call was cancelled"
                await asyncio.sleep(0.1)
            exited = next(e for e in await armor.history(task_id="cancelled") if e.kind == "exec.exited")
            # The task goes on: the next command runs.
            again = await tools.run_command("echo again", task="cancelled")
            await tools.cancel(task="cancelled")
            await tools.aclose()
            return exited, again

    exited, again = asyncio.run(main())
    assert exited.payload["exit_code"] != 0 and "cancelled" in str(exited.payload.get("message")), exited.payload
    assert again["output"] == "again\n"


def test_task_create_takes_secrets_by_reference_only(repo, monkeypatch):
    """A secret reaches the task as a reference (recorded) and a value (held); a value in place of a reference is refused first."""
    from armor_rx import AsyncArmor
    from armor_rx.errors import ConfigError
    from armor_rx.tools import ArmorTools

    monkeypatch.setenv("MCP_TEST_TOKEN", "tok-value-123")

    async def main():
        async with AsyncArmor(repo) as armor:
            tools = ArmorTools(armor, repo=repo)
            with pytest.raises(ConfigError, match="not a reference"):
                await tools.task_create(name="bad-secret", secrets={"TOKEN": "tok-value-123"})
            await tools.task_create(name="with-secret", secrets={"TOKEN": "env://MCP_TEST_TOKEN"})
            started = [e for e in await armor.history(task_id="with-secret") if e.kind == "task.start.requested"]
            held = armor.sync.secrets.for_exec("with-secret", "no-request")
            names = [t.task_id for t in await armor.tasks()]
            await tools.aclose()
            return started, held, names

    started, held, names = asyncio.run(main())
    assert "bad-secret" not in names  # refused before the task was made
    assert dict(started[0].payload["secret_refs"]) == {"TOKEN": "env://MCP_TEST_TOKEN"}
    assert held["TOKEN"].reveal() == "tok-value-123"
