#!/usr/bin/env bash
# Builds the sandbox images that Bridle's container tools run in, from Debian packages, with no
# image registry: debootstrap a minimal root filesystem from this machine's own apt sources, then
# `docker import` it. Real deployments can name any image; these exist so the quickstart and the
# tests work on a machine that cannot pull.
#
#   deploy/sandbox/build.sh [python|bash|mcp|all]   (default: python)
#
# `mcp` is python plus git and a venv (/opt/mcp, on PATH) holding the published MCP servers
# mcp-server-time and mcp-server-git; their wheels are downloaded by the host's pip (so the
# host's package index settings apply) and installed offline inside the image.
#
# Skips an image that already exists unless BRIDLE_SANDBOX_REBUILD=1.
set -euo pipefail

flavour="${1:-python}"
suite="${BRIDLE_SANDBOX_SUITE:-}"
mirror="${BRIDLE_SANDBOX_MIRROR:-}"

log() { printf '[sandbox] %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then echo sudo; else
      log "debootstrap needs root (or sudo)"; exit 1; fi
  fi
}

detect_apt_source() {
  # First "deb" URI and suite from the machine's own apt configuration (deb822 or one-line).
  local uri="" s=""
  if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    s=$(awk '/^Suites:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    read -r uri s < <(awk '$1=="deb" && $0 !~ /security/ {print $2, $3; exit}' /etc/apt/sources.list) || true
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    s=$(awk '/^Suites:/{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  fi
  [ -n "$mirror" ] || mirror="${uri:-http://deb.debian.org/debian}"
  [ -n "$suite" ] || suite="${s:-bookworm}"
}

build() {
  local name="$1" packages="$2" post="${3:-}"
  local tag="bridle-sandbox:${name}"
  if [ "${BRIDLE_SANDBOX_REBUILD:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag already exists (BRIDLE_SANDBOX_REBUILD=1 to rebuild)"
    return 0
  fi
  command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install -y debootstrap"; exit 1; }
  detect_apt_source
  local sudo; sudo=$(need_root)
  local root; root=$(mktemp -d /tmp/bridle-sandbox-"$name".XXXXXX)
  trap '$sudo rm -rf "$root"' RETURN
  log "debootstrap $suite from $mirror into $root (packages: $packages)"
  $sudo debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
    || { log "debootstrap failed; last lines of $root.log:"; tail -20 "$root.log" >&2; exit 1; }
  if [ -n "$post" ]; then "$post" "$root" "$sudo"; fi
  # Slim the tree: no apt caches, docs or man pages inside a sandbox.
  $sudo rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  # The unprivileged user tools run as (uid/gid 65534 exists in Debian as nobody/nogroup);
  # /workspace is where a run's files live.
  $sudo mkdir -p "$root/workspace"
  $sudo chown 65534:65534 "$root/workspace"
  log "importing as $tag"
  $sudo tar -C "$root" -c . | docker import \
    --change 'USER 65534:65534' \
    --change 'WORKDIR /workspace' \
    --change "ENV PATH=${extra_path:-}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1" \
    --change 'LABEL dev.bridle.sandbox=true' \
    - "$tag" >/dev/null
  rm -f "$root.log"
  log "built $tag"
}

MCP_SERVERS="mcp-server-time mcp-server-git"

# Installs the MCP servers into <root>/opt/mcp from wheels fetched on the host.
mcp_post() {
  local root="$1" sudo="$2"
  local wheels; wheels=$(mktemp -d /tmp/bridle-mcp-wheels.XXXXXX)
  log "downloading wheels of $MCP_SERVERS (cp311, manylinux)"
  # shellcheck disable=SC2086
  python3 -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$wheels" $MCP_SERVERS
  $sudo mkdir -p "$root/tmp/wheels"
  $sudo cp "$wheels"/*.whl "$root/tmp/wheels/"
  rm -rf "$wheels"
  # shellcheck disable=SC2086
  $sudo chroot "$root" /bin/sh -c "python3 -m venv /opt/mcp && /opt/mcp/bin/pip install -q --no-index --find-links /tmp/wheels $MCP_SERVERS"
  $sudo rm -rf "$root/tmp/wheels"
}

case "$flavour" in
  python) build python python3 ;;
  bash) build bash bash,coreutils ;;
  mcp) extra_path=/opt/mcp/bin: build mcp python3,python3-venv,git,tzdata,ca-certificates mcp_post ;;
  all) build python python3; build bash bash,coreutils
       extra_path=/opt/mcp/bin: build mcp python3,python3-venv,git,tzdata,ca-certificates mcp_post ;;
  *) log "unknown flavour '$flavour' (python|bash|mcp|all)"; exit 2 ;;
esac
