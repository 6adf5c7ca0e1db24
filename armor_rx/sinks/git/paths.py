"""Resolve paths that come from tasks, hooks, configs or users inside a worktree.

Every such path is hostile until proven otherwise: it is checked as text first
(cheap, platform-independent rules, so a path that would be dangerous on
Windows is refused on Linux too) and then resolved on disk, following
symlinks, and refused unless the result stays under the worktree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dulwich.index import validate_path_element_hfs, validate_path_element_ntfs

from armor_rx.errors import PathEscape

#: Longest accepted relative path, in UTF-8 bytes (Linux PATH_MAX is 4096 and
#: the worktree's own location needs some of it).
PATH_MAX = 1024
#: Longest accepted single component, in UTF-8 bytes (NAME_MAX on ext4/NTFS).
NAME_MAX = 255

# Windows resolves these names to devices in any directory and with any
# extension ("nul.txt"), so a file called that is unportable and a classic trick.
_DEVICES = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$", "clock$"]
    + [f"com{i}" for i in "123456789¹²³"]
    + [f"lpt{i}" for i in "123456789¹²³"]
)
_DRIVE = re.compile(r"^[A-Za-z]:")
# Zero-width and direction-control code points: invisible in a listing, and
# HFS+ ignores some of them, so '.g\u200cit' there is '.git'.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")


def _refuse(path: str, why: str) -> PathEscape:
    return PathEscape(
        f"refused path {path!r}: {why}; give a relative path inside the task's worktree "
        "made of plain names separated by '/' (for example 'src/app.py')"
    )


def check_relative_path(path: object) -> list[str]:
    """Check ``path`` as text and return its components.

    Raises :class:`PathEscape` for: non-strings, empty paths, NUL and control
    characters, invisible (zero-width, bidi-control) characters, absolute
    paths, drive (``C:``) and UNC (``\\\\host``) forms,
    ``..`` components, ``.git`` components, Windows device names, components
    ending in a dot or space (Windows strips them), and over-long names.
    ``.`` components and repeated separators are dropped.
    """
    if not isinstance(path, str):
        raise PathEscape(f"refused path {path!r}: it is a {type(path).__name__}, not a string")
    if path == "":
        raise _refuse(path, "it is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise _refuse(path, "it contains NUL or a control character")
    if _INVISIBLE.search(path):
        raise _refuse(path, "it contains an invisible (zero-width or direction-control) character")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(path, "it is not valid Unicode (lone surrogate)") from None
    if len(encoded) > PATH_MAX:
        raise _refuse(path, f"it is {len(encoded)} bytes long (limit {PATH_MAX})")
    if path.startswith(("/", "\\")):
        raise _refuse(path, "it is absolute (or a UNC path)")
    if _DRIVE.match(path):
        raise _refuse(path, "it has a drive letter")
    # Backslash is a separator on Windows; treating it as one everywhere means
    # '..\\x' cannot slip past the '..' rule.
    parts: list[str] = []
    for part in re.split(r"[/\\]", path):
        if part in ("", "."):
            continue
        if part == "..":
            raise _refuse(path, "it contains '..'")
        if len(part.encode("utf-8")) > NAME_MAX:
            raise _refuse(path, f"component {part[:20]!r}... is longer than {NAME_MAX} bytes")
        if ":" in part:
            raise _refuse(path, f"component {part!r} contains ':' (drive or stream syntax)")
        if part.endswith((".", " ")):
            raise _refuse(path, f"component {part!r} ends with a dot or space")
        if part.lower() == ".git" or part.lower().startswith("git~"):
            raise _refuse(path, "it reaches into '.git', which holds the repository itself")
        stem = part.split(".", 1)[0].rstrip(" ").lower()
        if stem in _DEVICES:
            raise _refuse(path, f"component {part!r} is a Windows device name")
        parts.append(part)
    return parts


def resolve_inside(root: str | os.PathLike[str], path: object) -> Path:
    """Resolve ``path`` against ``root`` and return the real location.

    The result is fully resolved (symlinks followed, as far as the path
    exists) and guaranteed to be ``root`` itself or under it. Raises
    :class:`PathEscape` when the text is refused (see
    :func:`check_relative_path`) or when a symlink leads outside ``root``.
    The path does not need to exist.
    """
    parts = check_relative_path(path)
    real_root = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(real_root.joinpath(*parts)))
    if candidate != real_root and real_root not in candidate.parents:
        raise _refuse(str(path), f"it resolves to {candidate}, outside {real_root} (through a symlink)")
    # A symlink inside the worktree may lead into its '.git': check where it landed too.
    landed = candidate.relative_to(real_root).parts
    if any(part.lower() == ".git" or part.lower().startswith("git~") for part in landed):
        raise _refuse(str(path), f"it resolves to {candidate}, inside '.git' (through a symlink)")
    return candidate


__all__ = ["NAME_MAX", "PATH_MAX", "check_relative_path", "printable", "resolve_inside"]


def printable(path: str) -> str:
    """``path`` as it may go into an event or a JSON record.

    Git names are bytes; one that is not UTF-8 is held as a str with
    surrogates (``os.fsdecode``), which JSON cannot carry. Such bytes are
    shown as ``\\xNN`` escapes (``caf\\xe9.txt``); valid names are returned unchanged.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


def means_dot_git(name: str) -> bool:
    """Whether ``name`` means ``.git`` on a case-insensitive, NTFS or HFS+ filesystem.

    Such entries in a tree are how checkouts get hooks planted in them; git's
    fsck rejects them, so they are never recorded or written.
    """
    raw = os.fsencode(name)
    # dulwich's HFS check refuses any undecodable name; HFS+ cannot store one,
    # so only its decodable characters could spell '.git' there.
    readable = raw.decode("utf-8", "ignore").encode("utf-8")
    # A name with nothing decodable in it (b"\xff\xfe") spells nothing there either.
    return not (validate_path_element_ntfs(raw) and (not readable or validate_path_element_hfs(readable)))
