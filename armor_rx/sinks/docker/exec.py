"""Running one command in a task's container, its output streamed as events.

The engine's output stream is the producer; it goes through
:func:`armor_rx.operators.backpressure` (policy ``block`` by default) to the
consumer that records ``exec.output`` events, so a command that floods its
output is slowed to the speed of the log instead of being buffered.
"""

from __future__ import annotations

import codecs
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import docker.errors
import reactivex
from docker.models.containers import Container

from armor_rx.errors import DockerError
from armor_rx.model.secrets import Masker, Secret
from armor_rx.operators import backpressure
from armor_rx.sinks.docker.engine import Engine
from armor_rx.sinks.docker.quota import EVENT_OVERHEAD

Emit = Callable[[str, Mapping[str, Any]], object]
# (stream, text, seq of the exec.output.truncated event it follows): output past the quota.
Live = Callable[[str, str, int], None]
Policy = Literal["block", "drop_oldest", "drop_newest", "latest", "error"]

# Output that tells which limit a failed command ran into (matched on its last bytes).
_LIMIT_HINTS = (
    ("read_only_rootfs", ("Read-only file system",)),
    ("network_disabled", ("Network is unreachable", "network unreachable", "bad address", "Could not resolve", "Temporary failure in name resolution", "Name or service not known")),
    ("pids_limit", ("can't fork", "Resource temporarily unavailable", "fork: retry", "Cannot fork")),
)


@dataclass
class ExecResult:
    """How a command ended: exit code, why, and how much it printed."""

    exit_code: int | None
    reason: str  # "exited" | "timeout" | "oom" | "killed" | "interrupted"
    limit_hit: str | None
    bytes_out: int = 0
    bytes_err: int = 0
    duration: float = 0.0
    events: int = 0
    dropped: int = 0
    recorded: int = 0
    not_recorded: int = 0
    tail: str = field(default="", repr=False)
    recorded_tail: str | None = field(default=None, repr=False)

    def to_payload(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "reason": self.reason,
            "limit_hit": self.limit_hit,
            "bytes": {"stdout": self.bytes_out, "stderr": self.bytes_err},
            "duration": round(self.duration, 3),
            "output_events": self.events,
            "dropped": self.dropped,
            **({"not_recorded_bytes": self.not_recorded, "output_tail": self.recorded_tail}
               if self.recorded_tail is not None else {}),
        }


