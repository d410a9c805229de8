#!/usr/bin/env bash
# Before/after: two builds of Plugboard side by side, the same plugboard-bench scenarios run
# against each in turn (round r: base, head, head, base, ... so neither always runs first),
# ROUNDS rounds; prints the medians of broker CPU per message (the figure that is stable on
# these machines), throughput and the head/base ratio per scenario, with a 90 % bootstrap
# interval of that ratio (how far this run's rounds pin it down).
#
#   bench/ab.sh BASE_REV            # BASE_REV built in target/ab/ (a worktree), HEAD as checked out
#   ROUNDS=3 bench/ab.sh 09cff79
#   BASE_BIN=old/plugboard BASE_CONF=old/broker.toml bench/ab.sh 09cff79   # a base built before
#   HEAD_BIN=new/plugboard bench/ab.sh 09cff79        # a head built before (other settings)
#   SCALE=5 ROUNDS=9 bench/ab.sh 09cff79   # 5x the messages per run: CPU is read in 10 ms
#                                          # ticks, so longer runs resolve smaller differences
#
# Both brokers run their own examples/broker.toml (the defaults), on loopback ports 61633
# (base) and 61634 (head), each with a data directory of its own. Raw results:
# target/ab/results.jsonl. Not part of `cargo test`; a release build of each revision takes
# about 8 minutes here.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_REV=${1:?usage: bench/ab.sh BASE_REV}
ROUNDS=${ROUNDS:-5}
SCALE=${SCALE:-1}
WORK=$ROOT/target/ab
BASE_SRC=$WORK/base-src
RESULTS=$WORK/results.jsonl
LOG_TAG=ab
mkdir -p "$WORK"
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"

# ---- Builds: HEAD in the workspace's target/, BASE in a worktree with a target of its own.
# shellcheck source=bench/build_pair.sh
source "$ROOT/bench/build_pair.sh"
declare -A PORT=([base]=61633 [head]=61634)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
}
trap cleanup EXIT

for v in base head; do
  listening "${PORT[$v]}" && die "port ${PORT[$v]} is already taken"
  rm -rf "$WORK/data-$v" && mkdir -p "$WORK/data-$v"
  "${BIN[$v]}" --config "${CONF_SRC[$v]}" --listen "127.0.0.1:${PORT[$v]}" \
    --data-dir "$WORK/data-$v" >"$WORK/$v.out" 2>"$WORK/$v.err" &
  PIDS+=($!)
  wait_port "${PORT[$v]}" 60 "$v"
done

scenario_args() {
  case $1 in
    queue) ARGS=(queue --producers 4 --consumers 4 --messages $((200000 * SCALE)) --size 128 --destination /queue/ab.q) ;;
    topic) ARGS=(topic --producers 1 --subscribers 4 --messages $((50000 * SCALE)) --size 128 --destination /topic/ab.t) ;;
    acked) ARGS=(queue --producers 4 --consumers 4 --messages $((100000 * SCALE)) --size 128 --ack client-individual --destination /queue/ab.acked) ;;
    16k) ARGS=(queue --producers 4 --consumers 4 --messages $((20000 * SCALE)) --size 16384 --destination /queue/ab.16k) ;;
    latency) ARGS=(latency --rate 1000 --seconds 10 --size 128 --destination /queue/ab.latency) ;;
  esac
  ARGS+=(--timeout 300)
}

: >"$RESULTS"
# SCENARIOS="acked latency" runs only those (all five by default).
read -r -a SCENARIOS <<<"${SCENARIOS:-queue topic acked 16k latency}"
log "warm-up (not recorded)"
for v in base head; do
  "$BENCH" queue --messages 20000 --destination /queue/ab.warm --addr "127.0.0.1:${PORT[$v]}" \
    --timeout 120 >/dev/null 2>&1 || log "warm-up on $v failed"
done
for ((r = 1; r <= ROUNDS; r++)); do
  order=(base head)
  ((r % 2 == 0)) && order=(head base)
  log "round $r of $ROUNDS (${order[*]})"
  for s in "${SCENARIOS[@]}"; do
    for v in "${order[@]}"; do
      scenario_args "$s"
      pid=$(port_pid "${PORT[$v]}")
      out=$("$BENCH" "${ARGS[@]}" --addr "127.0.0.1:${PORT[$v]}" --broker-pid "$pid" 2>>"$WORK/bench-stderr.log") || true
      printf '  [r%d %s %s] %s\n' "$r" "$v" "$s" "${out%%$'\n'*}" >&2
      json=$(grep '^{' <<<"$out" | tail -n 1 || true)
      printf '{"round":%d,"build":"%s","scenario":"%s","result":%s}\n' "$r" "$v" "$s" "${json:-null}" >>"$RESULTS"
    done
  done
done

python3 - "$RESULTS" "$BASE_REV" "$(git -C "$ROOT" describe --always --dirty)" "$SCALE" <<'EOF'
import json, random, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d["result"]:
        runs[(d["build"], d["scenario"])].append(d["result"])
def med(b, s, f):
    v = [r[f] for r in runs[(b, s)] if r.get(f) is not None]
    return statistics.median(v) if v else None
def interval(s):
    # How well the rounds pin the ratio down: the 5th and 95th percentiles of the ratio of
    # medians over 2000 resamplings of the rounds (a bootstrap; a fixed seed, so a table is
    # reproducible from its results). Runs of one build move by 10-20 % on these machines:
    # a ratio whose interval holds 1.0 is no difference this run can see.
    b = [r["cpu_us_per_msg"] for r in runs[("base", s)] if r.get("cpu_us_per_msg")]
    h = [r["cpu_us_per_msg"] for r in runs[("head", s)] if r.get("cpu_us_per_msg")]
    if len(b) < 3 or len(h) < 3:
        return "–"
    rng = random.Random(7)
    ratios = sorted(
        statistics.median(rng.choices(h, k=len(h))) / statistics.median(rng.choices(b, k=len(b)))
        for _ in range(2000)
    )
    return f"{ratios[100]:.3f}–{ratios[1899]:.3f}"
print(f"base {sys.argv[2]} vs head {sys.argv[3]}; medians of {max(len(v) for v in runs.values())} rounds, message counts x{sys.argv[4]}")
print("| scenario | base µs/msg | head µs/msg | head/base | 90 % interval | base msg/s | head msg/s | lost/dup (all runs) |")
print("|---|---|---|---|---|---|---|---|")
for s in ["queue", "topic", "acked", "16k", "latency"]:
    if not runs[("base", s)] and not runs[("head", s)]:
        continue  # not in SCENARIOS
    b, h = med("base", s, "cpu_us_per_msg"), med("head", s, "cpu_us_per_msg")
    ratio = f"{h / b:.3f}" if b and h else "–"
    bad = sum(r["lost"] + r["duplicates"] for k in ("base", "head") for r in runs[(k, s)])
    fmt = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"
    print(f"| {s} | {fmt(b)} | {fmt(h)} | {ratio} | {interval(s)} | {fmt(med('base', s, 'msgs_per_s'), 0)} | {fmt(med('head', s, 'msgs_per_s'), 0)} | {bad} |")
EOF
