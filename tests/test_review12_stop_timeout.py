"""Review 12: a stop timeout the graceful stop cannot wait out is refused when the session is configured.

ARMOR_RX_STOP_TIMEOUT=inf (the natural 'no limit') was accepted; on SIGTERM the final checkpoint's wait raised
OverflowError (not the FutureTimeout it handles), so the stop recorded no task.interrupted and no checkpoint.
"""

from __future__ import annotations

import math

import pytest

from armor_rx.errors import ConfigError
from armor_rx.session import SessionConfig
from armor_rx.session.config import MAX_STOP_TIMEOUT


@pytest.mark.parametrize("value", [math.inf, 1e12])
def test_a_stop_timeout_past_what_a_wait_can_take_is_a_config_error(value: float) -> None:
    with pytest.raises(ConfigError, match="stop_timeout"):
        SessionConfig(stop_timeout=value)


def test_a_day_is_still_a_stop_timeout() -> None:
    assert SessionConfig(stop_timeout=MAX_STOP_TIMEOUT).stop_timeout == MAX_STOP_TIMEOUT
