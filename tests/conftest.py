import os
import signal

import pytest
from hypothesis import HealthCheck, settings

# Timing is noise on a shared CI machine: no per-example deadline, and no
# failing a property test because generating its inputs was slow there.
settings.register_profile("armor", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("armor")

# A suite started in the background by a non-interactive shell ('.ci/run &') inherits SIGINT ignored,
# and so would every CLI process it spawns: Python then installs no KeyboardInterrupt, and the tests
# that press Ctrl-C in a client would wait for ever. A handler here is reset to the default in children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / ".armor"


@pytest.fixture
def armor(state_dir):
    from armor_rx.session import Armor

    with Armor(state_dir=state_dir) as session:
        yield session


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}


def run_git(repo, *args):
    """The real git CLI on ``repo``; its stdout (raises if git fails)."""
    import os
    import subprocess

    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env={**os.environ, **GIT_ENV}).stdout


@pytest.fixture
def git():
    return run_git


@pytest.fixture
def repo(tmp_path):
    """A git repository with one commit on 'main' (tests/sinks/git has its own, richer one)."""
    path = tmp_path / "repo"
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("hello\n")
    run_git(path, "add", "-A")
    run_git(path, "commit", "-qm", "initial")
    return path


# Services a test's commands auto-start exit soon when idle, and each test stops
# those left in its own directory, so no test leaves a process behind.
os.environ.setdefault("ARMOR_RX_IDLE_TIMEOUT", "20")


@pytest.fixture(autouse=True)
def _stop_services(request):
    tmp_path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp_path is None:
        return
    from armor_rx.client.autostart import probe
    from armor_rx.service.paths import ServicePaths

    for log in tmp_path.rglob("service.log"):
        found = probe(ServicePaths.of(log.parent), timeout=1.0)
        if found is not None:
            try:
                os.kill(int(found["pid"]), signal.SIGTERM)
            except ProcessLookupError:
                pass
