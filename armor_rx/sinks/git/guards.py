"""Guards the git sink puts in front of its effects."""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable

from armor_rx.errors import ArmorError
from armor_rx.model.events import TaskEvent
from armor_rx.operators import guard
from armor_rx.sinks.git.names import branch_for_task


def branch_name_guard() -> Callable[[Observable[TaskEvent]], Observable[TaskEvent]]:
    """Veto a task start whose branch name git would refuse (or that could be mistaken for an option).

    Task ids are already slugs, so this mostly protects tasks whose ids came
    from older logs or other tools; the veto's reason says what is allowed.
    """

    def check(event: TaskEvent) -> str | None:
        if event.task_id is None:
            return "a task start needs a task id"
        try:
            branch_for_task(event.task_id)
        except ArmorError as exc:
            return str(exc)
        return None

    return guard(check, kinds="task.start.requested", name="git-branch-name", on_error="fail_closed")
