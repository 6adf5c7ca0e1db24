"""The worktree is hostile ground (issues 13 and 14): what an agent tries from inside its container.

Every test runs a real container on the private dockerd with an image that has
git, and checks the host side with the real git CLI. The vectors are listed in
docs/security.md with these test names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from armor_rx import Armor
from armor_rx.errors import ArmorError, ConfigError
from armor_rx.sinks.docker import AGENT_UID, SandboxSpec

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup_containers")]

# An fsmonitor "hook" that leaves a marker wherever it runs: the proof that it ran.
FSMONITOR = "touch {marker}; false"


@pytest.fixture
def spec(git_image):
    return SandboxSpec(image=git_image, pids_limit=64, mem_limit=128 * 1024 * 1024, wall_clock=300)


@pytest.fixture
def session(repo, spec):
    with Armor(repo, docker=True, sandbox=spec, sweep_interval=None) as armor:
        yield armor


def run(armor, task, script, **options):
    """Run ``script`` with sh in the task's container; (exit code, output)."""
    out: list[str] = []
    done = armor.exec(task, ["sh", "-c", script], on_output=lambda e: out.append(e.payload["data"]), **options)
    return done.payload["exit_code"], "".join(out)


def host_git(path, *args, env=None):
    """The real git CLI on the host, as a person would run it (no armor sanitising)."""
    return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def started(armor, task):
    armor.create_task(task)
    armor.start(task)
    return next(iter(armor.history(kind="container.started", task_id=task))).payload["settings"]


def test_the_agent_cannot_rewrite_or_replace_its_git_link(session, repo, tmp_path):
    armor = session
    started(armor, "link")
    worktree = armor.worktree("link")
    link_before = (worktree / ".git").read_bytes()
    marker = tmp_path / "fsmonitor-ran"
    # The escape of issue 13: a git dir of the agent's own, with a command in its config.
    code, out = run(armor, "link", f"""
        mkdir -p evil/refs evil/objects && echo 'ref: refs/heads/main' > evil/HEAD
        printf '[core]\\n\\trepositoryformatversion = 0\\n\\tfsmonitor = {FSMONITOR.format(marker=marker)}\\n' > evil/config
        echo "gitdir: /workspace/evil" > .git; echo "write=$?"
        rm -f .git; echo "rm=$?"
        mv .git moved; echo "mv-away=$?"
        mv evil .git; echo "mv-over=$?"
        ln -sf evil .git; echo "ln=$?"
    """)
    for step in ("write", "rm", "mv-away", "mv-over", "ln"):
        assert f"{step}=0" not in out, out
    assert "Read-only file system" in out and "busy" in out  # EROFS to write it, EBUSY to replace it
    assert (worktree / ".git").read_bytes() == link_before
    # Every host-side path a person or armor takes afterwards runs nothing of the agent's.
    for where in (worktree, worktree / "evil"):
        host_git(where, "status")
    assert host_git(repo, "worktree", "list").returncode == 0
    assert host_git(repo, "status").returncode == 0
    armor.checkpoint("link")
    armor.complete("link", merge="ff")
    assert not marker.exists()
    assert host_git(repo, "fsck", "--strict").returncode == 0


def test_a_link_planted_by_other_means_is_refused_before_any_host_side_operation(session, repo, tmp_path):
    armor = session
    started(armor, "planted")
    worktree = armor.worktree("planted")
    cp = armor.checkpoint("planted").payload["checkpoint"]
    marker = tmp_path / "fsmonitor-ran"
    evil = worktree / "evil"
    subprocess.run(["git", "init", "-q", str(evil)], check=True)
    subprocess.run(["git", "-C", str(evil), "config", "core.fsmonitor", FSMONITOR.format(marker=marker)], check=True)
    (worktree / ".git").write_text(f"gitdir: {evil}/.git\n")  # as if written from outside the sandbox
    for attempt in (lambda: armor.checkpoint("planted"), lambda: armor.rollback("planted", cp),
                    lambda: armor.complete("planted", merge="ff")):
        with pytest.raises(ArmorError) as info:
            attempt()
        assert "git link" in str(info.value) and "points at" in str(info.value)
    changed = list(armor.history(kind="git.link.changed", task_id="planted"))
    assert [e.payload["request"] for e in changed] == [
        "checkpoint.requested", "checkpoint.restore.requested", "task.complete.requested"]
    assert all(str(evil) in e.payload["why"] for e in changed)
    assert not marker.exists()  # armor ran no git there, dulwich or otherwise
    assert "task/planted" not in host_git(repo, "log", "--oneline", "main").stdout


