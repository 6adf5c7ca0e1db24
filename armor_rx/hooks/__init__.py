"""Hooks armor_rx ships: operators wired to the sinks they write to.

An operator does no I/O of its own (see :mod:`armor_rx.operators`); a shipped
hook is the operator plus the files or services it needs, ready for
``armor.use(..., stage="after")``. They are what user hooks can be modelled on.
"""

from armor_rx.hooks.plan import plan_file, plan_file_hook

__all__ = ["plan_file", "plan_file_hook"]
