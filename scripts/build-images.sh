#!/usr/bin/env bash
# Builds every image of the compose stack (docker-compose.e2e.yml) locally: no
# registry is needed or reachable, so nothing is FROM python/golang.
#
#   shakedown/base:VERSION       Debian bookworm minbase (debootstrap), docker-imported:
#                                python3, etcd-server, iptables, iproute2, util-linux, busybox
#   shakedown/python:VERSION     FROM base: the project in a venv (/opt/shakedown), installed
#                                offline from wheels the host's pip built: agents, the test
#                                runner, and etcd (Debian's, from the base)
#   shakedown/scheduler:VERSION  FROM scratch: the static scheduler (scripts/build-scheduler.sh)
#   shakedown/coredns:VERSION    FROM scratch: our static CoreDNS (scripts/build-coredns.sh)
#
# Every image carries the OCI labels org.opencontainers.image.{version,source,revision}
# and io.shakedown.build (what built it: SHAKEDOWN_BUILD_ID, default a hash of the
# inputs), so a test that builds its own images can remove exactly those.
#
# The base rootfs is cached as ~/.cache/shakedown/base-<hash>/rootfs.tar, keyed by
# images/base/packages.txt, SOURCE_DATE_EPOCH and this recipe; an image already
# tagged with the same hash is not rebuilt. The tar is made reproducibly (sorted
# names, numeric owners, mtimes clamped to SOURCE_DATE_EPOCH, no apt lists or logs).
# VERSION is the project's (pyproject.toml); SHAKEDOWN_IMAGE_TAG overrides it.
# Prints one line per image: "<component> <tag>".
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
log() { printf '==> %s\n' "$*" >&2; }