def test_the_worktree_mount_is_nosuid_nodev_and_no_setuid_root_binary_can_be_made(session, repo):
    armor = session
    settings = started(armor, "suid")
    assert settings["worktree_mount"] == "nosuid,nodev", settings["degraded"]
    worktree = armor.worktree("suid")
    code, out = run(armor, "suid", """
        grep ' /workspace ' /proc/self/mountinfo
        cp /bin/busybox ./tool && chmod 4755 ./tool && echo chmod-ok
        chown 0:0 ./tool 2>/dev/null; echo "chown=$?"
        mknod ./dev c 1 3 2>/dev/null; echo "mknod=$?"
        echo "uid=$(id -u)"
    """)
    mountinfo = next(line for line in out.splitlines() if " /workspace " in line).split()
    assert {"nosuid", "nodev"} <= set(mountinfo[5].split(",")), out
    assert "chown=0" not in out and "mknod=0" not in out
    assert f"uid={AGENT_UID}" in out
    tool = os.lstat(worktree / "tool")
    assert tool.st_uid == AGENT_UID  # set-uid, if at all, to the agent's own unprivileged uid, never to root
    assert not (worktree / "dev").exists()
    # A setuid-root program put there some other way does not run as root inside ...
    planted = worktree / "id"  # busybox runs the applet its name says
    planted.write_bytes(Path("/bin/busybox").read_bytes())
    os.chown(planted, 0, 0)
    os.chmod(planted, 0o4755)
    code, out = run(armor, "suid", "./id -u")
    assert out.strip() == str(AGENT_UID), out
    # ... and the next share of the worktree (every restore does one) takes its set-id bit away.
    cp = armor.checkpoint("suid").payload["checkpoint"]
    armor.rollback("suid", cp)
    assert not os.lstat(planted).st_mode & 0o6000


def test_container_started_says_which_uid_and_gid_the_agent_runs_as(session):
    armor = session
    settings = started(armor, "who")
    shared = os.getegid() or 61000
    assert (settings["uid"], settings["gid"], settings["root"]) == (AGENT_UID, shared, False)
    assert settings["running_as"] == {"uid": AGENT_UID, "gid": shared}  # read back from the kernel
    assert settings["user"] == f"{AGENT_UID}:{shared}"
    code, out = run(armor, "who", "id -u; id -g")
    assert out.split() == [str(AGENT_UID), str(shared)]


def test_root_only_on_an_explicit_opt_in(repo, spec):
    with Armor(repo, docker=True, sandbox=spec.with_overrides({"user": "root"}), sweep_interval=None) as armor:
        armor.create_task("nope")
        with pytest.raises(ArmorError) as info:
            armor.start("nope")
        assert "allow_root" in str(info.value)
    with Armor(repo, docker=True, sandbox=spec, sweep_interval=None) as armor:
        started(armor, "plain")
        with pytest.raises(ArmorError) as info:
            armor.exec("plain", ["id", "-u"], user="root")
        assert "allow_root" in str(info.value)
    rooted = spec.with_overrides({"user": "root", "allow_root": True})
    with Armor(repo, docker=True, sandbox=rooted, sweep_interval=None) as armor:
        settings = started(armor, "rooted")
        assert settings["root"] is True and any("allow_root" in n for n in settings["notes"])
        assert run(armor, "rooted", "id -u")[1].strip() == "0"


def test_files_restored_by_a_rollback_are_writable_by_the_agent(session):
    armor = session
    started(armor, "restore")
    worktree = armor.worktree("restore")
    assert run(armor, "restore", "echo from-agent >> README.md && mkdir -p src && echo v1 > src/a.txt")[0] == 0
    cp = armor.checkpoint("restore").payload["checkpoint"]
    assert run(armor, "restore", "rm -r src && echo v2 > README.md")[0] == 0
    armor.rollback("restore", cp)
    assert os.lstat(worktree / "src" / "a.txt").st_uid == os.geteuid()  # written back by armor, on the host
    code, out = run(armor, "restore", "echo more >> src/a.txt && echo more >> README.md && touch src/new && echo ok")
    assert code == 0 and "ok" in out, out
    assert (worktree / "src" / "a.txt").read_text() == "v1\nmore\n"


