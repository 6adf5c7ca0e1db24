"""The git sink: a branch and linked worktree per task, safe paths, submodules,
git-object checkpoints and completion.

>>> from armor_rx.sinks.git import GitWorkspace  # doctest: +SKIP
>>> with GitWorkspace("repo", "repo/.armor") as ws:  # doctest: +SKIP
...     branch = ws.create_branch("fix-login")
...     path = ws.add_worktree("fix-login", branch)
...     cp = ws.checkpoint("fix-login", "before refactor")
...     print(ws.diff("fix-login").patch)
...     ws.complete("fix-login", "Fix login", merge="ff")

The lower floor (:mod:`.names`, :mod:`.paths`, :mod:`.blobs`, :mod:`.scan`,
:mod:`.checkpoints`, :mod:`.diffs`, :mod:`.completion`) can be used on its own.
"""

from armor_rx.sinks.git.checkpoints import Checkpoint, CheckpointPolicy
from armor_rx.model.merge import MergeMode
from armor_rx.sinks.git.completion import CompletionResult
from armor_rx.sinks.git.diffs import FileChange, TaskDiff
from armor_rx.sinks.git.effect import GitEffect
from armor_rx.sinks.git.names import branch_for_task, unique_branch_name, validate_branch_name
from armor_rx.sinks.git.paths import check_relative_path, resolve_inside
from armor_rx.sinks.git.submodules import SubmoduleState, SubmoduleStatus, SubmoduleStrategy
from armor_rx.sinks.git.workspace import GitWorkspace

__all__ = [
    "Checkpoint",
    "CheckpointPolicy",
    "CompletionResult",
    "FileChange",
    "GitEffect",
    "GitWorkspace",
    "MergeMode",
    "SubmoduleState",
    "SubmoduleStatus",
    "SubmoduleStrategy",
    "TaskDiff",
    "branch_for_task",
    "check_relative_path",
    "resolve_inside",
    "unique_branch_name",
    "validate_branch_name",
]
