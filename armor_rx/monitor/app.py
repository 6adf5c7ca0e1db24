"""The monitor's screen: a thin prompt_toolkit layout over the state, the engine and the feed.

Everything here reads :class:`~armor_rx.monitor.state.MonitorState` when a
frame is drawn and turns keys into command lines for
:class:`~armor_rx.monitor.commands.CommandEngine`; what a command means lives
there, not here. Frames are drawn at most ``max_fps`` times a second whatever
the event rate (a ticker invalidates the screen only when something changed,
and once a second for the "3 s ago" column), so a flood costs redraws, not
one redraw per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from prompt_toolkit.application import Application, run_in_terminal
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.filters import Condition, has_focus
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import Float, FloatContainer, HSplit, Layout, VSplit, Window
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.layout.processors import BeforeInput
from prompt_toolkit.output import Output
from prompt_toolkit.styles import Style

from armor_rx.model.lifecycle import State
from armor_rx.monitor.engine import CommandEngine, Reply
from armor_rx.monitor.completion import MonitorCompleter
from armor_rx.monitor.state import MonitorState, ago

STATE_STYLES = {
    State.PENDING: "class:s.waiting", State.INTERRUPTED: "class:s.waiting",
    State.STARTING: "class:s.moving", State.RESUMING: "class:s.moving", State.COMPLETING: "class:s.moving",
    State.RUNNING: "class:s.running", State.COMPLETED: "class:s.done",
    State.FAILING: "class:s.failed", State.FAILED: "class:s.failed", State.CANCELLED: "class:s.cancelled",
}

STYLE = Style.from_dict({
    "title": "bold", "header": "bold underline", "bar": "reverse", "selected": "reverse",
    "s.waiting": "ansiyellow", "s.moving": "ansicyan", "s.running": "ansigreen bold", "s.done": "ansiblue",
    "s.failed": "ansired bold", "s.cancelled": "ansibrightblack", "flag": "ansired bold",
    "k.fail": "ansired", "k.task": "ansicyan", "k.exec": "", "k.output": "ansibrightblack", "k.checkpoint": "ansimagenta",
    "k.git": "ansiblue", "k.container": "ansiyellow", "k.other": "",
    "error": "ansired bold", "warn": "ansiyellow", "ok": "ansigreen", "ask": "ansiyellow bold reverse",
    "add": "ansigreen", "del": "ansired", "hunk": "ansicyan", "stderr": "ansired", "dim": "ansibrightblack",
})


def kind_style(kind: str) -> str:
    """The event pane's colour for a kind: failures red, lifecycle cyan, output dim."""
    if kind.endswith((".failed", ".vetoed", ".dead_lettered", ".conflict", ".oom")) or kind == "deadletter.added":
        return "class:k.fail"
    if kind == "exec.output":
        return "class:k.output"
    head = kind.split(".", 1)[0]
    return f"class:k.{head}" if head in ("task", "exec", "checkpoint", "git", "container") else "class:k.other"


def history_path() -> Path:
    """Where the command history is kept: ``$XDG_STATE_HOME/armor-rx/monitor-history``.

    The XDG state directory is, by its spec, for "actions history" that should
    outlive a restart. The repository's ``.armor/run/`` is the service's private
    runtime area (its socket and locks), which is deleted and re-made with the
    state directory; commands typed by a person are that person's, across
    repositories, like a shell's history.
    """
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "armor-rx" / "monitor-history"


