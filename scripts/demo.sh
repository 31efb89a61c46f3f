#!/usr/bin/env bash
# The README's main command: PKI and keys -> a local agent -> containers driven
# over mTLS + HMAC -> the authentication matrix -> a report. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
run=$(date -u +%Y%m%dT%H%M%SZ)-$$
out="$PWD/reports/demo-$run"
mkdir -p "$out"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
agent_pid=""
cleanup() {
  if [[ -n $agent_pid ]]; then kill "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

image=$(python -m driver.images)
say shakedown certs init "$out/certs" --agent demo=127.0.0.1,localhost --principal driver:admin --principal viewer:observer --principal mallory:admin
shakedown certs init "$out/certs" --agent demo=127.0.0.1,localhost --principal driver:admin --principal viewer:observer --principal mallory:admin
say shakedown certs revoke "$out/certs" mallory
shakedown certs revoke "$out/certs" mallory
say shakedown keys init "$out/certs/keys.json" --principal driver --principal viewer
shakedown keys init "$out/certs/keys.json" --principal driver --principal viewer

say shakedown-agent --name demo --listen 127.0.0.1:0 --certs "$out/certs" --keys "$out/certs/keys.json" '&'
shakedown-agent --name demo --listen 127.0.0.1:0 --certs "$out/certs" --keys "$out/certs/keys.json" \
  --port-file "$out/agent.port" --state-dir "$out/state" 2>"$out/agent.log" &
agent_pid=$!
for _ in $(seq 1 100); do [[ -s $out/agent.port ]] && break; sleep 0.1; done
[[ -s $out/agent.port ]] || { cat "$out/agent.log"; echo "agent did not start" >&2; exit 1; }
target="127.0.0.1:$(cat "$out/agent.port")"
conn=(--target "$target" --certs "$out/certs" --keys "$out/certs/keys.json")

say shakedown agent info "${conn[@]}"
shakedown agent info "${conn[@]}"
say shakedown agent run "${conn[@]}" --name "demo-$run" "$image" sh -c 'echo hello from shakedown; sleep 300'
shakedown agent run "${conn[@]}" --name "demo-$run" "$image" sh -c 'echo hello from shakedown; sleep 300'
say shakedown agent ps "${conn[@]}"
shakedown agent ps "${conn[@]}"
for _ in $(seq 1 50); do shakedown agent logs "${conn[@]}" "demo-$run" | grep -q hello && break; sleep 0.1; done
say shakedown agent logs "${conn[@]}" "demo-$run"
shakedown agent logs "${conn[@]}" "demo-$run"
say shakedown agent rm -f "${conn[@]}" "demo-$run"
shakedown agent rm -f "${conn[@]}" "demo-$run"

say shakedown verify auth "${conn[@]}"
status=0
shakedown verify auth "${conn[@]}" || status=$?
shakedown verify auth "${conn[@]}" --json > "$out/verify-auth.json" || true
cleanup; agent_pid=""
echo
echo "report: $out/verify-auth.json  (agent log: $out/agent.log)"
exit $status
