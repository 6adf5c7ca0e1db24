"""``armor-rx monitor``: the full-screen REPL over a repository's service (see armor_rx/monitor/ and docs/monitor.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from armor_rx.errors import ConfigError


def register(verbs: Any, common: argparse.ArgumentParser) -> dict[str, Callable[[argparse.Namespace], int]]:
    monitor = verbs.add_parser("monitor", parents=[common], help="watch and steer every task of the repository, live (full screen)")
    monitor.add_argument("--stuck-after", type=float, default=120.0, metavar="SECONDS",
                         help="flag a running task as stuck after this long with no event (default 120)")
    monitor.add_argument("--history", type=int, default=5000, metavar="N", help="events replayed from the log on start and kept for scrolling (default 5000)")
    monitor.add_argument("--policy", choices=["drop_oldest", "latest"], default="drop_oldest",
                         help="what the monitor's buffer drops when events come faster than it draws (default drop_oldest)")
    monitor.add_argument("--buffer", type=int, default=2000, metavar="N", help="events the buffer holds before it drops (default 2000)")
    monitor.add_argument("--max-fps", type=float, default=10.0, metavar="N", help="redraw at most this often per second (default 10)")
    monitor.add_argument("--history-file", metavar="FILE", help="command history (default $XDG_STATE_HOME/armor-rx/monitor-history)")
    monitor.add_argument("--metrics", metavar="FILE", help=argparse.SUPPRESS)  # the benchmark's measurements, written on quit
    return {"monitor": cmd_monitor}


def cmd_monitor(args: argparse.Namespace) -> int:
    from armor_rx.monitor.app import file_history
    from armor_rx.monitor.session import Monitor

    if args.stuck_after <= 0:
        raise ConfigError(f"--stuck-after must be a positive number of seconds, not {args.stuck_after:g}")
    if args.history < 1 or args.buffer < 1:
        raise ConfigError("--history and --buffer must be 1 or more")
    if args.max_fps <= 0:
        raise ConfigError(f"--max-fps must be positive, not {args.max_fps:g}")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise ConfigError("armor-rx monitor needs a terminal; for a script use 'armor-rx events --follow' or 'armor-rx tasks'")
    monitor = Monitor(args.repo, state_dir=args.state_dir, stuck_after=args.stuck_after, history=args.history, max_items=args.buffer,
                      policy=args.policy, max_fps=args.max_fps)
    with monitor:
        if args.metrics:
            monitor.write_metrics_every(Path(args.metrics))
        monitor.app(history=file_history(Path(args.history_file) if args.history_file else None)).run()
        if args.metrics:
            monitor.write_metrics(Path(args.metrics))
    return 0
