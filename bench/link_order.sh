#!/usr/bin/env bash
# Writes host/link-order.txt: the functions of the release broker that a message runs, hottest
# first, which host/build.rs hands to the linker (lld's --symbol-ordering-file) for release
# builds, so that the code a message runs sits together instead of spread over the binary's
# 27 MB of text (docs/benchmarks.md, "Link order"). Measured by bench/instructions.sh
# (CACHE_SIM=1) and bench/ab.sh: fewer L1 instruction-cache misses per message and less CPU
# on the acked, topic and latency scenarios.
#
#   bench/link_order.sh                 # profile target/release/plugboard (built if missing)
#   BIN=path/plugboard bench/link_order.sh
#
# Each scenario of bench/instructions.sh (topic, queue, acked, latency) runs once against the
# broker under callgrind (symbol names kept mangled); each function's own instructions per
# delivered message are summed over the scenarios and the functions of the broker's binary
# are listed by that sum. Run it again when the hot path changed much: a function whose name
# changed (a new symbol hash) simply loses its place; the build never fails on a stale list.
# Needs valgrind. Not part of `cargo test`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=link-order
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"
command -v callgrind_control >/dev/null || die "needs valgrind: apt-get install valgrind"
BIN=${BIN:-$ROOT/target/release/plugboard}
BENCH=$ROOT/target/release/plugboard-bench
OUT=$ROOT/host/link-order.txt
WORK=$ROOT/target/link-order
PORT=61636
if [[ ! -x $BIN || ! -x $BENCH ]]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release -p plugboard -p plugboard-bench)
fi
listening "$PORT" && die "port $PORT is already taken"
rm -rf "$WORK" && mkdir -p "$WORK"

profiles=()
for s in topic queue acked latency; do
  case $s in
    topic) ARGS=(topic --producers 1 --subscribers 4 --messages 20000 --size 128 --destination /topic/lo.t) ;;
    queue) ARGS=(queue --producers 4 --consumers 4 --messages 40000 --size 128 --destination /queue/lo.q) ;;
    acked) ARGS=(queue --producers 4 --consumers 4 --messages 40000 --size 128 --ack client-individual --destination /queue/lo.acked) ;;
    latency) ARGS=(latency --rate 500 --seconds 6 --size 128 --destination /queue/lo.latency) ;;
  esac
  dir=$WORK/$s
  mkdir -p "$dir/data"
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$dir/callgrind.%p" \
    "$BIN" --config "$ROOT/examples/broker.toml" --listen "127.0.0.1:$PORT" --data-dir "$dir/data" \
    >"$dir/broker.out" 2>"$dir/broker.err" &
  pid=$!
  wait_port "$PORT" 120 broker
  "$BENCH" queue --messages 2000 --destination /queue/lo.warm --addr "127.0.0.1:$PORT" \
    --timeout 120 >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  json=$("$BENCH" "${ARGS[@]}" --timeout 300 --addr "127.0.0.1:$PORT" 2>/dev/null | tail -n 1)
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  delivered=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["delivered"])' "$json")
  log "$s: $delivered messages profiled"
  profiles+=("$dir/callgrind.$pid.1:$delivered")
done

python3 - "$(basename "$BIN")" "$OUT" "${profiles[@]}" <<'PY'
import collections, re, sys

binary, out, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]

def self_costs(path):
    """Each function's own instructions (callgrind's fn= blocks, call costs left out) and
    the object it is in."""
    names, objects = {}, {}
    cost, object_of = collections.Counter(), {}
    fn = ob = None
    after_call = False

    def resolve(table, text):
        m = re.match(r"\((\d+)\)(?: (.*))?$", text)
        if not m:
            return text
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1))

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("ob="):
                ob = resolve(objects, line[3:])
            elif line.startswith("fn="):
                fn = resolve(names, line[3:])
                object_of[fn] = ob
            elif line.startswith("cfn="):
                resolve(names, line[4:])
            elif line.startswith("cob="):
                resolve(objects, line[4:])
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False  # the call's inclusive cost, not this function's
                    continue
                parts = line.split()
                if fn is not None and len(parts) >= 2:
                    cost[fn] += int(parts[1])
    return cost, object_of

total, object_of = collections.Counter(), {}
for spec in profiles:
    path, delivered = spec.rsplit(":", 1)
    cost, objects = self_costs(path)
    object_of.update(objects)
    for fn, n in cost.items():
        total[fn] += n / int(delivered)
ours = [fn for fn, n in total.most_common() if n > 0 and (object_of.get(fn) or "").endswith("/" + binary)]
with open(out, "w") as f:
    f.write("".join(fn + "\n" for fn in ours))
print(f"{len(ours)} functions written to {out}", file=sys.stderr)
PY
