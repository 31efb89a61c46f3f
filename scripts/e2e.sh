#!/usr/bin/env bash
# `make e2e`: the compose stack end to end. Builds the images (cached), brings up a
# stack of its own (`shakedown env create e2e-<run> --compose`: certificates, keys and
# Corefile first, then `up`, waiting on every health check), runs the seven suites in
# the test-runner container, then `shakedown fuzz` on the stack (90 s), prints the
# summary and the report paths, and tears the stack down (compose down -v
# --remove-orphans, this project only, and what its agents created) on every exit,
# failure included.
#   SHAKEDOWN_E2E_SUITES=basic_workflow,authentication   only these suites
#   SHAKEDOWN_E2E_KEEP=1                                 leave the stack up afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
started=$(date +%s)
run=$(python -c 'import secrets; print(secrets.token_hex(3))')
name="e2e-$run"
base="$PWD/.cache/e2e/envs"
reports="$PWD/reports/$name"
mkdir -p "$base" "$reports"

teardown() {
  local status=$?
  if [[ -n ${SHAKEDOWN_E2E_KEEP:-} ]]; then
    echo "stack kept: shakedown env status $name --base $base; remove it: shakedown env destroy $name --base $base"
  else
    shakedown env destroy "$name" --base "$base" >/dev/null 2>&1 \
      || echo "e2e: teardown of $name failed; run: shakedown env destroy $name --base $base" >&2
  fi
  echo "e2e: $(( $(date +%s) - started )) s in all"
  exit "$status"
}
trap teardown EXIT

echo "==> images"
scripts/build-images.sh
python -m driver.images >/dev/null   # the suites' busybox image, on this engine
echo "==> stack $name"
up=$(date +%s)
shakedown env create "$name" --compose --base "$base"
echo "e2e: stack healthy in $(( $(date +%s) - up )) s"
echo "==> test-runner"
status=0
python -m driver.env.compose_runner runner "$name" --base "$base" --reports "$reports" || status=$?
echo "==> shakedown fuzz on the stack (container faults and partitions through its agents)"
fuzz=0
shakedown fuzz --env "$name" --base "$base" --budget 90s --seed 3 --json >"$reports/fuzz.json" || fuzz=$?
# Exit 0 (valid) and at least one fault that really went in: a run that injected nothing
# proves nothing about the agents in the stack.
python - "$reports/fuzz.json" <<'PY' || { [[ $fuzz != 0 ]] || fuzz=1; }
import json, shutil, sys
from pathlib import Path
from driver.fuzz.history import load
try:
    s = json.load(open(sys.argv[1]))
    kept = Path(sys.argv[1]).with_name("fuzz")  # the environment's own copy goes with it
    shutil.copytree(s["reports_dir"], kept)
    faults = [op for op in load(kept / "history.jsonl")
              if op.process == "nemesis" and op.f == "inject" and op.type == "ok"]
except (OSError, ValueError, KeyError, TypeError) as exc:
    sys.exit(f"fuzz: no summary to read ({type(exc).__name__}: {exc})")
print(f"fuzz: valid {s['valid']}, {s['examples']} examples, {s['steps']} steps, "
      f"{len(faults)} fault(s) injected, kinds {','.join(s['kinds'])}; report {kept}/report.html")
sys.exit(0 if s["valid"] is True and faults and "partition" in s["kinds"] else 1)
PY
if [[ $fuzz != 0 ]]; then
  echo "e2e: shakedown fuzz on the stack failed (exit $fuzz)" >&2
  [[ $status != 0 ]] || status=$fuzz
fi
echo
for f in report.json summary.json junit.xml fuzz.json; do
  if [[ -f $reports/$f ]]; then echo "${f%%.*}: $reports/$f"; else echo "${f%%.*}: (none: the runner failed before the suites ran)"; fi
done
exit $status
