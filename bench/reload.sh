#!/usr/bin/env bash
# Hot-reload measurements (issue 4; results in docs/reload.md):
#   1. file change → new version serving: a rule change renamed into place, timed to the first
#      message routed by the new rule (median of 7); a never-seen .wasm renamed into place
#      (a real compile), timed to the new generation in /status (median of 5);
#   2. a reload's effect on a running load: messages and latency per 100 ms bucket while the
#      router's rules are swapped twice.
# The broker is target/release/plugboard when it exists (build it with
# `cargo build --release -p plugboard`), else the debug build; the load clients are the test
# binary's (a debug build). Pass PLUGBOARD_BIN=... to choose.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PLUGBOARD_BIN:-}" ]]; then
    if [[ -x target/release/plugboard ]]; then
        PLUGBOARD_BIN="$PWD/target/release/plugboard"
    else
        cargo build -p plugboard
        PLUGBOARD_BIN="$PWD/target/debug/plugboard"
    fi
fi
export PLUGBOARD_BIN
echo "broker: $PLUGBOARD_BIN"
echo "cpus: $(nproc); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# One at a time: they measure time.
exec cargo test -p plugboard --test reload -- --ignored --nocapture --test-threads 1 measure
