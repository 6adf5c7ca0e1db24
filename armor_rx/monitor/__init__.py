"""``armor-rx monitor``: one screen for every task of a repository, live, and one key to act on it.

The monitor is one more client of the repository's service (it sees tasks
started by any terminal or agent) and it is attached, not owning: opening or
quitting it never changes a task, and it reconnects when the service restarts.

The floors inside, each testable without a terminal but the last:

- :mod:`~armor_rx.monitor.state`: tasks folded from events, the event tail, the view;
- :mod:`~armor_rx.monitor.feed`: the subscription (history then live, through
  :func:`armor_rx.operators.backpressure` with a dropping policy, reconnecting);
- :mod:`~armor_rx.monitor.commands`: the command line's verbs and parsing;
- :mod:`~armor_rx.monitor.engine`: what each command does (confirmations, worker threads);
- :mod:`~armor_rx.monitor.completion`: what Tab offers;
- :mod:`~armor_rx.monitor.app`: the prompt_toolkit layout and keys.
"""

from armor_rx.monitor.commands import VERBS, parse
from armor_rx.monitor.engine import CommandEngine, Reply
from armor_rx.monitor.feed import Feed
from armor_rx.monitor.session import Monitor
from armor_rx.monitor.state import MonitorState, TaskRow

__all__ = ["VERBS", "CommandEngine", "Feed", "Monitor", "MonitorState", "Reply", "TaskRow", "parse"]
