"""Docker sink: task start vs raw docker, and image-cache lookups, side by side in one run.

- task start to the end of its first exec (container create + start + exec of
  ``true``, through a session with the DockerEffect) vs ``docker run --rm
  --network none IMAGE true`` by the CLI and by the SDK directly;
- image-cache lookup time and hit rate over 100 lookups of 5 specs.

Needs DOCKER_HOST (``eval "$(bash scripts/dockerd.sh)"``) and busybox-static
for the local test image (no registry needed).
"""

from __future__ import annotations

import io
import random
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

IMAGE = "armor-rx-bench/busybox:latest"
ROUNDS = 10

TARGETS = [
    ("task_start_vs_cli_ratio", "<=", 1.2),
    ("cache_lookup_p50_ms", "<=", 5.0),
    ("cache_hit_rate_after_warmup", ">=", 0.95),
]


def _rootfs() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "tmp", "workspace", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        data = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in ("sh", "true", "sleep", "cat", "echo"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000::/tmp:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return buf.getvalue()


def _median(fn: Any, rounds: int = ROUNDS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run() -> dict[str, Any]:
    from armor_rx.session import Armor
    from armor_rx.sinks.docker import DockerEffect, Engine, SandboxSpec
    from armor_rx.sinks.docker.images import ImageCache, ImageSpec

    engine = Engine.connect()
    engine.api.import_image_from_data(_rootfs(), repository=IMAGE.split(":")[0], tag="latest")
    client = engine.client
    out: dict[str, Any] = {"engine": f"{engine.info.flavour} {engine.info.server_version} (API {engine.info.api_version})"}

    cli = shutil.which("docker")
    if cli:
        out["raw_cli_run_s"] = _median(lambda: subprocess.run([cli, "run", "--rm", "--network", "none", IMAGE, "true"], check=True, capture_output=True))
    out["raw_sdk_run_s"] = _median(lambda: client.containers.run(IMAGE, ["true"], network_mode="none", remove=True))

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / ".armor"
        effect = DockerEffect(engine, spec=SandboxSpec(image=IMAGE, wall_clock=600), state_dir=state)
        counter = iter(range(10_000))
        starts: list[float] = []
        removal: list[float] = []
        with Armor(state_dir=state, effects=[effect], fsync="batch") as armor:
            def task_start() -> None:
                task = f"bench-{next(counter)}"
                t0 = time.perf_counter()
                armor.create_task(task)
                armor.start(task)
                armor.request(task, "exec.requested", {"command": ["true"]}).result()
                t1 = time.perf_counter()
                armor.complete(task)  # removal: timed apart, as "docker run --rm" is not split
                removal.append(time.perf_counter() - t1)
                starts.append(t1 - t0)

            for _ in range(ROUNDS + 1):
                task_start()
        out["task_start_to_exec_s"] = statistics.median(starts[1:])
        out["task_remove_s"] = statistics.median(removal)
        if cli:
            out["task_start_vs_cli_ratio"] = out["task_start_to_exec_s"] / out["raw_cli_run_s"]
            # "docker run --rm" also removes its container: the like-for-like whole-life figure.
            out["task_start_and_remove_vs_cli_ratio"] = (out["task_start_to_exec_s"] + out["task_remove_s"]) / out["raw_cli_run_s"]
        out["task_start_vs_sdk_ratio"] = out["task_start_to_exec_s"] / out["raw_sdk_run_s"]

        # Image cache: 5 specs (differing in build args), 100 random lookups after warm-up.
        ctx = Path(tmp) / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM {IMAGE}\nARG V=0\nCOPY app.txt /app.txt\nLABEL v=$V\n")
        (ctx / "app.txt").write_text("app\n")
        cache = ImageCache(engine, state)
        specs = [ImageSpec("bench", ctx, build_args={"V": str(i)}) for i in range(5)]
        t0 = time.perf_counter()
        cache.warm(specs)
        out["cache_warm_5_builds_s"] = time.perf_counter() - t0
        before = cache.stats()
        rng = random.Random(7)
        lookups = []
        for _ in range(100):
            result = cache.ensure(rng.choice(specs))
            lookups.append(result.seconds * 1000)
        after = cache.stats()
        hits = after["hits"] - before["hits"]
        out["cache_lookup_p50_ms"] = statistics.median(lookups)
        out["cache_lookup_p99_ms"] = sorted(lookups)[98]
        out["cache_hit_rate_after_warmup"] = hits / 100
        for spec in specs:
            cache.invalidate(spec)
    engine.close()
    return out


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:<36} {value}")
