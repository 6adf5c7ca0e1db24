"""``armor-rx image ...``: the image cache (registered by :mod:`armor_rx.commands.docker`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from armor_rx.commands._rows import add_json_option, print_json
from armor_rx.errors import ConfigError


def register(verbs: Any, common: argparse.ArgumentParser) -> dict[str, Callable[[argparse.Namespace], int]]:
    image = verbs.add_parser("image", parents=[common], help="the image cache: stats, ensure, warm, invalidate, gc, export, import; local: an image that needs no registry")
    actions = image.add_subparsers(dest="image_action", metavar="ACTION")
    actions.required = True

    stats = actions.add_parser("stats", parents=[common], help="hit/miss counters and cached images")
    add_json_option(stats, "the counters and the cached images as one JSON object")

    def spec_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", required=True, help="cache name of the image, e.g. python-tools")
        p.add_argument("--context", required=True, metavar="DIR", help="build context directory")
        p.add_argument("--dockerfile", default="Dockerfile", help="Dockerfile inside the context")
        p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--ttl", type=float, metavar="SECONDS", help="rebuild when older than this")
        p.add_argument("--git-commit", action="store_true", help="rebuild on every new commit of the context's repository")

    spec_options(actions.add_parser("ensure", parents=[common], help="build the image or reuse the cached one; prints its tag"))
    spec_options(actions.add_parser("invalidate", parents=[common], help="drop every cached build of an image name"))
    warm = actions.add_parser("warm", parents=[common], help="ensure every image listed in a JSON file ahead of time")
    warm.add_argument("file", metavar="SPECS.json", help='a list of {"name", "context", "dockerfile"?, "build_args"?, "ttl"?}')
    gc = actions.add_parser("gc", parents=[common], help="remove least recently used cached images down to a storage cap")
    gc.add_argument("--cap", required=True, metavar="SIZE", help="e.g. 5g")
    gc.add_argument("--ttl", type=float, metavar="SECONDS", help="also remove images built longer ago than this")
    export = actions.add_parser("export", parents=[common], help="save images to a tar file (docker save) for an air-gapped machine")
    export.add_argument("--out", required=True, metavar="FILE")
    export.add_argument("tags", nargs="+", metavar="TAG")
    load = actions.add_parser("import", parents=[common], help="load images from a tar file made by 'image export'")
    load.add_argument("file", metavar="FILE")
    actions.add_parser("local", parents=[common],
                       help="make the small local image armor-rx/busybox:latest (no registry needed: for offline machines and the demo)")
    return {"image": cmd_image}


def _spec(args: argparse.Namespace) -> Any:
    from armor_rx.sinks.docker.images import ImageSpec

    build_args = {}
    for item in args.build_arg:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--build-arg {item!r} must be KEY=VALUE")
        build_args[key] = value
    return ImageSpec(args.name, Path(args.context), dockerfile=args.dockerfile, build_args=build_args, ttl=args.ttl, git_commit=args.git_commit)


class _RemoteCache:
    """The image cache of the state directory's running service, with :class:`ImageCache`'s methods."""

    def __init__(self, remote: Any) -> None:
        self.remote = remote

    def stats(self) -> dict[str, Any]:
        found: dict[str, Any] = self.remote.image_cache("stats")
        self._entries = found.pop("entries", [])
        return found

    def images(self) -> list[dict[str, Any]]:
        return list(getattr(self, "_entries", None) or self.remote.image_cache("stats")["entries"])

    def ensure(self, spec: Any) -> Any:
        from armor_rx.service.images import spec_out
        from armor_rx.sinks.docker.images import CacheResult

        return CacheResult(**self.remote.image_cache("ensure", {"spec": _absolute(spec_out(spec))}))

    def warm(self, specs: Any) -> list[Any]:
        from armor_rx.service.images import spec_out
        from armor_rx.sinks.docker.images import CacheResult

        return [CacheResult(**r) for r in self.remote.image_cache("warm", {"specs": [_absolute(spec_out(s)) for s in specs]})]

    def invalidate(self, *, name: str) -> list[str]:
        return list(self.remote.image_cache("invalidate", {"name": name}))

    def gc(self, cap: int, *, ttl: float | None = None) -> list[str]:
        return list(self.remote.image_cache("gc", {"cap_bytes": cap, "ttl": ttl}))

    def export(self, tags: Any, out: str) -> int:
        return int(self.remote.image_cache("export", {"tags": list(tags), "path": str(Path(out).resolve())})["bytes"])

    def import_(self, path: str) -> list[str]:
        return list(self.remote.image_cache("import", {"path": str(Path(path).resolve())}))


def _absolute(spec: dict[str, Any]) -> dict[str, Any]:
    return {**spec, "context": str(Path(spec["context"]).resolve())}


@contextlib.contextmanager
def _cache(args: argparse.Namespace) -> Iterator[Any]:
    """The cache on this state directory; its events go to the session's log when the directory is free."""
    from armor_rx.errors import StateDirLocked
    from armor_rx.session import Armor
    from armor_rx.sinks.docker import Engine
    from armor_rx.sinks.docker.images import ImageCache
    from armor_rx.sinks.statedir import StateDir

    from armor_rx.cli import live_service

    remote = live_service(args)
    if remote is not None:
        # The service owns the state directory (and the cache in it): it does the work.
        with remote:
            yield _RemoteCache(remote)
        return
    state = StateDir.resolve(args.state_dir, args.repo)
    engine = Engine.connect()
    armor = None
    if armor is None:
        try:
            armor = Armor(state_dir=state, git=False).open()
        except StateDirLocked as exc:
            print(f"armor-rx: warning: {exc}; cache events are not logged", file=sys.stderr)
    try:
        def emit(kind: str, payload: Any) -> None:
            if armor is not None:
                armor.emit(None, kind, payload)

        yield ImageCache(engine, state, emit=emit, progress=lambda line: print(f"  | {line}", file=sys.stderr))
    finally:
        if armor is not None:
            armor.close()
        engine.close()


