"""Resolving user-given revisions and small ref helpers shared by the git sink."""

from __future__ import annotations

from dulwich.errors import NotCommitError
from dulwich.objects import Commit, ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from armor_rx.errors import GitError


def resolve_commit(repo: Repo, rev: str) -> tuple[bytes, bytes | None]:
    """Resolve ``rev`` to ``(commit sha, full branch ref or None)``.

    ``rev`` may be ``HEAD`` (followed to the branch it points at), a branch or
    tag name, a full ref, or a (possibly abbreviated) commit sha. The branch
    ref is returned when ``rev`` names a local branch, so callers can merge
    back into it later. Raises :class:`GitError` when nothing matches.
    """
    if not rev or any(ord(c) < 32 for c in rev):
        raise GitError(f"cannot resolve revision {rev!r}: it is empty or has control characters")
    raw = rev.encode()
    if raw == b"HEAD":
        chain, sha = repo.refs.follow(Ref(b"HEAD"))
        if sha is None:
            raise GitError(
                f"repository {repo.path} has no commits yet (HEAD is unborn); "
                "make a first commit before starting tasks"
            )
        target = chain[-1]
        return sha, target if target.startswith(b"refs/heads/") else None
    for candidate in (raw, b"refs/heads/" + raw, b"refs/tags/" + raw, b"refs/remotes/" + raw):
        if candidate.startswith(b"refs/") and Ref(candidate) in repo.refs:
            sha = repo.refs[Ref(candidate)]
            obj = repo[sha]
            while not isinstance(obj, Commit):  # peel annotated tags
                target_sha = getattr(obj, "object", (None, None))[1]
                if target_sha is None:
                    raise GitError(f"revision {rev!r} does not point at a commit")
                obj = repo[target_sha]
            branch = candidate if candidate.startswith(b"refs/heads/") else None
            return obj.id, branch
    if 4 <= len(raw) <= 40 and all(c in b"0123456789abcdef" for c in raw.lower()):
        matches = [sha for sha in _shas_with_prefix(repo, raw.lower())]
        if len(matches) == 1:
            try:
                commit = repo[ObjectID(matches[0])]
            except KeyError:
                pass
            else:
                if isinstance(commit, Commit):
                    return commit.id, None
                raise GitError(f"revision {rev!r} is a {commit.type_name.decode()}, not a commit")
        elif len(matches) > 1:
            raise GitError(f"revision {rev!r} is ambiguous ({len(matches)} objects); give more digits")
    raise GitError(
        f"cannot resolve revision {rev!r} in {repo.path}: no such branch, tag or commit; "
        "'git branch -a' lists the branches"
    )


def _shas_with_prefix(repo: Repo, prefix: bytes) -> list[bytes]:
    if len(prefix) == 40:
        return [prefix] if ObjectID(prefix) in repo.object_store else []
    found: list[bytes] = []
    for sha in repo.object_store.iter_prefix(prefix):
        found.append(sha)
        if len(found) > 1:
            break
    return found


def read_commit(repo: Repo, sha: bytes) -> Commit:
    """The commit object ``sha``; :class:`GitError` if it is missing or not a commit."""
    try:
        obj = repo[ObjectID(sha)]
    except KeyError:
        raise GitError(f"commit {sha.decode()} is missing from {repo.path}; run 'git fsck'") from None
    if not isinstance(obj, Commit):
        raise NotCommitError(sha)
    return obj
