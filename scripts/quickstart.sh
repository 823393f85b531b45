#!/usr/bin/env bash
# The quickstart, end to end: installs what is missing, builds `bridle`, starts the whole
# harness (`bridle dev`), applies the example manifests, runs the data-analyst agent, approves
# the destructive call it asks for, shows the run's timeline, and stops the harness.
#
# Offline by default (the scripted provider replays examples/quickstart/routes/script.yaml).
# With OPENAI_API_KEY set (and optionally OPENAI_BASE_URL, OPENAI_MODEL) it uses that model.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash scripts/install-deps.sh
echo "[quickstart] building bridle (first time: a few minutes)" >&2
cargo build --quiet --bin bridle
BRIDLE="${CARGO_TARGET_DIR:-$ROOT/target}/debug/bridle"

DATA="$ROOT/.bridle/quickstart"
mkdir -p "$DATA"
LOG="$DATA/dev.log"
"$BRIDLE" dev --data-dir "$DATA" >"$LOG" 2>&1 &
DEV=$!
cleanup() { kill "$DEV" 2>/dev/null || true; wait "$DEV" 2>/dev/null || true; }
trap cleanup EXIT

for _ in $(seq 1 120); do
  [ -f "$DATA/dev.json" ] && break
  if ! kill -0 "$DEV" 2>/dev/null; then
    echo "[quickstart] bridle dev exited; its log:" >&2; tail -30 "$LOG" >&2; exit 1
  fi
  sleep 0.5
done
[ -f "$DATA/dev.json" ] || { echo "[quickstart] bridle dev did not become ready; see $LOG" >&2; exit 1; }
echo "[quickstart] harness is up (log: $LOG)" >&2

ROUTE="examples/quickstart/routes/scripted.yaml"
if [ -n "${OPENAI_API_KEY:-}" ]; then
  ROUTE="$DATA/route-openai.yaml"
  sed -e "s|model: gpt-4o-mini|model: ${OPENAI_MODEL:-gpt-4o-mini}|" examples/quickstart/routes/openai.yaml >"$ROUTE"
  if [ -n "${OPENAI_BASE_URL:-}" ]; then
    printf '      baseUrl: %s\n' "$OPENAI_BASE_URL" >>"$ROUTE"
  fi
  echo "[quickstart] using ${OPENAI_MODEL:-gpt-4o-mini} through ${OPENAI_BASE_URL:-the OpenAI API}" >&2
else
  echo "[quickstart] no OPENAI_API_KEY: using the offline scripted route (replies are labelled scripted)" >&2
fi

echo; echo "\$ bridle apply -f examples/quickstart/tools.yaml -f examples/quickstart/agent.yaml -f $ROUTE"
"$BRIDLE" apply -f examples/quickstart/tools.yaml -f examples/quickstart/agent.yaml -f "$ROUTE"

INPUT="Monthly sales for 2024 were 120, 135, 128, 150, 162, 158, 171, 169, 180, 176, 190, 205 (thousand USD). What was the average month, and which month was best? Then delete the raw dataset sales-2024-raw."
KEY="quickstart-$(date +%s)"
echo; echo "\$ bridle run data-analyst --input \"...\" --watch"
"$BRIDLE" run data-analyst --input "$INPUT" --idempotency-key "$KEY" --watch &
RUN=$!

# The run parks before the destructive call; a person would approve it from another
# terminal. Here the script plays that person.
APPROVAL=""
for _ in $(seq 1 240); do
  APPROVAL=$("$BRIDLE" approvals list 2>/dev/null | awk '/^apr_/{print $1; exit}')
  [ -n "$APPROVAL" ] && break
  kill -0 "$RUN" 2>/dev/null || break
  sleep 0.5
done
if [ -n "$APPROVAL" ]; then
  echo; echo "\$ bridle approvals list"; "$BRIDLE" approvals list
  echo "\$ bridle approvals approve $APPROVAL --reason 'raw data is archived elsewhere'"
  "$BRIDLE" approvals approve "$APPROVAL" --reason "raw data is archived elsewhere"
fi
STATUS=0
wait "$RUN" || STATUS=$?

RUN_ID=$("$BRIDLE" runs list --limit 1 | awk '{print $1; exit}')
echo; echo "\$ bridle runs show $RUN_ID"
"$BRIDLE" runs show "$RUN_ID"
exit "$STATUS"