def _local_image() -> int:
    """Build the busybox image on the engine itself: it needs no registry and no state directory."""
    from armor_rx.sinks.docker.rootfs import local_image

    tag = local_image(timeout=60)
    print(tag)
    print(f"use it with --image {tag}, or for every task: export ARMOR_RX_IMAGE={tag}", file=sys.stderr)
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from armor_rx.sinks.docker.images import ImageSpec
    from armor_rx.sinks.docker.spec import parse_bytes

    if args.image_action == "local":
        return _local_image()
    with _cache(args) as cache:
        action = args.image_action
        if action == "stats":
            stats = cache.stats()
            rows = cache.images()
            if args.json:
                print_json({**stats, "entries": rows})
            else:
                rate = "-" if stats["hit_rate"] is None else f"{100 * stats['hit_rate']:.1f}%"
                print(f"hits {stats['hits']}  misses {stats['misses']}  hit rate {rate}  images {stats['images']}  {stats['bytes'] / 2**20:.1f} MiB")
                for row in rows:
                    print(f"  {row['tag']:<60} {row['size'] / 2**20:>8.1f} MiB")
        elif action == "ensure":
            result = cache.ensure(_spec(args))
            print(f"{result.tag}  {'hit' if result.hit else 'built'}  {result.seconds:.3f}s")
        elif action == "invalidate":
            removed = cache.invalidate(name=args.name)
            print("\n".join(removed) if removed else f"no cached image named {args.name}")
        elif action == "warm":
            try:
                listed = orjson.loads(Path(args.file).read_bytes())
                specs = [ImageSpec(item["name"], Path(item["context"]), dockerfile=item.get("dockerfile", "Dockerfile"),
                                   build_args=item.get("build_args", {}), ttl=item.get("ttl")) for item in listed]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"cannot read image specs from {args.file}: {exc}") from None
            for result in cache.warm(specs):
                print(f"{result.tag}  {'hit' if result.hit else 'built'}")
        elif action == "gc":
            removed = cache.gc(parse_bytes(args.cap), ttl=args.ttl)
            print("\n".join(removed) if removed else "nothing to remove")
        elif action == "export":
            size = cache.export(args.tags, args.out)
            print(f"wrote {args.out} ({size / 2**20:.1f} MiB)")
        elif action == "import":
            print("\n".join(cache.import_(args.file)))
    return 0
