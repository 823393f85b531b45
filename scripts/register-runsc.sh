#!/usr/bin/env bash
# Registers gVisor's runsc with the local Docker engine, so that sandboxes can run under it
# (`runtime: runsc` in a Tool, or the tools service's sandbox_runtime option), and skips all of
# it when `docker info` lists runsc already. Installs Debian's runsc package when missing, adds
# it to the engine's `runtimes` setting in /etc/docker/daemon.json (keeping every other key),
# then makes the engine reload its configuration (SIGHUP: running containers are untouched).
#
# The runtime's arguments, and why:
#   --host-uds=open  the sandbox may connect to Unix sockets bind-mounted into it: its agent
#                    and its egress forwarder reach the tools service through sockets in the
#                    sandbox's own slot folder (nothing else of the host is mounted).
#   --network=none   no network stack at all (sandboxes have none under runc either; and gVisor
#                    refuses to set one up where the engine's namespace looks like the host's).
set -euo pipefail

log() { printf '[runsc] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

has_runsc() { docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; }
has_runsc && exit 0

if [ -n "${DOCKER_HOST:-}" ] && [[ "$DOCKER_HOST" != unix:///var/run/docker.sock ]]; then
  log "the engine at DOCKER_HOST=$DOCKER_HOST has no runsc runtime; register it there (see this script), or unset DOCKER_HOST"
  exit 1
fi
if ! command -v runsc >/dev/null; then
  log "installing runsc (gVisor, apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq runsc >/dev/null
fi
RUNSC=$(command -v runsc)
CONF=/etc/docker/daemon.json
log "registering $RUNSC with the Docker engine ($CONF) and reloading it"
$SUDO mkdir -p /etc/docker
$SUDO python3 - "$CONF" "$RUNSC" <<'PY'
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
conf = {}
if os.path.exists(path) and os.path.getsize(path) > 0:
    with open(path) as f:
        conf = json.load(f)
conf.setdefault("runtimes", {})["runsc"] = {
    "path": runsc,
    "runtimeArgs": ["--host-uds=open", "--network=none"],
}
tmp = path + ".bridle-tmp"
with open(tmp, "w") as f:
    json.dump(conf, f, indent=2)
os.replace(tmp, path)
PY
if command -v systemctl >/dev/null && systemctl is-active --quiet docker 2>/dev/null; then
  $SUDO systemctl reload docker
else
  pid=$(pidof dockerd || true)
  [ -n "$pid" ] || { log "no dockerd process to reload; restart the engine to load $CONF"; exit 1; }
  $SUDO kill -HUP "$pid"
fi
for _ in $(seq 1 50); do
  has_runsc && { log "registered: $(runsc --version | head -1)"; exit 0; }
  sleep 0.2
done
log "the engine did not list runsc after the reload; check its log and $CONF"
exit 1
