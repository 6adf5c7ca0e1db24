"""The image cache: build once, reuse by content digest.

An image is tagged ``armor-rx-cache/<name>:<digest>``, where the digest covers
the Dockerfile, the context files it uses (the sources of its COPY/ADD lines,
or an explicit list of globs) with their modes, the ``.dockerignore`` files,
the ids of its base images, the build args and, when asked, the context's
git HEAD. A lookup whose tag exists is a hit; anything that changes a
dependency changes the digest and is a miss. Entries also expire after a TTL,
can be invalidated by hand, are garbage-collected to a storage cap (least
recently used first), and travel between machines with export/import
(``docker save`` / ``docker load``). Counters are kept under
``<state_dir>/docker/image-cache.json`` and every lookup is reported through
``emit`` (``image.cache.hit`` / ``image.cache.miss``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from armor_rx.errors import ConfigError, DockerError, ImageBuildFailed, ImageNotFound
from armor_rx.sinks._atomic import write_atomic
from armor_rx.sinks.docker.engine import Engine

REPOSITORY = "armor-rx-cache"
LABEL = "armor.cache"
_RECHECK_SECONDS = 30.0

CacheEmit = Callable[[str, Mapping[str, Any]], object]


@dataclass(frozen=True)
class ImageSpec:
    """What defines an image: a build context, its Dockerfile, the files it uses, build args."""

    name: str
    context: Path
    dockerfile: str = "Dockerfile"
    build_args: Mapping[str, str] = field(default_factory=dict)
    files: tuple[str, ...] | None = None  # globs in the context; None: the COPY/ADD sources
    ttl: float | None = None
    git_commit: bool = False

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name) or self.name != self.name.lower():
            raise ConfigError(f"image name {self.name!r} must be lowercase letters, digits, '-', '_' or '.'")


@dataclass(frozen=True)
class CacheResult:
    tag: str
    image_id: str
    hit: bool
    digest: str
    seconds: float


def _dockerfile_sources(text: str) -> list[str]:
    """Context paths a Dockerfile's COPY/ADD lines read (multi-stage ``--from`` copies excluded)."""
    sources: list[str] = []
    for line in text.replace("\\\n", " ").splitlines():
        words = line.strip().split(None, 1)
        if len(words) < 2 or words[0].upper() not in ("COPY", "ADD"):
            continue
        rest = words[1].strip()
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        if any(a.startswith("--from") for a in args):
            continue
        args = [a for a in args if not a.startswith("--")]
        sources.extend(args[:-1])
    return sources


def _base_images(text: str) -> list[str]:
    """The images a Dockerfile builds FROM, leaving out references to its own earlier stages."""
    stages: set[str] = set()
    bases: list[str] = []
    for line in text.replace("\\\n", " ").splitlines():
        words = line.strip().split()
        if len(words) < 2 or words[0].upper() != "FROM":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if not args:
            continue
        if args[0].lower() not in stages and args[0].lower() != "scratch":
            bases.append(args[0])
        if len(args) >= 3 and args[1].upper() == "AS":
            stages.add(args[2].lower())
    return bases


