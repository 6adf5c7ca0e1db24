"""Review 12: service declarations with numbers the supervisor cannot wait or compute with are refused up front.

An interval of 1e12 s made the supervisor's wait raise OverflowError, NaN made it spin without ever checking,
an infinite timeout broke the port probe, and the backoff of restart 1025+ overflowed a float: each ended the
supervision thread quietly (a log line), leaving the service unwatched and the task running.
"""

from __future__ import annotations

import math

import pytest

from armor_rx.errors import ConfigError
from armor_rx.model.services import HealthCheck, ServiceSpec


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e12])
@pytest.mark.parametrize("key", ["interval", "timeout", "start_period"])
def test_a_health_check_refuses_seconds_it_cannot_wait(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key):
        HealthCheck.from_payload({"command": "true", key: value})


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e12])
@pytest.mark.parametrize("key", ["backoff", "backoff_max", "stable_after"])
def test_a_service_refuses_seconds_it_cannot_wait(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key):
        ServiceSpec.from_payload({"name": "web", "command": "true", key: value})


def test_the_backoff_of_a_late_restart_is_capped_not_an_overflow() -> None:
    spec = ServiceSpec.from_payload({"name": "web", "command": "true", "max_restarts": 5000,
                                     "backoff": 0.01, "backoff_max": 2})
    assert spec.backoff_for(1) == 0.01
    assert spec.backoff_for(5000) == 2.0
