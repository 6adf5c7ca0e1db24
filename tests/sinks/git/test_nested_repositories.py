"""Nothing armor runs on the host executes what an agent put in its worktree (issue 13 item 4).

The agent makes nested repositories in its worktree whose configuration names
commands everywhere git (or dulwich) could run one: core.fsmonitor, hooks,
core.pager, core.sshCommand, diff.external, filter/diff/merge drivers through
.gitattributes. Every host-side path armor takes afterwards — checkpoint,
rollback, diff, submodule status and reset, completion with each merge mode,
removal — must leave the marker file those commands would create absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from armor_rx.errors import GitError, NestedRepositoryAtRisk, SubmoduleConflict
from armor_rx.sinks.git import GitWorkspace

from .conftest import Events, fsck, git, started

HOOKS = ("pre-commit", "post-commit", "post-checkout", "post-merge", "pre-push", "post-rewrite",
         "reference-transaction", "pre-auto-gc", "fsmonitor-watchman", "post-index-change")


def _hostile_repo(directory: Path, marker: Path) -> None:
    """A repository at ``directory`` configured to run ``touch marker`` wherever git could run something."""
    directory.mkdir(parents=True, exist_ok=True)
    git(directory, "init", "-q", "-b", "main")
    touch = f"touch {marker}"
    settings = {
        "core.fsmonitor": touch,
        "core.pager": f"{touch}; cat",
        "core.sshCommand": touch,
        "core.editor": touch,
        "core.askPass": touch,
        "core.hooksPath": ".git/hooks",
        "diff.external": touch,
        "filter.evil.clean": f"sh -c '{touch}; cat'",
        "filter.evil.smudge": f"sh -c '{touch}; cat'",
        "filter.evil.process": touch,
        "filter.evil.required": "true",
        "diff.evil.command": touch,
        "diff.evil.textconv": touch,
        "merge.evil.driver": touch,
        "gc.auto": "1",
    }
    (directory / "file.txt").write_text("nested content\n")
    (directory / ".gitattributes").write_text("* filter=evil diff=evil merge=evil\n")
    git(directory, "add", "-A")
    git(directory, "commit", "-q", "-m", "nested")
    for key, value in settings.items():
        git(directory, "config", key, value)
    hooks = directory / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    for hook in HOOKS:
        (hooks / hook).write_text(f"#!/bin/sh\n{touch}\n")
        (hooks / hook).chmod(0o755)
    (directory / "file.txt").write_text("changed after the commit, so the clean filter would be asked\n")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "AGENT-COMMAND-RAN"


def _plant(worktree: Path, marker: Path) -> None:
    _hostile_repo(worktree / "nested", marker)
    _hostile_repo(worktree / "registered", marker)
    # Registered as a submodule by the agent's own .gitmodules: the paths that read submodules run too.
    (worktree / ".gitmodules").write_text('[submodule "registered"]\n\tpath = registered\n\turl = ./registered\n')
    # A nested repository whose .git file leads to a git directory elsewhere in the worktree ...
    _hostile_repo(worktree / "elsewhere", marker)
    (worktree / "linked").mkdir()
    (worktree / "linked" / ".git").write_text(f"gitdir: {worktree / 'elsewhere' / '.git'}\n")
    (worktree / "linked" / "file.txt").write_text("linked\n")
    # ... and at the worktree root, attributes naming drivers (commands only the user's config could supply).
    (worktree / ".gitattributes").write_text("* filter=evil diff=evil merge=evil\n")


@pytest.mark.parametrize("merge", ["none", "ff", "merge"])
def test_no_agent_command_runs_on_any_host_path(
    ws: GitWorkspace, repo: Path, marker: Path, events: Events, merge: str
) -> None:
    path = started(ws, "evil")
    _plant(path, marker)
    cp = ws.checkpoint("evil")
    assert set(cp.nested) >= {"nested", "elsewhere", "linked"}
    reported = {p["path"] for p in events.of("git.nested_repository")}
    assert reported >= {"nested", "elsewhere", "linked"}
    assert all(p["followed"] is False for p in events.of("git.nested_repository"))
    # The nested repositories' files are saved, their .git never.
    names = git(repo, "ls-tree", "-r", "--name-only", cp.commit).splitlines()
    assert "nested/file.txt" in names and not [n for n in names if "/.git/" in n or n.endswith("/.git")]
    ws.diff("evil")
    ws.diff("evil", cp.id)
    # Committed once, the agent-registered submodule is a gitlink in HEAD: the submodule paths read it.
    first = ws.complete("evil", "first", merge="none")
    assert "registered" in git(repo, "ls-tree", "--name-only", first.commit)
    assert [s.state for s in ws.submodules("evil", "skip")] == ["dirty"]
    with pytest.raises(SubmoduleConflict):
        ws.submodules("evil", "fail")
    ws.submodules("evil", "reset")
    (path / "nested" / "file.txt").write_text("changed again\n")
    ws.restore("evil", cp.id)
    if merge == "merge":
        (repo / "user.txt").write_text("user\n")
        git(repo, "add", "user.txt")
        git(repo, "commit", "-q", "-m", "user work")
    done = ws.complete("evil", "done", merge=merge)  # type: ignore[arg-type]
    assert done.merged is (merge != "none"), done
    with pytest.raises(NestedRepositoryAtRisk):
        ws.remove_worktree("evil")  # their history is not in a checkpoint: refused, not deleted
    assert not marker.exists(), "a command the agent chose ran on the host"
    # The real git CLI, run the way the tests run it (no system config, no hooks, no fsmonitor).
    git(repo, "status", "--porcelain")
    assert str(path) in git(repo, "worktree", "list")
    fsck(repo)
    assert not marker.exists()


def test_a_gitdir_outside_the_worktree_is_never_read(ws: GitWorkspace, repo: Path, tmp_path: Path) -> None:
    """A nested '.git' file naming a repository elsewhere on the host is not followed, even as a submodule."""
    path = started(ws, "t")
    outside = tmp_path / "host-repo"
    outside.mkdir()
    git(outside, "init", "-q", "-b", "main")
    (outside / "secret.txt").write_text("s\n")
    git(outside, "add", "-A")
    git(outside, "commit", "-q", "-m", "host")
    (path / "sub").mkdir()
    (path / "sub" / ".git").write_text(f"gitdir: {outside / '.git'}\n")
    (path / ".gitmodules").write_text('[submodule "sub"]\n\tpath = sub\n\turl = ./sub\n')
    from armor_rx.sinks.git.submodules import safe_submodule_head

    assert safe_submodule_head(path, "sub", Path(ws.repo.commondir()) / "modules") is None
    cp = ws.checkpoint("t")
    # Not recorded as a gitlink at the host repository's commit: its HEAD was never read.
    assert "sub" not in git(repo, "ls-tree", "-r", "--name-only", cp.commit).splitlines()
    with pytest.raises(NestedRepositoryAtRisk):
        ws.remove_worktree("t")


def test_worktree_git_file_rewritten_does_not_redirect_armors_writes(
    ws: GitWorkspace, repo: Path, tmp_path: Path
) -> None:
    """Completion writes the index in the admin directory, wherever the worktree's '.git' file points."""
    path = started(ws, "t")
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    git(decoy, "init", "-q", "-b", "main")
    (path / ".git").write_text(f"gitdir: {decoy / '.git'}\n")
    (path / "work.txt").write_text("work\n")
    before = sorted(os.listdir(decoy / ".git"))
    done = ws.complete("t", "done", merge="ff")
    assert done.merged
    assert sorted(os.listdir(decoy / ".git")) == before  # no index written there
    assert "work.txt" in git(repo, "ls-tree", "--name-only", "main")


