"""The agent's tools, once: plain typed async methods over any async session.

:class:`ArmorTools` wraps an :class:`armor_rx.api.AsyncArmorBase` (the
service's client from :func:`armor_rx.connect_async`, or an in-process
:class:`armor_rx.AsyncArmor`). Each public coroutine is one tool: its
signature (with ``Field`` descriptions) is the tool's input schema, its
docstring is what the model reads, and its ``TypedDict`` return is the
output schema. The MCP server (:mod:`armor_rx.mcp`) registers these very
methods; :func:`armor_rx.tools.tool_specs` hands them to any other framework.

Errors are :class:`armor_rx.errors.ArmorError` with one-line messages, so an
adapter turns them into a refused tool call the model can read and act on.
File tools work on the worktree path the session reports, through
:class:`armor_rx.tools.files.WorktreeFiles` (the service runs as the same
user on the same host, and the task's container writes the same directory).
"""

from __future__ import annotations

import asyncio
import itertools
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from armor_rx.api import AsyncArmorBase
from armor_rx.errors import ArmorError, ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.model.ids import validate_task_id
from armor_rx.model.merge import MERGE_MODES, MergeMode
from armor_rx.model.registry import TaskRecord
from armor_rx.model.secrets import check_reference
from armor_rx.tools.files import ToolInputError, WorktreeFiles
from armor_rx.tools.output import OutputBuffer
from armor_rx.tools.results import (
    BackgroundJob,
    CheckpointInfo,
    CheckpointList,
    CommandResult,
    Completion,
    DiffFile,
    DiffResult,
    EventLine,
    FileChanged,
    FileContent,
    FileEntry,
    FileListing,
    Outcome,
    TaskInfo,
    TaskList,
    TaskStatus,
)

#: The tools, in the order an agent uses them; each is a method of :class:`ArmorTools`.
TOOL_NAMES = (
    "task_create",
    "task_list",
    "task_status",
    "task_resume",
    "run_command",
    "run_command_background",
    "command_output",
    "file_read",
    "file_write",
    "file_edit",
    "file_list",
    "file_delete",
    "checkpoint",
    "checkpoints",
    "rollback",
    "diff",
    "complete",
    "cancel",
)

TaskArg = Annotated[
    str | None, Field(description="The task's name. Leave it out when the server was started with --task.")
]
MAX_OUTPUT = 30_000

#: What each merge mode of ``complete`` does, as the model reads it. The tool's 'merge' description is built
#: from it in MERGE_MODES order, so a mode added to armor_rx.model.merge without a line here fails at import.
MERGE_HELP: dict[MergeMode, str] = {
    "none": "only commit to the task's branch task/NAME; nothing is merged (a person reviews it).",
    "ff": "fast-forward the base to the task's commit; if the base moved since the task started, nothing is merged "
    "(reason 'not-fast-forward').",
    "merge": "fast-forward if possible, else a merge commit from a line-level three-way merge; if both sides changed "
    "the same lines, nothing is applied and 'conflicts' lists the files.",
    "first-wins": "merge only if no file the task changed was also changed on the base since the task started; "
    "otherwise nothing is applied, 'conflicts' lists those files (even if other lines changed) and 'landed' "
    "the base commit that got there first.",
    "three-way": "the same as 'merge': changes on different lines are combined in a merge commit; if both sides "
    "changed the same lines, nothing is applied and 'conflicts' lists the files.",
    "rebase": "replay the task's commits onto the base's tip (linear history, no merge commit); if one conflicts, "
    "nothing is applied and 'conflicts' lists the files.",
    "manual": "commit to task/NAME and merge nothing; the result's 'how' holds the git commands a person runs to "
    "merge it.",
}
MERGE_DESCRIPTION = (
    "How to land the work on the base branch (the branch the task started from). "
    + " ".join(f"'{mode}': {MERGE_HELP[mode]}" for mode in MERGE_MODES)
    + " A refused merge changes nothing on the base; the work always stays committed on task/NAME."
)
#: What task_status shows: every kind but exec.output ("exec.*ed" is exec.requested and exec.exited).
_STATUS_KINDS = (
    "task.*,git.*,checkpoint.*,container.*,exec.*ed,hook.*,effect.*,deadletter.*,backpressure.*,"
    "conflict.*,*.failed,*.vetoed"
)
MAX_LINES = 2000
MAX_READ_CHARS = 256 * 1024
_KEEP_JOBS = 50


