#!/usr/bin/env bash
# Scheduled delivery at scale: a fresh release broker per background size, driven by
# `plugboard-bench schedule` (memory per scheduled message, the scheduler's idle CPU while it
# holds them, broker CPU per delivered scheduled message). Results: docs/benchmarks.md
# ("Scheduled delivery at scale"). Not part of `cargo test`. Loopback only.
#
#   bench/schedule.sh                         # backgrounds 0, 100000 and 1000000
#   BACKGROUNDS="0 20000" DUE=5000 bench/schedule.sh   # smoke test
#
# Knobs: BACKGROUNDS ("0 100000 1000000"), DUE (100000), IDLE (10 s), PORT (61640),
# BIN_DIR (target/release), OUT (target/schedule.jsonl).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
read -r -a BACKGROUNDS <<<"${BACKGROUNDS:-0 100000 1000000}"
DUE=${DUE:-100000}
IDLE=${IDLE:-10}
PORT=${PORT:-61640}
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
OUT=${OUT:-$ROOT/target/schedule.jsonl}
WORK=$(mktemp -d)
trap 'kill "${BROKER:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# In memory (no journal), caps above the largest run, the default memory budget.
cat >"$WORK/broker.toml" <<TOML
listen = "127.0.0.1:$PORT"
[store]
enabled = false
[schedule]
max_messages = 4000000
max_per_principal = 4000000
TOML

: >"$OUT"
for background in "${BACKGROUNDS[@]}"; do
  RUST_LOG=warn "$BIN_DIR/plugboard" --config "$WORK/broker.toml" >"$WORK/broker.log" 2>&1 &
  BROKER=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
    sleep 0.1
  done
  "$BIN_DIR/plugboard-bench" schedule --addr "127.0.0.1:$PORT" --background "$background" \
    --due "$DUE" --idle "$IDLE" --broker-pid "$BROKER" | tee -a "$WORK/out.txt"
  grep '^{' "$WORK/out.txt" | tail -1 >>"$OUT"
  kill "$BROKER"
  wait "$BROKER" 2>/dev/null || true
done
echo "raw results: $OUT"
