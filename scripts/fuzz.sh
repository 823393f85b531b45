#!/usr/bin/env bash
# Builds the coverage-guided fuzz targets of fuzz/ (libFuzzer through cargo-fuzz, on the
# stable toolchain: `--sanitizer none`) and runs each for a bounded time. Fails when any
# target crashes, hangs or runs out of memory, and when a saved reproducer in
# fuzz/regressions/<target>/ still fails.
#
#   scripts/fuzz.sh                      every target, FUZZ_SECONDS (default 60) each
#   FUZZ_SECONDS=600 scripts/fuzz.sh sse run one target longer
#   FUZZ_BUILD_ONLY=1 scripts/fuzz.sh    install and build only (CI does it beside the tests)
#
# FUZZ_JOBS targets run at once (default: the number of cores). A crash's input is written
# to fuzz/artifacts/<target>/; reproduce it by running the target's binary on the file
# (`$FUZZ_TARGET_DIR/x86_64-unknown-linux-gnu/release/<target> <file>`), or from fuzz/ with
# `cargo fuzz run -s none --target-dir $FUZZ_TARGET_DIR <target> <file>`. Each target's working corpus is kept out of
# the clone (FUZZ_CORPUS_DIR), so a machine's later runs start from what earlier runs found;
# the seeds in fuzz/seeds/ are only read.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-$(nproc)}
base=${CARGO_TARGET_DIR:-$HOME/.cache/bridle/target}
# A sibling of the shared target directory: the instrumented build shares no artifact with
# the normal one (other flags), and a directory of its own does not hold the normal build's
# lock while it compiles.
export FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$base-fuzz}
corpus_root=${FUZZ_CORPUS_DIR:-$HOME/.cache/bridle/fuzz-corpus}
logs=${FUZZ_LOG_DIR:-$FUZZ_TARGET_DIR/logs}
mkdir -p "$FUZZ_TARGET_DIR" "$corpus_root" "$logs"

start=$(date +%s)
say() { printf '[fuzz %4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

# cargo-fuzz: installed once per machine, from the crate registry.
cargo_fuzz_version=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
    say "installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
# libfuzzer-sys compiles libFuzzer (C++).
if ! command -v c++ >/dev/null; then
    say "installing a C++ compiler for libFuzzer"
    apt-get update -qq && apt-get install -y -qq g++
fi

cargo fmt --manifest-path fuzz/Cargo.toml --check

say "building the fuzz targets (target dir $FUZZ_TARGET_DIR)"
# Cargo skips what is already built. Debug assertions and overflow checks are on (what
# cargo-fuzz does by default): an overflow on input is a finding. Dead code is stripped: the
# binaries link faster and are smaller.
(cd fuzz && cargo fuzz build --sanitizer none --strip-dead-code --target-dir "$FUZZ_TARGET_DIR")
bin_dir=$FUZZ_TARGET_DIR/x86_64-unknown-linux-gnu/release
say "built"
if [ "${FUZZ_BUILD_ONLY:-0}" = 1 ]; then
    exit 0
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

failed=()

# 1. Saved reproducers: each file once. They fail until the crash they show is fixed.
for t in "${targets[@]}"; do
    dir=fuzz/regressions/$t
    [ -d "$dir" ] || continue
    for f in "$dir"/*; do
        [ -f "$f" ] || continue
        if ! "$bin_dir/$t" -timeout=10 "$f" >"$logs/replay-$t-$(basename "$f").log" 2>&1; then
            say "FAIL $t: the saved reproducer $f still fails:"
            grep -E -A1 "panicked at|bridle-fuzz" "$logs/replay-$t-$(basename "$f").log" |
                grep -v -E "^--|^stack backtrace" | head -4 | sed 's/^/    /'
            failed+=("$t (reproducer $f)")
        fi
    done
done

# 2. Fuzzing, `jobs` targets at a time. -max_len: big enough that an error quoting its input
# whole exceeds the fuzz crate's MAX_MESSAGE_BYTES; -timeout: one input taking this long is a
# hang; -rss_limit_mb: an input that makes a parser take this much is a finding too.
run_one() {
    local t=$1
    local corpus=$corpus_root/$t artifacts=$root/fuzz/artifacts/$t log=$logs/$t.log
    local dict=()
    case $t in
        manifest) dict=(-dict="$root/fuzz/dicts/manifest.dict") ;;
        cedar_policy) dict=(-dict="$root/fuzz/dicts/cedar.dict") ;;
        gateway_*|canonical_args) dict=(-dict="$root/fuzz/dicts/json.dict") ;;
    esac
    mkdir -p "$corpus" "$artifacts"
    "$bin_dir/$t" "${dict[@]}" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "$corpus" "$root/fuzz/seeds/$t" >"$log" 2>&1
}

pids=()
names=()
report() {
    local t=$1 rc=$2 log=$logs/$1.log
    local execs
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')
    if [ "$rc" -eq 0 ]; then
        say "ok   $t: $execs inputs in ${seconds}s, corpus $(find "$corpus_root/$t" -type f | wc -l) files"
    else
        say "FAIL $t (exit $rc), after $execs inputs; the end of its log ($log):"
        grep -E -A1 "panicked at|bridle-fuzz|ERROR: libFuzzer|Test unit written|^ *[0-9]+: .*(bridle|cedar|serde)" \
            "$log" | grep -v -E "^--|^stack backtrace|^NOTE|^ *Combine libFuzzer" | head -25 | cut -c1-300 |
            sed 's/^/    /'
        failed+=("$t")
    fi
}
for t in "${targets[@]}"; do
    if [ ! -x "$bin_dir/$t" ]; then
        say "FAIL $t: no such fuzz target (cargo fuzz list names them)"
        failed+=("$t")
        continue
    fi
    if [ "${#pids[@]}" -ge "$jobs" ]; then
        rc=0
        wait "${pids[0]}" || rc=$?
        report "${names[0]}" "$rc"
        pids=("${pids[@]:1}")
        names=("${names[@]:1}")
    fi
    say "fuzzing $t for ${seconds}s"
    RUST_BACKTRACE=1 run_one "$t" &
    pids+=($!)
    names+=("$t")
done
for i in "${!pids[@]}"; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    report "${names[$i]}" "$rc"
done

if [ "${#failed[@]}" -gt 0 ]; then
    say "${#failed[@]} failure(s): ${failed[*]}"
    exit 1
fi
say "every target ran ${seconds}s without a crash"
