#!/usr/bin/env bash
# Runs a Docker-compatible engine WITHOUT root, for the tools service's sandboxes, and prints
# the DOCKER_HOST to point the service (or its tests) at.
#
#   scripts/rootless-engine.sh [start|stop|status]      (as root; idempotent)
#
# Environment:
#   BRIDLE_ROOTLESS_ENGINE  dockerd (default: Debian's docker.io rootless script + rootlesskit)
#                           or podman (`podman system service`, Docker-compatible API)
#   BRIDLE_ROOTLESS_USER    the unprivileged user the engine runs as (bridle-rootless)
#   BRIDLE_ROOTLESS_SHARED  a folder made a SHARED mount before the engine starts
#                           (/var/lib/bridle-rl); put the tools service's
#                           workspace_root (or the tests' TMPDIR) below it, see below
#   BRIDLE_ROOTLESS_IMAGES  images copied from the rootful engine (default: every
#                           bridle-sandbox:* there)
#   BRIDLE_ROOTLESS_SOURCE  the rootful engine images are copied from
#                           (unix:///var/run/docker.sock)
#
# Why the shared folder: a rootless engine lives in a user+mount namespace of its own, made
# when it starts, as a copy of the host's mounts. A run's workspace is mounted on the host
# below the sandbox's bind source after the sandbox exists (rslave propagation); that only
# reaches the engine's namespace when the source sits below a mount that was already shared
# when the namespace was made. This host's / is private (no systemd), so the folder is made
# shared here, first, and the engine is (re)started after it.
#
# What a rootless engine on a cgroup v1 host does NOT enforce (measured, see the report in
# the rootless branch's commit): memory, pids and CPU limits. The engine runs the container
# anyway. A tools service must check before trusting this engine with hostile code.
set -euo pipefail

ENGINE="${BRIDLE_ROOTLESS_ENGINE:-dockerd}"
USER_NAME="${BRIDLE_ROOTLESS_USER:-bridle-rootless}"
HOME_DIR="/var/lib/${USER_NAME}"
RUN_DIR="/run/${USER_NAME}"
SHARED="${BRIDLE_ROOTLESS_SHARED:-/var/lib/bridle-rl}"
SOURCE="${BRIDLE_ROOTLESS_SOURCE:-unix:///var/run/docker.sock}"
LIBEXEC=/usr/local/libexec/bridle
SUBID_COUNT=65536 # must cover uid 65534 (the sandbox user) inside the container

die() { echo "rootless-engine: $*" >&2; exit 1; }
say() { echo "rootless-engine: $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (it creates a user and a shared mount)"
# One at a time (tests start engines in parallel; the user, the shared mount and the
# subordinate ids are made once).
exec 9>/run/bridle-rootless-engine.lock
flock 9

case "$ENGINE" in
  dockerd)
    XDG="$RUN_DIR/dockerd"
    SOCK="$XDG/docker.sock"
    ;;
  podman)
    XDG="$RUN_DIR"
    SOCK="$RUN_DIR/podman/podman.sock"
    ;;
  *) die "BRIDLE_ROOTLESS_ENGINE must be dockerd or podman, not '$ENGINE'" ;;
esac
HOST="unix://$SOCK"
PIDFILE="$RUN_DIR/$ENGINE.pid"
LOG="/var/log/${USER_NAME}-${ENGINE}.log"

as_user() {
  runuser -u "$USER_NAME" -- env -i HOME="$HOME_DIR" XDG_RUNTIME_DIR="$XDG" \
    PATH=/usr/share/docker.io/contrib:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "$@"
}

answers() { curl -fsS --max-time 3 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }

engine_pid() {
  local p
  p="$(cat "$PIDFILE" 2>/dev/null || true)"
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
  return 0
}

need() {
  for b in "$@"; do
    command -v "$b" >/dev/null 2>&1 || [ -x "$b" ] || die "missing $b (install it: scripts/install-deps.sh or apt-get)"
  done
}

check_deps() {
  need newuidmap newgidmap curl docker runuser
  case "$ENGINE" in
    dockerd) need dockerd rootlesskit slirp4netns /usr/share/docker.io/contrib/dockerd-rootless.sh ;;
    # The compat API ignores containers.conf's init_path: --init needs catatonit where
    # podman looks first (Debian's catatonit package puts it there).
    podman) need podman conmon /usr/libexec/podman/catatonit ;;
  esac
}

