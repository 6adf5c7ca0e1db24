"""Values that must never be written to a log or the event log."""

from __future__ import annotations

REDACTED = "[redacted]"


class Secret:
    """Wraps a sensitive value so logs and events show ``[redacted]`` instead.

    >>> token = Secret("hunter2")
    >>> str(token), token.reveal()
    ('[redacted]', 'hunter2')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The wrapped value; call it only where the value is really used."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('[redacted]')"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


# Keys whose values are redacted even when the caller forgot to wrap them.
SENSITIVE_KEY_PARTS = ("password", "passwd", "secret", "token", "api_key", "apikey", "credential", "private_key")


def is_sensitive_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in SENSITIVE_KEY_PARTS)
