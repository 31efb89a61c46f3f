#!/usr/bin/env bash
# Builds the porcupine cross-checker (tools/porcupine: our history.jsonl into
# github.com/anishathalye/porcupine) into the per-machine cache, keyed by a hash
# of its sources, like build-authtestserver.sh. The binary's path is the last
# line on stdout: bin=$(scripts/build-porcupine.sh | tail -1)
set -euo pipefail
cd "$(dirname "$0")/../tools/porcupine"
cache=${SHAKEDOWN_CACHE:-$HOME/.cache/shakedown}
hash=$(cat go.mod go.sum $(ls ./*.go | grep -v _test.go) | sha256sum | cut -c1-12)  # tests do not change the binary
dir="$cache/porcupine-$hash"
bin="$dir/porcupine"
if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  echo "build-porcupine: building into $dir" >&2
  tmp="$bin.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$tmp" . >&2
  mv -f "$tmp" "$bin"
fi
echo "$bin"
