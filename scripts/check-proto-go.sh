#!/usr/bin/env bash
# Proves proto/ compiles for Go: builds the pinned protoc plugins, generates Go
# stubs into a scratch module and `go build`s them against google.golang.org/grpc.
# The Go client proper arrives in its own module; this keeps the contract honest now.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PY=${PYTHON:-.venv/bin/python}
bin="$root/.cache/go-bin"
mkdir -p "$bin"
(cd tools/protoc-plugins && GOBIN="$bin" go install \
  google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc)
work=$(mktemp -d "${TMPDIR:-/tmp}/shakedown-protogo.XXXXXX")
trap 'rm -rf "$work"' EXIT
mod=github.com/shakedown-dev/shakedown/gen/go
(cd proto && "$root/$PY" -m grpc_tools.protoc -I. \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$work" --go_opt=module=$mod \
  --go-grpc_out="$work" --go-grpc_opt=module=$mod \
  $(find . -name '*.proto' | sort))
cat > "$work/go.mod" <<MOD
module $mod

go 1.24
MOD
cd "$work"
# Resolve grpc/protobuf at the versions the plugins were pinned with.
go get google.golang.org/grpc@v1.73.0 google.golang.org/protobuf@v1.36.6 >/dev/null 2>&1
go build ./... && go vet ./...
echo "proto compiles for Go: $(find . -name '*.go' | wc -l) files"
