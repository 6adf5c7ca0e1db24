"""The armor service: one process owns a state directory; every interface is its client.

See ``docs/service.md`` for the API. ``armor-rx serve`` runs it; clients
(:func:`armor_rx.connect`, the CLI) start it on demand.
"""

from armor_rx.service.paths import ServicePaths

__all__ = ["ServicePaths"]
