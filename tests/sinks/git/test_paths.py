from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from armor_rx.errors import PathEscape
from armor_rx.sinks.git.paths import resolve_inside


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("paths")
    root = base / "wt"
    (root / "a" / "b").mkdir(parents=True)
    (base / "outside").mkdir()
    os.symlink(base / "outside", root / "out")  # absolute link leaving the root
    os.symlink("../..", root / "a" / "up")  # relative link leaving the root
    os.symlink("b", root / "a" / "in")  # link staying inside
    (root / ".git").mkdir()
    os.symlink(".git", root / "innocent")  # link into the repository's own files
    os.symlink("../.git/hooks", root / "a" / "hooks")
    return root


@pytest.mark.parametrize(
    "bad",
    ["../x", "a/../../x", "/etc/passwd", "C:\\x", "c:x", "\\\\server\\share", "//server/share", "a\x00b",
     "a\nb", "CON", "a/nul.txt", "COM1", "lpt9.log", "a/b.", "a/b ", ".git/config", "a/.GIT/x",
     "x" * 300, "a/" * 600, "out/secret", "a/up/etc", "a\\..\\..\\x", "", "a:b",
     "innocent", "innocent/config", "a/hooks/post-checkout", ".g\u200cit/config", "a\u202eb", "\ufeffx",
     "x\u2060y", "\u200b"],
)
def test_refused(tree: Path, bad: str) -> None:
    with pytest.raises(PathEscape):
        resolve_inside(tree, bad)


@pytest.mark.parametrize("good, expected", [("a/b/c.txt", "a/b/c.txt"), ("./a//b", "a/b"), ("a/in/x", "a/b/x"), (".", "")])
def test_accepted(tree: Path, good: str, expected: str) -> None:
    root = Path(os.path.realpath(tree))
    assert resolve_inside(tree, good) == (root / expected if expected else root)


def test_error_message_names_the_path(tree: Path) -> None:
    with pytest.raises(PathEscape, match=r"'\.\./x'.*relative path inside"):
        resolve_inside(tree, "../x")


_PARTS = hs.sampled_from(["a", "b", "..", ".", "out", "up", "in", "CON", "x.txt", "", "C:", "\\", "\x00", " ", "a.", "~",
                          "innocent", "hooks", ".g\u200cit", "\u200b", "\ufeff"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hs.lists(_PARTS, max_size=8), hs.sampled_from(["/", "\\"]), hs.booleans())
def test_no_accepted_path_escapes(tree: Path, parts: list[str], sep: str, absolute: bool) -> None:
    text = ("/" if absolute else "") + sep.join(parts)
    try:
        resolved = resolve_inside(tree, text)
    except PathEscape:
        return
    root = Path(os.path.realpath(tree))
    real = Path(os.path.realpath(resolved))
    assert real == root or root in real.parents, (text, real)
    assert ".git" not in [p.lower() for p in real.relative_to(root).parts], (text, real)
    assert not any("\u200b" <= c <= "\u200f" or c == "\ufeff" for c in text), text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hs.text(max_size=40))
def test_no_accepted_text_escapes(tree: Path, text: str) -> None:
    try:
        resolved = resolve_inside(tree, text)
    except PathEscape:
        return
    root = Path(os.path.realpath(tree))
    assert resolved == root or root in resolved.parents
    assert "\x00" not in text and ".." not in text.replace("\\", "/").split("/")
