"""The in-process session: :class:`Armor` over one state directory, opened from a :class:`SessionConfig`.

Modules by job: :mod:`~armor_rx.session.config` (the options),
:mod:`~armor_rx.session.assembly` (which sinks a session has, built and
started in one place), :mod:`~armor_rx.session.armor` (the API over them),
and the API's parts: :mod:`~armor_rx.session.git`,
:mod:`~armor_rx.session.containers`, :mod:`~armor_rx.session.hooks`,
:mod:`~armor_rx.session.deadletters`.
"""

from armor_rx.session.armor import Armor, BackpressurePolicy
from armor_rx.session.config import SessionConfig

__all__ = ["Armor", "BackpressurePolicy", "SessionConfig"]
