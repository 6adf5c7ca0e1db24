"""Engine detection, connection errors, degraded options, and the sandbox spec."""

from __future__ import annotations

import dataclasses

import pytest

from armor_rx.errors import ConfigError, DockerUnavailable
from armor_rx.sinks.docker import Engine, SandboxSpec
from armor_rx.sinks.docker.images import _dockerfile_sources
from armor_rx.sinks.docker.spec import parse_bytes


def test_unreachable_engine_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")
    with pytest.raises(DockerUnavailable) as caught:
        Engine.connect(timeout=5)
    text = str(caught.value)
    assert f"unix://{tmp_path}/missing.sock (from DOCKER_HOST)" in text
    assert "scripts/dockerd.sh" in text and "\n" not in text


def test_spec_defaults_are_hardened_and_overridable():
    spec = SandboxSpec()
    assert (spec.network, spec.cap_drop, spec.no_new_privileges, spec.read_only, spec.user) == ("none", ("ALL",), True, True, "auto")
    changed = spec.with_overrides({"network": "bridge", "mem_limit": "2g", "cap_add": ["NET_BIND_SERVICE"]})
    assert changed.network == "bridge" and changed.mem_limit == 2 * 1024**3 and changed.cap_add == ("NET_BIND_SERVICE",)
    assert spec.network == "none"
    with pytest.raises(ConfigError, match="unknown sandbox setting"):
        spec.with_overrides({"privileged": True})
    with pytest.raises(ConfigError):
        SandboxSpec(pids_limit=0)
    assert parse_bytes("512m") == 512 * 1024**2 and parse_bytes(10) == 10
    with pytest.raises(ConfigError):
        parse_bytes("lots")


def test_dockerfile_sources():
    text = 'FROM x AS b\nCOPY --chown=1:1 a.txt b/ /dst/\nADD ["c d", "/e"]\nCOPY --from=b /x /y\nRUN echo\n'
    assert _dockerfile_sources(text) == ["a.txt", "b/", "c d"]


@pytest.mark.docker
def test_detects_the_engine(engine):
    info = engine.info
    assert info.flavour == "Docker Engine"
    assert info.api_version == engine.api.api_version
    assert tuple(int(x) for x in info.api_version.split(".")) >= (1, 24)
    assert info.supported["no_new_privileges"] and info.supported["pids_limit"] and info.supported["read_only"]
    assert set(info.to_payload()) >= {"flavour", "server_version", "api_version", "unsupported"}


@pytest.mark.docker
@pytest.mark.usefixtures("cleanup_containers")
def test_unsupported_options_are_degraded_with_a_note(engine, sandbox, tmp_path):
    from armor_rx.sinks.docker.containers import (
        SessionIdentity,
        create_task_container,
        task_labels,
    )

    old = dataclasses.replace(engine.info, supported={**engine.info.supported, "nano_cpus": False, "pids_limit": False},
                              notes=("pids_limit is not supported by this engine (API 1.0); it is left out",))
    limited = Engine(engine.client, info=old)
    labels = task_labels("degraded", SessionIdentity.current(), request_id="r1", worktree=None, state_dir=None)
    container, effective = create_task_container(limited, sandbox, task_id="degraded", labels=labels, worktree=None)
    host = engine.api.inspect_container(container.id)["HostConfig"]
    assert host["NanoCpus"] == 0 and host["CpuQuota"] == 200_000 and host["CpuPeriod"] == 100_000
    assert not host["PidsLimit"]
    assert any("pids_limit" in note for note in effective["degraded"])


class _FakeAPI:
    def __init__(self, api_version):
        self.api_version = api_version


class _FakeClient:
    """Only what detect() reads: the answers of /info and /version (unit test, no daemon)."""

    def __init__(self, info, version, api_version="1.41"):
        self._info, self._version, self.api = info, version, _FakeAPI(api_version)

    def info(self):
        return self._info

    def version(self):
        return self._version


@pytest.mark.parametrize(
    "info, version, flavour",
    [
        ({"OperatingSystem": "Debian GNU/Linux 12 (bookworm)", "SecurityOptions": ["name=seccomp,profile=default"]}, {"Components": [{"Name": "Engine"}]}, "Docker Engine"),
        ({"OperatingSystem": "Docker Desktop", "SecurityOptions": []}, {"Components": [{"Name": "Engine"}]}, "Docker Desktop"),
        ({"OperatingSystem": "Ubuntu 22.04", "SecurityOptions": ["name=seccomp,profile=default", "name=rootless", "name=cgroupns"]}, {"Components": [{"Name": "Engine"}]}, "rootless Docker"),
        ({"OperatingSystem": "fedora", "SecurityOptions": []}, {"Components": [{"Name": "Podman Engine"}]}, "Podman"),
    ],
)
def test_flavour_detection(info, version, flavour):
    from armor_rx.sinks.docker.engine import detect

    assert detect(_FakeClient(info, version)).flavour == flavour


def test_old_api_and_missing_cgroup_controllers_degrade_with_notes():
    from armor_rx.sinks.docker.engine import detect

    found = detect(_FakeClient({"OperatingSystem": "x", "MemoryLimit": False, "PidsLimit": False}, {"Components": []}, api_version="1.24"))
    assert found.supported["memory_limit"] is False and found.supported["pids_limit"] is False
    assert any("memory_limit" in note for note in found.notes)
