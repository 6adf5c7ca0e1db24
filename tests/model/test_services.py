"""Service declarations: parsing, validation, the recorded form, backoff."""

from __future__ import annotations

import pytest

from armor_rx.errors import ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.model.services import (
    HealthCheck,
    ServiceSpec,
    parse_health,
    parse_service_option,
    parse_services,
    services_payload,
)


def test_the_recorded_form_round_trips_through_a_frozen_event_payload():
    web = ServiceSpec("web", ["python", "-m", "http.server"], health=HealthCheck(port=8000, interval=2),
                      environment={"MODE": "dev"})
    event = TaskEvent.new("task.start.requested", "t", {"services": services_payload([web])})
    assert parse_services(event.payload["services"]) == (web,)  # lists came back as tuples, mappings as proxies


def test_a_mapping_of_name_to_settings_and_strings_are_accepted():
    found = parse_services({"web": "serve", "db": {"command": "db --run", "health": "tcp:5432", "max_restarts": 0}})
    assert [(s.name, s.command, s.health.kind) for s in found] == [("web", "serve", "process"),
                                                                    ("db", "db --run", "port")]
    assert found[1].health.port == 5432 and found[1].max_restarts == 0


@pytest.mark.parametrize("value, message", [
    ([{"name": "a b", "command": "x"}], "service name"),
    ([{"name": "a", "command": ""}], "shell string"),
    ([{"name": "a", "command": "x", "colour": "red"}], "unknown service setting"),
    ([{"name": "a", "command": "x", "health": {"port": 0}}], "TCP port"),
    ([{"name": "a", "command": "x", "health": {"timeout": 0}}], "timeout"),
    ([{"name": "a", "command": "x", "health": {"retries": 0}}], "retries"),
    ([{"name": "a", "command": "x", "health": {"every": 1}}], "unknown health check setting"),
    ([{"name": "a", "command": "x", "backoff": -1}], "backoff"),
    ([{"command": "x"}], "needs a 'name'"),
    ("web", "must be a list"),
])
def test_bad_declarations_say_what_is_wrong(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_services(value)


def test_cli_forms():
    assert parse_service_option("web=python -m http.server 8000") == ("web", "python -m http.server 8000")
    with pytest.raises(ConfigError, match="NAME=COMMAND"):
        parse_service_option("web")
    assert parse_health("tcp:8080") == HealthCheck(port=8080)
    assert parse_health("curl -f localhost") == HealthCheck(command="curl -f localhost")
    with pytest.raises(ConfigError, match="tcp:PORT"):
        parse_health("tcp:http")


def test_backoff_doubles_up_to_its_cap():
    spec = ServiceSpec("s", "x", backoff=0.5, backoff_max=3)
    assert [spec.backoff_for(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_probes():
    assert HealthCheck().probe() is None
    assert HealthCheck(command="ok").probe() == ["sh", "-c", "ok"]
    assert HealthCheck(command=("a", "b")).probe() == ["a", "b"]
    script = HealthCheck(port=8080, timeout=2).probe()[2]
    # netcat with -z, busybox nc (no -z), python, bash: whichever the image has, all on 127.0.0.1 inside the container.
    assert "nc -z -w 2 127.0.0.1 8080" in script and "-e true" in script and "/dev/tcp/127.0.0.1/8080" in script
