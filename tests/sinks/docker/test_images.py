"""The image cache on the real daemon: hit/miss, invalidation, TTL, GC, export/import."""

from __future__ import annotations

import time

import pytest

from armor_rx.sinks.docker.images import ImageCache, ImageSpec

pytestmark = [pytest.mark.docker]


@pytest.fixture
def context(tmp_path, test_image):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {test_image}\nARG FLAVOUR=plain\nCOPY app.txt /app.txt\nLABEL flavour=$FLAVOUR\n")
    (ctx / "app.txt").write_text("version 1\n")
    (ctx / "unrelated.md").write_text("notes\n")
    return ctx


@pytest.fixture
def cache(engine, tmp_path):
    events = []
    cache = ImageCache(engine, tmp_path / ".armor", emit=lambda kind, payload: events.append((kind, dict(payload))))
    cache.events = events
    yield cache
    for row in cache.images():
        if row["name"] in ("cachetest", "other"):
            engine.client.images.remove(row["tag"], force=True)


def test_hit_miss_and_invalidation_by_dependencies(cache, context):
    spec = ImageSpec("cachetest", context)
    first = cache.ensure(spec)
    assert not first.hit
    second = cache.ensure(spec)
    assert second.hit and second.tag == first.tag and second.image_id == first.image_id
    assert second.seconds < 0.05
    (context / "unrelated.md").write_text("more notes\n")  # not used by the Dockerfile
    assert cache.ensure(spec).hit
    (context / "app.txt").write_text("version 2\n")
    changed = cache.ensure(spec)
    assert not changed.hit and changed.tag != first.tag
    with_args = cache.ensure(ImageSpec("cachetest", context, build_args={"FLAVOUR": "fancy"}))
    assert not with_args.hit
    assert cache.engine.client.images.get(with_args.tag).labels["flavour"] == "fancy"
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (2, 3) and stats["images"] >= 3
    assert [k for k, _ in cache.events].count("image.cache.hit") == 2
    assert [k for k, _ in cache.events].count("image.cache.miss") == 3
    # Counters survive a new cache object on the same state directory.
    again = ImageCache(cache.engine, cache.path.parent.parent)
    assert again.stats()["hits"] == 2


def test_ttl_manual_invalidation_and_gc(cache, context):
    spec = ImageSpec("cachetest", context, ttl=0.5)
    cache.ensure(spec)
    assert cache.ensure(spec).hit
    time.sleep(0.6)
    assert not cache.ensure(spec).hit
    assert cache.invalidate(spec)
    assert not cache.ensure(spec).hit
    other = ImageSpec("other", context, build_args={"FLAVOUR": "other"})
    cache.ensure(other)
    time.sleep(0.01)
    cache.ensure(spec)  # spec is now the most recently used
    sizes = {r["tag"]: r["size"] for r in cache.images()}
    keep = cache.tag(spec)
    removed = cache.gc(cap_bytes=sizes[keep])
    assert cache.tag(other) in removed and keep not in removed
    assert cache.gc(cap_bytes=0) == [keep]
    assert not [r for r in cache.images() if r["name"] in ("cachetest", "other")]


def test_export_import_round_trip(cache, context, tmp_path):
    spec = ImageSpec("cachetest", context)
    built = cache.ensure(spec)
    archive = tmp_path / "images.tar"
    assert cache.export([built.tag], archive) > 0
    assert cache.invalidate(spec) == [built.tag]
    assert cache.import_(archive) == [built.tag]
    assert cache.ensure(spec).hit


@pytest.mark.parametrize("through", ["own-session", "service"])
def test_cli_image_verbs(context, tmp_path, engine, through, monkeypatch):
    import subprocess
    import sys

    state = str(tmp_path / "state")
    if through == "service":  # a service owns the state directory: the verbs go through it
        monkeypatch.setenv("ARMOR_RX_DOCKER", "1")
        assert subprocess.run([sys.executable, "-m", "armor_rx", "serve", "--state-dir", state], timeout=120).returncode == 0

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "armor_rx", "image", "--state-dir", state, *args], capture_output=True, text=True, timeout=120)

    spec = ["--name", "cachetest", "--context", str(context)]
    assert "built" in cli("ensure", *spec).stdout
    done = cli("ensure", *spec)
    assert " hit " in done.stdout, done.stderr
    assert "not logged" not in done.stderr  # with a service, the verbs use it rather than fight it for the state dir
    tag = done.stdout.split()[0]
    assert "hits 1  misses 1  hit rate 50.0%" in cli("stats").stdout
    archive = str(tmp_path / "x.tar")
    assert cli("export", "--out", archive, tag).returncode == 0
    assert cli("invalidate", *spec).stdout.strip() == tag
    assert cli("import", archive).stdout.strip() == tag
    assert cli("gc", "--cap", "0").stdout.strip() == tag
    assert not engine.client.images.list(name="armor-rx-cache/cachetest")
    events = subprocess.run([sys.executable, "-m", "armor_rx", "events", "--state-dir", state, "--kind", "image.*"],
                            capture_output=True, text=True, timeout=60).stdout
    assert "image." in events  # the cache's events reach the state directory's log either way


def test_a_changed_base_image_or_file_mode_is_a_miss(engine, tmp_path, test_image):
    from armor_rx.sinks.docker.rootfs import busybox_rootfs

    base = "armor-rx-test/base:1"
    engine.api.import_image_from_data(busybox_rootfs(), repository="armor-rx-test/base", tag="1")
    ctx = tmp_path / "ctx2"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY run.sh /run.sh\n")
    (ctx / "run.sh").write_text("echo hi\n")
    try:
        first = ImageCache(engine, tmp_path / ".armor").tag(ImageSpec("basetest", ctx))
        # The same tag re-imported with other content (a new layer on top).
        container = engine.client.containers.create(base, command=["true"])
        container.commit(repository="armor-rx-test/base", tag="1", changes=["LABEL changed=yes"])
        container.remove()
        second = ImageCache(engine, tmp_path / ".armor").tag(ImageSpec("basetest", ctx))
        assert second != first
        (ctx / "run.sh").chmod(0o755)
        third = ImageCache(engine, tmp_path / ".armor").tag(ImageSpec("basetest", ctx))
        assert third != second
    finally:
        engine.client.images.remove(base, force=True)


def test_a_changed_dockerignore_is_a_miss(cache, tmp_path, test_image, engine):
    ctx = tmp_path / "ignoring"
    (ctx / "src").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(f"FROM {test_image}\nCOPY src /src\n")
    (ctx / "src" / "app.txt").write_text("app\n")
    (ctx / "src" / "extra.txt").write_text("extra\n")
    (ctx / ".dockerignore").write_text("src/extra.txt\n")
    spec = ImageSpec("cachetest", ctx)
    first = cache.ensure(spec)
    # Dropping the pattern lets src/extra.txt into the image: a new build, not the old image.
    (ctx / ".dockerignore").write_text("# nothing ignored\n")
    second = cache.ensure(spec)
    assert not second.hit and second.tag != first.tag
    out = engine.client.containers.run(second.tag, ["cat", "/src/extra.txt"], remove=True, network_mode="none")
    assert out == b"extra\n"
    assert cache.ensure(spec).hit
