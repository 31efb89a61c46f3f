#!/usr/bin/env bash
# `go test ./...` in every Go module of the repo. The Go SDK's interop test
# starts a real Python agent from .venv: here it must run, never skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export SHAKEDOWN_REQUIRE_INTEROP=1
for mod in $(find . -name go.mod -not -path './.cache/*' -not -path './.venv/*' -exec dirname {} \; | sort); do
  [[ -n $(find "$mod" -name '*_test.go' -print -quit) ]] || continue  # tools without tests
  echo "==> go test $mod"
  (cd "$mod" && go test -count=1 ./...)
done
