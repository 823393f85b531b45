#!/bin/sh
# The rootless Docker engine of a tools pod (helm/bridle: tools.docker.mode=rootless): dockerd in
# a user namespace that rootlesskit makes, as uid 1000, without any privilege in the pod.
#
# Its user namespace maps 0 to uid 1000 (this process), 65534 -- the sandbox user -- to 65532,
# the tools container's uid, and 1-65533 to the other ids from 1 to 65535 (/etc/subuid; all
# within the 65536 ids of a pod with its own user namespace, and never 0): run workspaces are
# then owned by the tools service and by the sandboxes alike, so the service (which runs
# without any capability) can read, snapshot and remove what sandboxes wrote, and the engine
# (root in its namespace, where 65532 is mapped) can bind the service's folders into sandboxes.
#
# No network namespace (--net=host) and no bridge: sandboxes have no network (egress goes
# through a Unix socket), so the engine needs neither slirp4netns nor /dev/net/tun.
#
# Environment: BRIDLE_ENGINE_SOCKET (unix:///var/lib/engine-socket/docker.sock), BRIDLE_ENGINE_DATA
# (/var/lib/engine), BRIDLE_ENGINE_ARGS (more dockerd flags, e.g. --default-runtime).
set -eu
socket="${BRIDLE_ENGINE_SOCKET:-unix:///var/lib/engine-socket/docker.sock}"
data="${BRIDLE_ENGINE_DATA:-/var/lib/engine}"
run="${XDG_RUNTIME_DIR:-/run/engine}"
# dockerd keeps its own settings under $HOME: the image's root can then be read-only. Its
# folders are made below the volumes' (which belong to root and the pod's fsGroup: dockerd
# must own the folders it sets modes on).
export HOME="$run/home"
mkdir -p "$run" "$data/docker" "$HOME"
# shellcheck disable=SC2086
exec rootlesskit --net=host --copy-up=/etc --copy-up=/run --propagation=rslave \
  --state-dir="$run/rootlesskit" \
  dockerd --host="$socket" --group=nogroup --data-root="$data/docker" --exec-root="$run/docker" \
  --pidfile="$run/docker.pid" --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
  --userland-proxy=false ${BRIDLE_ENGINE_ARGS:-}
