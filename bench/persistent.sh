#!/usr/bin/env bash
# Persistent messages with receipts: Plugboard's journal (fsync = "batch") next to RabbitMQ's
# durable queues and ActiveMQ's KahaDB, interleaved over ROUNDS rounds, with the fsyncs per
# message of each broker. Medians go into docs/benchmarks.md ("Persistent messages").
#
# Not part of `cargo test`. Debian 12, run as root (it installs and starts the peers through
# bench/peers.sh, like bench/compare.sh; do not run both at once). Loopback only: Plugboard on
# 127.0.0.1:61633 (fsync = "batch", the default) and :61634 (fsync = "never"), each with a fresh
# data directory; RabbitMQ STOMP on :61614; ActiveMQ STOMP on :61615.
#
#   bench/persistent.sh                          # 3 rounds, writes docs/benchmarks.md
#   ROUNDS=1 QUICK=1 NO_DOC=1 bench/persistent.sh  # smoke test
#
# Knobs: ROUNDS (3), QUICK (0), NO_DOC (0), KEEP_PEERS (0), MESSAGES (per run; 100000, QUICK
# 4000), WINDOWS (unconfirmed SENDs per producer, each a scenario of its own; "100 1000"),
# SCENARIOS ("128-auto 128-ci 4k-auto 4k-ci"), BROKERS ("plugboard plugboard-never
# plugboard-transient rabbitmq activemq"), SYNC_COUNTER (perf or strace; default perf if its
# syscall tracepoints work), DATA_PARENT (where the temporary data directories go; default
# /var/tmp, on disk: a tmpfs would make fdatasync free), SKIP_BUILD=1, PLUGBOARD and BENCH
# (the binaries; default target/release/), PLUGBOARD_REV (what the table calls the broker;
# default `git describe`), CHARTS (1: draw the chart, 0: not), WORK (target/persistent).
#
# Every run: plugboard-bench queue --producers 4 --consumers 4 --messages N --size 128|4096
#   --ack auto|client-individual --window W --header persistent:true
#   --destination /queue/bench.persist.SCENARIO-wW --broker-pid PID --rss-settle 0
# (plugboard-transient: the fsync = "batch" instance without the persistent header), with the
# broker's sync calls (fsync, fdatasync, sync_file_range, msync, sync, syncfs) counted over the
# run: `perf stat -e syscalls:sys_enter_fsync,... -p PID`, or with SYNC_COUNTER=strace
# `strace -f -c -e trace=fsync,fdatasync,... -p TID...` (ptrace stops the broker on every
# system call, so throughput under strace is lower).
# Raw results (one JSON line per run) and logs: $WORK. After the table it draws the chart
# docs/bench-persistent.svg ($WORK/chart.svg with NO_DOC=1) with bench/charts.py, which installs
# matplotlib from PyPI into target/bench-venv on first use; if that fails the run still ends with
# its table. To redraw from saved results:
#   python3 bench/charts.py persistent target/persistent/results.jsonl docs/bench-persistent.svg
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
QUICK=${QUICK:-0}
NO_DOC=${NO_DOC:-0}
KEEP_PEERS=${KEEP_PEERS:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
CHARTS=${CHARTS:-1}
WORK=${WORK:-$ROOT/target/persistent}
DOC=$ROOT/docs/benchmarks.md
if [[ $QUICK == 1 ]]; then MESSAGES=${MESSAGES:-4000}; else MESSAGES=${MESSAGES:-100000}; fi
read -r -a WINDOWS <<<"${WINDOWS:-100 1000}"
read -r -a SCENARIOS <<<"${SCENARIOS:-128-auto 128-ci 4k-auto 4k-ci}"
read -r -a BROKERS <<<"${BROKERS:-plugboard plugboard-never plugboard-transient rabbitmq activemq}"
DATA_PARENT=${DATA_PARENT:-/var/tmp}
PB_PORT=61633 PB_NEVER_PORT=61634
RMQ_PORT=61614 AMQ_PORT=61615
LOGIN=guest PASSCODE=guest
BENCH=${BENCH:-$ROOT/target/release/plugboard-bench}
PLUGBOARD=${PLUGBOARD:-$ROOT/target/release/plugboard}
PLUGBOARD_REV=${PLUGBOARD_REV:-$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?')}
SYNC_CALLS=(fsync fdatasync sync_file_range msync sync syncfs)

mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
: >"$WORK/bench-stderr.log"
STARTED_PIDS=()
DATA_DIRS=()

LOG_TAG=persistent

# port_pid, listening, wait_port, peers_install, start_/stop_rabbitmq, start_/stop_activemq,
# peer_versions_json.
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"

cleanup() {
  local rc=$?
  set +e
  [[ -n ${COUNTER_PID:-} ]] && kill -INT "$COUNTER_PID" 2>/dev/null
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  for d in "${DATA_DIRS[@]}"; do rm -rf "$d"; done
  if [[ $KEEP_PEERS != 1 ]]; then
    stop_rabbitmq
    stop_activemq
  fi
  log "done (exit $rc); raw results in $RESULTS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) == 0 ]] || die "run as root (installs and starts RabbitMQ and ActiveMQ)"

# ---- 1. Build (background), install the peers and the sync counter.
if [[ $SKIP_BUILD != 1 ]]; then
  log "building plugboard and plugboard-bench (log: $WORK/build.log)"
  (
    cd "$ROOT"
    # Others may be editing the workspace while this runs: retry a failed build a few times.
    for attempt in 1 2 3 4 5; do
      cargo build --release -p plugboard -p plugboard-bench && exit 0
      echo "build attempt $attempt failed; retrying in 60 s"
      sleep 60
    done
    exit 1
  ) >"$WORK/build.log" 2>&1 &
  BUILD_PID=$!
fi

peers_install
if [[ -z ${SYNC_COUNTER:-} ]]; then
  SYNC_COUNTER=strace
  if perf stat -e syscalls:sys_enter_fdatasync true >/dev/null 2>&1; then SYNC_COUNTER=perf; fi
fi
if [[ $SYNC_COUNTER == strace ]] && ! command -v strace >/dev/null 2>&1; then
  log "installing strace"
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y strace >>"$WORK/apt.log" 2>&1 ||
    { timeout 900 apt-get update >>"$WORK/apt.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y strace >>"$WORK/apt.log" 2>&1; } ||
    die "could not install strace"
fi
log "counting sync calls with $SYNC_COUNTER"

# ---- 2. Disk: fdatasync latency of 4 KiB appends where Plugboard's journal lives (before and
# after the runs: it varies with the other I/O on the machine).
mkdir -p "$DATA_PARENT"
# fsync_latency: JSON with the percentiles of 2000 fdatasyncs, each after a 4 KiB append.
fsync_latency() {
  python3 - "$DATA_PARENT" <<'EOF'
import json, os, sys, tempfile, time
d = tempfile.mkdtemp(prefix="plugboard-fsync.", dir=sys.argv[1])
path = os.path.join(d, "f")
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
buf, lat = b"x" * 4096, []
try:
    for _ in range(2000):
        os.write(fd, buf)
        t = time.perf_counter_ns()
        os.fdatasync(fd)
        lat.append((time.perf_counter_ns() - t) / 1000)
finally:
    os.close(fd)
    os.unlink(path)
    os.rmdir(d)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(json.dumps({"n": len(lat), "p50_us": round(q(0.5)), "p90_us": round(q(0.9)), "p99_us": round(q(0.99)),
                  "p999_us": round(q(0.999)), "max_us": round(lat[-1]), "mean_us": round(sum(lat) / len(lat))}))
EOF
}
FSYNC_LAT_JSON=$(fsync_latency)
log "fdatasync of a 4 KiB append in $DATA_PARENT: $FSYNC_LAT_JSON"
# The three data directories' file systems (type; whether all on the same one).
fs_type() { df --output=fstype "$1" | tail -n 1 | tr -d ' '; }
FS_NOTE="$(fs_type "$DATA_PARENT") (Plugboard), $(fs_type /var/lib/rabbitmq) (RabbitMQ), $(fs_type /var/lib/activemq) (ActiveMQ)"
if [[ $(stat -c %d "$DATA_PARENT" /var/lib/rabbitmq /var/lib/activemq | sort -u | wc -l) == 1 ]]; then
  FS_NOTE+=", all on the same file system"
else
  FS_NOTE+=", not all on the same file system"
fi

# ---- 3. The peers. RabbitMQ: rabbitmq_stomp declares /queue/NAME as a durable queue and maps
# `persistent:true` to delivery_mode 2; a SEND's receipt waits for the publisher confirm, which
# for a persistent message in a durable queue comes once it is synced to disk. ActiveMQ:
# KahaDB's journal syncs every write batch by default (journalDiskSyncStrategy = always; the
# older enableJournalDiskSyncs = true); refuse to run if the instance config turned that off.
AMQ_CONF=/etc/activemq/instances-available/main/activemq.xml
if grep -Eq 'journalDiskSyncStrategy="?(periodic|never)|enableJournalDiskSyncs="?false' "$AMQ_CONF"; then
  die "$AMQ_CONF turns KahaDB's journal disk syncs off; this benchmark needs them on (the default)"
fi
start_rabbitmq
start_activemq
wait_port $RMQ_PORT 180 RabbitMQ
wait_port $AMQ_PORT 180 ActiveMQ

# ---- 4. Plugboard: two instances with fresh data directories.
if [[ $SKIP_BUILD != 1 ]]; then
  log "waiting for the build"
  wait "$BUILD_PID" || die "build failed: $(tail -n 20 "$WORK/build.log")"
fi
[[ -x $BENCH && -x $PLUGBOARD ]] || die "missing $BENCH or $PLUGBOARD"
CONF=$WORK/conf
mkdir -p "$CONF"
cp "$ROOT/examples/broker.toml" "$CONF/batch.toml"
grep -q '^fsync = "batch"' "$CONF/batch.toml" || die "examples/broker.toml no longer has fsync = \"batch\""
sed 's/^fsync = "batch"/fsync = "never"/' "$CONF/batch.toml" >"$CONF/never.toml"
declare -A PORT=([plugboard]=$PB_PORT [plugboard-never]=$PB_NEVER_PORT [plugboard-transient]=$PB_PORT
  [rabbitmq]=$RMQ_PORT [activemq]=$AMQ_PORT)
for v in batch never; do
  port=$PB_PORT
  [[ $v == never ]] && port=$PB_NEVER_PORT
  listening "$port" && die "port $port is already taken"
  data=$(mktemp -d "$DATA_PARENT/plugboard-persistent-$v.XXXXXX")
  DATA_DIRS+=("$data")
  "$PLUGBOARD" --config "$CONF/$v.toml" --listen "127.0.0.1:$port" --data-dir "$data" \
    >"$WORK/plugboard-$v.out" 2>"$WORK/plugboard-$v.err" &
  STARTED_PIDS+=($!)
  wait_port "$port" 60 "plugboard ($v)"
done

# ---- 5. The runs.
# count_syncs_start PID OUT: starts counting the sync calls of PID (all its threads) into OUT.
count_syncs_start() {
  local pid=$1 out=$2 ev="" c t args=()
  if [[ $SYNC_COUNTER == perf ]]; then
    for c in "${SYNC_CALLS[@]}"; do ev+="${ev:+,}syscalls:sys_enter_$c"; done
    perf stat -x, -e "$ev" -p "$pid" -o "$out" &
  else
    for t in /proc/"$pid"/task/*; do args+=(-p "${t##*/}"); done
    strace -f -c -e "trace=$(
      IFS=,
      echo "${SYNC_CALLS[*]}"
    )" -o "$out" "${args[@]}" 2>/dev/null &
  fi
  COUNTER_PID=$!
  sleep 0.5 # attached
}

# count_syncs_stop OUT: stops the counter (it writes OUT as it exits); SYNCS = the sync calls.
count_syncs_stop() {
  kill -INT "$COUNTER_PID" 2>/dev/null || true
  wait "$COUNTER_PID" 2>/dev/null || true
  COUNTER_PID=
  if [[ $SYNC_COUNTER == perf ]]; then
    SYNCS=$(awk -F, '$3 ~ /^syscalls:/ && $1 ~ /^[0-9]+$/ {n += $1} END {print n + 0}' "$1")
  else
    SYNCS=$(awk -v calls=" ${SYNC_CALLS[*]} " 'index(calls, " " $NF " ") && $4 ~ /^[0-9]+$/ {n += $4} END {print n + 0}' "$1")
  fi
}

# run_one ROUND BROKER SCENARIO WINDOW
run_one() {
  local round=$1 b=$2 s=$3 w=$4 pid out rc=0 json size ack syncs args
  pid=$(port_pid "${PORT[$b]}")
  [[ -n $pid ]] || die "$b is not running (port ${PORT[$b]})"
  size=128
  [[ $s == 4k-* ]] && size=4096
  ack=auto
  [[ $s == *-ci ]] && ack=client-individual
  args=(queue --producers 4 --consumers 4 --messages "$MESSAGES" --size "$size" --ack "$ack"
    --window "$w" --destination "/queue/bench.persist.$s-w$w" --timeout 600)
  [[ $b == plugboard-transient ]] || args+=(--header persistent:true)
  count_syncs_start "$pid" "$WORK/syncs.$b.$s-w$w.r$round.txt"
  out=$(timeout 900 "$BENCH" "${args[@]}" --addr "127.0.0.1:${PORT[$b]}" --login $LOGIN \
    --passcode $PASSCODE --broker-pid "$pid" --rss-settle 0 2>>"$WORK/bench-stderr.log") || rc=$?
  count_syncs_stop "$WORK/syncs.$b.$s-w$w.r$round.txt"
  syncs=$SYNCS
  printf '  [r%d %s %s w%d] %s; %s sync calls\n' "$round" "$b" "$s" "$w" "${out%%$'\n'*}" "$syncs" >&2
  json=null
  while IFS= read -r line; do
    [[ $line == '{'* ]] && json=$line
  done <<<"$out"
  printf '{"round":%d,"broker":"%s","scenario":"%s-w%d","rc":%d,"pid":%d,"syncs":%d,"result":%s}\n' \
    "$round" "$b" "$s" "$w" "$rc" "$pid" "$syncs" "$json" >>"$RESULTS"
}

log "warm-up (not recorded): a short persistent run per broker"
for b in plugboard plugboard-never rabbitmq activemq; do
  timeout 300 "$BENCH" queue --messages 4000 --header persistent:true --destination /queue/bench.persist.warm \
    --addr "127.0.0.1:${PORT[$b]}" --login $LOGIN --passcode $PASSCODE --timeout 120 >/dev/null 2>&1 ||
    log "warm-up on $b failed"
done

# The machine's 1-minute load average before and after the rounds: the table and the chart
# say how busy it was (other processes compete with the brokers and the load tool).
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r of $ROUNDS"
  for w in "${WINDOWS[@]}"; do
    for s in "${SCENARIOS[@]}"; do
      for b in "${BROKERS[@]}"; do
        run_one "$r" "$b" "$s" "$w"
      done
    done
  done
done
FSYNC_LAT_END_JSON=$(fsync_latency)
log "fdatasync of a 4 KiB append in $DATA_PARENT after the runs: $FSYNC_LAT_END_JSON"

# ---- 6. Versions, table, doc.
{
  printf '{"kind":"meta","date":"%s","rounds":%d,"quick":%d,"messages":%d,"windows":"%s","sync_counter":"%s","load":"%s","load_end":"%s",' \
    "$(date -u '+%Y-%m-%d %H:%M UTC')" "$ROUNDS" "$QUICK" "$MESSAGES" "${WINDOWS[*]}" "$SYNC_COUNTER" \
    "$LOAD_START" "$(cut -d' ' -f1 /proc/loadavg)"
  peer_versions_json
  printf ',"plugboard":"%s","rustc":"%s","cpu":"%s","cores":%d,"kernel":"%s","fs":"%s","fdatasync":%s,"fdatasync_end":%s}\n' \
    "$PLUGBOARD_REV" "$(cd "$ROOT" && rustc --version)" \
    "$(sed -n '/^model name/{s/^model name\s*: //p;q}' /proc/cpuinfo)" "$(nproc)" "$(uname -r)" \
    "$FS_NOTE" "$FSYNC_LAT_JSON" "$FSYNC_LAT_END_JSON"
} >>"$RESULTS"

TABLE=$WORK/table.md
python3 "$ROOT/bench/persistent_table.py" "$RESULTS" >"$TABLE"
cat "$TABLE"
if [[ $NO_DOC != 1 ]]; then
  python3 "$ROOT/bench/persistent_table.py" --splice "$DOC" "$TABLE"
  log "wrote the table into $DOC"
fi

# ---- 7. The chart of the same medians (the doc's section shows docs/bench-persistent.svg). A
# missing plotting package (no python3-venv, no PyPI) costs the chart, not the run.
if [[ $CHARTS == 1 ]]; then
  if python3 "$ROOT/bench/charts.py" persistent "$RESULTS" "$WORK/chart.svg"; then
    if [[ $NO_DOC != 1 ]]; then
      cp "$WORK/chart.svg" "$ROOT/docs/bench-persistent.svg"
      log "wrote the chart docs/bench-persistent.svg"
    fi
  else
    log "WARNING: no chart (bench/charts.py failed, see above); the table is complete without it"
  fi
fi
