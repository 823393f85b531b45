#!/usr/bin/env bash
# Builds Bridle's images: one per service (orchestrator, router, tools, approvals, secrets) and
# one for the `bridle` CLI, named ${BRIDLE_IMAGE_PREFIX}<name>:${BRIDLE_IMAGE_TAG}
# (default bridle/<name>:local).
#
#   deploy/images/build.sh [--bin-dir DIR] [--from-source] [--bases] [NAME...]
#
#   --bin-dir DIR   package binaries already built on this machine (deploy/docker/Dockerfile.prebuilt;
#                   default: target/release, else target/debug). Debug builds work but are larger.
#   --from-source   build in Docker from the repository (deploy/docker/Dockerfile); needs a Rust
#                   builder image: BUILDER_IMAGE (default docker.io/library/rust:1-bookworm).
#   --bases         also build the local base/infrastructure images (deploy/images/build-bases.sh)
#                   when missing; RUNTIME_IMAGE defaults to bridle/runtime-base:local then.
#
# RUNTIME_IMAGE picks the base (default: bridle/runtime-base:local when it exists, else distroless
# cc from gcr.io). The tools image also gets mke2fs, mount, umount and losetup: from
# MOUNT_TOOLS_IMAGE (default bridle/mount-tools:local, made by build-bases.sh when missing) with
# --bin-dir, from the builder stage with --from-source. Rebuilding with unchanged binaries reuses
# Docker's layer cache, so a repeat run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

PREFIX="${BRIDLE_IMAGE_PREFIX:-bridle/}"
TAG="${BRIDLE_IMAGE_TAG:-local}"
bin_dir=""
from_source=0
bases=0
names=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="${2:?--bin-dir needs a folder}"; shift 2 ;;
    --from-source) from_source=1; shift ;;
    --bases) bases=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) die "unknown flag $1" ;;
    *) names+=("$1"); shift ;;
  esac
done
[ ${#names[@]} -gt 0 ] || names=(orchestrator router tools approvals secrets cli)

if [ "$bases" = 1 ]; then bash deploy/images/build-bases.sh all; fi
if [ -z "${RUNTIME_IMAGE:-}" ]; then
  if docker image inspect bridle/runtime-base:local >/dev/null 2>&1; then
    RUNTIME_IMAGE=bridle/runtime-base:local
  else
    RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
  fi
fi

MOUNT_TOOLS_IMAGE="${MOUNT_TOOLS_IMAGE:-${BRIDLE_MOUNT_TOOLS_IMAGE:-bridle/mount-tools:local}}"

binary_of() {
  case "$1" in
    orchestrator|router|tools|approvals|secrets) echo "bridle-$1" ;;
    cli) echo bridle ;;
    *) die "unknown image '$1' (orchestrator router tools approvals secrets cli)" ;;
  esac
}

build() {
  # $1 name, then docker build arguments. The legacy builder's progress goes to a log that is
  # shown only when the build fails.
  local name="$1"; shift
  local image="${PREFIX}${name}:${TAG}" out
  if ! out=$(docker build -q -t "$image" --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" --target "$name" "$@" 2>&1); then
    printf '%s\n' "$out" >&2
    die "building $image failed"
  fi
  log "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}'))"
}

if [ "$from_source" = 1 ]; then
  for n in "${names[@]}"; do
    binary_of "$n" >/dev/null
    build "$n" -f deploy/docker/Dockerfile --build-arg BUILDER_IMAGE="${BUILDER_IMAGE:-docker.io/library/rust:1-bookworm}" .
  done
  exit 0
fi

if [ -z "$bin_dir" ]; then
  target="${CARGO_TARGET_DIR:-$ROOT/target}"
  if [ -x "$target/release/bridle-orchestrator" ]; then bin_dir="$target/release"; else bin_dir="$target/debug"; fi
fi
[ -d "$bin_dir" ] || die "$bin_dir does not exist: cargo build --release --bins first (or pass --bin-dir)"

stage=$(mktemp -d /tmp/bridle-images-ctx.XXXXXX)
trap 'rm -rf "$stage"' EXIT
# Strip (debug info is most of a binary's size) into one context, made an image FROM scratch that
# the service images copy from: the binaries travel to the engine once, and unchanged ones give
# identical layers, so a rebuild hits the cache.
mkdir -p "$stage/bin" "$stage/empty"
for n in "${names[@]}"; do
  for b in "$(binary_of "$n")" bridle-health-probe; do
    [ -e "$stage/bin/$b" ] && continue
    [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing: cargo build --bins (the workspace's binaries) first"
    strip -o "$stage/bin/$b" "$bin_dir/$b" 2>/dev/null || cp "$bin_dir/$b" "$stage/bin/$b"
    touch -d @0 "$stage/bin/$b"
  done
done
BINARIES="${PREFIX}binaries:${TAG}"
log "packaging binaries from $bin_dir on $RUNTIME_IMAGE"
printf 'FROM scratch\nCOPY bin/ /out/\n' >"$stage/Dockerfile"
out=$(docker build -q -t "$BINARIES" -f "$stage/Dockerfile" "$stage" 2>&1) || { printf '%s\n' "$out" >&2; die "staging the binaries failed"; }
for n in "${names[@]}"; do
  if [ "$n" = tools ] && ! docker image inspect "$MOUNT_TOOLS_IMAGE" >/dev/null 2>&1; then
    log "$MOUNT_TOOLS_IMAGE is missing: building it (deploy/images/build-bases.sh mount-tools)"
    BRIDLE_MOUNT_TOOLS_IMAGE="$MOUNT_TOOLS_IMAGE" bash deploy/images/build-bases.sh mount-tools
  fi
  build "$n" -f "$ROOT/deploy/docker/Dockerfile.prebuilt" --build-arg BINARIES_IMAGE="$BINARIES" \
    --build-arg MOUNT_TOOLS_IMAGE="$MOUNT_TOOLS_IMAGE" "$stage/empty"
done
