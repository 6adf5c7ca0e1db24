"""Secrets by reference (issue 14 item 8), on the real daemon, in process and through the service.

Invariant: a secret's value reaches the command that was given it, and nothing
armor writes or shows — event log, snapshot, service log, container settings
and labels, recorded output — ever holds the value itself.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys

import pytest

from armor_rx.errors import ConfigError
from tests.service.conftest import armor_cli, kill_service

pytestmark = [pytest.mark.docker]

VALUE = "s3cr3t-Value-9f2c"
FILE_VALUE = "file-held-Secret-77ab"


@pytest.fixture
def image(test_image, monkeypatch):
    monkeypatch.setenv("ARMOR_RX_DOCKER", "1")
    monkeypatch.setenv("ARMOR_RX_IMAGE", test_image)
    return test_image


@pytest.fixture(params=["in-process", "service"])
def armor(request, repo, image):
    if request.param == "in-process":
        from armor_rx import Armor

        with Armor(repo, docker=True) as session:
            yield session
    else:
        from armor_rx import connect

        with connect(repo) as remote:
            yield remote
        kill_service(repo / ".armor", signal.SIGTERM)


def _everything_armor_wrote(state_dir) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(state_dir.rglob("*")) if p.is_file() and not p.is_socket())


def test_a_secret_reaches_the_command_and_nothing_else(armor, repo, image, engine, tmp_path, monkeypatch):
    monkeypatch.setenv("ARMOR_TEST_TOKEN", VALUE)
    key = tmp_path / "key"
    key.write_text(FILE_VALUE + "\n")
    armor.create_task("s1")
    armor.start("s1", image=image, secrets={"TOKEN": "env://ARMOR_TEST_TOKEN"})
    seen: list[str] = []
    # The command proves it got the value by its digest (the command line itself is recorded).
    out = armor.exec("s1", ["sh", "-c", 'printf %s "$TOKEN" | sha256sum; echo "token=$TOKEN"; echo "key=$KEY"'],
                     secrets={"KEY": f"file://{key}"}, on_output=lambda e: seen.append(str(e.payload["data"])))
    assert out.payload["exit_code"] == 0
    text = "".join(seen)
    assert hashlib.sha256(VALUE.encode()).hexdigest() in text
    assert "token=[secret:TOKEN]" in text and "key=[secret:KEY]" in text
    # A command's own secret is for that command only; the task's stay for every command.
    seen.clear()
    out = armor.exec("s1", ["sh", "-c", 'echo "key=${KEY:-none} token=$TOKEN"'], on_output=lambda e: seen.append(str(e.payload["data"])))
    assert "".join(seen).strip() == "key=none token=[secret:TOKEN]"
    container = engine.client.containers.get(armor.container("s1")["id"])
    inspected = repr(container.attrs).encode()
    assert VALUE.encode() not in inspected and FILE_VALUE.encode() not in inspected
    started = [e for e in armor.history(task_id="s1") if e.kind == "task.start.requested"][-1]
    assert dict(started.payload["secret_refs"]) == {"TOKEN": "env://ARMOR_TEST_TOKEN"}
    armor.complete("s1")
    written = _everything_armor_wrote(repo / ".armor")
    assert b"env://ARMOR_TEST_TOKEN" in written  # the reference is recorded ...
    assert VALUE.encode() not in written and FILE_VALUE.encode() not in written  # ... the value never


def test_a_reference_that_cannot_be_read_is_refused_before_anything_starts(armor, image):
    armor.create_task("s2")
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        armor.start("s2", image=image, secrets={"TOKEN": "env://NOT_SET_ANYWHERE"})
    assert armor.task("s2").state.value == "pending"


def test_cli_run_takes_secrets_by_reference_and_masks_them(repo, image, engine):
    env = {"ARMOR_TEST_TOKEN": VALUE}
    done = armor_cli("run", "--repo", repo, "--task", "cli-secret", "--secret", "TOKEN=env://ARMOR_TEST_TOKEN", "--",
                     "sh", "-c", 'echo "got $TOKEN"', env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "got [secret:TOKEN]\n"
    kill_service(repo / ".armor", signal.SIGTERM)
    assert VALUE.encode() not in _everything_armor_wrote(repo / ".armor")


@pytest.mark.parametrize("option", ["TOKEN=plain-value", "TOKEN", "1X=env://A"])
def test_cli_refuses_a_value_on_the_command_line_in_one_line(repo, option):
    done = subprocess.run([sys.executable, "-m", "armor_rx", "run", "--repo", str(repo), "--task", "t", "--secret", option, "--", "true"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "secret" in done.stderr


def test_resume_in_a_new_session_reads_references_again_or_asks_for_them(repo, monkeypatch):
    from armor_rx import Armor, Secret

    monkeypatch.setenv("ARMOR_TEST_TOKEN", VALUE)
    with Armor(repo) as first:
        for task in ("by-ref", "by-value"):
            first.create_task(task)
        first.start("by-ref", secrets={"TOKEN": "env://ARMOR_TEST_TOKEN"})
        first.start("by-value", secrets={"TOKEN": Secret(VALUE)})
        for task in ("by-ref", "by-value"):
            first.interrupt(task, "the test closes the session")
    with Armor(repo) as second:  # a new session: it holds no values
        second.resume("by-ref")
        assert second.secrets.for_exec("by-ref", "no-request")["TOKEN"].reveal() == VALUE
        with pytest.raises(ConfigError, match="give it again: --secret TOKEN="):
            second.resume("by-value")
        assert second.task("by-value").state.value == "interrupted"
        second.resume("by-value", secrets={"TOKEN": Secret("new")})
        assert second.secrets.for_exec("by-value", "no-request")["TOKEN"].reveal() == "new"
