#!/usr/bin/env bash
# Regenerates the Python modules (and .pyi stubs) of proto/ into shakedown/.
# `scripts/genproto.sh --check` regenerates into a scratch dir and fails when
# the committed files differ: CI runs it so stale generated code can't land.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=$(pwd)
if [[ "${1:-}" == "--check" ]]; then
  out=$(mktemp -d "${TMPDIR:-/tmp}/shakedown-genproto.XXXXXX")
  trap 'rm -rf "$out"' EXIT
fi
protos=$(cd proto && find . -name '*.proto' | sort)
bindir=$(dirname "$PY")
log=$(cd proto && "../$PY" -m grpc_tools.protoc -I. \
  --plugin=protoc-gen-mypy="../$bindir/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="../$bindir/protoc-gen-mypy_grpc" \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" $protos 2>&1) || { echo "$log" >&2; exit 1; }
for d in $(cd proto && find . -name '*.proto' -exec dirname {} \; | sort -u); do
  p="$out/$d"
  while [[ "$p" != "$out" && "$p" != "$out/." ]]; do
    [[ -f "$p/__init__.py" ]] || : > "$p/__init__.py"
    p=$(dirname "$p")
  done
done
if [[ "${1:-}" == "--check" ]]; then
  status=0
  for f in $(cd "$out" && find . -name '*_pb2*.py*' | sort); do
    if ! cmp -s "$out/$f" "$f"; then echo "stale generated file: $f (run scripts/genproto.sh)"; status=1; fi
  done
  [[ $status == 0 ]] && echo "generated code is up to date"
  exit $status
fi
echo "generated: $(cd proto && find . -name '*.proto' | wc -l) proto file(s) into shakedown/"
