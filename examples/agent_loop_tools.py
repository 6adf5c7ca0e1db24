"""An asyncio agent loop on armor_rx.tools, with a scripted stand-in for the model.

    python examples/agent_loop_tools.py        # needs a Docker engine (DOCKER_HOST) and busybox-static

The "model" is a script that reads each tool result and picks the next call,
as an LLM would: it makes a task, fixes a bug, runs the tests, checkpoints,
then makes a mistake, sees the tests fail, rolls back and completes. The loop
is what a real framework does: look the tool up by name in ``tool_specs``,
call it with the model's arguments, and hand back the result or the error.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from armor_rx import AsyncArmor
from armor_rx.demo import make_sample_repo, sandbox_options
from armor_rx.errors import ArmorError
from armor_rx.tools import ArmorTools, tool_specs

TESTS = "sh -c '. ./greet.sh; test \"$(greet world)\" = \"hello, world\"' && echo 'tests: ok'"
Call = tuple[str, dict[str, Any]]


def scripted_model() -> Iterator[Call]:
    """Yields tool calls; ``send`` gives it each result (a dict, or {"error": message})."""
    seen = yield ("task_create", {"name": "fix-greeting"})
    seen = yield (
        "file_write",
        {"task": "fix-greeting", "path": "greet.sh", "content": 'greet() { echo "hello $1"; }\n'},
    )
    seen = yield ("run_command", {"task": "fix-greeting", "command": TESTS})
    if seen.get("exit_code") != 0:  # the tests want a comma: fix it
        seen = yield ("file_edit", {"task": "fix-greeting", "path": "greet.sh", "old": "hello $1", "new": "hello, $1"})
        seen = yield ("run_command", {"task": "fix-greeting", "command": TESTS})
    assert seen["exit_code"] == 0, seen
    good = yield ("checkpoint", {"task": "fix-greeting", "message": "greeting fixed, tests pass"})
    # The mistake: a "cleanup" that breaks the function.
    seen = yield ("file_edit", {"task": "fix-greeting", "path": "greet.sh", "old": "greet()", "new": "say_hello()"})
    seen = yield ("run_command", {"task": "fix-greeting", "command": TESTS})
    if seen.get("exit_code") != 0:
        seen = yield ("rollback", {"task": "fix-greeting", "checkpoint": good["checkpoint"]})
        seen = yield ("run_command", {"task": "fix-greeting", "command": TESTS})
    seen = yield ("diff", {"task": "fix-greeting"})
    yield ("complete", {"task": "fix-greeting", "message": "greet: say hello, with a comma", "merge": "ff"})


async def agent_loop(tools: ArmorTools) -> None:
    specs = {spec.name: spec for spec in tool_specs(tools)}
    model = scripted_model()
    call = next(model)
    while True:
        name, arguments = call
        try:
            answer: dict[str, Any] = dict(await specs[name](**arguments))
            shown = {
                k: v
                for k, v in answer.items()
                if k in ("state", "exit_code", "output", "checkpoint", "action", "event")
            }
            print(f"-> {name}: {json.dumps(shown)}")
        except ArmorError as exc:  # a refused call: the model reads the reason
            answer = {"error": str(exc)}
            print(f"-> {name} refused: {exc}")
        try:
            call = model.send(answer)
        except StopIteration:
            return


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="armor-agent-") as tmp:
        repo = make_sample_repo(Path(tmp) / "repo")
        async with AsyncArmor(repo, **sandbox_options()) as armor:
            tools = ArmorTools(armor, repo=repo)
            await agent_loop(tools)
            await tools.aclose()
        from dulwich.repo import Repo

        with Repo(str(repo)) as git:  # the user's branch, after the task's work was merged into it
            head = git[git.head()]
            print(f"merged: {head.message.decode().strip()}")
            print("greet.sh on the base branch:", git[git[head.tree][b"greet.sh"][1]].data.decode().strip())


if __name__ == "__main__":
    asyncio.run(main())
