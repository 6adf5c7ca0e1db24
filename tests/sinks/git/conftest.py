"""Fixtures for the git sink: real repositories made and checked with the git CLI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from armor_rx.sinks.git import GitWorkspace

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent-armor-test-home",
}


#: Keys that run commands by themselves, switched off for every git the tests run (the
#: tests plant such commands in repositories on purpose).
SAFE = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "core.pager=cat")


def _env() -> dict[str, str]:
    # No GIT_DIR, GIT_WORK_TREE ... of whoever runs the tests; no system or global config.
    return {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **GIT_ENV,
            "GIT_CONFIG_GLOBAL": os.devnull}


def git(cwd: Path | str, *args: str, check: bool = True) -> str:
    """Run the real git CLI, sanitised (see :data:`SAFE`), and return its stdout."""
    env = _env()
    done = subprocess.run(
        ["git", *SAFE, "-c", "protocol.file.allow=always", *args],
        cwd=cwd, env=env, capture_output=True, text=True,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def fsck(repo: Path) -> None:
    out = subprocess.run(["git", *SAFE, "fsck", "--strict", "--no-progress"], cwd=repo,
                         env=_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "error" not in out.stderr.lower(), out.stderr


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("hello\n")
    (path / "src").mkdir()
    (path / "src" / "app.py").write_text("print('hi')\n")
    (path / "run.sh").write_text("#!/bin/sh\necho run\n")
    (path / "run.sh").chmod(0o755)
    os.symlink("src/app.py", path / "link")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, str | None, dict[str, Any]]] = []

    def __call__(self, kind: str, task_id: str | None, payload: Any) -> None:
        import json

        json.dumps(payload)  # payloads must be JSON-safe
        self.items.append((kind, task_id, dict(payload)))

    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.items]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for k, _, p in self.items if k == kind]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def ws(repo: Path, tmp_path: Path, events: Events) -> Iterator[GitWorkspace]:
    with GitWorkspace(repo, tmp_path / "state", emit=events, author="Armor Test <armor@example.com>") as workspace:
        yield workspace
    fsck(repo)


def started(ws: GitWorkspace, task_id: str, base: str = "HEAD") -> Path:
    branch = ws.create_branch(task_id, base)
    return ws.add_worktree(task_id, branch)
