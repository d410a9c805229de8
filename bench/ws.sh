#!/usr/bin/env bash
# STOMP over WebSocket beside plain TCP: one release broker with both listeners, the standard
# queue scenario (4 producers, 4 consumers, 128-byte bodies, auto ack) and the 16 KiB one run
# over each in turn (round r alternates which goes first), ROUNDS rounds; prints the medians of
# broker CPU per message and throughput, and what WebSocket adds per message.
#
#   bench/ws.sh                 # ROUNDS=5, SCALE=1
#   SCALE=3 ROUNDS=7 bench/ws.sh
#
# The broker runs examples/broker.toml on 127.0.0.1:61635 (STOMP) and 127.0.0.1:15675/ws, with
# a data directory of its own. Raw results: target/ws-bench/results.jsonl. Not part of
# `cargo test`; the release build takes about 8 minutes here.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-5}
SCALE=${SCALE:-1}
WORK=$ROOT/target/ws-bench
RESULTS=$WORK/results.jsonl
LOG_TAG=ws
TCP_PORT=61635
WS_PORT=15675
mkdir -p "$WORK"
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"

log "building (release, log: $WORK/build.log)"
(cd "$ROOT" && nice -n 10 cargo build --release -p plugboard -p plugboard-bench) >"$WORK/build.log" 2>&1 \
  || die "build failed: $(tail -n 20 "$WORK/build.log")"
BENCH=$ROOT/target/release/plugboard-bench
for port in $TCP_PORT $WS_PORT; do
  listening "$port" && die "port $port is already taken"
done
rm -rf "$WORK/data" && mkdir -p "$WORK/data"
"$ROOT/target/release/plugboard" --config "$ROOT/examples/broker.toml" \
  --listen "127.0.0.1:$TCP_PORT" --ws-listen "127.0.0.1:$WS_PORT" \
  --data-dir "$WORK/data" >"$WORK/broker.out" 2>"$WORK/broker.err" &
BROKER=$!
trap 'kill $BROKER 2>/dev/null; wait $BROKER 2>/dev/null' EXIT
wait_port "$TCP_PORT" 60 broker
wait_port "$WS_PORT" 60 broker
declare -A ADDR=([tcp]="127.0.0.1:$TCP_PORT" [ws]="ws://127.0.0.1:$WS_PORT/ws")

scenario_args() {
  case $1 in
    queue) ARGS=(queue --producers 4 --consumers 4 --messages $((200000 * SCALE)) --size 128 --destination /queue/ws.q) ;;
    16k) ARGS=(queue --producers 4 --consumers 4 --messages $((20000 * SCALE)) --size 16384 --destination /queue/ws.16k) ;;
  esac
  ARGS+=(--timeout 300)
}

: >"$RESULTS"
log "warm-up (not recorded)"
for t in tcp ws; do
  "$BENCH" queue --messages 20000 --destination /queue/ws.warm --addr "${ADDR[$t]}" --timeout 120 \
    >/dev/null 2>&1 || log "warm-up over $t failed"
done
for ((r = 1; r <= ROUNDS; r++)); do
  order=(tcp ws)
  ((r % 2 == 0)) && order=(ws tcp)
  log "round $r of $ROUNDS (${order[*]})"
  for s in queue 16k; do
    for t in "${order[@]}"; do
      scenario_args "$s"
      out=$("$BENCH" "${ARGS[@]}" --addr "${ADDR[$t]}" --broker-pid "$BROKER" 2>>"$WORK/bench-stderr.log") || true
      printf '  [r%d %s %s] %s\n' "$r" "$t" "$s" "${out%%$'\n'*}" >&2
      json=$(grep '^{' <<<"$out" | tail -n 1 || true)
      printf '{"round":%d,"transport":"%s","scenario":"%s","result":%s}\n' "$r" "$t" "$s" "${json:-null}" >>"$RESULTS"
    done
  done
done

python3 - "$RESULTS" "$(git -C "$ROOT" describe --always --dirty)" "$SCALE" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d["result"]:
        runs[(d["transport"], d["scenario"])].append(d["result"])
def med(t, s, f):
    v = [r[f] for r in runs[(t, s)] if r.get(f) is not None]
    return statistics.median(v) if v else None
print(f"{sys.argv[2]}; medians of {max(len(v) for v in runs.values())} rounds, message counts x{sys.argv[3]}")
print("| scenario | TCP µs/msg | WebSocket µs/msg | WebSocket adds | TCP msg/s | WebSocket msg/s | lost/dup (all runs) |")
print("|---|---|---|---|---|---|---|")
for s in ["queue", "16k"]:
    t, w = med("tcp", s, "cpu_us_per_msg"), med("ws", s, "cpu_us_per_msg")
    fmt = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"
    extra = f"{w - t:+.2f} µs" if t is not None and w is not None else "–"
    bad = sum(r["lost"] + r["duplicates"] for k in ("tcp", "ws") for r in runs[(k, s)])
    print(f"| {s} | {fmt(t)} | {fmt(w)} | {extra} | {fmt(med('tcp', s, 'msgs_per_s'), 0)} | {fmt(med('ws', s, 'msgs_per_s'), 0)} | {bad} |")
PY
