#!/usr/bin/env bash
# The README's main command: a local environment (etcd, CoreDNS, 3 agents on
# this machine's Docker engine, 2 replicas of the reference scheduler),
# discovery verified, the seven scenario suites run against it, then the
# summary table, where the reports are, and how to remove it all.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
name=${SHAKEDOWN_DEMO_ENV:-demo}
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

python -m driver.images >/dev/null   # the small local test image; no registry needed
say shakedown env create "$name" --nodes 3 --schedulers 2
shakedown env create "$name" --nodes 3 --schedulers 2
read -r dns etcd domain root < <(shakedown env status "$name" --json |
  python -c 'import json,sys; d=json.load(sys.stdin); print(d["dns"], d["etcd"], d["domain"], d["root"])')
say shakedown verify discovery --dns "$dns" --etcd "$etcd" --domain "$domain" --certs "$root/config/certs"
shakedown verify discovery --dns "$dns" --etcd "$etcd" --domain "$domain" --certs "$root/config/certs"
say shakedown env test "$name"
status=0
shakedown env test "$name" || status=$?
echo
echo "environment $name keeps running; inspect it with: shakedown env status $name"
echo "remove it with: shakedown env destroy $name"
exit $status
