"""Errors read as one line a person can act on, whatever library raised them."""

from __future__ import annotations

import pytest

from armor_rx.errors import EffectFailed, readable


def test_a_raw_tuple_from_the_docker_sdk_reads_as_a_sentence():
    requests = pytest.importorskip("requests")
    urllib3 = pytest.importorskip("urllib3")
    lost = requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", FileNotFoundError(2, "No such file or directory")))
    assert str(lost).startswith("('Connection aborted.'")  # what users saw
    message = str(EffectFailed("docker", lost, 3))
    assert message == "effect for 'docker' failed after 3 attempt(s): Connection aborted: No such file or directory"


def test_a_lock_left_behind_says_which_file_and_what_to_do():
    from dulwich.file import FileLocked

    text = readable(FileLocked("/r/.git/index", "/r/.git/index.lock"))
    assert text.startswith("/r/.git/index is locked (/r/.git/index.lock exists)") and "remove it" in text
    assert "(" not in text.split(")")[-1]


@pytest.mark.parametrize("error, expected", [
    (ValueError("plain message\nsecond line"), "plain message"),
    (OSError(28, "No space left on device", "/state/events"), "No space left on device (/state/events)"),
    (RuntimeError(), "RuntimeError"),
])
def test_ordinary_errors_keep_their_first_line(error, expected):
    assert readable(error) == expected
