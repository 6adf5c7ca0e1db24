"""Submodule status in every state, and the skip / reset / fail strategies."""

from __future__ import annotations

from pathlib import Path

import pytest

from armor_rx.errors import NestedRepositoryAtRisk, SubmoduleConflict
from armor_rx.sinks.git import GitWorkspace

from .conftest import Events, git, make_repo, started


@pytest.fixture
def sub_ws(ws: GitWorkspace, repo: Path, tmp_path: Path) -> tuple[GitWorkspace, Path]:
    lib = make_repo(tmp_path / "lib")
    for name in ("clean", "dirty", "diverged", "uninit"):
        git(repo, "submodule", "add", "-q", str(lib), name)
    git(repo, "commit", "-q", "-m", "add submodules")
    path = started(ws, "subs")
    git(path, "submodule", "update", "--init", "-q", "clean", "dirty", "diverged")
    (path / "dirty" / "README.md").write_text("local change\n")
    (path / "diverged" / "extra.txt").write_text("e\n")
    git(path / "diverged", "add", "extra.txt")
    git(path / "diverged", "commit", "-q", "-m", "moved on")
    return ws, path


def test_status_in_every_state(sub_ws: tuple[GitWorkspace, Path], events: Events) -> None:
    ws, _ = sub_ws
    found = {s.path: s.state for s in ws.submodules("subs")}
    assert found == {"clean": "clean", "dirty": "dirty", "diverged": "diverged", "uninit": "uninitialised"}
    payloads = events.of("git.submodule.status")
    assert {p["path"]: p["state"] for p in payloads} == found
    assert all(p["url"] for p in payloads)


def test_reset_strategy(sub_ws: tuple[GitWorkspace, Path]) -> None:
    ws, path = sub_ws
    result = {s.path: (s.state, s.action) for s in ws.submodules("subs", "reset")}
    assert result["diverged"] == ("clean", "reset")
    assert result["dirty"] == ("dirty", None)  # never reset over local changes
    assert not (path / "diverged" / "extra.txt").exists()
    recorded = git(path, "ls-tree", "HEAD", "diverged").split()[2]
    assert git(path / "diverged", "rev-parse", "HEAD").strip() == recorded
    assert git(path / "diverged", "status", "--porcelain") == ""


def test_fail_strategy(sub_ws: tuple[GitWorkspace, Path]) -> None:
    ws, _ = sub_ws
    with pytest.raises(SubmoduleConflict, match=r"dirty \(dirty\).*diverged \(diverged\)"):
        ws.submodules("subs", "fail")


def test_checkpoint_records_submodules_as_gitlinks(sub_ws: tuple[GitWorkspace, Path], repo: Path) -> None:
    ws, path = sub_ws
    cp = ws.checkpoint("subs")
    listing = git(repo, "ls-tree", cp.commit)
    assert any(line.startswith("160000 commit") and line.endswith("diverged") for line in listing.splitlines())


def test_removal_refuses_submodules_with_unsaved_work(sub_ws: tuple[GitWorkspace, Path]) -> None:
    """Uncommitted edits, or a commit that lives only in the worktree's own module dir, stop the removal."""
    ws, path = sub_ws
    with pytest.raises(NestedRepositoryAtRisk) as caught:
        ws.remove_worktree("subs", on_dirty="checkpoint")
    assert set(caught.value.problems) == {"dirty", "diverged"}
    assert (path / "dirty" / "README.md").read_text() == "local change\n"
    git(path / "dirty", "checkout", "--", "README.md")
    ws.submodules("subs", "reset")  # diverged goes back to a fetched commit
    ws.remove_worktree("subs", on_dirty="checkpoint")
    assert not path.exists()


@pytest.mark.parametrize("on_dirty", ["refuse", "checkpoint"])
def test_removal_refuses_nested_repositories(ws: GitWorkspace, repo: Path, on_dirty: str) -> None:
    path = started(ws, "nested")
    (path / "lib").mkdir()
    git(path / "lib", "init", "-q")
    (path / "lib" / "code.py").write_text("precious\n")
    (path / "vendor").mkdir()
    git(path / "vendor", "init", "-q")
    (path / "vendor" / "a").write_text("1\n")
    git(path / "vendor", "add", "-A")
    git(path / "vendor", "commit", "-q", "-m", "x")
    with pytest.raises(NestedRepositoryAtRisk, match="lib: a nested repository") as caught:
        ws.remove_worktree("nested", on_dirty=on_dirty)  # type: ignore[arg-type]
    assert set(caught.value.problems) == {"lib", "vendor"}
    assert (path / "lib" / "code.py").read_text() == "precious\n"
    assert git(path / "vendor", "log", "--format=%s") == "x\n"
    # a nested repository is not a submodule: checkpoints keep its files (not its .git)
    cp = ws.checkpoint("nested")
    files = git(repo, "ls-tree", "-r", "--name-only", cp.commit).split()
    assert "lib/code.py" in files and "vendor/a" in files and not any("/.git" in f for f in files)
