#!/usr/bin/env bash
# Before/after in what the kernel sees: the scenarios of bench/instructions.sh against two
# release builds, the broker run at full speed under `perf stat`, counting per delivered
# message its system calls (raw_syscalls:sys_enter), context switches, CPU migrations and CPU
# time (task-clock). Instructions (bench/instructions.sh) do not see system calls or the
# scheduler; these counts do, and unlike CPU time they move little with the machine's load, so
# a gap in CPU time that the instruction counts do not explain can be looked for here.
#
#   bench/kernel.sh BASE_REV              # BASE_REV built in target/ab/ (shared with ab.sh)
#   ROUNDS=3 bench/kernel.sh 09cff79      # median of 3 runs per build and scenario
#   BASE_BIN=old/plugboard BASE_CONF=old/broker.toml bench/kernel.sh 09cff79
#   SCENARIOS=latency HEAD_BIN=new/plugboard bench/kernel.sh 09cff79
#
# Needs perf with tracepoint access (root, or kernel.perf_event_paranoid <= -1). Prints a table
# per counter, head/base. Not part of `cargo test`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_REV=${1:?usage: bench/kernel.sh BASE_REV}
ROUNDS=${ROUNDS:-1}
WORK=$ROOT/target/ab
BASE_SRC=$WORK/base-src
LOG_TAG=kernel
mkdir -p "$WORK"
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"
command -v perf >/dev/null || die "needs perf: apt-get install linux-perf"
# shellcheck source=bench/build_pair.sh
source "$ROOT/bench/build_pair.sh"
PORT=61636
listening "$PORT" && die "port $PORT is already taken"
EVENTS=raw_syscalls:sys_enter,context-switches,cpu-migrations,task-clock
COUNTERS=(syscalls switches migrations cpu_us)
# SCENARIOS="latency" runs only those; latency (1000 messages/s, one wake-up per message) is
# not in the default set: it counts the cost of a wake-up rather than of a message.
read -r -a SCENARIOS <<<"${SCENARIOS:-topic queue acked}"

scenario_args() {
  case $1 in
    topic) ARGS=(topic --producers 1 --subscribers 4 --messages 100000 --size 128 --destination /topic/in.t) ;;
    queue) ARGS=(queue --producers 4 --consumers 4 --messages 200000 --size 128 --destination /queue/in.q) ;;
    acked) ARGS=(queue --producers 4 --consumers 4 --messages 200000 --size 128 --ack client-individual --destination /queue/in.acked) ;;
    latency) ARGS=(latency --rate 1000 --seconds 10 --size 128 --destination /queue/in.latency) ;;
    *) die "unknown scenario $1 (topic, queue, acked, latency)" ;;
  esac
  ARGS+=(--timeout 300 --addr "127.0.0.1:$PORT")
}

# "syscalls switches migrations cpu_us" per delivered message of one run of scenario $2 against
# build $1 (after a warm-up, whole process).
measure() {
  local v=$1 s=$2 dir=$WORK/kernel-$1-$2 pid perf_pid json delivered
  rm -rf "$dir" && mkdir -p "$dir/data"
  "${BIN[$v]}" --config "${CONF_SRC[$v]}" --listen "127.0.0.1:$PORT" --data-dir "$dir/data" \
    >"$dir/broker.out" 2>"$dir/broker.err" &
  pid=$!
  wait_port "$PORT" 60 "$v"
  "$BENCH" queue --messages 20000 --destination /queue/in.warm --addr "127.0.0.1:$PORT" \
    --timeout 120 >/dev/null
  perf stat -x, -e "$EVENTS" -p "$pid" -o "$dir/perf.csv" &
  perf_pid=$!
  sleep 0.5
  scenario_args "$s"
  json=$("$BENCH" "${ARGS[@]}" 2>/dev/null | tail -n 1)
  kill -INT "$perf_pid"
  wait "$perf_pid" 2>/dev/null || true
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  delivered=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["delivered"])' "$json")
  python3 - "$dir/perf.csv" "$delivered" <<'PY'
import sys
counts = {}
for line in open(sys.argv[1]):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0] and not line.startswith("#"):
        counts[parts[2]] = float(parts[0])
n = int(sys.argv[2])
per = lambda k: counts.get(k, 0.0) / n
# task-clock is in ms (msec): µs per message.
print(f"{per('raw_syscalls:sys_enter'):.4f} {per('context-switches'):.4f} "
      f"{per('cpu-migrations'):.5f} {per('task-clock') * 1000:.3f}")
PY
}

declare -A RESULT=()
for s in "${SCENARIOS[@]}"; do
  for v in base head; do
    runs=()
    for ((r = 1; r <= ROUNDS; r++)); do
      runs+=("$(measure "$v" "$s")")
      log "$s $v run $r: ${runs[-1]} (syscalls switches migrations cpu_us per delivered message)"
    done
    # Median per counter.
    RESULT[$v-$s]=$(printf '%s\n' "${runs[@]}" | python3 -c '
import sys, statistics
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
print(" ".join(str(statistics.median(col)) for col in zip(*rows)))')
  done
done

echo "base $BASE_REV vs head $(git -C "$ROOT" rev-parse --short HEAD); per delivered message (perf stat on the broker), median of $ROUNDS"
echo "| scenario | counter | base | head | head/base |"
echo "|---|---|---|---|---|"
for s in "${SCENARIOS[@]}"; do
  python3 - "$s" "${RESULT[base-$s]}" "${RESULT[head-$s]}" "${COUNTERS[@]}" <<'PY'
import sys
s, base, head, names = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4:]
for name, b, h in zip(names, map(float, base), map(float, head)):
    ratio = f"{h / b:.3f}" if b else "-"
    print(f"| {s} | {name} | {b:.4f} | {h:.4f} | {ratio} |")
PY
done
