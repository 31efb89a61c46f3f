#!/usr/bin/env bash
# Builds the grpc-go auth test server (tools/authtestserver) into the
# per-machine cache, keyed by a hash of its sources, like build-coredns.sh.
# The binary's path is the last line on stdout.
set -euo pipefail
cd "$(dirname "$0")/../tools/authtestserver"
cache=${SHAKEDOWN_CACHE:-$HOME/.cache/shakedown}
hash=$(cat go.mod go.sum ./*.go | sha256sum | cut -c1-12)
dir="$cache/authtestserver-$hash"
bin="$dir/authtestserver"
if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  echo "build-authtestserver: building into $dir" >&2
  tmp="$bin.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$tmp" . >&2
  mv -f "$tmp" "$bin"
fi
echo "$bin"
