#!/usr/bin/env bash
# Static checks: lint, types, and that generated artefacts are fresh.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/mypy
scripts/genproto.sh --check
.venv/bin/python scripts/gen_hmac_vectors.py --check || { echo "tests/vectors/tests/vectors/hmac-v*.json are stale: run scripts/gen_hmac_vectors.py"; exit 1; }
# Every Go module: formatted and vetted (vetting builds the generated stubs too).
for mod in go tools/authtestserver tools/porcupine examples/scheduler images/healthprobe; do
  unformatted=$(cd "$mod" && gofmt -l .)
  [[ -z $unformatted ]] || { echo "gofmt needed in $mod: $unformatted"; exit 1; }
  (cd "$mod" && go vet ./...)
done
