"""Secrets by reference, masking, and redaction of credentials in keys and free text."""

from __future__ import annotations

import doctest
import random

import orjson
import pytest

import armor_rx.model.secrets
from armor_rx.errors import ConfigError
from armor_rx.model.events import TaskEvent
from armor_rx.model.secrets import Masker, Secret, is_sensitive_key, parse_secret_option, redact_text, resolve, resolve_all


def test_docstring_examples():
    result = doctest.testmod(armor_rx.model.secrets)
    assert result.attempted >= 6 and result.failed == 0


@pytest.mark.parametrize("key", ["DB_PASS", "db_password", "PGPASSWORD", "apiKey", "api_key", "GITHUB_TOKEN", "aws_secret_access_key",
                                 "AWS_ACCESS_KEY_ID", "client_secret", "Authorization", "privateKey", "MYSQL_PWD", "session_cookie"])
def test_keys_that_hold_secrets_are_sensitive(key):
    assert is_sensitive_key(key)


@pytest.mark.parametrize("key", ["path", "bypass", "compass", "passage", "keyboard", "task_id", "secret_refs", "image", "author", "monkey"])
def test_ordinary_keys_are_not(key):
    assert not is_sensitive_key(key)


def test_values_under_other_names_never_reach_the_event():
    event = TaskEvent.new("task.created", "t1", {"metadata": {"DB_PASS": "s3cr3t-db", "repo": "https://bob:hunter22@git.example/r.git",
                                                               "note": "curl -H 'Authorization: Bearer abcdefgh12345678'"}})
    raw = orjson.dumps(event.to_dict(), default=dict)
    for leaked in (b"s3cr3t-db", b"hunter22", b"abcdefgh12345678"):
        assert leaked not in raw
    assert b"https://bob:[redacted]@git.example/r.git" in raw


def test_text_without_credentials_is_untouched():
    for text in ("user@host:~$ ls", "mailto:a@b.c", "see https://example.com/path", "git@github.com:o/r.git", ""):
        assert redact_text(text) == text


def test_references_parse_and_resolve(tmp_path):
    (tmp_path / "key").write_text("from-a-file\n")
    assert parse_secret_option("A=env://X") == ("A", "env://X")
    got = resolve_all({"A": "env://X", "B": f"file://{tmp_path / 'key'}", "C": Secret("direct")}, environ={"X": "from-env"})
    assert {k: v.reveal() for k, v in got.items()} == {"A": "from-env", "B": "from-a-file", "C": "direct"}


@pytest.mark.parametrize("text, message", [
    ("NOEQUALS", "NAME=env://"),
    ("1BAD=env://X", "environment variable name"),
    ("A=plain-value", "not a reference"),
    ("A=env://", "not a reference"),
    ("PATH=env://X", "would replace a variable"),
    ("home=env://X", "would replace a variable"),
    ("LD_PRELOAD=file:///x", "would replace a variable"),
    ("GIT_CONFIG_COUNT=env://X", "would replace a variable"),
])
def test_bad_options_are_one_line_errors(text, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_secret_option(text)
    assert "\n" not in str(caught.value)


def test_unreadable_references_name_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="'NOPE' is not set"):
        resolve("A", "env://NOPE", environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        resolve("A", f"file://{tmp_path / 'missing'}")


def test_masker_catches_a_secret_split_at_every_point():
    """Invariant: no chunking of the output lets a secret value through. Cases: every split of 3 texts, 300 random chunkings."""
    secrets = {"TOKEN": Secret("hunter2-xyz"), "SHORT": Secret("abc"), "INNER": Secret("hunter2")}
    texts = ["before hunter2-xyz after", "abcabc hunter2 hunter2-xyzhunter2-xyz", "hunter2-xy no match, hunter2 yes"]
    cases = 0
    for text in texts:
        whole = Masker(secrets)
        expected = whole.feed(text) + whole.flush()
        for cut in range(len(text) + 1):
            m = Masker(secrets)
            got = m.feed(text[:cut]) + m.feed(text[cut:]) + m.flush()
            assert got == expected
            cases += 1
        rng = random.Random(7)
        for _ in range(100):
            m, out, i = Masker(secrets), "", 0
            while i < len(text):
                n = rng.randint(1, 4)
                out += m.feed(text[i:i + n])
                i += n
            assert out + m.flush() == expected
            cases += 1
        assert "hunter2" not in expected and "abc" not in expected.replace("[secret:SHORT]", "")
    assert cases > 300


def test_masker_without_secrets_passes_text_through():
    m = Masker({})
    assert not m and m.feed("anything") == "anything" and m.flush() == ""


def test_masker_never_splits_a_secret_whose_start_recurs_at_its_end():
    """Invariant (review finding): chunked masking equals masking the whole text at once, also for
    values whose first characters recur at their end ("hunter2h", "abcXabc") or overlap another
    secret. Before the fix, a chunk ending right after such a value ("printf %s $TOKEN") was cut
    at the recurring start and the whole value reached the log. Cases: 4 fixed, 3000 random."""
    for value, text in (("hunter2h", "pw=hunter2h"), ("abcXabc", "abcXabc"), ("aXa", "xaXa")):
        m = Masker({"T": Secret(value)})
        assert m.feed(text) + m.flush() == text.replace(value, "[secret:T]")
    m = Masker({"A": Secret("abcd"), "B": Secret("cdxy")})
    assert m.feed("abcd") + m.feed(" ok") + m.flush() == "[secret:A] ok"
    rng = random.Random(13)
    cases = 0
    for _ in range(3000):
        secrets = {f"S{i}": Secret("".join(rng.choice("ab") for _ in range(rng.randint(3, 6)))) for i in range(rng.randint(1, 3))}
        text = "".join(rng.choice("abc") for _ in range(rng.randint(0, 30)))
        whole = Masker(secrets)
        expected = whole._pattern.sub(lambda mt: f"[secret:{whole._names[mt.group(0)]}]", text)  # type: ignore[union-attr]
        m, out, i = Masker(secrets), "", 0
        while i < len(text):
            n = rng.randint(1, 5)
            out += m.feed(text[i:i + n])
            i += n
        assert out + m.flush() == expected, (secrets, text)
        cases += 1
    assert cases == 3000


@pytest.mark.parametrize("text, leaked", [
    ("BEARER abcdefgh12345678", "abcdefgh12345678"),  # the old fast path looked for a lower-case "earer" only
    ("AUTHORIZATION=letmein99", "letmein99"),
    ("FTP://anon:pw-1234@files.example", "pw-1234"),
    ("line one\nclone https://ci:tok3n@git.example/r.git\nline three", "tok3n"),
])
def test_credentials_are_caught_whatever_their_case_or_place(text, leaked):
    assert leaked not in redact_text(text)
    assert "[redacted]" in redact_text(text)


def test_non_ascii_text_is_redacted_too_even_with_letters_that_fold_to_ascii():
    assert "hunter22" not in redact_text("│ ✓ cloned https://bob:hunter22@git.example/r.git")
    # 'ı' (dotless i) is an 'i' to a case-insensitive pattern, and not to str.lower()
    assert "s3cr3t-value" not in redact_text("authorızation: s3cr3t-value")