def test_the_host_user_can_read_and_remove_everything_the_agent_made(session, tmp_path):
    armor = session
    settings = started(armor, "share")
    worktree = armor.worktree("share")
    assert run(armor, "share", "umask 077; mkdir -p deep/er/est && echo secret > deep/er/est/f && echo top > t")[0] == 0
    # A person in the shared group (the host user's group; 61000 when armor is root), not the agent's uid.
    # It starts in the worktree (the test's tmp directories above it are root's alone).
    person = ["setpriv", "--reuid", "62001", "--regid", str(settings["gid"]), "--clear-groups"]
    done = subprocess.run([*person, "sh", "-c", "cat deep/er/est/f && tar cf - deep t | wc -c && rm -r deep t"],
                          cwd=worktree, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("secret\n") and int(done.stdout.split()[-1]) > 0
    assert not (worktree / "deep").exists() and not (worktree / "t").exists()


def test_a_repository_the_agent_makes_is_refused_by_git_on_the_host(session, tmp_path):
    armor = session
    started(armor, "nested")
    worktree = armor.worktree("nested")
    marker = tmp_path / "nested-fsmonitor-ran"
    code, out = run(armor, "nested", f"git init -q sub && git -C sub config core.fsmonitor '{FSMONITOR.format(marker=marker)}' && echo made")
    assert code == 0 and "made" in out, out
    assert os.lstat(worktree / "sub" / ".git").st_uid == AGENT_UID
    status = host_git(worktree / "sub", "status")
    assert status.returncode != 0 and "dubious ownership" in status.stderr
    assert not marker.exists()


# A bare repository written into directory {d}: HEAD, objects/, refs/ and a config whose fsmonitor leaves a marker.
PLANT = ("mkdir -p {d}/objects {d}/refs && printf 'ref: refs/heads/main\\n' > {d}/HEAD && "
         "printf '[core]\\n\\trepositoryformatversion = 0\\n\\tbare = false\\n\\tworktree = ..\\n"
         "\\tfsmonitor = {hook}\\n' > {d}/config && echo planted")


def _commit_tree(repo, files):
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "tree"], check=True)


def test_a_bare_repository_planted_in_a_directory_armor_made_is_refused_by_host_git(repo, spec, tmp_path):
    """The review's vector: src/ came from the checkout (armor's), the agent turns it into a bare repository."""
    _commit_tree(repo, {"src/pkg/mod.py": "x = 1\n", "docs/a.md": "a\n"})
    marker = tmp_path / "planted-fsmonitor-ran"
    plant = PLANT.format(d="{d}", hook=FSMONITOR.format(marker=marker))
    with Armor(repo, docker=True, sandbox=spec, sweep_interval=None) as armor:
        started(armor, "planted")
        worktree = armor.worktree("planted")
        # Every directory below the root is the agent's; the root stays the person's, so git works there and below.
        assert os.lstat(worktree).st_uid == os.geteuid()
        assert {os.lstat(worktree / d).st_uid for d in ("src", "src/pkg", "docs")} == {AGENT_UID}
        assert host_git(worktree / "src" / "pkg", "status", "--short").returncode == 0
        cp = armor.checkpoint("planted").payload["checkpoint"]
        for d in ("src", "src/pkg"):
            code, out = run(armor, "planted", plant.format(d=d))
            assert code == 0 and "planted" in out, out
            status = host_git(worktree / d, "status")
            assert status.returncode != 0 and "dubious ownership" in status.stderr, status
        # Directories a rollback makes anew are handed over too.
        assert run(armor, "planted", "rm -rf src docs")[0] == 0
        armor.rollback("planted", cp)
        assert {os.lstat(worktree / d).st_uid for d in ("src", "src/pkg", "docs")} == {AGENT_UID}
        assert run(armor, "planted", plant.format(d="docs"))[0] == 0
        status = host_git(worktree / "docs", "status")
        assert status.returncode != 0 and "dubious ownership" in status.stderr, status
        assert not marker.exists()
        # The control: the same planted directory, owned by the person, does run the agent's command.
        control = tmp_path / "control"
        shutil.copytree(worktree / "docs", control / "docs", symlinks=True)
        os.chown(control / "docs", os.geteuid(), os.getegid())
        host_git(control / "docs", "status")
        assert marker.exists(), "the planted repository is not one git would use: the test proves nothing"