# A subordinate id range of SUBID_COUNT not overlapping any other user's.
ensure_subids() {
  local f="$1" flag="$2"
  touch "$f"
  if grep -q "^${USER_NAME}:" "$f"; then return; fi
  local start
  start="$(awk -F: 'BEGIN { m = 100000 } { e = $2 + $3; if (e > m) m = e } END { print m }' "$f")"
  usermod "$flag" "${start}-$((start + SUBID_COUNT - 1))" "$USER_NAME"
  say "gave $USER_NAME $f range $start+$SUBID_COUNT"
}

ensure_user() {
  if ! id -u "$USER_NAME" >/dev/null 2>&1; then
    useradd --system --create-home --home-dir "$HOME_DIR" --shell /usr/sbin/nologin "$USER_NAME"
    say "created user $USER_NAME"
  fi
  ensure_subids /etc/subuid --add-subuids
  ensure_subids /etc/subgid --add-subgids
  install -d -o "$USER_NAME" -g "$USER_NAME" -m 0711 "$RUN_DIR"
  install -d -o "$USER_NAME" -g "$USER_NAME" -m 0700 "$XDG"
}

ensure_shared() {
  install -d -m 0711 "$SHARED"
  if ! mountpoint -q "$SHARED"; then
    mount --bind "$SHARED" "$SHARED"
  fi
  mount --make-shared "$SHARED"
}

ensure_runsc_wrapper() {
  command -v runsc >/dev/null 2>&1 || return 0
  install -d -m 0755 "$LIBEXEC"
  # gVisor inside a rootless engine: it cannot create cgroups (none are delegated on a
  # cgroup v1 host), so it must not try; Unix sockets in bind mounts (the agent's, the
  # egress proxy's) are opened on the host side.
  cat >"$LIBEXEC/runsc-rootless.new" <<'EOF'
#!/bin/sh
exec /usr/bin/runsc --ignore-cgroups --network=none --host-uds=open "$@"
EOF
  chmod 0755 "$LIBEXEC/runsc-rootless.new"
  mv -f "$LIBEXEC/runsc-rootless.new" "$LIBEXEC/runsc-rootless"
}

write_config() {
  local d
  case "$ENGINE" in
    dockerd)
      d="$HOME_DIR/.config/docker"
      install -d -o "$USER_NAME" -g "$USER_NAME" -m 0700 "$HOME_DIR/.config" "$d"
      if [ -x "$LIBEXEC/runsc-rootless" ]; then
        printf '{"runtimes": {"runsc": {"path": "%s/runsc-rootless"}}}\n' "$LIBEXEC" >"$d/daemon.json"
      else
        echo '{}' >"$d/daemon.json"
      fi
      chown "$USER_NAME:" "$d/daemon.json"
      ;;
    podman)
      d="$HOME_DIR/.config/containers"
      install -d -o "$USER_NAME" -g "$USER_NAME" -m 0700 "$HOME_DIR/.config" "$d"
      # No systemd here (no user session, no journald): cgroupfs and a file event log.
      # Note: podman 4.3's Docker-compatible API ignores HostConfig.Runtime, so runsc can
      # only be had by making it the engine's default runtime (BRIDLE_ROOTLESS_RUNTIME).
      cat >"$d/containers.conf" <<EOF
[containers]
init_path = "/usr/libexec/podman/catatonit"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "${BRIDLE_ROOTLESS_RUNTIME:-runc}"
[engine.runtimes]
runsc = ["$LIBEXEC/runsc-rootless"]
EOF
      printf '[storage]\ndriver = "overlay"\n' >"$d/storage.conf"
      chown "$USER_NAME:" "$d/containers.conf" "$d/storage.conf"
      ;;
  esac
}

# The engine's mount namespace must hold SHARED as a slave of the host's, else later
# workspace mounts never reach the sandboxes: true when the engine started after ensure_shared.
ns_sees_shared() {
  local p
  p="$(engine_pid)"
  [ -n "$p" ] || return 1
  local ns_pid
  ns_pid="$(ns_holder "$p")"
  awk -v m="$SHARED" '$5 == m && / master:/ { f = 1 } END { exit !f }' "/proc/$ns_pid/mountinfo" 2>/dev/null
}

# The process that lives in the engine's namespace: dockerd below rootlesskit; podman's
# pause process.
ns_holder() {
  local p="$1" c
  case "$ENGINE" in
    dockerd)
      c="$(pgrep -u "$USER_NAME" -x dockerd | head -n1 || true)"
      echo "${c:-$p}"
      ;;
    podman)
      c="$(cat "$RUN_DIR/libpod/tmp/pause.pid" 2>/dev/null || true)"
      echo "${c:-$p}"
      ;;
  esac
}