def _in_container(pid: int, container_id: str) -> bool:
    """Is host process ``pid`` in this container's cgroup? (False for a remote or VM engine.)"""
    try:
        return container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def _container_pids(container_id: str) -> set[int]:
    """Host pids of every process in the container (empty for a remote or VM engine)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _in_container(int(entry), container_id):
            found.add(int(entry))
    return found


def _kill_all(pids: list[int]) -> None:
    """Stop every one of ``pids``, then kill them: killed one by one, a shell whose child died
    first would run its next command (``sleep 9; touch x`` would touch x) before its own kill."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def _kill_tree(root: int) -> None:
    """SIGKILL ``root`` and its descendants, found through the host's /proc (parents first)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    order, seen = [root], {root}
    for pid in order:  # breadth first: a parent is stopped before its children
        for child in children.get(pid, []):
            if child not in seen:
                seen.add(child)
                order.append(child)
    _kill_all(order)


class ExecRun:
    """One command in a container. :meth:`run` blocks until it ends; :meth:`kill` ends it from another thread."""

    def __init__(
        self,
        engine: Engine,
        container: Container,
        command: list[str] | str,
        *,
        emit: Emit,
        timeout: float | None = None,
        user: str | None = None,
        workdir: str | None = None,
        environment: Mapping[str, str] | None = None,
        max_items: int = 64,
        policy: Policy = "block",
        secrets: Mapping[str, Secret] | None = None,
        record: Callable[[int], bool] | None = None,
        live: Live | None = None,
        quota_bytes: int | None = None,
    ) -> None:
        self.engine = engine
        self.container = container
        self.command = command
        self.emit = emit
        self.timeout = timeout
        self.user = user
        self.workdir = workdir
        self.environment = dict(environment or {})
        self.max_items = max_items
        self.policy = policy
        self.secrets = dict(secrets or {})
        # ``record(n)``: may n more bytes of output go into the log? ``live``: where
        # output goes once they may not (an attached client), with the seq of the
        # exec.output.truncated event it must come after.
        self.record = record
        self.live = live
        self.quota_bytes = quota_bytes
        self.exec_id: str | None = None
        self._killed: str | None = None
        # The container's processes before this command: whatever is new when it
        # is killed belongs to it, even if it double-forked away from its tree.
        self._before: set[int] | None = None
        self._lock = threading.Lock()

    def kill(self, reason: str = "killed") -> None:
        """Stop the command now; the run ends with ``reason`` ("timeout", "interrupted", ...).

        Killed before it started, it never starts; killed while it was being
        started, :meth:`run` kills it again once its process exists.
        """
        with self._lock:
            if self._killed is not None:
                return
            self._killed = reason
        self._terminate()

    def _terminate(self) -> None:
        if self._before is None:
            return  # not started: run() sees the flag and does not start it
        if self.exec_id is None:
            self._kill_pass(0)  # being created: run() kills it again once it is started
            return
        # A command just started may have no process yet, or be forking its first child:
        # kill, then look again until the exec has really ended (bounded), so it cannot
        # run on to its end after it was stopped.
        deadline = time.monotonic() + 3.0
        while True:
            try:
                info = self.engine.api.exec_inspect(self.exec_id)
            except docker.errors.APIError:
                return
            pid = int(info.get("Pid") or 0)
            if pid > 0 and not info.get("Running", True):
                return
            if pid > 0 or time.monotonic() > deadline:
                if not self._kill_pass(pid) or time.monotonic() > deadline:
                    return
            time.sleep(0.01)

    def _kill_pass(self, pid: int) -> bool:
        """SIGKILL the exec's process tree and whatever else started in the container since it began.

        Returns False on a remote or VM engine, where the container itself is killed instead.
        """
        local = self._before is not None and (bool(self._before) or (pid > 0 and _in_container(pid, self.container.id)))
        if not local:  # a remote or VM engine: the only way to stop an exec is to stop its container
            try:
                self.container.kill()
            except docker.errors.APIError:
                pass
            return False
        if pid > 0:
            _kill_tree(pid)
        _kill_all(sorted(_container_pids(self.container.id) - (self._before or set())))
        return True

    def _frames(self, stream: Iterator[tuple[bytes | None, bytes | None]]) -> Iterator[tuple[str, bytes]]:
        for out, err in stream:
            if out:
                yield "stdout", out
            if err:
                yield "stderr", err

    def run(self) -> ExecResult:
        api = self.engine.api
        started = time.monotonic()
        kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "tty": False, "environment": self.environment or None}
        if self.user:
            kwargs["user"] = self.user
        if self.workdir and self.engine.info.supported.get("exec_workdir", True):
            kwargs["workdir"] = self.workdir
        with self._lock:
            killed = self._killed
            if killed is None:
                self._before = _container_pids(self.container.id)
        if killed is not None:
            return ExecResult(exit_code=None, reason=killed, limit_hit=None)
        try:
            self.exec_id = api.exec_create(self.container.id, self.command, **kwargs)["Id"]
            stream = api.exec_start(self.exec_id, stream=True, demux=True)
            if self._killed is not None:
                self._terminate()  # a kill that came while it was being started
        except docker.errors.APIError as exc:
            why = str(exc.explanation or exc)
            if exc.status_code == 409 or "is not running" in why:
                why += " (the container has stopped: its wall-clock limit may have passed, or it was killed)"
            raise DockerError(f"cannot run {self.command!r} in container {self.container.short_id}: {why}") from None
        timer = threading.Timer(self.timeout, self.kill, args=("timeout",)) if self.timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        result = ExecResult(exit_code=None, reason="exited", limit_hit=None)
        # Bytes that are not UTF-8 are kept as \xNN escapes (readable, and no
        # byte is lost); a sequence split across frames is joined by the decoder.
        decoders = {name: codecs.getincrementaldecoder("utf-8")("backslashreplace") for name in ("stdout", "stderr")}
        # A secret the command was given never reaches the log as itself, even split across frames.
        maskers = {name: Masker(self.secrets) for name in ("stdout", "stderr")}
        tail = bytearray()
        # The tail the log may keep is cut from the masked text: cut from the raw bytes and
        # masked afterwards, a secret straddling its start would leave all but its head behind.
        masked_tail = [""]
        done = threading.Event()
        failure: list[BaseException] = []
        dropped = [0]

        truncated_at: list[int] = []  # seq of this command's exec.output.truncated, once output stops being recorded

        def consume(frame: tuple[str, bytes]) -> None:
            name, data = frame
            text = maskers[name].feed(decoders[name].decode(data))
            masked_tail[0] = (masked_tail[0] + text)[-4096:]
            if not truncated_at and (self.record is None or self.record(len(data) + EVENT_OVERHEAD)):
                self.emit("exec.output", {"stream": name, "data": text, "bytes": len(data)})
                result.events += 1
                result.recorded += len(data)
                return
            if not truncated_at:
                marker = self.emit("exec.output.truncated", {
                    "stream": name, "recorded_bytes": result.recorded, "quota_bytes": self.quota_bytes,
                    "message": "the task's output quota is used up: what the command prints now reaches "
                               "whoever is attached but is not recorded (its tail is kept in exec.exited)"})
                truncated_at.append(int(getattr(marker, "seq", 0) or 0))
            result.not_recorded += len(data)
            if self.live is not None and text:
                self.live(name, text, truncated_at[0])

        def count_drop(report: Any) -> None:
            dropped[0] = report.total_dropped

        def produce() -> Iterator[tuple[str, bytes]]:
            for name, data in self._frames(stream):
                if name == "stdout":
                    result.bytes_out += len(data)
                else:
                    result.bytes_err += len(data)
                tail.extend(data[-4096:])
                del tail[:-4096]
                yield name, data

        def failed(error: BaseException) -> None:
            failure.append(error)
            done.set()

        try:
            # from_iterable runs the producer in this thread; the backpressure
            # buffer's own thread drains it into the log.
            reactivex.from_iterable(produce()).pipe(
                backpressure(self.max_items, self.policy, on_drop=count_drop, name="exec.output")
            ).subscribe(consume, failed, done.set)
            done.wait()
            for name, decoder in decoders.items():  # a partial sequence left at the very end
                rest = maskers[name].feed(decoder.decode(b"", final=True)) + maskers[name].flush()
                masked_tail[0] = (masked_tail[0] + rest)[-4096:]
                if rest and not truncated_at:
                    self.emit("exec.output", {"stream": name, "data": rest, "bytes": 0})
                elif rest and self.live is not None:
                    self.live(name, rest, truncated_at[0])
        finally:
            if timer is not None:
                timer.cancel()
        if failure and not isinstance(failure[0], (docker.errors.APIError, OSError)):
            raise failure[0]
        info = api.exec_inspect(self.exec_id)
        result.exit_code = info.get("ExitCode")
        result.duration = time.monotonic() - started
        result.dropped = dropped[0]
        result.tail = tail.decode("utf-8", "replace")
        if truncated_at:  # the end of what it printed is what a reader of the log needs most
            result.recorded_tail = masked_tail[0]
        if self._killed is not None:
            result.reason = self._killed
            result.limit_hit = "exec_timeout" if self._killed == "timeout" else None
        elif result.exit_code == 137 and self._oom_since(started):
            result.reason = "oom"
            result.limit_hit = "memory_limit"
        elif result.exit_code not in (0, None):
            for limit, needles in _LIMIT_HINTS:
                if any(n in result.tail for n in needles):
                    result.limit_hit = limit
                    break
        return result

    def _oom_since(self, started_monotonic: float) -> bool:
        """Did the engine report an OOM kill in the container while the command ran?"""
        since = int(time.time() - (time.monotonic() - started_monotonic)) - 1
        try:
            events = self.engine.client.events(
                since=since, until=int(time.time()) + 1, decode=True, filters={"container": self.container.id, "event": "oom"}
            )
            found = any(True for _ in events)
        except docker.errors.APIError:
            found = False
        if not found:
            try:
                self.container.reload()
                found = bool(self.container.attrs.get("State", {}).get("OOMKilled"))
            except docker.errors.APIError:
                pass
        return found
