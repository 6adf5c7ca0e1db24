#!/usr/bin/env bash
# The whole test suite, twice, each time in a fresh virtual environment holding what
# a user would install (a built wheel of armor_rx, not this checkout on sys.path):
#
#   newest  every dependency at its newest release (pip install --upgrade, eager, no cache)
#   lowest  every dependency pinned (==) to the lower bound pyproject.toml declares
#           (scripts/lowest.py turns each >= into ==, so the pins cannot drift from it)
#
# Both must pass. Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/operators -x`;
# ARMOR_TEST_MATRIX=newest (or lowest) runs only that one. The venvs live under
# .venv-test/ (gitignored) and are made anew on every run. PYTHON picks the interpreter
# that makes them (default python3). CI (.ci/run) runs exactly this script.
#
# Both runs include the docker-marked tests: the whole suite takes about 2-3 minutes
# per venv on this 2-core machine, so there is no reason to test less in one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${PYTHON:-python3}"
MATRIX="${ARMOR_TEST_MATRIX:-newest lowest}"
VENVS="${ARMOR_TEST_VENVS:-$ROOT/.venv-test}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
say() { echo "test.sh: $*" >&2; }
warn() { echo "!!!!!!!! WARNING: $* !!!!!!!!" >&2; }

for which in $MATRIX; do
  case "$which" in newest|lowest) ;; *) say "ARMOR_TEST_MATRIX: unknown run '$which' (newest, lowest)"; exit 2 ;; esac
done

# --- programs the tests drive: install with apt when missing (root only); never fatal ---
apt_updated=0
apt_install() {  # apt_install PACKAGE... ; returns non-zero if it could not
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then return 1; fi
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq >&2 || return 1
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}
missing=()
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
if [ "${ARMOR_NO_PODMAN:-0}" != 1 ]; then command -v podman >/dev/null 2>&1 || missing+=(podman); fi
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} (apt-get)"
  apt_install "${missing[@]}" || warn "could not install ${missing[*]} (not root, or no apt-get); tests that need them will be skipped"
fi
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  say "$PY has no venv/ensurepip module; installing python3-venv (apt-get)"
  apt_install python3-venv || { say "cannot make a virtual environment with $PY (on Debian: apt-get install python3-venv)"; exit 1; }
fi

# --- the docker-marked tests need a real engine: a private dockerd, stopped and deleted on exit ---
# Each run gets its own daemon directory, so runs side by side do not stop each other's.
# ARMOR_NO_DOCKERD=1 skips it (the docker-marked tests are then skipped).
if [ "${ARMOR_NO_DOCKERD:-0}" != 1 ]; then
  export ARMOR_DOCKERD_DIR="${ARMOR_DOCKERD_DIR:-/tmp/armor-dockerd-test-$$}"
  if dockerd_env="$(bash scripts/dockerd.sh start)"; then
    eval "$dockerd_env"
    # The daemon is up, so a docker-marked test that cannot use it fails instead of skipping.
    export DOCKER_HOST ARMOR_REQUIRE_DOCKER=1
    trap 'bash scripts/dockerd.sh purge' EXIT  # replaced by run_cleanup below, which also purges it
  else
    warn "could not install or start dockerd; the docker-marked tests will be SKIPPED"
  fi
fi

# --- a second real engine: Podman's Docker-compatible API on its own socket (ARMOR_NO_PODMAN=1 skips) ---
# tests/engines/ use it in every run; the newest run also runs the generic session, output-quota
# and secrets tests against it (PODMAN_TESTS below).
cleanup=()
if [ "${ARMOR_NO_DOCKERD:-0}" != 1 ]; then cleanup+=("bash scripts/dockerd.sh purge"); fi
if [ "${ARMOR_NO_PODMAN:-0}" != 1 ] && command -v podman >/dev/null 2>&1; then
  PODMAN_DIR="$(mktemp -d /tmp/armor-podman-XXXXXX)"
  podman system service --time=0 "unix://$PODMAN_DIR/podman.sock" >"$PODMAN_DIR/service.log" 2>&1 &
  PODMAN_PID=$!
  cleanup+=("kill $PODMAN_PID" "rm -rf $PODMAN_DIR")
  podman_answers() {  # GET /_ping on the socket, with the interpreter we have (curl may be missing)
    "$PY" - "$PODMAN_DIR/podman.sock" >/dev/null 2>&1 <<'PING'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sys.argv[1])
s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
sys.exit(0 if b" 200 " in s.recv(200) else 1)
PING
  }
  for _ in $(seq 1 100); do podman_answers && break; sleep 0.2; done
  if podman_answers; then
    export ARMOR_PODMAN_HOST="unix://$PODMAN_DIR/podman.sock" ARMOR_REQUIRE_PODMAN=1
    say "podman answers on $ARMOR_PODMAN_HOST"
  else
    warn "podman system service did not answer (see $PODMAN_DIR/service.log); the Podman tests will be SKIPPED"
  fi
