#!/usr/bin/env bash
# Builds our minimal CoreDNS (tools/coredns) into a per-machine cache outside
# the repo, keyed by the pinned version and a hash of go.mod+go.sum+main.go, so
# a rebuild happens only when the inputs change. Also points the stable symlink
# ${cache}/coredns at the current build (driver.control.coredns looks there).
# The binary's path is the last line on stdout: bin=$(scripts/build-coredns.sh | tail -1)
set -euo pipefail
cd "$(dirname "$0")/../tools/coredns"
cache=${SHAKEDOWN_CACHE:-$HOME/.cache/shakedown}
version=$(awk '$1 == "github.com/coredns/coredns" { print $2; exit }' go.mod)
if [ -z "$version" ]; then
  # The require may be in a single-line form: `require github.com/coredns/coredns vX`.
  version=$(awk '$2 == "github.com/coredns/coredns" { print $3; exit }' go.mod)
fi
[ -n "$version" ] || { echo "build-coredns: no coredns version in go.mod" >&2; exit 1; }
hash=$(cat go.mod go.sum main.go | sha256sum | cut -c1-12)
dir="$cache/coredns-$version-$hash"
bin="$dir/coredns"
if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  echo "build-coredns: building CoreDNS $version into $dir" >&2
  # Build to a temp name and rename, so an interrupted build never leaves a
  # half-written binary that a later run would take as done.
  tmp="$bin.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$tmp" . >&2
  mv -f "$tmp" "$bin"
fi
# Refresh the stable symlink atomically (ln to a temp name, then rename over).
ln -sfn "$bin" "$cache/coredns.tmp.$$"
mv -fT "$cache/coredns.tmp.$$" "$cache/coredns"
echo "$bin"
