"""Parallel tasks on one repository: a repository whose main file has many lines to edit apart."""

import os

import pytest

LINES = "".join(f"line {i}\n" for i in range(1, 41))


@pytest.fixture
def repo(tmp_path, git):
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text(LINES)
    (path / "README.md").write_text("hello\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "initial")
    return path


@pytest.fixture
def edit():
    def edit(path, line, text):
        """Replace 1-based ``line`` of the file at ``path`` with ``text`` (atomically: the watcher of
        another task may look at any moment, and must never see the file half-written)."""
        lines = path.read_text().splitlines(keepends=True)
        lines[line - 1] = text + "\n"
        tmp = path.parent.parent / f".{path.name}.edit-tmp"  # beside the worktree, never scanned
        tmp.write_text("".join(lines))
        os.replace(tmp, path)

    return edit