else
  [ "${ARMOR_NO_PODMAN:-0}" = 1 ] || warn "podman is not installed; the Podman tests will be SKIPPED"
fi
run_cleanup() { for c in "${cleanup[@]}"; do eval "$c" >/dev/null 2>&1 || true; done; }
trap run_cleanup EXIT
PODMAN_TESTS=(tests/engines tests/sinks/docker/test_session_docker.py tests/sinks/docker/test_output_quota.py tests/service/test_secrets.py)

# make_venv NAME: a fresh venv at $VENVS/NAME with armor_rx[test] installed as a wheel.
make_venv() {
  local name="$1" dir="$VENVS/$1"
  rm -rf "$dir"
  mkdir -p "$VENVS"
  "$PY" -m venv "$dir"
  # --no-cache-dir: nothing a previous run downloaded or built is reused.
  "$dir/bin/python" -m pip install --quiet --no-cache-dir --upgrade pip
  if [ "$name" = newest ]; then
    "$dir/bin/python" -m pip install --quiet --no-cache-dir --upgrade --upgrade-strategy eager "$ROOT[test]"
  else
    "$dir/bin/python" "$ROOT/scripts/lowest.py" test >"$dir/lowest-constraints.txt"
    "$dir/bin/python" -m pip install --quiet --no-cache-dir -c "$dir/lowest-constraints.txt" "$ROOT[test]"
  fi
}

declare -A result seconds
overall=0 total_passed=0 total_failed=0
for which in $MATRIX; do
  start=$SECONDS
  echo "======== test.sh: [$which] making a fresh venv in $VENVS/$which ========"
  if ! make_venv "$which"; then
    result[$which]="FAILED (could not install)"
    seconds[$which]=$((SECONDS - start))
    overall=1
    continue
  fi
  "$VENVS/$which/bin/python" -m pip list --format=freeze 2>/dev/null | grep -iE '^(armor-rx|reactivex|docker|dulwich|structlog|orjson|prompt.toolkit|filelock|pathspec|merge3|aiohttp|httpx|pytest|pytest-timeout|hypothesis|mypy)==' | tr '\n' ' '
  echo
  echo "======== test.sh: [$which] pytest $* ========"
  set +e
  # The venv's pytest script, not `python -m pytest`: -m would put this checkout first on
  # sys.path and the tests would import the source tree instead of the installed wheel.
  "$VENVS/$which/bin/pytest" -p no:cacheprovider "$@" 2>&1 | tee "$VENVS/$which/pytest.log"
  status=${PIPESTATUS[0]}
  if [ "$which" = newest ] && [ $# = 0 ] && [ -n "${ARMOR_PODMAN_HOST:-}" ] && { [ "$status" = 0 ] || [ "$status" = 5 ]; }; then
    echo "======== test.sh: [$which] the same session, output-quota and secrets tests on Podman ========"
    DOCKER_HOST="$ARMOR_PODMAN_HOST" "$VENVS/$which/bin/pytest" -p no:cacheprovider "${PODMAN_TESTS[@]}" 2>&1 | tee "$VENVS/$which/pytest-podman.log"
    podman_status=${PIPESTATUS[0]}
    podman_last="$(grep -E '^=+ .* in [0-9.]+s' "$VENVS/$which/pytest-podman.log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')"
    total_passed=$((total_passed + $(grep -oE '[0-9]+ passed' <<<"$podman_last" | grep -oE '[0-9]+' || echo 0)))
    if [ "$podman_status" != 0 ]; then status=$podman_status; fi
  fi
  set -e
  seconds[$which]=$((SECONDS - start))
  # pytest's closing line, e.g. "=== 1 failed, 669 passed, 2 skipped in 262.12s (0:04:22) ==="
  last="$(grep -E '^=+ .* in [0-9.]+s' "$VENVS/$which/pytest.log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')"
  n_passed=$(grep -oE '[0-9]+ passed' <<<"$last" | grep -oE '[0-9]+' || echo 0)
  n_failed=$(( $(grep -oE '[0-9]+ (failed|error|errors)' <<<"$last" | grep -oE '[0-9]+' | paste -sd+ - || true) + 0 ))
  total_passed=$((total_passed + n_passed)); total_failed=$((total_failed + n_failed))
  case "$status" in
    0) result[$which]="passed: ${last:-?}" ;;
    5) result[$which]="passed (pytest collected no tests, exit 5 counts as success)" ;;
    *) result[$which]="FAILED (pytest exit $status): ${last:-no summary line}"; overall=1
       [ "$n_failed" -gt 0 ] || total_failed=$((total_failed + 1)) ;;
  esac
done

echo "======== test.sh: summary ========"
for which in $MATRIX; do
  echo "test.sh: [$which] venv $VENVS/$which, ${seconds[$which]}s in all: ${result[$which]}"
done
if [ "$overall" = 0 ]; then echo "test.sh: ALL RUNS PASSED ($MATRIX)"; else echo "test.sh: SOME RUN FAILED"; fi
echo "total: $total_passed passed, $total_failed failed"
exit "$overall"
