"""``armor-rx demo``: the main job end to end on a sample repository it makes.

It creates a small git repository, opens a session on it and prints every event
as it flows: a task gets its own branch and worktree, runs a command in its
hardened container (when a Docker engine answers), is checkpointed, and its
work is merged back; a guard vetoes a second task; a third fails in its setup.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from armor_rx.errors import ArmorError, DockerUnavailable
from armor_rx.model.events import TaskEvent, to_plain
from armor_rx.pipeline.effects import EffectContext
from armor_rx.session import Armor


class SetupScript:
    """A tiny effect that stands for a project's setup step; it can be told to fail."""

    name = "setup"
    kinds = "task.start.requested"

    def apply(self, ctx: EffectContext) -> Mapping[str, Any] | None:
        if ctx.request.payload.get("explode"):
            raise RuntimeError("the agent's setup script exited with status 3")
        return None


def make_sample_repo(path: Path) -> Path:
    """A git repository with one commit, made with dulwich (no git CLI needed)."""
    from dulwich import porcelain

    path.mkdir(parents=True)
    repo = porcelain.init(str(path))
    (path / "README.md").write_text("# sample\n\nA repository for the armor-rx demo.\n")
    (path / "app.py").write_text("def greet(name):\n    return 'hello ' + name\n")
    porcelain.add(repo, [str(path / "README.md"), str(path / "app.py")])
    porcelain.commit(repo, message=b"initial commit", author=b"demo <demo@localhost>", committer=b"demo <demo@localhost>")
    repo.close()
    return path


def _line(event: TaskEvent) -> str:
    payload = to_plain(event.payload)
    detail = ", ".join(f"{k}={v}".replace("\n", "\\n") for k, v in payload.items() if k not in ("metadata", "settings", "labels", "findings"))
    if len(detail) > 110:
        detail = detail[:107] + "..."
    return f"  #{event.seq:<3} {event.task_id or '-':<14} {event.kind:<24} {detail}"


def sandbox_options(wall_clock: float = 300) -> dict[str, Any]:
    """Session options that run tasks in containers of the local busybox image (made if missing).

    For the demo and the examples: ``Armor(repo, **sandbox_options())``.
    Raises DockerUnavailable when no Docker engine answers.
    """
    from armor_rx.sinks.docker import SandboxSpec
    from armor_rx.sinks.docker.rootfs import local_image

    return {"docker": True, "sandbox": SandboxSpec(image=local_image(), wall_clock=wall_clock), "sweep_interval": None}


def _docker_options() -> dict[str, Any]:
    """Docker settings for the demo, or {} (and why) when no engine answers."""
    try:
        return sandbox_options()
    except (DockerUnavailable, ArmorError) as exc:
        print(f"  (no container part: {exc})\n")
        return {}


def run_demo(*, state_dir: str | None = None, keep: bool = False) -> int:
    root = Path(tempfile.mkdtemp(prefix="armor-demo-"))
    repo = make_sample_repo(root / "sample-repo")
    state = Path(state_dir) if state_dir else repo / ".armor"
    print(f"armor-rx demo: sample repository {repo}\n")
    try:
        options = _docker_options()
        with Armor(repo, state_dir=state, effects=[SetupScript()], **options) as armor:
            subscription = armor.events("*").subscribe(lambda e: print(_line(e), flush=True))

            @armor.hook("before_start", priority=10, name="no-network")
            def no_network(event: TaskEvent) -> str | None:
                task = armor.task(event.task_id or "")
                return "tasks may not ask for network access" if task.metadata.get("network") else None

            @armor.hook("after_complete", name="announce")
            def announce(event: TaskEvent) -> None:
                print(f"  >> after_complete hook: {event.task_id} finished, merged={event.payload.get('merged')}")

            armor.create_task("write-notes")
            armor.start("write-notes")
            worktree = armor.worktree("write-notes")
            if options:
                result = armor.exec("write-notes", ["sh", "-c", "echo \"hello from $(id -un) in $(pwd)\"; ls; echo 'notes by the agent' > NOTES.md"])
                print(f"  >> the command exited with {result.payload.get('exit_code')}")
            else:
                (worktree / "NOTES.md").write_text("notes by the agent\n")
            checkpoint = armor.checkpoint("write-notes", "notes written").payload["checkpoint"]
            (worktree / "app.py").write_text("this edit goes wrong\n")
            armor.rollback("write-notes", str(checkpoint))
            armor.complete("write-notes", message="Add notes", merge="ff")

            armor.create_task("phone-home", metadata={"network": True})
            try:
                armor.start("phone-home")
            except ArmorError as exc:
                print(f"  >> {exc}")

            armor.create_task("broken-setup")
            try:
                armor.start("broken-setup", explode=True)
            except ArmorError as exc:
                print(f"  >> {exc}")

            armor.wait_idle()
            subscription.dispose()
            print("\ntasks:")
            for task in armor.tasks():
                print(f"  {task.task_id:<14} {task.state.value:<10} {task.reason or ''}")
        merged = (repo / "NOTES.md").exists() or "NOTES.md" in _files_on_main(repo)
        print(f"\nNOTES.md merged into the sample repository's branch: {merged}")
        if keep or not Path(state).resolve().is_relative_to(Path(root).resolve()):
            print(f"the whole story is in the log: armor-rx events --state-dir {state}")
        else:  # the sample repository (and its log) is deleted next: name nothing that will not be there
            print("the whole story was in the log; 'armor-rx demo --keep' keeps the sample repository and its log "
                  "to read with 'armor-rx events'")
        return 0
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _files_on_main(repo: Path) -> list[str]:
    from dulwich.repo import Repo

    with Repo(str(repo)) as r:
        commit: Any = r[r.head()]
        tree: Any = r[commit.tree]
        return [entry.path.decode() for entry in tree.items()]
