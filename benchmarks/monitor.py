"""The monitor under a flood: 20 running tasks and a flood of ``exec.output`` events into the service.

Three attachments to the same flood, measured in one run, rounds interleaved:

- ``none``: nothing follows the stream (the service's own cost of the flood);
- ``follow``: a plain client following the stream with no screen (the latency baseline);
- ``monitor``: ``armor-rx monitor`` in a real terminal (tmux, 160x45), at its default 10 fps cap.

Reported: the flood rate the service reached and its CPU per 100k events with each
attachment (ratio ``monitor / none``: what watching costs the service), the
monitor's CPU (% of one core) and redraws per second during the flood, and
event-to-screen latency p50/p99 (an event's ``ts`` to the frame that first
included it) against event-to-client latency of the plain follower. The
monitor's buffer drops what it cannot draw; its skipped count is reported too.

The flood comes from inside the service process (this file, ``--serve``): the
service's public ``emit`` waits for each event to be durable (~1k/s), so the
producer records events the way a container's output is recorded, without
waiting, at a target of 50k events/s; what the machine reaches is reported.
No Docker is needed; tmux is. Every process started here is stopped and every
temp dir removed.

Results (2 shared vCPUs, other agents' test suites running beside it, 3 rounds of 4 s floods, medians;
the producer, the service, tmux and the monitor share the two cores):

=================================================  ===========  ================================================
measure                                            value        context
=================================================  ===========  ================================================
flood (target 50k ev/s): reached, no client        8.8k ev/s    the producer and service saturate the machine
flood: reached with the monitor / none             0.65x        a plain follower: 0.61x (5.3k ev/s)
flood: service CPU per event, monitor / follower   0.96x        watching costs the service what any client does
flood: monitor CPU                                 13% of 1     never starved the service; 0 events skipped
flood: monitor redraws                             3.3 fps      capped at 10; fewer when the machine is full
flood: event-to-screen p50 / p99                   5.4 / 7.2 s  the plain follower's: 12.9 / 18.7 s (a backlog
                                                                in the service's stream, not the screen)
steady 2k ev/s: service CPU per event, mon / fol   1.24x
steady: monitor CPU, redraws                       17%, 6.6 fps
steady: event-to-screen p50 / p99                  93 / 584 ms  follower 5 / 119 ms; the screen adds ~0.9 frame
=================================================  ===========  ================================================

The benchmark found the redraw ticker sleeping a whole period after each frame
(6-7 fps at a 10 fps cap); it keeps deadlines now. A frame of 160x45 costs
prompt_toolkit ~50 ms of Python, which competes with the monitor's reader
thread for the GIL; that is the screen's share of the steady-state latency.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

TASKS = 20
FLOOD_RATE = 50_000  # the flood; this machine's service reaches what it can and that is reported
STEADY_RATE = 2_000  # a busy but sustainable rate: latency here is the monitor's own, not a backlog's
FLOOD_SECONDS = 4.0
FRAME = 0.1  # the monitor's default redraw period (--max-fps 10)
ROUNDS = int(os.environ.get("ARMOR_BENCH_ROUNDS", "3"))
MODES = ("none", "follow", "monitor")

TARGETS = [
    ("flood_monitor_vs_follow_service_cpu_per_event_ratio", "<=", 1.2),  # watching costs the service no more than any follower
    ("flood_monitor_fps", "<=", 10.5),  # redraws stay capped (10 fps) however fast events come
    # What the screen adds to the stream's own latency, in frame periods (at 10 fps a frame is 100 ms).
    ("steady_monitor_latency_over_follow_p50_frames", "<=", 2.0),
]


# -- the flood service (a separate process: python benchmarks/monitor.py --serve STATE REPO) ------------
def serve(state: Path, repo: Path) -> int:
    from armor_rx.model.events import TaskEvent
    from armor_rx.service.server import Service, ServiceConfig

    service = Service(ServiceConfig(state_dir=state, repo=repo, idle_timeout=None, docker=False))
    control = state / "bench"
    control.mkdir(parents=True, exist_ok=True)

    def producer() -> None:
        while service.armor is None:
            time.sleep(0.05)
        armor = service.armor
        for n in range(TASKS):
            armor.create_task(f"task-{n:02d}")
            armor.start(f"task-{n:02d}")
        (control / "ready").write_text("1")
        done: set[str] = set()
        while True:
            for order in sorted(control.glob("flood-*.json")):
                if order.name in done:
                    continue
                done.add(order.name)
                spec = json.loads(order.read_text())
                rate, seconds = spec["rate"], spec["seconds"]
                cpu0, t0 = os.times(), time.perf_counter()
                sent, last = 0, None
                tick = 0.005
                while (elapsed := time.perf_counter() - t0) < seconds:
                    due = int(rate * elapsed) - sent
                    for _ in range(max(0, due)):
                        task = f"task-{sent % TASKS:02d}"
                        last = armor.pipeline.record(TaskEvent.new("exec.output", task, {"stream": "stdout", "data": f"line {sent}\n"}))
                        sent += 1
                    if due <= 0:
                        time.sleep(tick)
                if last is not None:
                    last.result()
                elapsed = time.perf_counter() - t0
                cpu1 = os.times()
                cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
                (control / (order.stem + ".done")).write_text(json.dumps(
                    {"sent": sent, "elapsed": elapsed, "cpu": cpu, "last_seq": armor.log.last_seq}))
            time.sleep(0.05)

    threading.Thread(target=producer, daemon=True).start()
    return asyncio.run(service.run())


# -- helpers ----------------------------------------------------------------------------------------
def _git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env)
    (path / "README.md").write_text("bench\n")
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(path), "commit", "-qm", "initial"], check=True, env=env)
    return path


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _flood(state: Path, n: int, rate: int) -> dict[str, Any]:
    order = state / "bench" / f"flood-{n:03d}.json"
    order.write_text(json.dumps({"rate": rate, "seconds": FLOOD_SECONDS}))
    done = order.with_suffix(".done")
    _wait(done.exists, FLOOD_SECONDS + 120, "the flood to finish")
    return dict(json.loads(done.read_text()))


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class Follower:
    """A plain stream client (no screen): event-to-client latency."""

    def __init__(self, repo: Path) -> None:
        from armor_rx.client.sync import RemoteArmor

        self.client = RemoteArmor(repo, autostart=False)
        self.start = int(self.client.health()["last_seq"]) + 1
        self.latencies: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for key, value in self.client.follow("*", from_seq=self.start):
                if key == "event":
                    self.latencies.append(time.time() - value.ts)
        except Exception:  # noqa: BLE001 - closed at the end of the round
            pass

    def close(self) -> None:
        self.client.close()
        self.thread.join(5)


class MonitorInTmux:
    """``armor-rx monitor`` in its own tmux server, writing its metrics every half second."""

    def __init__(self, repo: Path, tmp: Path) -> None:
        self.server = f"armor-bench-monitor-{uuid.uuid4().hex[:8]}"
        self.metrics = tmp / f"{self.server}.json"
        command = " ".join(shlex.quote(str(a)) for a in (sys.executable, "-m", "armor_rx", "monitor", "--repo", repo,
                                                        "--metrics", self.metrics, "--history", "500"))
        env = {**os.environ, "TERM": "xterm-256color", "XDG_STATE_HOME": str(tmp / "xdg")}
        subprocess.run(["tmux", "-L", self.server, "-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "45", command],
                       check=True, env=env)
        self.read = _wait(self._read, 60, "the monitor's first metrics")
        _wait(lambda: self._read().get("frames", 0) > 0 and "attached" in self._screen(), 60, "the monitor to attach")
        self.pid = int(self._read()["pid"])

    def _screen(self) -> str:
        return subprocess.run(["tmux", "-L", self.server, "capture-pane", "-p"], capture_output=True, text=True).stdout

    def _read(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.metrics.read_text()))
        except (OSError, ValueError):
            return {}

    def close(self) -> dict[str, Any]:
        subprocess.run(["tmux", "-L", self.server, "send-keys", "q"], check=False)
        try:
            _wait(lambda: not Path(f"/proc/{self.pid}").exists(), 30, "the monitor to quit")
        finally:
            subprocess.run(["tmux", "-L", self.server, "kill-server"], check=False, capture_output=True)
        return self._read()


# -- one round of one mode --------------------------------------------------------------------------
def one(mode: str, rate: int, repo: Path, state: Path, tmp: Path, n: int) -> dict[str, Any]:
    follower = monitor = None
    if mode == "follow":
        follower = Follower(repo)
    elif mode == "monitor":
        monitor = MonitorInTmux(repo, tmp)
        before, cpu_before = monitor._read(), _cpu_seconds(monitor.pid)
    flood = _flood(state, n, rate)
    out: dict[str, Any] = {"rate": flood["sent"] / flood["elapsed"], "service_cpu_per_100k": flood["cpu"] / flood["sent"] * 100_000}
    if follower is not None:
        _wait(lambda: follower.latencies and len(follower.latencies) >= flood["sent"], 60, "the follower to catch up")
        follower.close()
        out.update(p50=_pct(follower.latencies, 0.5), p99=_pct(follower.latencies, 0.99))
    if monitor is not None:
        _wait(lambda: monitor._read().get("last_seq", 0) >= flood["last_seq"], 60, "the monitor to show the last event")
        after, cpu_after = monitor._read(), _cpu_seconds(monitor.pid)
        span = after["elapsed"] - before["elapsed"]
        out.update(monitor_cpu_pct=100 * (cpu_after - cpu_before) / span, fps=(after["frames"] - before["frames"]) / span,
                   skipped=after["skipped"] + after["lagged"] - before["skipped"] - before["lagged"],
                   applied=after["applied"] - before["applied"])
        final = monitor.close()
        out.update(p50=final.get("latency_p50"), p99=final.get("latency_p99"))
    return out


def run() -> dict[str, Any]:
    if shutil.which("tmux") is None:
        raise RuntimeError("tmux is needed (apt-get install tmux)")
    tmp = Path(tempfile.mkdtemp(prefix="armor-bench-monitor-"))
    service: subprocess.Popen[bytes] | None = None
    try:
        repo = _git_repo(tmp / "repo")
        state = repo / ".armor"
        service = subprocess.Popen([sys.executable, __file__, "--serve", str(state), str(repo)], stdout=subprocess.DEVNULL,
                                   stderr=open(tmp / "service.err", "wb"))
        _wait(lambda: (state / "bench" / "ready").exists(), 120, "the flood service and its 20 tasks")
        levels = {"flood": FLOOD_RATE, "steady": STEADY_RATE}
        results: dict[tuple[str, str], list[dict[str, Any]]] = {(lv, m): [] for lv in levels for m in MODES}
        n = 0
        for r in range(ROUNDS):
            for level, rate in levels.items():
                for mode in MODES[r % len(MODES):] + MODES[:r % len(MODES)]:
                    n += 1
                    results[level, mode].append(one(mode, rate, repo, state, tmp, n))
    finally:
        if service is not None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(30)
            except subprocess.TimeoutExpired:
                service.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(level: str, mode: str, key: str) -> float:
        values = [r[key] for r in results[level, mode] if r.get(key) is not None]
        return statistics.median(values) if values else float("nan")

    out: dict[str, Any] = {"tasks": TASKS, "rounds": ROUNDS}
    for level, rate in levels.items():
        out[f"{level}_target_eps"] = float(rate)
        for mode in MODES:
            out[f"{level}_{mode}_eps"] = med(level, mode, "rate")
            out[f"{level}_{mode}_service_cpu_s_per_100k_events"] = med(level, mode, "service_cpu_per_100k")
        none_cpu = med(level, "none", "service_cpu_per_100k")
        out[f"{level}_monitor_vs_none_eps_ratio"] = med(level, "monitor", "rate") / med(level, "none", "rate")
        out[f"{level}_monitor_vs_none_service_cpu_per_event_ratio"] = med(level, "monitor", "service_cpu_per_100k") / none_cpu
        out[f"{level}_follow_vs_none_service_cpu_per_event_ratio"] = med(level, "follow", "service_cpu_per_100k") / none_cpu
        out[f"{level}_monitor_vs_follow_service_cpu_per_event_ratio"] = (med(level, "monitor", "service_cpu_per_100k")
                                                                         / med(level, "follow", "service_cpu_per_100k"))
        out[f"{level}_monitor_cpu_pct_of_one_core"] = med(level, "monitor", "monitor_cpu_pct")
        out[f"{level}_monitor_fps"] = med(level, "monitor", "fps")
        out[f"{level}_monitor_skipped"] = med(level, "monitor", "skipped")
        out[f"{level}_monitor_applied"] = med(level, "monitor", "applied")
        for who in ("monitor", "follow"):
            out[f"{level}_{who}_latency_p50_ms"] = med(level, who, "p50") * 1000
            out[f"{level}_{who}_latency_p99_ms"] = med(level, who, "p99") * 1000
        out[f"{level}_monitor_vs_follow_latency_p50_ratio"] = med(level, "monitor", "p50") / med(level, "follow", "p50")
        out[f"{level}_monitor_vs_follow_latency_p99_ratio"] = med(level, "monitor", "p99") / med(level, "follow", "p99")
        out[f"{level}_monitor_latency_over_follow_p50_frames"] = (med(level, "monitor", "p50") - med(level, "follow", "p50")) / FRAME
    return out

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        sys.exit(serve(Path(sys.argv[2]), Path(sys.argv[3])))
    for key, value in run().items():
        print(f"{key:<52} {value:.3f}" if isinstance(value, float) else f"{key:<52} {value}")
