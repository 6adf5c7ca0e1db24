"""Counting the files a step touched: stat walks compared, bounded."""

from __future__ import annotations

import os
from pathlib import Path

from armor_rx.sinks.git.touched import count_touched, stat_walk


def test_added_changed_removed_and_chmodded_files_count_and_git_does_not(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    for name in ("a", "b", "c", "d"):
        (tmp_path / "src" / name).write_text(name)
    (tmp_path / ".git").write_text("gitdir: elsewhere\n")
    before = stat_walk(tmp_path)
    assert before is not None and sorted(before) == ["src/a", "src/b", "src/c", "src/d"]
    (tmp_path / "src" / "a").write_text("changed, longer")
    (tmp_path / "src" / "b").unlink()
    (tmp_path / "src" / "c").chmod(0o755)
    (tmp_path / "new").write_text("n")
    os.symlink("src/d", tmp_path / "link")
    (tmp_path / ".git").write_text("gitdir: somewhere else entirely\n")
    after = stat_walk(tmp_path)
    assert after is not None
    assert count_touched(before, after) == 5  # a changed, b removed, c chmodded, new and link added
    assert count_touched(after, after) == 0


def test_a_tree_over_the_bound_is_not_counted(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"f{i}").write_text("x")
    assert stat_walk(tmp_path, max_entries=10) is None
    assert len(stat_walk(tmp_path, max_entries=30) or {}) == 30