class MonitorApp:
    """The full-screen monitor. :meth:`run` returns when the user quits."""

    def __init__(self, state: MonitorState, engine: CommandEngine, *, where: str = "", max_fps: float = 10.0,
                 history: History | None = None, input: Input | None = None, output: Output | None = None,
                 shell: Callable[[str], tuple[int, str]] | None = None) -> None:
        self.state = state
        self.engine = engine
        self.where = where
        self.interval = 1.0 / max_fps
        self._shell = shell
        self._event_height = 20
        self._detail_height = 20
        self.command = Buffer(name="command", multiline=False, completer=MonitorCompleter(state), history=history or InMemoryHistory(),
                              complete_while_typing=True)
        self._table = FormattedTextControl(self._table_text, focusable=True, show_cursor=False)
        self._events = Window(FormattedTextControl(self._event_text), wrap_lines=False)
        self._detail = Window(FormattedTextControl(self._detail_text), wrap_lines=False)
        events_width, detail_width = Dimension(weight=3), Dimension(weight=2)
        table_window = Window(self._table, height=self._table_height, wrap_lines=False)
        body = HSplit([
            Window(FormattedTextControl(self._title_text), height=1, style="class:bar"),
            table_window,
            VSplit([
                HSplit([Window(FormattedTextControl(self._event_title), height=1, style="class:bar"), self._events], width=events_width),
                Window(width=1, char="│", style="class:dim"),
                HSplit([Window(FormattedTextControl(self._detail_title), height=1, style="class:bar"), self._detail], width=detail_width),
            ]),
            Window(FormattedTextControl(self._status_text), height=1, style="class:bar"),
            VSplit([Window(BufferControl(self.command, input_processors=[BeforeInput(self._prompt)]), height=1)]),
        ])
        root = FloatContainer(body, floats=[Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=12))])
        self.app: Application[None] = Application(
            layout=Layout(root, focused_element=table_window), key_bindings=self._bindings(), style=STYLE, full_screen=True,
            mouse_support=False, input=input, output=output, min_redraw_interval=self.interval / 2)

    # -- running ------------------------------------------------------------------
    def run(self) -> None:
        asyncio.run(self.run_async())

    async def run_async(self) -> None:
        ticker = asyncio.ensure_future(self._tick())
        try:
            await self.app.run_async()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _tick(self) -> None:
        """Redraw when something changed, at most ``max_fps`` times a second, and each second for the ages."""
        last_full = 0.0
        due = time.monotonic()
        while True:
            # Deadlines, not a fixed sleep after each frame: a frame that takes 50 ms to draw
            # must not stretch the period to 150 ms.
            due = max(due + self.interval, time.monotonic())
            await asyncio.sleep(due - time.monotonic())
            now = time.monotonic()
            if self.state.dirty or now - last_full >= 1.0:
                last_full = now
                self.app.invalidate()

    # -- what is drawn --------------------------------------------------------------
    def _table_height(self) -> Dimension:
        rows = len(self.state.rows)
        return Dimension(min=3, preferred=rows + 1, max=max(3, rows + 1), weight=1)

    def _title_text(self) -> StyleAndTextTuples:
        s = self.state
        with s.lock:
            link = s.connection_note
            extra = f"  reconnects {s.reconnects}" if s.reconnects else ""
            lost = f"  skipped {s.skipped + s.lagged}" if s.skipped or s.lagged else ""
        style = "" if s.connected else "class:warn"
        # The path goes last: on a narrow terminal it is what gets cut, never the connection's state.
        return [("class:title", " armor-rx monitor"), ("", " │ "), (style, link), ("", extra), ("class:warn", lost),
                ("class:dim", f" │ {self.where}" if self.where else "")]

    def _table_text(self) -> StyleAndTextTuples:
        s = self.state
        s.frame_rendered()
        now = s.clock()
        header = (f"{'TASK':<22} {'STATE':<12} {'BRANCH':<24} {'CONTAINER':<16} "
                  f"{'LAST ACTIVITY':<14} {'EXIT':>4} {'CPS':>4}  FLAGS")
        out: StyleAndTextTuples = [("class:header", header), ("", "\n")]
        rows = s.table()
        if not rows:
            out.append(("class:dim", "(no tasks yet: start one from any terminal, or type ':run NAME -- CMD')"))
        for row, flags in rows:
            selected = row.task_id == s.selected
            base = "class:selected " if selected else ""
            exit_code = "-" if row.exit_code is None else str(row.exit_code)
            out += [(base, f"{row.task_id[:22]:<22} "), (base + STATE_STYLES.get(row.state, ""), f"{row.state.value:<12}"),
                    (base, (f" {(row.branch or '-')[:24]:<24} {(row.container or '-')[:16]:<16} {ago(row.last_ts, now):<14} "
                            f"{exit_code:>4} {len(row.checkpoints):>4}  ")),
                    (base + "class:flag", " ".join(flags)), ("", "\n")]
        return out[:-1] if out and out[-1] == ("", "\n") else out

    def _event_title(self) -> StyleAndTextTuples:
        s = self.state
        parts = ["events"]
        if s.task_filter:
            parts.append(f"task={s.task_filter}")
        if s.kind_filter:
            parts.append(f"kind={s.kind_filter}")
        if s.paused_at is not None:
            parts.append(f"PAUSED ({s.newer_than_pause()} newer; 'follow' resumes)")
        else:
            parts.append("following")
        return [("class:title", " " + "  ".join(parts))]

    def _event_text(self) -> StyleAndTextTuples:
        info = self._events.render_info
        if info is not None:
            self._event_height = info.window_height
        out: StyleAndTextTuples = []
        for line in self.state.visible_events(self._event_height):
            out += [("class:dim", f"{line.seq:>7} {time.strftime('%H:%M:%S', time.localtime(line.ts))} "),
                    ("", f"{(line.task_id or '-')[:16]:<16} "), (kind_style(line.kind), f"{line.kind:<24}"),
                    ("class:dim" if line.kind == "exec.output" else "", f" {line.text}"), ("", "\n")]
        return out[:-1]

    def _detail_title(self) -> StyleAndTextTuples:
        s = self.state
        more = f"  (J/K scroll, line {s.detail_scroll + 1}/{len(s.detail)})" if len(s.detail) > self._detail_height else ""
        return [("class:title", f" {s.detail_title}{more}")]

    def _detail_text(self) -> StyleAndTextTuples:
        info = self._detail.render_info
        if info is not None:
            self._detail_height = info.window_height
        s = self.state
        with s.lock:
            lines = s.detail[s.detail_scroll:s.detail_scroll + self._detail_height] if s.detail else [("class:dim", "Enter shows the selected task; ':help' lists the commands")]
        out: StyleAndTextTuples = []
        for style, text in lines:
            out += [(style, text), ("", "\n")]
        return out[:-1]

    def _status_text(self) -> StyleAndTextTuples:
        s = self.state
        pending = self.engine.pending
        if pending is not None:
            return [("class:ask", f" {pending.question} ")]
        with s.lock:
            message, style = s.message, s.message_style
        return [(style, f" {message}" if message else " ':' command  '/' filter  'q' quit  '?' help")]

    def _prompt(self) -> StyleAndTextTuples:
        return [("class:title", ": " if self.app.layout.has_focus(self.command) else "  ")]

    # -- keys --------------------------------------------------------------------
    def _bindings(self) -> KeyBindings:
        kb = KeyBindings()
        typing = has_focus(self.command)
        asking = Condition(lambda: self.engine.pending is not None)
        normal = ~typing & ~asking

        @kb.add("c-c")
        def _quit(event: KeyPressEvent) -> None:
            event.app.exit()

        # Any key but y answers no; registered first because the last matching binding wins.
        @kb.add("<any>", filter=asking)
        def _no(event: KeyPressEvent) -> None:
            self._reply(self.engine.answer(False))

        @kb.add("y", filter=asking)
        @kb.add("Y", filter=asking)
        def _yes(event: KeyPressEvent) -> None:
            self._reply(self.engine.answer(True))

        @kb.add("up", filter=normal)
        @kb.add("k", filter=normal)
        def _up(event: KeyPressEvent) -> None:
            self.state.move_selection(-1)

        @kb.add("down", filter=normal)
        @kb.add("j", filter=normal)
        def _down(event: KeyPressEvent) -> None:
            self.state.move_selection(1)

        @kb.add("enter", filter=normal)
        def _details(event: KeyPressEvent) -> None:
            if self.state.selected:
                self.submit(f"show {self.state.selected}")

        @kb.add(":", filter=normal)
        def _command(event: KeyPressEvent) -> None:
            self.type_command("")

        @kb.add("/", filter=normal)
        def _filter(event: KeyPressEvent) -> None:
            self.type_command("filter ")

        @kb.add("?", filter=normal)
        def _help(event: KeyPressEvent) -> None:
            self.submit("help")

        def on_selected(template: str, *, prefill: bool = False) -> Callable[[KeyPressEvent], None]:
            def handler(event: KeyPressEvent) -> None:
                task = self.state.selected
                if task is None:
                    self.state.say("no task selected", "class:warn")
                elif prefill:
                    self.type_command(template.format(task=task))
                else:
                    self.submit(template.format(task=task))
            return handler

        kb.add("c", filter=normal)(on_selected("checkpoint {task}"))
        kb.add("r", filter=normal)(on_selected("rollback {task} ", prefill=True))
        kb.add("x", filter=normal)(on_selected("cancel {task}"))
        kb.add("s", filter=normal)(on_selected("shell {task}"))
        kb.add("p", filter=normal)(lambda e: self.submit("pause"))
        kb.add("f", filter=normal)(lambda e: self.submit("follow"))
        kb.add("q", filter=normal)(lambda e: e.app.exit())
        kb.add("pageup", filter=~asking)(lambda e: self.state.scroll_events(max(1, self._event_height - 2)))
        kb.add("pagedown", filter=~asking)(lambda e: self.state.scroll_events(-max(1, self._event_height - 2)))
        kb.add("end", filter=normal)(lambda e: self.submit("follow"))
        kb.add("J", filter=normal)(lambda e: self._scroll_detail(self._detail_height // 2))
        kb.add("K", filter=normal)(lambda e: self._scroll_detail(-(self._detail_height // 2)))

        @kb.add("enter", filter=typing)
        def _run(event: KeyPressEvent) -> None:
            line = self.command.text
            if line.strip():
                self.command.append_to_history()
            self.command.reset()
            self.app.layout.focus_last()
            self.submit(line)

        @kb.add("escape", filter=typing, eager=True)
        def _leave(event: KeyPressEvent) -> None:
            self.command.reset()
            self.app.layout.focus_last()

        return kb

    def _scroll_detail(self, lines: int) -> None:
        with self.state.lock:
            self.state.detail_scroll = max(0, min(len(self.state.detail) - 1, self.state.detail_scroll + lines))
            self.state.dirty = True

    def type_command(self, text: str) -> None:
        """Focus the command line with ``text`` typed (and its completions offered)."""
        self.app.layout.focus(self.command)
        self.command.text = text
        self.command.cursor_position = len(text)
        if text:
            self.command.start_completion(select_first=False)

    def submit(self, line: str) -> None:
        self._reply(self.engine.run(line))

    def _reply(self, reply: Reply) -> None:
        if reply.quit:
            self.app.exit()
        elif reply.shell is not None:
            task = reply.shell
            self.app.create_background_task(self._open_shell(task))
        self.app.invalidate()

    async def _open_shell(self, task: str) -> None:
        if self._shell is None:
            self.state.say("no shell available here", "class:error")
            return
        shell = self._shell
        code, problem = await run_in_terminal(lambda: shell(task), in_executor=True)
        if problem:
            self.state.say(f"shell in {task}: {problem}", "class:error")
        else:
            self.state.say(f"shell in {task} exited {code}", "class:ok" if code == 0 else "class:warn")


def shell_runner(state_dir: Path) -> Callable[[str], tuple[int, str]]:
    """``armor-rx shell TASK`` for the state directory, in this terminal (the monitor is suspended meanwhile).

    Returns the exit code and, when ``armor-rx shell`` itself failed, its error line
    (for the status line: the screen is redrawn over anything printed here).
    """
    def run(task: str) -> tuple[int, str]:
        print(f"armor-rx: shell in task {task}; exit it to return to the monitor", flush=True)
        result = subprocess.run([sys.executable, "-m", "armor_rx", "shell", task, "--state-dir", str(state_dir)],
                                stderr=subprocess.PIPE, text=True)
        errors = [line for line in result.stderr.splitlines() if line.startswith("armor-rx: ")]
        return result.returncode, errors[-1].removeprefix("armor-rx: ") if errors else ""

    return run


def file_history(path: Path | None) -> History:
    """The command history file (made private); in memory when it cannot be written."""
    path = path or history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600, exist_ok=True)
    except OSError:
        return InMemoryHistory()
    return FileHistory(str(path))


