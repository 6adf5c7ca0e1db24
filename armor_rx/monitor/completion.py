"""Completion for the monitor's command line: verbs, task ids, checkpoint ids, kind patterns.

:func:`candidates` is the logic (text in, words out, no terminal);
:class:`MonitorCompleter` is the thin prompt_toolkit adapter the layout uses.
"""

from __future__ import annotations

from collections.abc import Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from armor_rx.monitor.commands import CHECKPOINT, PATTERN, TASK, VERB, VERBS
from armor_rx.monitor.state import MonitorState

# Offered before any event has been seen, and always: the patterns people reach for first.
COMMON_PATTERNS = ("*", "task.*", "exec.*", "checkpoint.*", "git.*", "container.*", "hook.*", "*.failed", "*.requested",
                   "exec.output", "exec.exited")


def _kind_patterns(state: MonitorState) -> list[str]:
    with state.lock:
        kinds = {line.kind for line in list(state.events)[-2000:]}
    prefixes = {k.split(".", 1)[0] + ".*" for k in kinds}
    return sorted(set(COMMON_PATTERNS) | kinds | prefixes)


def candidates(text: str, state: MonitorState) -> tuple[str, list[str]]:
    """The word being typed at the end of ``text`` and the words that could complete it."""
    words = text.split()
    typing = "" if not text or text[-1].isspace() else words.pop()
    if not words:
        return typing, [v for v in VERBS if v.startswith(typing)]
    verb = VERBS.get(words[0])
    if verb is None or "--" in words[1:]:
        return typing, []
    position = len(words) - 1
    if position >= len(verb.args):
        return typing, []
    kind = verb.args[position].rstrip("?")
    options: Iterable[str]
    if kind == TASK:
        options = state.task_ids()
    elif kind == CHECKPOINT:
        with state.lock:
            row = state.rows.get(words[1])
            options = sorted(row.checkpoints, key=_checkpoint_order) if row is not None else []
    elif kind == PATTERN:
        options = _kind_patterns(state)
    elif kind == VERB:
        options = list(VERBS)
    else:
        options = []
    return typing, [o for o in options if o.startswith(typing)]


def _checkpoint_order(cp: str) -> tuple[int, str]:
    tail = cp.rsplit("-", 1)[-1]
    return (int(tail) if tail.isdigit() else 0, cp)


class MonitorCompleter(Completer):
    """prompt_toolkit's face of :func:`candidates`."""

    def __init__(self, state: MonitorState) -> None:
        self.state = state

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        typing, found = candidates(document.text_before_cursor, self.state)
        for word in found:
            meta = VERBS[word].summary if word in VERBS and document.text_before_cursor.strip() == typing else None
            yield Completion(word, start_position=-len(typing), display_meta=meta)
