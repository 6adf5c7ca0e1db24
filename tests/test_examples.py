"""The examples in examples/ run and say what they promise."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_hooks_as_operators_example():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "hooks_as_operators.py")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "vetoed: no tasks against prod" in proc.stdout
    assert "outputs: ['fixed 3 typos']" in proc.stdout
    assert "completed: docs-typo" in proc.stdout
    assert "prod-migration task.failed" in proc.stdout


# -- the agent-framework examples (issue 11): real containers on the private dockerd ------------------
def _run_docker_example(name, timeout=300):
    import os
    import shutil

    import pytest

    if not os.environ.get("DOCKER_HOST"):
        pytest.skip("DOCKER_HOST is not set (scripts/dockerd.sh starts a private dockerd)")
    if not (shutil.which("busybox") or os.path.exists("/bin/busybox")):
        pytest.skip("busybox-static is not installed")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_agent_loop_example_fixes_breaks_rolls_back_and_completes():
    out = _run_docker_example("agent_loop_tools.py")
    lines = out.splitlines()
    runs = [line for line in lines if line.startswith("-> run_command")]
    assert [('"exit_code": 0' in line) for line in runs] == [False, True, False, True], out
    assert lines.index(next(x for x in lines if x.startswith("-> rollback"))) > lines.index(runs[2])
    assert "merged: greet: say hello, with a comma" in out
    assert 'greet.sh on the base branch: greet() { echo "hello, $1"; }' in out


def test_two_agents_example_each_work_on_their_own_branch():
    out = _run_docker_example("mcp_two_agents.py")
    assert "docs-writer: completed" in out and "test-writer: completed" in out
    assert "branch task/docs-writer: ['README.md', 'USAGE.md', 'app.py']" in out
    assert "branch task/test-writer: ['README.md', 'TESTS.md', 'app.py', 'test_app.sh']" in out
    # Neither agent saw the other's files in its worktree.
    assert "docs-writer sees in its worktree: ['README.md', 'USAGE.md', 'app.py'," in out


def test_guard_example_refuses_the_matching_command_as_a_tool_error():
    out = _run_docker_example("mcp_guard.py")
    assert ("refused tool call: 'rm -rf /workspace/*': Error executing tool run_command: task 'tidy': vetoed by hook "
            "'no-dangerous-commands': commands matching 'rm -r' are not allowed") in out
    assert "ran: 'ls': exit 0, output ['README.md', 'app.py']" in out
    assert "task tidy is running; README.md still there: True" in out
