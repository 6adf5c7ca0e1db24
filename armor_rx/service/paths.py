"""Where a state directory's service listens and logs.

The socket lives in ``<state>/run/`` (mode 0700), so only the owner can even
reach it. A unix socket path is limited to ~107 bytes; a state directory deep
enough to exceed it gets its socket under ``/tmp/armor-rx-<uid>/`` instead,
named by a hash of the state directory's path, so every client computes the
same place without reading anything first.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from armor_rx.errors import ConfigError

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class ServicePaths:
    """The files of one state directory's service."""

    state: Path
    run_dir: Path
    socket: Path
    log: Path
    start_lock: Path
    owner_lock: Path

    @classmethod
    def of(cls, state: str | Path) -> ServicePaths:
        state = Path(state).resolve()
        run_dir = state / "run"
        socket = run_dir / "armor.sock"
        if len(os.fsencode(socket)) > _MAX_SOCKET_PATH:
            digest = hashlib.sha256(os.fsencode(state)).hexdigest()[:24]
            socket = Path(f"/tmp/armor-rx-{os.getuid()}") / f"{digest}.sock"
        return cls(state=state, run_dir=run_dir, socket=socket, log=state / "service.log", start_lock=run_dir / "start.lock",
                   owner_lock=run_dir / "owner.lock")

    def prepare(self) -> None:
        """Create the private directories (0700, owned by us); refuse one someone else owns."""
        for directory in {self.run_dir, self.socket.parent}:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = directory.lstat()
            if not stat.S_ISDIR(info.st_mode):
                raise ConfigError(f"{directory} is not a directory; remove it so the service can keep its socket there")
            if info.st_uid != os.getuid():
                raise ConfigError(f"{directory} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); "
                                  "the service will not put its socket where another user can reach it")
            if stat.S_IMODE(info.st_mode) != 0o700:
                os.chmod(directory, 0o700)
