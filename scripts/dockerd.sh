#!/usr/bin/env bash
# A private Docker daemon for armor_rx's tests and benchmarks.
#
#   eval "$(bash scripts/dockerd.sh)"        # install docker.io if missing, start, print `export DOCKER_HOST=...`
#   bash scripts/dockerd.sh stop             # stop it (only the daemon this script started)
#   bash scripts/dockerd.sh purge            # stop it and delete its directory (data root included)
#
# It runs on its own socket, data root and exec root (under ARMOR_DOCKERD_DIR,
# default /tmp/armor-dockerd) with no bridge and no iptables, so it does not touch
# a system daemon or the host's firewall. Needs root. Diagnostics go to stderr;
# only the export line goes to stdout.
set -euo pipefail
DIR="${ARMOR_DOCKERD_DIR:-/tmp/armor-dockerd}"
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/docker.pid"
LOG="$DIR/dockerd.log"
say() { echo "dockerd.sh: $*" >&2; }

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

answers() {
  [ -S "$SOCK" ] || return 1
  if command -v curl >/dev/null 2>&1; then
    curl -sf --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1
  else
    DOCKER_HOST="unix://$SOCK" timeout 5 docker version >/dev/null 2>&1
  fi
}

stop() {
  if running; then
    local pid; pid="$(cat "$PIDFILE")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    say "stopped dockerd (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

install() {
  if command -v dockerd >/dev/null 2>&1 && [ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then say "dockerd or busybox-static missing and not root: cannot install"; return 1; fi
  say "installing docker.io and busybox-static (apt-get)"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io busybox-static >&2
}

start() {
  install
  mkdir -p "$DIR"
  if running && answers; then
    echo "export DOCKER_HOST=unix://$SOCK"
    return 0
  fi
  stop
  # Debian's dockerd finds containerd, runc and docker-init on PATH.
  nohup dockerd --host "unix://$SOCK" --data-root "$DIR/data" --exec-root "$DIR/exec" \
    --pidfile "$PIDFILE" --bridge=none --iptables=false --ip6tables=false \
    >"$LOG" 2>&1 </dev/null &
  for _ in $(seq 1 300); do
    if answers; then
      say "dockerd answers on unix://$SOCK (log: $LOG)"
      echo "export DOCKER_HOST=unix://$SOCK"
      return 0
    fi
    sleep 0.1
  done
  say "dockerd did not answer within 30s; last log lines:"
  tail -n 20 "$LOG" >&2 || true
  stop
  return 1
}

purge() {
  stop
  if grep -q " $DIR/" /proc/mounts; then
    say "not deleting $DIR: something is still mounted under it"
  else
    rm -rf "$DIR"
  fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  purge) purge ;;
  *) say "usage: $0 [start|stop|purge]"; exit 2 ;;
esac
