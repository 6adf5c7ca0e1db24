"""Review 12: the supervisor signals only processes of this host that are in the service's container.

An engine reports an exec's pid in its own pid namespace. On a remote or VM engine (Docker Desktop, a podman
machine, DOCKER_HOST=ssh://...) that number names some unrelated process of this host — the supervisor sent it
SIGTERM, then SIGKILL to it and its whole tree. Here a host process stands in for that number.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

from armor_rx.model.services import ServiceSpec
from armor_rx.sinks.docker.supervise import ServiceSupervisor, _Service


class _Api:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return {"Pid": self.pid, "Running": True, "ExitCode": None}


def test_a_pid_that_is_not_in_the_container_is_never_signalled() -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        docker: Any = SimpleNamespace(engine=SimpleNamespace(api=_Api(bystander.pid)))
        supervisor = ServiceSupervisor(docker, record=lambda *a: None, fail=lambda *a: None,  # type: ignore[arg-type, return-value]
                                       task_state=lambda t: None)
        service = _Service(ServiceSpec(name="web", command="serve"), exec_id="e1", container_id="f" * 64)
        supervisor._kill(service, "t1")
        assert bystander.poll() is None, "a host process outside the container was killed"
    finally:
        bystander.kill()
        bystander.wait()
