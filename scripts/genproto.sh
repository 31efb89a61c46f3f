#!/usr/bin/env bash
# The one generator of proto/: Python modules (+ .pyi stubs) into shakedown/ and
# Go packages into go/gen/ (protoc-gen-go / protoc-gen-go-grpc at the versions
# pinned in tools/protoc-plugins). `scripts/genproto.sh --check` regenerates
# into a scratch dir and fails when a committed file differs or is missing: CI
# runs it so stale generated code can't land.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PY=${PYTHON:-.venv/bin/python}
check=0; [[ "${1:-}" == "--check" ]] && check=1
out=$root
if ((check)); then
  out=$(mktemp -d "${TMPDIR:-/tmp}/shakedown-genproto.XXXXXX")
  trap 'rm -rf "$out"' EXIT
fi
bin="$root/.cache/go-bin"
mkdir -p "$bin" "$out/go/gen"
(cd tools/protoc-plugins && GOBIN="$bin" go install \
  google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc)
protos=$(cd proto && find . -name '*.proto' | sort)
bindir=$(cd "$(dirname "$PY")" && pwd)
gomod=github.com/shakedown-dev/shakedown/go/gen
log=$(cd proto && "$root/$PY" -m grpc_tools.protoc -I. \
  --plugin=protoc-gen-mypy="$bindir/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$bindir/protoc-gen-mypy_grpc" \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  --go_out="$out/go/gen" --go_opt=module=$gomod \
  --go-grpc_out="$out/go/gen" --go-grpc_opt=module=$gomod \
  $protos 2>&1) || { echo "$log" >&2; exit 1; }
for d in $(cd proto && find . -name '*.proto' -exec dirname {} \; | sort -u); do
  p="$out/$d"
  while [[ "$p" != "$out" && "$p" != "$out/." ]]; do
    [[ -f "$p/__init__.py" ]] || : > "$p/__init__.py"
    p=$(dirname "$p")
  done
done
if ((check)); then
  status=0
  for f in $(cd "$out" && { find . -name '*_pb2*.py*'; find go/gen -name '*.pb.go'; } | sort); do
    if ! cmp -s "$out/$f" "$f"; then echo "stale generated file: $f (run scripts/genproto.sh)"; status=1; fi
  done
  for f in $(find go/gen -name '*.pb.go' | sort); do
    [[ -f "$out/$f" ]] || { echo "generated file without a proto: $f"; status=1; }
  done
  [[ $status == 0 ]] && echo "generated code is up to date (Python and Go)"
  exit $status
fi
echo "generated: $(echo "$protos" | wc -l) proto file(s) into shakedown/ and go/gen/"
