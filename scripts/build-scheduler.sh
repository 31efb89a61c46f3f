#!/usr/bin/env bash
# Builds the reference scheduler (examples/scheduler) into the per-machine
# cache, keyed by a hash of its sources AND of the go/ SDK it replaces in
# (go.mod `replace ... => ../../go`), like build-coredns.sh. Also points the
# stable symlink ${cache}/scheduler at the current build
# (driver.control.scheduler looks there). The binary's path is the last line
# on stdout: bin=$(scripts/build-scheduler.sh | tail -1)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/examples/scheduler"
cache=${SHAKEDOWN_CACHE:-$HOME/.cache/shakedown}
# Every Go source and module file of both trees, in a stable order, names included
# (a rename changes the build too). Tests do not change the binary.
hash=$( (cd "$root" && find examples/scheduler go -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) \
          ! -name '*_test.go' | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done) \
        | sha256sum | cut -c1-12)
dir="$cache/scheduler-$hash"
bin="$dir/scheduler"
if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  echo "build-scheduler: building into $dir" >&2
  # Temp name then rename: an interrupted build never leaves a half-written binary.
  tmp="$bin.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$tmp" . >&2
  mv -f "$tmp" "$bin"
fi
ln -sfn "$bin" "$cache/scheduler.tmp.$$"
mv -fT "$cache/scheduler.tmp.$$" "$cache/scheduler"
echo "$bin"
