"""The merge modes of task completion, as data: the CLI, the service and the git sink read the one list."""

from __future__ import annotations

from typing import Literal

MergeMode = Literal["none", "ff", "merge", "first-wins", "three-way", "rebase", "manual"]
#: Every merge mode, in the order the docs and the CLI list them (see docs/git.md, "Merge strategies").
MERGE_MODES: tuple[MergeMode, ...] = ("none", "ff", "merge", "first-wins", "three-way", "rebase", "manual")