class ImageCache:
    """Content-addressed image builds with metrics, invalidation, GC and export/import."""

    def __init__(self, engine: Engine, state_dir: str | Path, *, emit: CacheEmit | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.path = Path(state_dir) / "docker" / "image-cache.json"
        self.emit = emit
        self.progress = progress
        self._lock = threading.Lock()
        self._present: dict[str, tuple[str, float]] = {}  # tag -> (image id, when checked)
        self._hashes: dict[str, tuple[int, int, str]] = {}  # file -> (mtime_ns, size, sha256)
        self._bases: dict[str, tuple[str, float]] = {}  # base image ref -> (image id, when checked)
        self._data = self._load()

    # -- persistence ---------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        data.setdefault("hits", 0)
        data.setdefault("misses", 0)
        data.setdefault("entries", {})
        return data

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Not fsynced: a cache index a crash loses only costs misses.
        write_atomic(self.path, json.dumps(self._data, sort_keys=True).encode(), durable=False)

    # -- keys ----------------------------------------------------------------------
    def _file_hash(self, path: Path) -> str:
        st = path.stat()
        key = str(path)
        known = self._hashes.get(key)
        if known is not None and known[0] == st.st_mtime_ns and known[1] == st.st_size:
            return known[2]
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        self._hashes[key] = (st.st_mtime_ns, st.st_size, h.hexdigest())
        return h.hexdigest()

    def _used_files(self, spec: ImageSpec, dockerfile_text: str) -> list[Path]:
        context = spec.context.resolve()
        patterns = list(spec.files) if spec.files is not None else _dockerfile_sources(dockerfile_text)
        found: set[Path] = set()
        for pattern in patterns:
            matches = [context] if pattern in (".", "./") else list(context.glob(pattern.lstrip("/")))
            for match in matches:
                if match.is_dir():
                    found.update(p for p in match.rglob("*") if p.is_file() and ".git" not in p.relative_to(context).parts)
                elif match.is_file():
                    found.add(match)
        return sorted(found)

    def digest(self, spec: ImageSpec) -> str:
        """The content digest of everything that defines ``spec``'s image."""
        context = spec.context.resolve()
        dockerfile = context / spec.dockerfile
        try:
            text = dockerfile.read_text()
        except OSError as exc:
            raise ConfigError(f"image {spec.name!r}: cannot read its Dockerfile {dockerfile}: {exc.strerror}") from None
        h = hashlib.sha256(b"armor-image-v1\0" + text.encode())
        for ignore in (context / ".dockerignore", dockerfile.with_name(dockerfile.name + ".dockerignore")):
            # What the ignore files leave out of the build context changes the
            # image even when no file it names does (a pattern removed lets a
            # file into a COPY).
            if ignore.is_file():
                h.update(f"\0ignore {ignore.relative_to(context)}\0{self._file_hash(ignore)}".encode())
        for path in self._used_files(spec, text):
            # COPY keeps permissions, so a chmod is a change of the image too.
            mode = path.stat().st_mode & 0o777
            h.update(f"\0{path.relative_to(context)}\0{mode:o}\0{self._file_hash(path)}".encode())
        for base in _base_images(text):
            # A re-tagged or re-imported base image makes every image built on it stale.
            h.update(f"\0from {base}={self._base_id(base)}".encode())
        for key in sorted(spec.build_args):
            h.update(f"\0arg {key}={spec.build_args[key]}".encode())
        if spec.git_commit:
            from dulwich.repo import Repo

            try:
                h.update(b"\0git " + Repo.discover(str(context)).head())
            except Exception as exc:  # dulwich raises several types for "no repository"
                raise ConfigError(f"image {spec.name!r}: git_commit=True but {context} is not in a git repository ({exc})") from None
        return h.hexdigest()

    def _base_id(self, ref: str) -> str:
        now = time.monotonic()
        known = self._bases.get(ref)
        if known is not None and now - known[1] < _RECHECK_SECONDS:
            return known[0]
        try:
            image_id = str(self.engine.client.images.get(ref).id)
        except docker.errors.ImageNotFound:
            image_id = "absent"  # the build will pull it; once present its id counts
        except docker.errors.APIError:
            image_id = "unknown"
        self._bases[ref] = (image_id, now)
        return image_id

    def tag(self, spec: ImageSpec) -> str:
        return f"{REPOSITORY}/{spec.name}:{self.digest(spec)[:24]}"

    # -- lookups -----------------------------------------------------------------------
    def _image_id(self, tag: str, *, fresh: bool = False) -> str | None:
        now = time.monotonic()
        known = self._present.get(tag)
        if known is not None and not fresh and now - known[1] < _RECHECK_SECONDS:
            return known[0]
        try:
            image_id = str(self.engine.client.images.get(tag).id)
        except docker.errors.ImageNotFound:
            self._present.pop(tag, None)
            return None
        self._present[tag] = (image_id, now)
        return image_id

    def ensure(self, spec: ImageSpec) -> CacheResult:
        """The image for ``spec``: reused when its digest is cached and fresh, built otherwise."""
        started = time.perf_counter()
        digest = self.digest(spec)
        tag = f"{REPOSITORY}/{spec.name}:{digest[:24]}"
        with self._lock:
            entry = self._data["entries"].get(tag)
            image_id = self._image_id(tag)
            expired = bool(image_id and spec.ttl is not None and entry and time.time() - entry["built"] > spec.ttl)
            hit = image_id is not None and not expired
            self._data["hits" if hit else "misses"] += 1
        if not hit:
            image_id = self._build(spec, tag, digest)
        assert image_id is not None
        with self._lock:
            entry = self._data["entries"].setdefault(tag, {"name": spec.name, "digest": digest, "built": time.time()})
            entry["last_used"] = time.time()
            self._save()
            counters = {"hits": self._data["hits"], "misses": self._data["misses"]}
        seconds = time.perf_counter() - started
        self._report("image.cache.hit" if hit else "image.cache.miss",
                     {"name": spec.name, "tag": tag, "expired": expired, "seconds": round(seconds, 4), **counters})
        return CacheResult(tag=tag, image_id=image_id, hit=hit, digest=digest, seconds=seconds)

    def _build(self, spec: ImageSpec, tag: str, digest: str) -> str:
        labels = {LABEL: "1", f"{LABEL}.name": spec.name, f"{LABEL}.digest": digest, f"{LABEL}.created": f"{time.time():.3f}"}
        last: list[str] = []
        try:
            for chunk in self.engine.api.build(path=str(spec.context.resolve()), dockerfile=spec.dockerfile, tag=tag, rm=True,
                                               forcerm=True, buildargs=dict(spec.build_args) or None, labels=labels, decode=True):
                if "error" in chunk:
                    raise ImageBuildFailed(f"image {spec.name!r} did not build: {str(chunk['error']).strip()}; last output: {' | '.join(last[-3:])}")
                line = str(chunk.get("stream", "")).strip()
                if line:
                    last.append(line)
                    if self.progress is not None:
                        self.progress(line)
        except docker.errors.APIError as exc:
            raise ImageBuildFailed(f"image {spec.name!r} did not build: {exc.explanation or exc}") from None
        image_id = self._image_id(tag, fresh=True)
        if image_id is None:
            raise ImageBuildFailed(f"image {spec.name!r}: the build ended but {tag} is not on the engine")
        with self._lock:
            self._data["entries"][tag] = {"name": spec.name, "digest": digest, "built": time.time()}
        return image_id

    def warm(self, specs: Iterable[ImageSpec]) -> list[CacheResult]:
        """Ensure every image ahead of time (e.g. before going offline)."""
        return [self.ensure(spec) for spec in specs]

    def _report(self, kind: str, payload: Mapping[str, Any]) -> None:
        if self.emit is not None:
            self.emit(kind, payload)

    # -- inventory, invalidation, gc ---------------------------------------------------------
    def images(self) -> list[dict[str, Any]]:
        """Cached images on the engine, with size and last use."""
        rows = []
        for image in self.engine.client.images.list(filters={"label": LABEL}):
            for tag in image.tags:
                if not tag.startswith(REPOSITORY + "/"):
                    continue
                entry = self._data["entries"].get(tag, {})
                labels = image.labels or {}
                rows.append({"tag": tag, "id": image.id, "size": int(image.attrs.get("Size", 0)),
                             "name": labels.get(f"{LABEL}.name"), "built": entry.get("built") or float(labels.get(f"{LABEL}.created", 0)),
                             "last_used": entry.get("last_used", 0.0)})
        return rows

    def stats(self) -> dict[str, Any]:
        rows = self.images()
        hits, misses = self._data["hits"], self._data["misses"]
        return {"hits": hits, "misses": misses, "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
                "images": len(rows), "bytes": sum(r["size"] for r in rows)}

    def _remove_tag(self, tag: str) -> bool:
        try:
            self.engine.client.images.remove(tag, noprune=False)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # a container uses it: keep it
                return False
            raise DockerError(f"cannot remove cached image {tag}: {exc.explanation or exc}") from None
        with self._lock:
            self._present.pop(tag, None)
            self._data["entries"].pop(tag, None)
            self._save()
        self._report("image.cache.removed", {"tag": tag})
        return True

    def invalidate(self, spec: ImageSpec | None = None, *, name: str | None = None) -> list[str]:
        """Drop the cached image(s) of ``spec`` (every digest of its name) or of ``name``; returns removed tags."""
        wanted = spec.name if spec is not None else name
        if wanted is None:
            raise ConfigError("invalidate needs an image spec or a name")
        return [row["tag"] for row in self.images() if row["name"] == wanted and self._remove_tag(row["tag"])]

    def gc(self, cap_bytes: int, *, ttl: float | None = None) -> list[str]:
        """Remove expired images, then least recently used ones until the cache fits in ``cap_bytes``."""
        rows = sorted(self.images(), key=lambda r: (r["last_used"], r["built"]))
        removed = []
        now = time.time()
        if ttl is not None:
            for row in list(rows):
                if now - row["built"] > ttl and self._remove_tag(row["tag"]):
                    removed.append(row["tag"])
                    rows.remove(row)
        # Layers shared between tags are counted once per tag: the cap is conservative.
        total = sum(r["size"] for r in rows)
        for row in rows:
            if total <= cap_bytes:
                break
            if self._remove_tag(row["tag"]):
                removed.append(row["tag"])
                total -= row["size"]
        return removed

    # -- air-gapped machines -------------------------------------------------------------------
    def export(self, tags: Iterable[str], path: str | Path) -> int:
        """Write the images (``docker save``) to a tar file; returns its size in bytes."""
        tags = list(tags)
        if not tags:
            raise ConfigError("export needs at least one image tag")
        for tag in tags:
            if self._image_id(tag, fresh=True) is None:
                raise ImageNotFound(tag)
        target = Path(path)
        tmp = target.with_name(target.name + ".part")
        with tmp.open("wb") as f:
            # GET /images/get?names=... saves several images into one archive
            # (the SDK's get_image takes only one).
            api = self.engine.api
            response = api._get(api._url("/images/get"), params={"names": tags}, stream=True)
            api._raise_for_status(response)
            for chunk in response.iter_content(chunk_size=1 << 20):
                f.write(chunk)
        os.replace(tmp, target)
        return target.stat().st_size

    def import_(self, path: str | Path) -> list[str]:
        """Load images from a tar made by :meth:`export` (``docker load``); returns their tags."""
        source = Path(path)
        if not source.is_file():
            raise ConfigError(f"no image archive at {source}")
        loaded: list[str] = []
        with source.open("rb") as f:
            for chunk in self.engine.api.load_image(f):
                if "error" in chunk:
                    raise DockerError(f"cannot load images from {source}: {chunk['error']}")
                stream = str(chunk.get("stream", ""))
                if stream.startswith("Loaded image:"):
                    loaded.append(stream.split(":", 1)[1].strip())
        with self._lock:
            for tag in loaded:
                self._present.pop(tag, None)
                self._data["entries"].setdefault(tag, {"name": tag.split("/")[-1].split(":")[0], "built": time.time(), "imported": True})
            self._save()
        self._report("image.cache.imported", {"path": str(source), "tags": loaded})
        return loaded
