#!/usr/bin/env bash
# Black-box fuzzing of the real harness: starts `bridle dev` (the binary, on free ports, with
# its own Redis and OpenBao) and sends it random and mutated manifests, gateway requests and
# gRPC calls for BLACKBOX_SECONDS (default 60). Fails on any HTTP 5xx, gRPC INTERNAL/UNKNOWN,
# panic line in the harness's log, or dead service (see scripts/blackbox_fuzz.py for the whole
# list). BLACKBOX_SEED repeats a run's choices.
#
# Installs what a fresh machine lacks: a Python venv with grpcio (out of the clone, kept
# between runs) and the gRPC stubs generated from proto/ (regenerated when a .proto changes).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/bridle/target}
seconds=${BLACKBOX_SECONDS:-60}
venv=${BLACKBOX_VENV:-$HOME/.cache/bridle/blackbox-venv}
grpc_version=1.85.1

if ! "$venv/bin/python" -c "import grpc, grpc_tools, grpc_health; assert grpc.__version__ == '$grpc_version'" 2>/dev/null; then
    echo "blackbox-fuzz: installing grpcio $grpc_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "grpcio==$grpc_version" "grpcio-tools==$grpc_version" \
        "grpcio-health-checking==$grpc_version"
fi

# Stubs, keyed by the protos' content.
proto_hash=$(cat proto/bridle/v1/*.proto | sha256sum | cut -c1-16)
stubs=$venv/stubs-$proto_hash
if [ ! -f "$stubs/.done" ]; then
    rm -rf "$venv"/stubs-*
    mkdir -p "$stubs"
    "$venv/bin/python" -m grpc_tools.protoc -I proto --python_out="$stubs" --grpc_python_out="$stubs" \
        proto/bridle/v1/*.proto
    touch "$stubs/bridle/__init__.py" "$stubs/bridle/v1/__init__.py" "$stubs/.done"
fi

bridle=$CARGO_TARGET_DIR/debug/bridle
# Cargo does nothing when the binary is up to date (CI built it in the tests step).
cargo build -q -p bridle-cli --bin bridle

work=$(mktemp -d "${TMPDIR:-/tmp}/bridle-blackbox.XXXXXX")
status=0
BRIDLE_FUZZ_STUBS=$stubs "$venv/bin/python" scripts/blackbox_fuzz.py \
    --bridle "$bridle" --seconds "$seconds" --seeds "$root/fuzz/seeds" --workdir "$work" \
    --log "$work/bridle-dev.log" --report "$work/report.json" \
    ${BLACKBOX_SEED:+--seed "$BLACKBOX_SEED"} || status=$?
if [ "$status" -eq 0 ]; then
    rm -rf "$work"
else
    echo "blackbox-fuzz: failed; the harness's log and the report are in $work"
fi
exit "$status"