class ArmorTools:
    """The tools bound to one open async session; ``task`` is the default task (``armor-rx mcp --task``).

    ``repo`` only makes the ``cli`` hints exact (``--repo PATH``);
    ``max_output`` caps the characters of command output a result carries.
    """

    def __init__(
        self,
        armor: AsyncArmorBase,
        *,
        task: str | None = None,
        repo: str | Path | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> None:
        self.armor = armor
        self.default_task = validate_task_id(task) if task else None
        self.repo = Path(repo).resolve() if repo is not None else None
        self.max_output = max_output
        self._jobs: dict[str, tuple[asyncio.Task[CommandResult], OutputBuffer, str, str]] = {}
        self._job_ids = itertools.count(1)

    # -- helpers ----------------------------------------------------------------
    def _task(self, task: str | None) -> str:
        chosen = task or self.default_task
        if not chosen:
            raise ConfigError("no task given: pass 'task' (task_list shows them; task_create makes one)")
        return validate_task_id(chosen)

    def _cli(self, *words: str) -> str:
        where = f" --repo {shlex.quote(str(self.repo))}" if self.repo is not None else ""
        return "armor-rx " + " ".join(shlex.quote(w) for w in words) + where

    async def _files(self, task: str) -> WorktreeFiles:
        return WorktreeFiles(await self.armor.worktree(task))

    def _info(self, record: TaskRecord) -> TaskInfo:
        meta = record.metadata
        return TaskInfo(
            task=record.task_id,
            state=record.state.value,
            branch=_str(meta.get("branch")),
            worktree=_str(meta.get("worktree")),
            base_ref=_str(meta.get("base_ref")),
            reason=record.reason,
            cli=self._cli("tasks"),
        )

    async def _outcome(self, task: str, event: TaskEvent, cli: str) -> Outcome:
        record = await self.armor.task(task)
        detail: dict[str, object] = {
            k: v for k, v in event.payload.items() if isinstance(v, (str, int, float, bool, type(None)))
        }
        return Outcome(task=task, state=record.state.value, event=event.kind, detail=detail, cli=cli)

    # -- tasks --------------------------------------------------------------------
    async def task_create(
        self,
        name: Annotated[
            str, Field(description="A new task's name: lowercase letters, digits and '-', e.g. 'fix-login'.")
        ],
        base_ref: Annotated[str, Field(description="The git ref the task's branch starts from.")] = "HEAD",
        image: Annotated[
            str | None, Field(description="Container image for the task (default: the service's).")
        ] = None,
        secrets: Annotated[
            dict[str, str] | None,
            Field(
                description="Environment variables every command of the task gets, by reference only: "
                "{'NAME': 'env://VARIABLE'} or {'NAME': 'file://PATH'}, read by this server's process. "
                "The values are never logged and show as [secret:NAME] in output."
            ),
        ] = None,
    ) -> TaskInfo:
        """Create a task and start it: its own git branch (task/NAME), worktree and sandboxed container.

        Do this first; every other tool works inside one task. Give credentials the
        task needs as ``secrets`` references, never as values in a command.
        """
        task = validate_task_id(name)
        for key, reference in (secrets or {}).items():
            check_reference(key, reference)  # before the task exists: a bad reference leaves nothing behind
        await self.armor.create_task(task, base_ref=base_ref)
        options: dict[str, Any] = {"image": image} if image else {}
        await self.armor.start(task, secrets=secrets or None, **options)
        return self._info(await self.armor.task(task))

    async def task_list(self) -> TaskList:
        """List every task of the repository with its state, branch and worktree."""
        return TaskList(tasks=[self._info(r) for r in await self.armor.tasks()], cli=self._cli("tasks"))

    async def task_status(
        self,
        task: TaskArg = None,
        events: Annotated[int, Field(description="How many recent events to show.", ge=0, le=200)] = 10,
    ) -> TaskStatus:
        """A task's state, branch, worktree and its most recent events (command output left out)."""
        name = self._task(task)
        record = await self.armor.task(name)
        recent: list[EventLine] = []
        if events:
            # Filtered where the log is read: a long task's exec.output events would dwarf the rest.
            history = await self.armor.history(task_id=name, kind=_STATUS_KINDS, start_seq=record.created_seq)
            for event in history[-events:]:
                recent.append(EventLine(seq=event.seq or 0, kind=event.kind, summary=_summary(event.payload)))
        info = self._info(record)
        return TaskStatus(
            task=name,
            state=info["state"],
            branch=info["branch"],
            worktree=info["worktree"],
            reason=record.reason,
            recent_events=recent,
            cli=self._cli("events", "--task", name),
        )

    async def task_resume(self, task: TaskArg = None) -> TaskInfo:
        """Continue an interrupted task (after the service or its machine restarted): a new container on the same
        worktree, with nothing lost. task_status says when a task is 'interrupted'."""
        name = self._task(task)
        await self.armor.resume(name)
        info = self._info(await self.armor.task(name))
        info["cli"] = self._cli("events", "--task", name)
        return info

    # -- commands -------------------------------------------------------------------
    async def run_command(
        self,
        command: Annotated[
            str, Field(description="A shell command, run with 'sh -c' in the task's worktree (e.g. 'make test').")
        ],
        task: TaskArg = None,
        timeout: Annotated[float, Field(description="Seconds before the command is killed.", gt=0, le=86400)] = 300,
    ) -> CommandResult:
        """Run a command in the task's container and wait for it; returns its exit code and output.

        The container has no network. Output is capped: its start and end are
        kept and ``output_bytes`` states the full size. For a command that runs
        long, use run_command_background and command_output instead.
        """
        name = self._task(task)
        buffer = OutputBuffer(self.max_output)
        return await self._exec(name, command, timeout, buffer)

    async def _exec(self, task: str, command: str, timeout: float, buffer: OutputBuffer) -> CommandResult:
        try:
            outcome = await self.armor.exec(task, ["sh", "-c", command], timeout=timeout, on_output=buffer.on_event)
        except asyncio.CancelledError:
            # The call was cancelled (the agent's client gave up, or the server is closing): the command
            # must not run on unseen in the container. Shielded, so the stop is sent even as we unwind.
            stop = asyncio.ensure_future(self.armor.stop_command(task, "the tool call running it was cancelled"))
            try:
                await asyncio.shield(stop)
            except (asyncio.CancelledError, ArmorError):
                pass
            raise
        return self._command_result(task, command, buffer, outcome)

    def _command_result(
        self, task: str, command: str, buffer: OutputBuffer, outcome: TaskEvent | None
    ) -> CommandResult:
        payload: Mapping[str, Any] = outcome.payload if outcome is not None else {}
        code = payload.get("exit_code")
        return CommandResult(
            task=task,
            command=command,
            running=outcome is None,
            exit_code=code if isinstance(code, int) else None,
            reason=_str(payload.get("reason")),
            message=_str(payload.get("message")),
            output=buffer.text(),
            output_bytes=buffer.total_bytes,
            truncated=buffer.truncated,
            cli=self._cli("events", "--task", task, "--kind", "exec.*"),
        )

    async def run_command_background(
        self,
        command: Annotated[str, Field(description="A shell command, run with 'sh -c' in the task's worktree.")],
        task: TaskArg = None,
        timeout: Annotated[float, Field(description="Seconds before the command is killed.", gt=0, le=86400)] = 3600,
    ) -> BackgroundJob:
        """Start a command in the task's container and return at once with a job id; read it with command_output.

        One command runs in a task at a time: wait for this one before running another.
        """
        name = self._task(task)
        buffer = OutputBuffer(self.max_output)

        job = f"job-{next(self._job_ids)}"
        self._jobs[job] = (asyncio.ensure_future(self._exec(name, command, timeout, buffer)), buffer, name, command)
        for old in list(self._jobs)[:-_KEEP_JOBS]:
            if self._jobs[old][0].done():
                del self._jobs[old]
        return BackgroundJob(
            job=job, task=name, command=command, cli=self._cli("events", "--task", name, "--kind", "exec.*", "--follow")
        )

    async def command_output(
        self,
        job: Annotated[str, Field(description="The job id run_command_background returned, e.g. 'job-1'.")],
        wait: Annotated[
            float, Field(description="Seconds to wait for the command to end before answering.", ge=0, le=600)
        ] = 0,
    ) -> CommandResult:
        """A background command's output so far, and its exit code once it has ended (``running`` says which)."""
        found = self._jobs.get(job)
        if found is None:
            raise ToolInputError(f"no background job {job!r} (known: {', '.join(self._jobs) or 'none'})")
        future, buffer, task, command = found
        if wait and not future.done():
            await asyncio.wait([future], timeout=wait)
        if future.done():
            return future.result()  # raises the command's error, if it had one
        return self._command_result(task, command, buffer, None)

    # -- files ------------------------------------------------------------------------
    async def file_read(
        self,
        path: Annotated[str, Field(description="A path relative to the task's worktree, e.g. 'src/app.py'.")],
        task: TaskArg = None,
        start_line: Annotated[int, Field(description="First line to return (1-based).", ge=1)] = 1,
        end_line: Annotated[
            int | None, Field(description="Last line to return (inclusive); default: up to 2000 lines.", ge=1)
        ] = None,
    ) -> FileContent:
        """Read a text file of the task's worktree, or a range of its lines; ``total_lines`` says how long it is.

        At most 2000 lines and about 256 KiB come back at once; ``end_line`` says where it stopped.
        """
        name = self._task(task)
        if end_line is not None and end_line < start_line:
            raise ToolInputError(f"end_line {end_line} is before start_line {start_line}")
        data = (await self._files(name)).read(path)
        lines = data.decode("utf-8", "replace").splitlines(keepends=True)
        last = min(len(lines), end_line if end_line is not None else start_line + MAX_LINES - 1)
        taken, size = start_line - 1, 0
        while taken < last and (size < MAX_READ_CHARS or taken == start_line - 1):
            size += len(lines[taken])
            taken += 1
        return FileContent(
            path=path,
            start_line=start_line,
            end_line=taken,
            total_lines=len(lines),
            content="".join(lines[start_line - 1 : taken]),
            cli=self._cli("shell", name),
        )

    async def file_write(
        self,
        path: Annotated[str, Field(description="A path relative to the task's worktree; parent directories are made.")],
        content: Annotated[str, Field(description="The file's whole new content.")],
        task: TaskArg = None,
    ) -> FileChanged:
        """Create or overwrite a file in the task's worktree with ``content``."""
        name = self._task(task)
        data = content.encode("utf-8")
        files = await self._files(name)
        await self._make_parents_as_agent(name, files, path)
        created = files.write(path, data)
        return FileChanged(
            path=path,
            action="created" if created else "overwritten",
            detail=f"{len(data)} bytes",
            cli=self._cli("diff", name, "--stat"),
        )

    async def _make_parents_as_agent(self, task: str, files: WorktreeFiles, path: str) -> None:
        """Make ``path``'s missing parent directories in the task's container, as the agent.

        Made here, on the host, they would be the person's: git on the host
        trusts a bare repository the agent then writes into one (see
        :mod:`armor_rx.sinks.docker.adopt`). A task with no running container
        (or no sandbox) gets them from the host; a start hands them to the agent.
        """
        parent = files.relative(path).rpartition("/")[0]
        if not parent or (files.root / parent).is_dir():
            return
        try:
            await self.armor.exec(task, ["mkdir", "-p", "--", f"./{parent}"], timeout=60)
        except ArmorError:
            pass  # no container (not running, no docker): the host makes them; a start hands them over

    async def file_edit(
        self,
        path: Annotated[str, Field(description="A path relative to the task's worktree.")],
        old: Annotated[str, Field(description="The exact text to replace, including its whitespace.")],
        new: Annotated[str, Field(description="The text to put in its place.")],
        task: TaskArg = None,
        occurrence: Annotated[
            int | None, Field(description="Which match to replace (1 = first) when 'old' occurs more than once.", ge=1)
        ] = None,
        replace_all: Annotated[bool, Field(description="Replace every match.")] = False,
    ) -> FileChanged:
        """Replace text in a file: ``old`` must match exactly once, unless ``occurrence`` or ``replace_all`` says which.

        Copy ``old`` from file_read, with its indentation; the rest of the file is kept as it is.
        """
        name = self._task(task)
        files = await self._files(name)
        try:
            text = files.read(path).decode("utf-8")
        except UnicodeDecodeError:
            raise ToolInputError(
                f"{path!r} is not UTF-8 text; file_edit changes text files (file_write replaces any file)"
            ) from None
        if not old:
            raise ToolInputError("'old' is empty; give the exact text to replace (file_write replaces a whole file)")
        count = text.count(old)
        if count == 0:
            raise ToolInputError(
                f"the text to replace was not found in {path!r}; file_read it and copy the text exactly"
            )
        if replace_all:
            updated, done = text.replace(old, new), count
        elif occurrence is None and count > 1:
            raise ToolInputError(
                f"the text to replace occurs {count} times in {path!r}; say which with 'occurrence' "
                "(1 = first) or set 'replace_all', or include more context"
            )
        else:
            which = occurrence or 1
            if which > count:
                raise ToolInputError(f"occurrence {which} asked for, but the text occurs {count} time(s) in {path!r}")
            at = -1
            for _ in range(which):
                at = text.index(old, at + 1)
            updated, done = text[:at] + new + text[at + len(old) :], 1
        files.write(path, updated.encode("utf-8"))
        return FileChanged(
            path=path, action="edited", detail=f"replaced {done} of {count} match(es)", cli=self._cli("diff", name)
        )

    async def file_list(
        self,
        path: Annotated[str, Field(description="A directory relative to the task's worktree ('' is its root).")] = "",
        task: TaskArg = None,
        recursive: Annotated[bool, Field(description="List subdirectories too.")] = False,
    ) -> FileListing:
        """List a directory of the task's worktree (``.git`` left out); at most 1000 entries."""
        name = self._task(task)
        entries, cut = (await self._files(name)).list(path, recursive=recursive)
        return FileListing(
            path=path,
            entries=[FileEntry(path=e.path, kind=e.kind, size=e.size) for e in entries],
            truncated=cut,
            cli=self._cli("shell", name),
        )

    async def file_delete(
        self,
        path: Annotated[str, Field(description="A file, symlink or empty directory, relative to the task's worktree.")],
        task: TaskArg = None,
    ) -> FileChanged:
        """Delete a file (or a symlink itself, or an empty directory) in the task's worktree."""
        name = self._task(task)
        kind = (await self._files(name)).delete(path)
        return FileChanged(path=path, action="deleted", detail=kind, cli=self._cli("diff", name, "--stat"))

    # -- checkpoints --------------------------------------------------------------------
    async def checkpoint(
        self,
        message: Annotated[str | None, Field(description="What state the work is in, e.g. 'tests pass'.")] = None,
        task: TaskArg = None,
    ) -> CheckpointInfo:
        """Save a snapshot of the task's worktree you can roll back to. Do it before anything risky."""
        name = self._task(task)
        event = await self.armor.checkpoint(name, message)
        payload = event.payload
        return CheckpointInfo(
            task=name,
            checkpoint=str(payload.get("checkpoint")),
            message=message,
            files=_int(payload.get("files")),
            commit=_str(payload.get("commit")),
            cli=self._cli("checkpoints", name),
        )

    async def checkpoints(self, task: TaskArg = None) -> CheckpointList:
        """List the task's checkpoints, oldest first."""
        name = self._task(task)
        found = await self.armor.checkpoints(name)
        return CheckpointList(
            task=name,
            checkpoints=[
                CheckpointInfo(
                    task=name,
                    checkpoint=cp.id,
                    message=cp.message,
                    files=cp.files,
                    commit=cp.commit,
                    cli=self._cli("diff", name, cp.id),
                )
                for cp in found
            ],
            cli=self._cli("checkpoints", name),
        )

    async def rollback(
        self,
        checkpoint: Annotated[str, Field(description="The checkpoint to go back to, e.g. 'cp-2' (see checkpoints).")],
        task: TaskArg = None,
    ) -> Outcome:
        """Put the task's worktree back exactly as it was at a checkpoint; later changes are dropped."""
        name = self._task(task)
        return await self._outcome(
            name, await self.armor.rollback(name, checkpoint), self._cli("diff", name, checkpoint)
        )

    async def diff(
        self,
        task: TaskArg = None,
        checkpoint: Annotated[
            str | None, Field(description="Compare with this checkpoint instead of the task's base.")
        ] = None,
        stat_only: Annotated[bool, Field(description="Only list the changed files, no patch.")] = False,
    ) -> DiffResult:
        """What the task changed: its worktree against its base commit (or a checkpoint), as a unified patch."""
        name = self._task(task)
        found = await self.armor.diff(name, checkpoint)
        patch = "" if stat_only else found.patch
        cut = found.truncated
        if len(patch) > self.max_output:
            patch, cut = (
                patch[: self.max_output] + "\n[... the patch goes on; ask for stat_only or a checkpoint ...]\n",
                True,
            )
        words = ["diff", name] + ([checkpoint] if checkpoint else [])
        return DiffResult(
            task=name,
            against=found.against,
            files=[DiffFile(path=c.path, status=c.status) for c in found.files],
            patch=patch,
            truncated=cut,
            cli=self._cli(*words),
        )

    # -- the end ------------------------------------------------------------------------------
    async def complete(
        self,
        message: Annotated[str | None, Field(description="The commit message for the task's work.")] = None,
        merge: Annotated[MergeMode, Field(description=MERGE_DESCRIPTION)] = "none",
        task: TaskArg = None,
    ) -> Completion:
        """Finish the task: commit its worktree to its branch task/NAME, merge it into its base as 'merge' says, and
        stop its container. The task is over either way.

        Read the result: 'merged' says whether the base branch now has the work ('merge_commit' is its new tip).
        A refused merge changes nothing on the base: 'reason' says why, 'conflicts' lists the files, and the work
        stays committed on task/NAME ('commit'); 'summary' says what to do next.
        """
        name = self._task(task)
        if merge not in MERGE_MODES:  # a framework calling this directly has no schema to stop it
            raise ToolInputError(f"merge must be one of {', '.join(MERGE_MODES)}, not {merge!r}")
        event = await self.armor.complete(name, message=message, merge=merge)
        record = await self.armor.task(name)
        payload = event.payload
        merge_event = None
        if merge != "none":
            # The base branch and a first-wins refusal's winners are on the git effect's merge event.
            found = await self.armor.history(task_id=name, kind="git.merge.*", start_seq=record.created_seq)
            merge_event = found[-1].payload if found else None
        conflicts = payload.get("conflicts")  # payloads are frozen: a list comes back as a tuple
        how = payload.get("how")
        landed = (merge_event or {}).get("landed")
        done = Completion(
            task=name,
            state=record.state.value,
            event=event.kind,
            merge=merge,
            merged=payload.get("merged") is True,
            branch=_str(record.metadata.get("branch")),
            base_branch=_str((merge_event or {}).get("base_branch")),
            commit=_str(payload.get("commit")),
            merge_commit=_str(payload.get("merge_commit")),
            reason=_str(payload.get("reason")),
            conflicts=[str(c) for c in conflicts] if isinstance(conflicts, (list, tuple)) else [],
            landed={
                str(path): {str(k): str(v) for k, v in won.items()}
                for path, won in (landed.items() if isinstance(landed, Mapping) else ())
                if isinstance(won, Mapping)
            },
            how={str(k): str(v) for k, v in how.items()} if isinstance(how, Mapping) else {},
            summary="",
            detail={k: v for k, v in payload.items() if isinstance(v, (str, int, float, bool, type(None)))},
            cli=self._cli("diff", name),
        )
        done["summary"] = _completion_summary(done)
        return done

    async def cancel(
        self,
        reason: Annotated[str, Field(description="Why the task is abandoned.")] = "cancelled by the agent",
        task: TaskArg = None,
    ) -> Outcome:
        """Abandon the task: its container is stopped and nothing is merged (its branch stays)."""
        name = self._task(task)
        return await self._outcome(name, await self.armor.cancel(name, reason), self._cli("tasks"))

    async def aclose(self) -> None:
        """Stop the background commands still running (each is told to stop in its container) and wait for them."""
        for future, *_ in self._jobs.values():
            future.cancel()
        await asyncio.gather(*(f for f, *_ in self._jobs.values()), return_exceptions=True)


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


#: Why a merge was refused, for the agent (the reasons of :func:`armor_rx.sinks.git.completion.merge_into_base`).
_REFUSALS = {
    "conflict": "the task and the base both changed the same lines of",
    "not-fast-forward": "the base moved since the task started, so it cannot fast-forward (modes 'three-way' or "
    "'rebase' combine both)",
    "base-checkout-dirty": "the base branch's checkout has uncommitted changes",
    "base-checkout-untracked": "untracked files in the base branch's checkout stand where the merge would write:",
    "reserved-path": "the merge would write under armor's state directory:",
}


def _completion_summary(done: Completion) -> str:
    """One paragraph an agent can act on: what landed where, or why nothing did and what to do."""
    commit = (done["commit"] or "")[:12]
    branch = done["branch"] or "the task's branch"
    base = (done["base_branch"] or "the base branch").removeprefix("refs/heads/")
    if done["merged"]:
        return f"Merged into {base} ({done['reason']}); {base} is now at {(done['merge_commit'] or '')[:12]}."
    if done["merge"] == "none":
        return f"Committed to {branch} as {commit}; nothing merged (merge='none'): a person reviews and merges it."
    if done["merge"] == "manual":
        return (f"Committed to {branch} as {commit}; nothing merged (merge='manual'). A person merges it with: "
                f"{done['how'].get('merge', f'git merge --no-ff {branch}')}")
    why = _REFUSALS.get(done["reason"] or "", f"the merge was refused ({done['reason']})")
    if done["merge"] == "first-wins" and done["reason"] == "conflict":
        why = "the base changed files this task changed since it started (first-wins refuses even other lines):"
    paths = done["conflicts"]
    listed = " " + ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "") if paths else ""
    return (f"NOT merged into {base}: {why}{listed}. Nothing on {base} changed; the work is committed on {branch} "
            f"as {commit} and the task is over. Tell the user, or start a new task from {base} "
            f"(task_create with base_ref='{base}') and redo the change on top of what landed there.")


def _summary(payload: Mapping[str, Any]) -> str:
    parts = [
        f"{k}={v}" for k, v in payload.items() if k not in ("metadata", "settings", "labels", "engine", "findings")
    ]
    text = ", ".join(parts).replace("\n", " ")
    return text if len(text) <= 160 else text[:157] + "..."


__all__ = ["MAX_OUTPUT", "MERGE_HELP", "TOOL_NAMES", "ArmorError", "ArmorTools"]
