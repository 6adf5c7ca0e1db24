"""What the monitor's commands do: :class:`CommandEngine` runs a typed line against the service.

It turns a line into a :class:`Reply` the layout acts on (quit, hand the
terminal to a shell, a job running in the background) and never touches the
terminal, so every command is testable with no screen. Anything that talks to
the service runs on the engine's own worker threads and reports into
:class:`~armor_rx.monitor.state.MonitorState` (the status line and the detail
pane), so a slow call never freezes the screen.

Every destructive verb (``rollback``, ``cancel``, ``gc``) is asked about first:
:meth:`CommandEngine.run` leaves a pending :class:`Confirmation` and nothing
happens until :meth:`CommandEngine.answer` says yes.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from armor_rx.errors import ArmorError, UsageError
from armor_rx.model.events import TaskEvent
from armor_rx.monitor.commands import KEYS, VERBS, Parsed, parse
from armor_rx.monitor.state import MonitorState


@dataclass(frozen=True)
class Confirmation:
    """A destructive action waiting for yes: ``question`` is shown, ``action`` runs on yes."""

    question: str
    action: Callable[[], None]


@dataclass
class Reply:
    """What the layout must do after a line: nothing, quit, ask, open a shell, or wait for ``job``."""

    quit: bool = False
    confirm: Confirmation | None = None
    shell: str | None = None
    job: Future[Any] | None = None


class CommandEngine:
    """Runs command lines against the service for one monitor.

    ``connect`` opens a service client for one command (it may start the
    service: the user asked for an action). Jobs run on this engine's own
    threads, ended by :meth:`close`.
    """

    def __init__(self, state: MonitorState, connect: Callable[[], Any], *, workers: int = 4) -> None:
        self.state = state
        self._connect = connect
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="armor-monitor-cmd")
        self.pending: Confirmation | None = None

    def close(self) -> None:
        # Not waiting: a command still running (an exec) is stopped by its connection closing with the process.
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- entry points ------------------------------------------------------------
    def run(self, line: str) -> Reply:
        """Do ``line``; a bad line is reported on the status line (and nothing else happens)."""
        if not line.strip():
            return Reply()
        try:
            parsed = parse(line)
            return self._dispatch(parsed)
        except ArmorError as exc:
            self.state.say(f"error: {exc}", "class:error")
            return Reply()

    def answer(self, yes: bool) -> Reply:
        """Answer the pending question: yes runs its action, anything else drops it."""
        pending, self.pending = self.pending, None
        if pending is None:
            return Reply()
        if not yes:
            self.state.say("not done", "class:warn")
            return Reply()
        job = self._pool.submit(self._guarded, pending.action)
        return Reply(job=job)

    def ask(self, question: str, action: Callable[[], None]) -> Reply:
        self.pending = Confirmation(question, action)
        self.state.say(question, "class:ask")
        return Reply(confirm=self.pending)

    def background(self, action: Callable[[], None]) -> Reply:
        return Reply(job=self._pool.submit(self._guarded, action))

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except ArmorError as exc:
            self.state.say(f"error: {exc}", "class:error")
        except Exception as exc:  # noqa: BLE001 - a failing command must not take the monitor down
            self.state.say(f"error: {type(exc).__name__}: {exc}", "class:error")

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        with self._connect() as client:
            return fn(client)

    # -- the verbs ------------------------------------------------------------
    def _dispatch(self, p: Parsed) -> Reply:
        name = p.verb.name
        optional = p.args[0] if p.args else None  # events, filter, help: the one optional argument
        task = p.args[0] if p.args else ""  # every other verb that names a task has it (parse checked)
        s = self.state
        if name == "quit":
            return Reply(quit=True)
        if name == "help":
            self._help(optional)
            return Reply()
        if name == "pause":
            s.pause()
            s.say("event pane paused ('follow' resumes)")
            return Reply()
        if name == "follow":
            s.follow()
            s.say("following the newest events")
            return Reply()
        if name == "filter":
            s.set_kind_filter(optional)
            s.say(f"showing kinds matching {optional}" if optional not in (None, "*") else "showing every kind")
            return Reply()
        if name == "events":
            s.set_task_filter(optional)
            s.say(f"showing task {optional}'s events" if optional else "showing every task's events")
            return Reply()
        if name == "shell":
            return Reply(shell=task)
        if name == "show":
            with s.lock:
                s.selected = task
            return self.background(lambda: self._show(task))
        if name == "tasks":
            return self.background(self._tasks)
        if name == "checkpoints":
            return self.background(lambda: self._checkpoints(task))
        if name == "diff":
            return self.background(lambda: self._diff(task, p.args[1] if len(p.args) > 1 else None))
        if name == "checkpoint":
            message = " ".join(p.args[1:]) or "from the monitor"
            return self.background(lambda: self._checkpoint(task, message))
        if name == "resume":
            return self.background(lambda: self._lifecycle(task, "resume", lambda c: c.resume(task)))
        if name == "rollback":
            cp = p.args[1]
            return self.ask(f"roll task {task} back to {cp}? its worktree changes since then are lost [y/N]",
                            lambda: self._lifecycle(task, f"rollback to {cp}", lambda c: c.rollback(task, cp)))
        if name == "cancel":
            return self.ask(f"cancel task {task}? its container is removed [y/N]",
                            lambda: self._lifecycle(task, "cancel", lambda c: c.cancel(task, "cancelled from the monitor")))
        if name == "exec":
            return self.background(lambda: self._exec(task, p.command))
        if name == "run":
            return self.background(lambda: self._run(task, p.command))
        if name == "gc":
            return self.background(self._gc)
        if name == "stats":
            return self.background(self._stats)
        raise AssertionError(f"unhandled verb {name}")

    def _help(self, verb: str | None) -> None:
        if verb is not None:
            found = VERBS.get(verb)
            if found is None:
                raise UsageError(f"no command {verb!r} ('help' lists them)")
            self.state.show(f"help {verb}", [("class:title", found.usage), found.summary])
            return
        lines: list[tuple[str, str] | str] = [("class:title", "commands")]
        lines += [f"  {v.usage:<34} {v.summary}" for v in VERBS.values()]
        lines += ["", ("class:title", "keys")]
        lines += [f"  {k:<14} {what}" for k, what in KEYS]
        self.state.show("help", lines)

    def _tasks(self) -> None:
        records = self._call(lambda c: c.tasks())
        self.state.apply_records(records)
        counts = self.state.by_state()
        self.state.say(f"{len(records)} tasks: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) if records else "no tasks yet")

    def _show(self, task_id: str) -> None:
        record, cps = self._call(lambda c: (c.task(task_id), _checkpoints_or_none(c, task_id)))
        self.state.apply_records([record])
        if cps is not None:
            self.state.set_checkpoints(task_id, [cp.id for cp in cps])
        with self.state.lock:
            row = self.state.rows.get(task_id)
            output = list(row.output)[-40:] if row is not None else []
            exit_code = row.exit_code if row is not None else None
            container = row.container if row is not None else None
        lines: list[tuple[str, str] | str] = [
            ("class:title", f"task {task_id}: {record.state.value}"),
            f"branch     {record.metadata.get('branch', '-')}",
            f"worktree   {record.metadata.get('worktree', '-')}",
            f"base       {record.metadata.get('base_ref', '-')}",
            f"container  {container or '-'}",
            f"last exit  {'-' if exit_code is None else exit_code}",
        ]
        if record.reason:
            lines.append(f"reason     {record.reason}")
        lines += ["", ("class:title", "checkpoints")]
        lines += _checkpoint_lines(cps)
        lines += ["", ("class:title", "recent output")]
        lines += output or ["(none seen)"]
        self.state.show(f"task {task_id}", lines)

    def _checkpoints(self, task_id: str) -> None:
        cps = self._call(lambda c: c.checkpoints(task_id))
        self.state.set_checkpoints(task_id, [cp.id for cp in cps])
        self.state.show(f"checkpoints of {task_id}", [("class:title", f"{len(cps)} checkpoints of {task_id}"), *_checkpoint_lines(cps)])

    def _diff(self, task_id: str, checkpoint: str | None) -> None:
        found = self._call(lambda c: c.diff(task_id, checkpoint))
        against = checkpoint or "its base"
        lines: list[tuple[str, str] | str] = [("class:title", f"{task_id} against {against}: {len(found.files)} files changed")]
        for change in found.files:
            lines.append(f"  {change.status:<10} {change.path}")
        lines.append("")
        for text in found.patch.splitlines():
            style = "class:add" if text.startswith("+") else "class:del" if text.startswith("-") else "class:hunk" if text.startswith("@@") else ""
            lines.append((style, text))
        if getattr(found, "truncated", False):
            lines.append(("class:warn", "(cut at the size limit)"))
        self.state.show(f"diff {task_id} {checkpoint or ''}".strip(), lines)

    def _checkpoint(self, task_id: str, message: str) -> None:
        event = self._call(lambda c: c.checkpoint(task_id, message))
        self.state.say(f"task {task_id}: checkpoint {event.payload.get('checkpoint')} ({event.payload.get('files', '?')} files)", "class:ok")

    def _lifecycle(self, task_id: str, what: str, call: Callable[[Any], TaskEvent]) -> None:
        self.state.say(f"{what} {task_id}...")
        event = self._call(call)
        self.state.say(f"task {task_id}: {what} done ({event.kind})", "class:ok")

    def _exec(self, task_id: str, command: Sequence[str]) -> None:
        self.state.show(f"exec {task_id}", [("class:title", f"$ {shlex.join(command)}  (in {task_id})")])

        def out(event: TaskEvent) -> None:
            for line in str(event.payload.get("data", "")).splitlines():
                self.state.append_detail(line, "class:stderr" if event.payload.get("stream") == "stderr" else "")

        outcome = self._call(lambda c: c.exec(task_id, list(command), on_output=out))
        code = outcome.payload.get("exit_code")
        self.state.append_detail(f"[exit {code}]", "class:ok" if code == 0 else "class:error")
        self.state.say(f"exec in {task_id} exited {code}", "class:ok" if code == 0 else "class:error")

    def _run(self, name: str, command: Sequence[str]) -> None:
        self.state.show(f"run {name}", [("class:title", f"$ {shlex.join(command)}  (new task {name})")])

        def line(key: str, value: Any) -> None:
            if key == "task":
                self.state.append_detail(f"task {value.get('task_id')}", "class:title")
            elif key == "event" and isinstance(value, TaskEvent):
                for text in str(value.payload.get("data", "")).splitlines():
                    self.state.append_detail(text)

        # Detached: the task's life belongs to the service, not to this monitor (quitting it stops nothing).
        result = self._call(lambda c: c.run(name, list(command), on_line=line, detach=True))
        self.state.append_detail(f"[task {result.get('task_id')} exit {result.get('exit_code')}]", "class:ok")
        self.state.say(f"run {result.get('task_id')} exited {result.get('exit_code')}", "class:ok" if result.get("exit_code") == 0 else "class:error")

    def _gc(self) -> None:
        found = self._call(lambda c: c.sweep(dry_run=True))
        doomed = [d for d in found if getattr(d, "action", "") != "kept" and getattr(d, "orphan", None)]
        lines: list[tuple[str, str] | str] = [("class:title", f"{len(found)} armor containers")]
        for d in found:
            lines.append(f"  {d.action:<13} {d.container}  {d.task or '-':<24} {d.orphan or 'in use'}")
        self.state.show("gc (dry run)", lines)
        if not doomed:
            self.state.say("gc: nothing to remove")
            return
        self.ask(f"remove {len(doomed)} orphaned containers? [y/N]", self._sweep)

    def _sweep(self) -> None:
        done = self._call(lambda c: c.sweep())
        self.state.say(f"gc: {sum(1 for d in done if d.action == 'removed')} containers removed", "class:ok")

    def _stats(self) -> None:
        def gather(c: Any) -> tuple[list[Any], Any]:
            letters = c.dead_letters()
            try:
                cache = c.image_cache("stats")
            except ArmorError as exc:
                cache = str(exc)
            return letters, cache

        letters, cache = self._call(gather)
        s = self.state
        counts = s.snapshot_counts()
        rate = s.events_per_second()
        by_state = s.by_state()
        if isinstance(cache, dict):
            rate_text = "n/a (no builds yet)" if cache.get("hit_rate") is None else f"{cache['hit_rate']:.0%}"
            cache_text = f"{rate_text} ({cache.get('hits', 0)} hits, {cache.get('misses', 0)} misses)"
        else:
            cache_text = f"n/a ({cache})"
        lines: list[tuple[str, str] | str] = [
            ("class:title", "stats"),
            f"events/s             {rate:.1f}",
            f"events seen          {counts['applied']} (log at seq {counts['last_seq']})",
            "tasks by state       " + (", ".join(f"{k} {n}" for k, n in sorted(by_state.items())) or "none"),
            f"image-cache hit rate {cache_text}",
            f"dead letters         {len(letters)}",
            (f"dropped events       {counts['skipped']} skipped by this monitor, {counts['lagged']} skipped by the service for it, "
             f"{counts['service_dropped']} dropped by the service's buffers"),
            f"reconnects           {counts['reconnects']}",
            f"frames drawn         {counts['frames']}",
        ]
        for d in letters[:20]:
            lines.append(f"  dead letter {d.id}  {d.event.task_id or '-'}  {d.event.kind}: {d.error}")
        s.show("stats", lines)


def _checkpoints_or_none(client: Any, task_id: str) -> list[Any] | None:
    try:
        return list(client.checkpoints(task_id))
    except ArmorError:
        return None


def _checkpoint_lines(cps: list[Any] | None) -> list[tuple[str, str] | str]:
    if cps is None:
        return ["(this service keeps no checkpoints: it runs without git)"]
    if not cps:
        return ["(none)"]
    import time

    return [f"  {cp.id:<8} {time.strftime('%H:%M:%S', time.localtime(cp.created_at))}  {cp.files:>5} files  {cp.message}" for cp in cps]
