#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, the venv, a
# running Docker engine. Safe to re-run; does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
[[ -x /bin/busybox || -x /usr/bin/busybox ]] || need+=(busybox-static)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v chromium >/dev/null || need+=(chromium)  # the fuzz report's browser test
# The compose stack (make images / make e2e): the base image's rootfs, and a compose client.
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.shakedown-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  log "installing Python dependencies"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi

command -v go >/dev/null || { echo "Go (>= 1.26) is needed to build CoreDNS: https://go.dev/dl" >&2; exit 1; }
log "CoreDNS: $(scripts/build-coredns.sh | tail -1)"
log "auth test server: $(scripts/build-authtestserver.sh | tail -1)"
log "scheduler: $(scripts/build-scheduler.sh | tail -1)"
log "porcupine cross-checker: $(scripts/build-porcupine.sh | tail -1)"

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: .cache/dockerd.log)"
  mkdir -p .cache
  $SUDO sh -c 'nohup dockerd >"$1" 2>&1 & echo $! >"$2"' sh .cache/dockerd.log .cache/dockerd.pid
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 .cache/dockerd.log; echo "dockerd did not start" >&2; exit 1; }
fi
