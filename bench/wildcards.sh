#!/usr/bin/env bash
# Wildcard matching at scale: broker CPU per published message on a topic with 4 subscribers,
# (a) without any wildcard subscription, (b) with PATTERNS (10,000) wildcard subscriptions
# that match nothing of the run, (c) as (b) with the 4 subscribers themselves on a wildcard
# pattern (`/topic/wild.>`) instead of the exact topic. ROUNDS rounds, the cases interleaved
# (a b c, then c b a, ...); prints the medians. One release broker with examples/broker.toml
# on 127.0.0.1:61635. Raw results: target/wildcards/results.jsonl. Not part of `cargo test`.
#
#   bench/wildcards.sh                 # builds the release broker and plugboard-bench first
#   SKIP_BUILD=1 ROUNDS=5 MESSAGES=200000 bench/wildcards.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-100000}
PATTERNS=${PATTERNS:-10000}
PORT=${PORT:-61635}
WORK=$ROOT/target/wildcards
RESULTS=$WORK/results.jsonl
LOG_TAG=wildcards
mkdir -p "$WORK"
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building (release)"
  (cd "$ROOT" && cargo build --release -p plugboard -p plugboard-bench) >"$WORK/build.log" 2>&1 \
    || die "build failed: $(tail -n 20 "$WORK/build.log")"
fi
BENCH=$ROOT/target/release/plugboard-bench
listening "$PORT" && die "port $PORT is already taken"
"$ROOT/target/release/plugboard" --config "$ROOT/examples/broker.toml" --listen "127.0.0.1:$PORT" \
  >"$WORK/broker.out" 2>"$WORK/broker.err" &
BROKER=$!
trap 'kill $BROKER 2>/dev/null; wait $BROKER 2>/dev/null' EXIT
wait_port "$PORT" 60 broker

case_args() {
  ARGS=(topic --producers 1 --subscribers 4 --messages "$MESSAGES" --size 128
        --destination /topic/wild --timeout 300)
  case $1 in
    none) ;;
    idle) ARGS+=(--idle-patterns "$PATTERNS") ;;
    matched) ARGS+=(--idle-patterns "$PATTERNS" --consume-from "/topic/wild.>") ;;
  esac
}

: >"$RESULTS"
"$BENCH" topic --messages 20000 --destination /topic/warm --addr "127.0.0.1:$PORT" \
  --timeout 120 >/dev/null 2>&1 || log "warm-up failed"
CASES=(none idle matched)
for ((r = 1; r <= ROUNDS; r++)); do
  order=("${CASES[@]}")
  ((r % 2 == 0)) && order=(matched idle none)
  for c in "${order[@]}"; do
    case_args "$c"
    out=$("$BENCH" "${ARGS[@]}" --addr "127.0.0.1:$PORT" --broker-pid "$BROKER" 2>>"$WORK/bench-stderr.log") || true
    printf '  [r%d %s] %s\n' "$r" "$c" "${out%%$'\n'*}" >&2
    json=$(grep '^{' <<<"$out" | tail -n 1 || true)
    printf '{"round":%d,"case":"%s","result":%s}\n' "$r" "$c" "${json:-null}" >>"$RESULTS"
    # The idle pattern connections closed: let the sweep remove their pattern topics.
    sleep 6
  done
done

python3 - "$RESULTS" "$PATTERNS" "$MESSAGES" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d["result"]:
        runs[d["case"]].append(d["result"])
def med(c, f):
    v = [r[f] for r in runs[c] if r.get(f) is not None]
    return statistics.median(v) if v else None
names = {"none": "no wildcard subscription", "idle": f"{sys.argv[2]} unmatched patterns",
         "matched": f"{sys.argv[2]} unmatched patterns, subscribers on /topic/wild.>"}
print(f"topic, 1 producer, 4 subscribers, {sys.argv[3]} messages of 128 B; medians of {max(len(v) for v in runs.values())} rounds")
print("| case | broker CPU µs/msg | vs none | msg/s | lost/dup |")
print("|---|---|---|---|---|")
base = med("none", "cpu_us_per_msg")
for c in ["none", "idle", "matched"]:
    cpu = med(c, "cpu_us_per_msg")
    ratio = f"{cpu / base:.2f}" if cpu and base else "–"
    bad = sum(r["lost"] + r["duplicates"] for r in runs[c])
    fmt = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"
    print(f"| {names[c]} | {fmt(cpu)} | {ratio} | {fmt(med(c, 'msgs_per_s'), 0)} | {bad} |")
PY
