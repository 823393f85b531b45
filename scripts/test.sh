#!/usr/bin/env bash
# Runs every test of the workspace against real Redis, OpenBao and Docker, installing what a
# fresh machine lacks first. Extra arguments go to cargo nextest (for example a test filter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The end-to-end tests start the service binaries as processes: build them all first, once.
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"
