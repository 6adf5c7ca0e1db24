"""Where a repository's state directory is, in plain ``os.path`` terms.

It lives at the package's top and imports only the standard library because
the CLI's fast read path (:mod:`armor_rx._quick`) must find the state
directory without importing the package's floors; :meth:`StateDir.resolve
<armor_rx.sinks.statedir.StateDir.resolve>` uses the same lookup, so the two
cannot disagree.
"""

from __future__ import annotations

import os

DEFAULT_NAME = ".armor"


def state_dir_in(start: str) -> str:
    """``<root>/.armor`` for the nearest directory at or above ``start`` holding a ``.git`` entry, else ``<start>/.armor``.

    ``start`` must already be absolute and resolved (symlinks followed).
    """
    candidate = start
    while True:
        if os.path.exists(os.path.join(candidate, ".git")):
            return os.path.join(candidate, DEFAULT_NAME)
        parent = os.path.dirname(candidate)
        if parent == candidate:
            return os.path.join(start, DEFAULT_NAME)
        candidate = parent
