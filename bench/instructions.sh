#!/usr/bin/env bash
# Before/after in instructions: the same scenarios as bench/ab.sh (smaller) against two release
# builds, each broker run under callgrind, counting the instructions the broker executes per
# delivered message (everything after a warm-up: all threads, user space). Unlike CPU time,
# the count hardly moves with the machine's load (a run on a busy machine gives the same
# figure within a fraction of a percent), so small differences can be measured while other
# work runs; it does not see cache misses or system calls, which bench/ab.sh's CPU time does.
#
#   bench/instructions.sh BASE_REV            # BASE_REV built in target/ab/ (shared with ab.sh)
#   ROUNDS=3 bench/instructions.sh 09cff79    # median of 3 runs per build and scenario
#   BASE_BIN=old/plugboard BASE_CONF=old/broker.toml bench/instructions.sh 09cff79
#   SCENARIOS="queue" CACHE_SIM=1 bench/instructions.sh 09cff79
#
# CACHE_SIM=1 also simulates the caches (callgrind --cache-sim=yes, its default 32 KiB L1s) and
# adds L1 instruction-cache misses per delivered message to the table: code that grew or spread
# out costs CPU time through these misses even when it executes no more instructions (measured
# on this wave: +70 % I1 misses with +3 % instructions was most of a 10 % CPU-time gap).
#
# Needs valgrind (callgrind, callgrind_control): apt-get install valgrind. Prints a table of
# instructions per delivered message, head/base. Not part of `cargo test`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_REV=${1:?usage: bench/instructions.sh BASE_REV}
ROUNDS=${ROUNDS:-1}
SCENARIOS=${SCENARIOS:-topic queue acked}
CACHE_SIM=${CACHE_SIM:-0}
CALLGRIND=(--tool=callgrind)
[[ $CACHE_SIM == 1 ]] && CALLGRIND+=(--cache-sim=yes)
WORK=$ROOT/target/ab
BASE_SRC=$WORK/base-src
LOG_TAG=instructions
mkdir -p "$WORK"
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"
command -v callgrind_control >/dev/null || die "needs valgrind: apt-get install valgrind"
# shellcheck source=bench/build_pair.sh
source "$ROOT/bench/build_pair.sh"
PORT=61635
listening "$PORT" && die "port $PORT is already taken"

scenario_args() {
  case $1 in
    topic) ARGS=(topic --producers 1 --subscribers 4 --messages 20000 --size 128 --destination /topic/in.t) ;;
    queue) ARGS=(queue --producers 4 --consumers 4 --messages 40000 --size 128 --destination /queue/in.q) ;;
    acked) ARGS=(queue --producers 4 --consumers 4 --messages 40000 --size 128 --ack client-individual --destination /queue/in.acked) ;;
    # One message per wake-up (not in the default set): what a wake-up costs, not a message.
    latency) ARGS=(latency --rate 500 --seconds 6 --size 128 --destination /queue/in.latency) ;;
    *) die "unknown scenario $1 (topic, queue, acked, latency)" ;;
  esac
  ARGS+=(--timeout 300 --addr "127.0.0.1:$PORT")
}

# Instructions (and with CACHE_SIM=1, "instructions I1-misses") per delivered message of one
# run of scenario $2 against build $1.
measure() {
  local v=$1 s=$2 dir=$WORK/instructions-$1-$2 pid json delivered total
  rm -rf "$dir" && mkdir -p "$dir/data"
  valgrind "${CALLGRIND[@]}" --callgrind-out-file="$dir/callgrind.%p" \
    "${BIN[$v]}" --config "${CONF_SRC[$v]}" --listen "127.0.0.1:$PORT" --data-dir "$dir/data" \
    >"$dir/broker.out" 2>"$dir/broker.err" &
  pid=$!
  wait_port "$PORT" 120 "$v"
  "$BENCH" queue --messages 2000 --destination /queue/in.warm --addr "127.0.0.1:$PORT" \
    --timeout 120 >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  scenario_args "$s"
  json=$("$BENCH" "${ARGS[@]}" 2>/dev/null | tail -n 1)
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  delivered=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["delivered"])' "$json")
  # One broker process: its one dump, taken by callgrind_control -d above.
  # summary: Ir [Dr Dw I1mr ...] (the events line names them).
  awk -v n="$delivered" -v sim="$CACHE_SIM" '
    /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
    /^(summary|totals):/ {
      if (sim == 1) printf "%d %.1f\n", $2 / n, $(col["I1mr"]) / n; else printf "%d\n", $2 / n
      exit
    }' "$dir"/callgrind.*.1
}

declare -A RESULT=()
for s in $SCENARIOS; do
  for v in base head; do
    runs=()
    for ((r = 1; r <= ROUNDS; r++)); do
      runs+=("$(measure "$v" "$s")")
      log "$s $v run $r: ${runs[-1]} instructions per delivered message"
    done
    # Median per column.
    RESULT[$v-$s]=$(printf '%s\n' "${runs[@]}" | python3 -c '
import sys, statistics
rows = [l.split() for l in sys.stdin if l.strip()]
print(" ".join(str(statistics.median(float(v) for v in col)) for col in zip(*rows)))')
  done
done

echo "base $BASE_REV vs head $(git -C "$ROOT" rev-parse --short HEAD); instructions per delivered message (callgrind), median of $ROUNDS"
echo "| scenario | counter | base | head | head/base |"
echo "|---|---|---|---|---|"
for s in $SCENARIOS; do
  python3 - "$s" "${RESULT[base-$s]}" "${RESULT[head-$s]}" <<'PY'
import sys
s, base, head = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
for name, b, h in zip(["instructions", "I1 misses"], map(float, base), map(float, head)):
    print(f"| {s} | {name} | {b:.1f} | {h:.1f} | {h / b:.3f} |")
PY
done
