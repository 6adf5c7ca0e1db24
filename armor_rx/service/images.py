"""The image cache over the service: ``POST /v1/images/{action}``.

The cache lives on the service's engine and in its state directory; a client
names build contexts and tar files by absolute host path (the service runs as
the same user on the same machine). Build progress goes to the service's log;
the cache's events (hits, misses, builds) go to the event log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from armor_rx.errors import BadRequest, ConfigError

ACTIONS = ("stats", "ensure", "warm", "invalidate", "gc", "export", "import")


def spec_out(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "context": str(spec.context), "dockerfile": spec.dockerfile, "build_args": dict(spec.build_args),
            "files": list(spec.files) if spec.files is not None else None, "ttl": spec.ttl, "git_commit": spec.git_commit}


def _path(value: Any, what: str) -> Path:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise BadRequest(f"{what} must be a path (a non-empty string), not {value!r:.60}")
    path = Path(value)
    if not path.is_absolute():
        raise BadRequest(f"{what} {value!r} must be an absolute path: the service does not share the client's working directory")
    return path


def spec_in(data: Any) -> Any:
    from armor_rx.sinks.docker.images import ImageSpec

    if not isinstance(data, Mapping):
        raise BadRequest(f"an image spec must be an object, not {type(data).__name__}")
    build_args = data.get("build_args") or {}
    if not isinstance(build_args, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in build_args.items()):
        raise BadRequest("'build_args' must map names to strings")
    files = data.get("files")
    if files is not None and (not isinstance(files, list) or not all(isinstance(f, str) for f in files)):
        raise BadRequest("'files' must be a list of globs")
    ttl = data.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl < 0):
        raise BadRequest(f"'ttl' must be a number of seconds, not {ttl!r}")
    name, dockerfile = data.get("name"), data.get("dockerfile", "Dockerfile")
    if not isinstance(name, str) or not isinstance(dockerfile, str):
        raise BadRequest("an image spec needs a string 'name' (and 'dockerfile', if given)")
    try:
        return ImageSpec(name, _path(data.get("context"), "'context'"), dockerfile=dockerfile, build_args=dict(build_args),
                         files=tuple(files) if files is not None else None, ttl=ttl, git_commit=bool(data.get("git_commit")))
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None


def result_out(result: Any) -> dict[str, Any]:
    return dataclasses.asdict(result)  # type: ignore[no-any-return]


def run_action(cache: Any, action: str, body: Mapping[str, Any]) -> Any:
    """One cache operation, as the CLI's ``image`` verbs do it (blocking: call it off the event loop)."""
    if action == "stats":
        return {**cache.stats(), "entries": cache.images()}
    if action == "ensure":
        return result_out(cache.ensure(spec_in(body.get("spec"))))
    if action == "warm":
        specs = body.get("specs")
        if not isinstance(specs, list):
            raise BadRequest("'specs' must be a list of image specs")
        return [result_out(r) for r in cache.warm([spec_in(s) for s in specs])]
    if action == "invalidate":
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("'name' must be the cache name of an image")
        return cache.invalidate(name=name)
    if action == "gc":
        cap = body.get("cap_bytes")
        ttl = body.get("ttl")
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise BadRequest(f"'cap_bytes' must be a number of bytes, not {cap!r}")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))):
            raise BadRequest(f"'ttl' must be a number of seconds, not {ttl!r}")
        return cache.gc(cap, ttl=ttl)
    if action == "export":
        tags = body.get("tags")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadRequest("'tags' must be a list of image tags")
        return {"bytes": cache.export(tags, _path(body.get("path"), "'path'"))}
    if action == "import":
        return cache.import_(_path(body.get("path"), "'path'"))
    raise BadRequest(f"no image action {action!r}; one of: {', '.join(ACTIONS)}")