def test_a_fifo_planted_in_a_submodules_git_directory_is_refused_not_waited_on(
    ws: GitWorkspace, repo: Path, marker: Path
) -> None:
    path = started(ws, "fifo")
    _hostile_repo(path / "registered", marker)
    (path / ".gitmodules").write_text('[submodule "registered"]\n\tpath = registered\n\turl = ./registered\n')
    ws.complete("fifo", "register", merge="none")
    (path / "registered" / ".git" / "config").unlink()
    os.mkfifo(path / "registered" / ".git" / "config")  # any reader opening it would wait forever
    with pytest.raises(GitError, match="not a plain file"):
        ws.submodules("fifo", "skip")
    with pytest.raises(NestedRepositoryAtRisk, match="status cannot be read"):
        ws.remove_worktree("fifo")
    assert not marker.exists()


def test_submodule_untracked_files_respect_its_gitignore_but_not_its_config(
    ws: GitWorkspace, repo: Path, marker: Path, tmp_path: Path
) -> None:
    from armor_rx.sinks.git.status import has_changes

    sub = tmp_path / "sub"
    sub.mkdir()
    git(sub, "init", "-q", "-b", "main")
    (sub / ".gitignore").write_text("build/\n*.o\n")
    (sub / "a.c").write_text("int a;\n")
    git(sub, "add", "-A")
    git(sub, "commit", "-q", "-m", "sub")
    (sub / "build").mkdir()
    (sub / "build" / "out").write_text("ignored\n")
    (sub / "a.o").write_text("ignored\n")
    assert has_changes(sub, untracked=True) is False
    os.mkfifo(tmp_path / "excludes-fifo")
    git(sub, "config", "core.excludesFile", str(tmp_path / "excludes-fifo"))  # never opened
    (sub / "new.txt").write_text("untracked\n")
    assert has_changes(sub, untracked=True) is True
    assert has_changes(sub, untracked=False) is False


def test_the_git_sink_starts_no_process_at_all(
    ws: GitWorkspace, repo: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No git CLI, hook, filter or pager: not one process is started by any host-side operation."""
    import subprocess

    path = started(ws, "quiet")
    _plant(path, marker)
    started_processes: list[object] = []

    def refuse(self: object, args: object, *rest: object, **kwargs: object) -> None:
        started_processes.append(args)
        raise AssertionError(f"the git sink started a process: {args!r}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(os, "system", lambda cmd: refuse(None, cmd))
    cp = ws.checkpoint("quiet")
    ws.diff("quiet")
    ws.complete("quiet", "first", merge="none")
    ws.submodules("quiet", "skip")
    ws.submodules("quiet", "reset")
    (path / "nested" / "file.txt").write_text("again\n")
    ws.restore("quiet", cp.id)
    ws.complete("quiet", "done", merge="ff")
    with pytest.raises(NestedRepositoryAtRisk):
        ws.remove_worktree("quiet")
    monkeypatch.undo()
    assert started_processes == [] and not marker.exists()