def test_git_works_inside_the_container_and_cannot_write_the_repository(session, repo):
    armor = session
    started(armor, "inside")
    heads = host_git(repo, "for-each-ref").stdout
    config = (repo / ".git" / "config").read_bytes()
    code, out = run(armor, "inside", """
        echo change >> README.md && echo new > new.txt
        git status --short; echo "status=$?"
        git diff --stat; echo "diff=$?"
        git log --oneline; echo "log=$?"
        git show --stat HEAD >/dev/null; echo "show=$?"
        git rev-parse --abbrev-ref HEAD
    """)
    assert code == 0, out
    for step in ("status", "diff", "log", "show"):
        assert f"{step}=0" in out, out
    assert " M README.md" in out and "?? new.txt" in out and "task/inside" in out and "initial" in out
    code, out = run(armor, "inside", """
        git -c user.name=a -c user.email=a@b commit -qam sneaky; echo "commit=$?"
        git update-ref refs/heads/main HEAD~0; echo "update-ref=$?"
        echo 'touch /tmp/x' > "$(git rev-parse --git-common-dir)/hooks/post-checkout"; echo "hook=$?"
        git config core.fsmonitor 'touch /tmp/x'; echo "config=$?"
        echo "worktrees=[$(ls "$(git rev-parse --git-common-dir)/worktrees")]"
    """)
    for step in ("commit", "update-ref", "hook", "config"):
        assert f"{step}=0" not in out, out
    assert "Read-only file system" in out
    # Other tasks' admin data is hidden. Marked, since stderr lines may arrive after the last stdout line.
    assert f"worktrees=[{Path(armor.worktree('inside')).name}]" in out, out
    assert host_git(repo, "for-each-ref").stdout == heads
    assert (repo / ".git" / "config").read_bytes() == config
    assert not list((repo / ".git" / "hooks").glob("post-checkout"))
    assert host_git(repo, "fsck", "--strict").returncode == 0


def test_an_unknown_root_user_spelling_is_still_root(spec):
    from armor_rx.sinks.docker.identity import resolve_identity

    for user in ("root", "0", "0:0", "root:root", ":1000"):
        with pytest.raises(ConfigError):
            resolve_identity(spec.with_overrides({"user": user}))
    with pytest.raises(ConfigError):
        resolve_identity(spec.with_overrides({"user": "1000:0"}))
    assert resolve_identity(spec.with_overrides({"user": "1234:5678"})).user == "1234:5678"
    from armor_rx.sinks.docker.identity import check_exec_user

    for user in ("root", "0", "0:0", "1000:0", "admin"):  # a name could be uid 0 in the image
        with pytest.raises(ConfigError):
            check_exec_user(spec, user)
    check_exec_user(spec, "1234:5678")
    check_exec_user(spec.with_overrides({"allow_root": True}), "root")


def test_a_user_name_the_image_maps_to_root_is_refused(repo, engine, tmp_path):
    """'toor' is uid 0 in this image: the kernel's word, not the name, decides."""
    import io
    import tarfile

    from armor_rx.sinks.docker.rootfs import busybox_rootfs

    base = tarfile.open(fileobj=io.BytesIO(busybox_rootfs()))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for member in base.getmembers():
            data = base.extractfile(member) if member.isfile() else None
            if member.name == "etc/passwd":
                text = data.read() + b"toor:x:0:0:root:/root:/bin/sh\n"
                member.size, data = len(text), io.BytesIO(text)
            tar.addfile(member, data)
    engine.api.import_image_from_data(out.getvalue(), repository="armor-rx-test/toor", tag="latest")
    spec = SandboxSpec(image="armor-rx-test/toor:latest", user="toor", wall_clock=60)
    with Armor(repo, docker=True, sandbox=spec, sweep_interval=None) as armor:
        armor.create_task("toor")
        with pytest.raises(ArmorError) as info:
            armor.start("toor")
        assert "is root in image" in str(info.value)
    assert engine.client.containers.list(all=True, filters={"label": "armor.task=toor"}) == []


