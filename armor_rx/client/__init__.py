"""Clients of the armor service: :func:`connect` (blocking) over the state directory's unix socket."""

from armor_rx.client.sync import RemoteArmor, connect

__all__ = ["RemoteArmor", "connect"]