# What an engine that died without cleaning up (killed, or the machine stopped under it) left
# behind: engine processes of this user that no longer answer, and dockerd's own pid file,
# which makes the next dockerd refuse to start ("pid file found, ensure docker is not
# running") when its pid has been reused. Called with the lock held and no engine answering.
clear_leftovers() {
  local pat
  case "$ENGINE" in
    dockerd) pat='^(rootlesskit|dockerd|containerd)$' ;;
    podman) pat='^(podman|catatonit|conmon)$' ;;
  esac
  if pgrep -u "$USER_NAME" "$pat" >/dev/null 2>&1; then
    say "stopping $ENGINE processes of $USER_NAME that do not answer on $SOCK"
    pkill -TERM -u "$USER_NAME" "$pat" 2>/dev/null || true
    for _ in $(seq 1 20); do pgrep -u "$USER_NAME" "$pat" >/dev/null || break; sleep 0.5; done
    pkill -KILL -u "$USER_NAME" "$pat" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  if [ "$ENGINE" = dockerd ]; then
    rm -f "$XDG/docker.pid" "$SOCK"
  fi
}

start_engine() {
  if answers; then
    if ns_sees_shared; then return 0; fi
    say "the running engine's namespace predates the shared mount $SHARED: restarting it"
    stop_engine
  fi
  clear_leftovers
  : >"$LOG"
  chown "$USER_NAME:" "$LOG"
  case "$ENGINE" in
    dockerd)
      as_user setsid sh -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
        dockerd-rootless.sh -H "$HOST" \
        --data-root "$HOME_DIR/.local/share/docker" --exec-root "$XDG/docker" \
        >>"$LOG" 2>&1 </dev/null 9>&- &
      ;;
    podman)
      install -d -o "$USER_NAME" -g "$USER_NAME" -m 0700 "$(dirname "$SOCK")"
      as_user setsid sh -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
        podman system service --time=0 "$HOST" >>"$LOG" 2>&1 </dev/null 9>&- &
      ;;
  esac
  # The engine writes its own pid (a session and group leader: setsid), so stop can end
  # the whole group.
  for _ in $(seq 1 60); do
    answers && return 0
    sleep 0.5
  done
  tail -n 20 "$LOG" >&2 || true
  die "the $ENGINE engine did not answer on $SOCK within 30s (log: $LOG)"
}

stop_engine() {
  local p pause
  p="$(engine_pid)"
  pause="$(cat "$RUN_DIR/libpod/tmp/pause.pid" 2>/dev/null || true)"
  if [ -n "$p" ]; then
    # setsid made it a process group leader: the group is the engine and its helpers.
    kill -TERM -- "-$p" 2>/dev/null || true
    for _ in $(seq 1 20); do pgrep -g "$p" >/dev/null || break; sleep 0.5; done
  fi
  # podman's pause process holds the namespace; it must go for a new one to be made.
  if [ "$ENGINE" = podman ] && [ -n "$pause" ] && kill -0 "$pause" 2>/dev/null; then
    kill -KILL "$pause" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}

load_images() {
  local images="${BRIDLE_ROOTLESS_IMAGES:-}"
  if [ -z "$images" ]; then
    images="$(docker -H "$SOURCE" images --format '{{.Repository}}:{{.Tag}}' 'bridle-sandbox' | grep -v '<none>' || true)"
  fi
  for img in $images; do
    local want have
    want="$(docker -H "$SOURCE" image inspect --format '{{.Id}}' "$img" 2>/dev/null)" ||
      die "image $img is not in the rootful engine ($SOURCE)"
    have="$(docker -H "$HOST" image inspect --format '{{.Id}}' "$img" 2>/dev/null || true)"
    if [ "$want" = "$have" ]; then continue; fi
    say "copying $img into the rootless engine"
    docker -H "$SOURCE" save "$img" | docker -H "$HOST" load >/dev/null
  done
}

report() {
  local start
  start="$(awk -F: -v u="$USER_NAME" '$1 == u { print $2; exit }' /etc/subuid)"
  echo "# sandbox uid 65534 is host uid $((start + 65534 - 1)) (workspace files must be owned by it)"
  echo "# put workspace_root / TMPDIR below $SHARED (traversable by $USER_NAME)"
  echo "export DOCKER_HOST=$HOST"
}

case "${1:-start}" in
  start)
    check_deps
    ensure_user
    ensure_shared
    ensure_runsc_wrapper
    write_config
    start_engine
    load_images
    report
    ;;
  stop)
    stop_engine
    ;;
  status)
    if answers; then
      echo "$ENGINE answers on $SOCK (pid $(engine_pid))"
      ns_sees_shared && echo "its namespace follows $SHARED" || echo "its namespace does NOT follow $SHARED: run start again"
    else
      echo "$ENGINE does not answer on $SOCK"
      exit 1
    fi
    ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac
