"""Fixtures for the resilience tests: the real Docker daemon, and one the test owns and may stop."""

from __future__ import annotations

import pytest

from tests.sinks.docker.conftest import engine, test_image  # noqa: F401 - fixtures
from tests.sinks.docker.test_engine_faults import IMAGE as OWN_DAEMON_IMAGE  # noqa: F401 - the image the own daemon has
from tests.sinks.docker.test_engine_faults import daemon  # noqa: F401 - a private dockerd the test stops and starts


@pytest.fixture
def image(test_image, monkeypatch):
    """Services this test starts run containers from the busybox test image."""
    monkeypatch.setenv("ARMOR_RX_DOCKER", "1")
    monkeypatch.setenv("ARMOR_RX_IMAGE", test_image)
    return test_image