UNPRIVILEGED = r"""
import json, os, shutil, subprocess, sys
from armor_rx import Armor
from armor_rx.sinks.docker import SandboxSpec

repo = sys.argv[1]
env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
os.mkdir(repo)
os.makedirs(os.path.join(repo, "src", "pkg"))
with open(os.path.join(repo, "src", "pkg", "mod.py"), "w") as f:
    f.write("x = 1\\n")
for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
    subprocess.run(["git", "-C", repo, *args], check=True, env=env)
report = {}
spec = SandboxSpec(image=sys.argv[2], pids_limit=64, mem_limit=128 * 1024 * 1024, wall_clock=300)
with Armor(repo, docker=True, sandbox=spec, sweep_interval=None) as armor:
    armor.create_task("mine")
    armor.start("mine")
    settings = next(iter(armor.history(kind="container.started", task_id="mine"))).payload["settings"]
    report["user"], report["degraded"] = settings["user"], list(settings["degraded"])
    sh = lambda script: armor.exec("mine", ["sh", "-c", script]).payload["exit_code"]
    report["made"] = sh("umask 077; mkdir -p a/b && echo one > a/b/f && echo top > t")
    worktree = armor.worktree("mine")
    report["armor_dirs_owner"] = sorted({os.lstat(worktree / d).st_uid for d in ("src", "src/pkg")})
    marker = os.path.join(os.environ["HOME"], "planted-ran")
    sh("mkdir -p src/objects src/refs && printf 'ref: refs/heads/main\\n' > src/HEAD && "
       f"printf '[core]\\n\\tbare = false\\n\\tworktree = ..\\n\\tfsmonitor = touch {marker}; false\\n' > src/config")
    planted = subprocess.run(["git", "-C", str(worktree / "src"), "status"], capture_output=True, text=True)
    report["planted_refused"] = planted.returncode != 0 and "dubious ownership" in planted.stderr
    report["planted_ran"] = os.path.exists(marker)
    sh("rm -rf src/objects src/refs src/HEAD src/config")
    cp = armor.checkpoint("mine").payload["checkpoint"]
    report["removed_by_agent"] = sh("rm -r a t")
    armor.rollback("mine", cp)
    report["write_restored"] = sh("echo two >> a/b/f && echo more >> t && touch a/b/new")
    report["restored_owner"] = os.lstat(worktree / "a" / "b" / "f").st_uid
    # The directories the rollback re-made were taken over beside the frozen container.
    report["restored_dirs_owner"] = sorted({os.lstat(worktree / d).st_uid for d in ("a", "a/b")})
    report["git_status"] = subprocess.run(["git", "-C", str(worktree), "status", "--short"], capture_output=True, text=True).returncode
    shutil.rmtree(worktree / "a")  # the host user removes what the agent made
    report["host_removed"] = not (worktree / "a").exists()
    armor.complete("mine")
print(json.dumps(report))
"""


def test_an_unprivileged_armor_shares_the_worktree_through_its_own_group(git_image, tmp_path):
    """Armor as a plain user (not root): it cannot chown or remount, and the agent still works and stays apart."""
    import grp
    import json
    import shutil
    import sysconfig
    import tempfile

    import armor_rx

    system_python = "/usr/bin/python3"
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists(system_python):
        pytest.skip("needs root, setpriv and /usr/bin/python3 to act as a plain user")
    import sys

    probe = subprocess.run([system_python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    if probe.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip("/usr/bin/python3 is another Python version than the test's venv")
    try:
        docker_gid = grp.getgrnam("docker").gr_gid
    except KeyError:
        pytest.skip("no 'docker' group gives a plain user the daemon's socket")
    uid = gid = 62002
    home = Path(tempfile.mkdtemp(prefix="armor-sandbox-plain-", dir="/tmp"))
    try:
        os.chown(home, uid, gid)
        repo = home / "repo"
        path = os.pathsep.join([sysconfig.get_paths()["purelib"], str(Path(armor_rx.__file__).parents[1])])
        done = subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={docker_gid}", "env", "-i", "PATH=/usr/bin:/bin",
             f"HOME={home}", f"PYTHONPATH={path}", f"DOCKER_HOST={os.environ['DOCKER_HOST']}", "ARMOR_RX_IDLE_TIMEOUT=5",
             system_python, "-c", UNPRIVILEGED, str(repo), git_image],
            cwd=home, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        for container in _containers_under(home):
            container.remove(force=True)
        shutil.rmtree(home, ignore_errors=True)
    assert report["user"] == f"{AGENT_UID}:{gid}"  # the agent's own uid, the host user's group
    assert any("not root" in note for note in report["degraded"])  # no nosuid remount: said, not hidden
    assert report["made"] == 0 and report["removed_by_agent"] == 0
    assert report["write_restored"] == 0 and report["restored_owner"] == uid
    assert report["restored_dirs_owner"] == [AGENT_UID]
    assert report["git_status"] == 0 and report["host_removed"] is True
    # Directories armor checked out were taken over by the agent (a plain user cannot chown), so a bare
    # repository planted in one is refused by the person's git.
    assert report["armor_dirs_owner"] == [AGENT_UID]
    assert report["planted_refused"] is True and report["planted_ran"] is False


def _containers_under(home):
    import docker

    client = docker.from_env()
    try:
        return [c for c in client.containers.list(all=True, filters={"label": "armor.task"})
                if c.labels.get("armor.state", "").startswith(str(home))]
    finally:
        client.close()