cache=${SHAKEDOWN_CACHE:-$HOME/.cache/shakedown}
mkdir -p "$cache"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
[[ -n $version ]] || { echo "build-images: no version in pyproject.toml" >&2; exit 1; }
tag=${SHAKEDOWN_IMAGE_TAG:-$version}
repo=${SHAKEDOWN_IMAGE_REPO:-shakedown}
source_url=https://github.com/shakedown-dev/shakedown
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[[ -z $(git status --porcelain 2>/dev/null) ]] || revision="$revision-dirty"
# 2025-05-20T00:00:00Z: the Debian snapshot the project's apt sources name.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1747699200}
suite=bookworm
mirror=${SHAKEDOWN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
RECIPE=1  # bump when the base recipe below changes

sha() { sha256sum | cut -c1-12; }
labels() {  # $1: component, $2: inputs hash -> docker build --label flags
  printf -- '--label\0%s\0' \
    "org.opencontainers.image.version=$version" \
    "org.opencontainers.image.source=$source_url" \
    "org.opencontainers.image.revision=$revision" \
    "org.opencontainers.image.title=shakedown-$1" \
    "io.shakedown.build=${SHAKEDOWN_BUILD_ID:-$2}" \
    "io.shakedown.inputs=$2"
}
current() {  # $1: image, $2: inputs hash -> true when that image exists built from them
  [[ $(docker image inspect -f '{{index .Config.Labels "io.shakedown.inputs"}}' "$1" 2>/dev/null) == "$2" ]]
}

# ---------------------------------------------------------------- base
build_base() {
  local packages hash dir tar image="$repo/base:$tag"
  packages=$(grep -v '^\s*#' images/base/packages.txt | grep -v '^\s*$' | LC_ALL=C sort | paste -sd, -)
  hash=$(printf '%s\n' "$packages" "$SOURCE_DATE_EPOCH" "$suite" "$RECIPE" "$(uname -m)" | sha)
  dir="$cache/base-$hash"
  tar="$dir/rootfs.tar"
  if current "$image" "$hash"; then
    echo "base $image"
    return
  fi
  if [[ ! -f $tar ]]; then
    command -v debootstrap >/dev/null || { echo "build-images: debootstrap is missing (scripts/setup.sh installs it)" >&2; exit 1; }
    local work
    work=$(mktemp -d "$cache/base-build.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    log "debootstrap $suite ($packages) into $work (a few minutes, once)"
    debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" \
      > "$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
    # What differs from build to build and no container needs.
    rm -rf "$work"/rootfs/var/cache/apt/*.bin "$work"/rootfs/var/cache/apt/archives/*.deb \
      "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/log/* "$work"/rootfs/tmp/* \
      "$work"/rootfs/var/cache/ldconfig/aux-cache "$work"/rootfs/debootstrap
    find "$work/rootfs" -name '__pycache__' -prune -exec rm -rf {} +
    : > "$work/rootfs/etc/machine-id"
    rm -f "$work/rootfs/etc/hostname" "$work/rootfs/etc/resolv.conf"
    mkdir -p "$dir"
    tar -C "$work/rootfs" --sort=name --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf "$tar.tmp" .
    mv -f "$tar.tmp" "$tar"
    rm -rf "$work"
    trap - EXIT
  fi
  log "importing $tar as $image"
  local args=() l
  while IFS= read -r -d '' l; do [[ $l == --label ]] || args+=(--change "LABEL $l"); done < <(labels base "$hash")
  docker import "${args[@]}" --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' "$tar" "$image" >/dev/null
  echo "base $image"
}

# ---------------------------------------------------------------- Go binaries, FROM scratch
build_healthprobe() {
  local hash dir bin
  hash=$(cat images/healthprobe/go.mod images/healthprobe/go.sum images/healthprobe/main.go | sha)
  dir="$cache/healthprobe-$hash"
  bin="$dir/healthprobe"
  if [[ ! -x $bin ]]; then
    mkdir -p "$dir"
    log "building the health probe into $dir"
    (cd images/healthprobe && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$bin.tmp.$$" .)
    mv -f "$bin.tmp.$$" "$bin"
  fi
  echo "$bin"
}

build_scratch() {  # $1: component, $2: its binary
  local ctx hash image="$repo/$1:$tag" probe=$3
  hash=$(cat "$2" "$probe" "images/$1/Dockerfile" | sha)
  if current "$image" "$hash"; then
    echo "$1 $image"
    return
  fi
  ctx=$(mktemp -d)
  cp "$2" "$ctx/$1"
  cp "$probe" "$ctx/healthprobe"
  local args=()
  while IFS= read -r -d '' l; do args+=("$l"); done < <(labels "$1" "$hash")
  log "building $image"
  docker build -q --force-rm "${args[@]}" -f "images/$1/Dockerfile" -t "$image" "$ctx" >/dev/null
  rm -rf "$ctx"
  echo "$1 $image"
}

# ---------------------------------------------------------------- the Python image
build_python() {  # $1: the health probe
  local ctx hash deps req image="$repo/python:$tag" base="$repo/base:$tag"
  local pip=${SHAKEDOWN_PIP:-$root/.venv/bin/pip}
  ctx=$(mktemp -d)
  # The dependencies as wheels, built once per dependency list (pure-Python sdists too).
  req=$("$root/.venv/bin/python" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
  deps="$cache/wheels-$(printf '%s\n' "$req" "$(uname -m)" | sha)"
  if [[ ! -f $deps/requirements.txt ]]; then
    log "building the dependencies' wheels into $deps"
    mkdir -p "$deps.tmp"
    printf '%s\n' "$req" > "$deps.tmp/requirements.txt"
    "$pip" wheel -q -w "$deps.tmp" -r "$deps.tmp/requirements.txt"
    rm -rf "$deps" && mv "$deps.tmp" "$deps"
  fi
  cp -r "$deps" "$ctx/deps"
  # The project's wheel, from the sources git knows of (tracked, or new and not ignored).
  mkdir -p "$ctx/src" "$ctx/project"
  git ls-files -z -co --exclude-standard -- pyproject.toml README.md agent driver shakedown \
    | while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - | tar -C "$ctx/src" -xf -
  hash=$( (docker image inspect -f '{{.Id}}' "$base"; cat "$deps/requirements.txt" "$1" \
           images/python/entrypoint.sh images/python/Dockerfile
           cd "$ctx/src" && find . -type f | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done) | sha)
  if current "$image" "$hash"; then
    rm -rf "$ctx"
    echo "python $image"
    return
  fi
  "$pip" wheel -q --no-deps --no-build-isolation -w "$ctx/project" "$ctx/src" >"$ctx/wheel.log" 2>&1 \
    || { cat "$ctx/wheel.log" >&2; exit 1; }
  rm -rf "$ctx/src"
  cp "$1" "$ctx/healthprobe"
  cp images/python/entrypoint.sh "$ctx/entrypoint.sh"
  local args=()
  while IFS= read -r -d '' l; do args+=("$l"); done < <(labels python "$hash")
  log "building $image"
  docker build -q --build-arg "BASE=$base" "${args[@]}" -f images/python/Dockerfile -t "$image" "$ctx" >/dev/null
  rm -rf "$ctx"
  echo "python $image"
}

build_base
probe=$(build_healthprobe)
build_scratch scheduler "$(scripts/build-scheduler.sh | tail -1)" "$probe"
build_scratch coredns "$(scripts/build-coredns.sh | tail -1)" "$probe"
build_python "$probe"
