#!/usr/bin/env bash
# Plugboard side by side with RabbitMQ and ActiveMQ Classic: the same plugboard-bench scenarios
# against each broker, interleaved (round r: plugboard, plugboard+router, plugboard+filter,
# rabbitmq, activemq, relay), ROUNDS rounds; medians and ratios go into docs/benchmarks.md.
# `relay` is `plugboard-bench relay`: no broker, the floor of this machine (see bench/src/relay.rs).
#
# Not part of `cargo test`. Debian 12, run as root (it installs and starts the peers). Loopback
# only: Plugboard on 127.0.0.1:61623 (+router :61624, +filter :61625), RabbitMQ STOMP on
# 127.0.0.1:61614, ActiveMQ STOMP on 127.0.0.1:61615, the relay on 127.0.0.1:61626.
#
#   bench/compare.sh                 # full run (5 rounds), writes docs/benchmarks.md
#   ROUNDS=1 QUICK=1 NO_DOC=1 bench/compare.sh   # smoke test: small counts, no doc update
#   KEEP_PEERS=1 bench/compare.sh    # leave RabbitMQ/ActiveMQ running afterwards
#   SKIP_BUILD=1 PLUGBOARD=FILE BENCH=FILE WASM_DIR=DIR PLUGBOARD_REV=REV bench/compare.sh
#                                    # binaries built elsewhere (REV: what the table calls them;
#                                    # WASM_DIR: header-router.wasm and selector.wasm. Not
#                                    # PLUGINS_DIR: RabbitMQ's scripts read that one)
#   CHARTS=0 bench/compare.sh        # the table without the chart
#
# Raw results (one JSON line per run) and logs: target/compare/. After the table it draws the
# chart docs/bench-compare.svg (target/compare/chart.svg with NO_DOC=1) with bench/charts.py,
# which installs matplotlib from PyPI into target/bench-venv on first use; if that fails the
# run still ends with its table (a warning says why there is no chart). To redraw from saved
# results: python3 bench/charts.py compare target/compare/results.jsonl docs/bench-compare.svg
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-5}
QUICK=${QUICK:-0}
NO_DOC=${NO_DOC:-0}
KEEP_PEERS=${KEEP_PEERS:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
CHARTS=${CHARTS:-1}
WORK=${WORK:-$ROOT/target/compare}
DOC=$ROOT/docs/benchmarks.md
PB_PORT=61623 PB_ROUTER_PORT=61624 PB_FILTER_PORT=61625
RMQ_PORT=61614 AMQ_PORT=61615 RELAY_PORT=61626
LOGIN=guest PASSCODE=guest
BENCH=${BENCH:-$ROOT/target/release/plugboard-bench}
PLUGBOARD=${PLUGBOARD:-$ROOT/target/release/plugboard}
WASM_DIR=${WASM_DIR:-$ROOT/target/plugins}
PLUGBOARD_REV=${PLUGBOARD_REV:-$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?')}
AMQ_CONF=/etc/activemq/instances-available/main/activemq.xml

# Message counts (QUICK=1: a smoke test that only checks that everything runs).
if [[ $QUICK == 1 ]]; then
  Q_N=20000 T_N=5000 A_N=10000 K_N=2000 M_N=20 LAT_S=2 IDLE_N=200
else
  Q_N=200000 T_N=50000 A_N=100000 K_N=20000 M_N=200 LAT_S=10 IDLE_N=1000
fi

mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
: >"$WORK/bench-stderr.log"
STARTED_PIDS=()

LOG_TAG=compare

# port_pid, listening, wait_port, wait_gone, rss_kib, peers_install, start_/stop_rabbitmq,
# start_/stop_activemq, peer_versions_json.
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"

cleanup() {
  local rc=$?
  set +e
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  if [[ $KEEP_PEERS != 1 ]]; then
    stop_rabbitmq
    stop_activemq
  fi
  log "done (exit $rc); raw results in $RESULTS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) == 0 ]] || die "run as root (installs and starts RabbitMQ and ActiveMQ)"

# ---- 1. Build Plugboard, the bench and the plugins in the background (slow the first time).
if [[ $SKIP_BUILD != 1 ]]; then
  log "building plugboard, plugboard-bench and the plugins (log: $WORK/build.log)"
  # Others may be editing the workspace while this runs: retry a failed build a few times.
  (
    cd "$ROOT"
    for attempt in 1 2 3 4 5; do
      if cargo build --release -p plugboard -p plugboard-bench; then
        # The two plugins used here; if they do not build right now (a plugin being edited),
        # components built earlier are used and the table says so.
        cargo xtask plugins header-router selector || echo "PLUGINS-STALE: cargo xtask plugins failed"
        exit 0
      fi
      echo "build attempt $attempt failed; retrying in 60 s"
      sleep 60
    done
    exit 1
  ) >"$WORK/build.log" 2>&1 &
  BUILD_PID=$!
else
  log "SKIP_BUILD=1: using $PLUGBOARD, $BENCH and the plugins in $WASM_DIR as they are"
  echo "SKIP_BUILD=1" >"$WORK/build.log"
fi

# ---- 2. Install the peers if missing (one apt-get update).
peers_install

# ---- 3. RabbitMQ: STOMP plugin on 127.0.0.1:61614, guest/guest, everything on loopback.
start_rabbitmq

# ---- 4. ActiveMQ Classic: instance `main` with a stomp:// connector on 127.0.0.1:61615.
start_activemq

wait_port $RMQ_PORT 180 RabbitMQ
wait_port $AMQ_PORT 180 ActiveMQ
RMQ_STARTED_AT=$SECONDS

# ---- 5. Wait for the build, then start the three Plugboard instances.
if [[ $SKIP_BUILD != 1 ]]; then
  log "waiting for the build"
  wait "$BUILD_PID" || die "build failed: $(tail -n 20 "$WORK/build.log")"
fi
[[ -x $BENCH && -x $PLUGBOARD ]] || die "missing $BENCH or $PLUGBOARD"
PLUGINS_NOTE=fresh
[[ $SKIP_BUILD == 1 ]] && PLUGINS_NOTE=prebuilt
if grep -q '^PLUGINS-STALE' "$WORK/build.log"; then
  PLUGINS_NOTE=stale
  log "WARNING: the plugins did not build; using the components already in target/plugins"
fi
# Private copies: the broker reloads a plugin whose file changes, and other builds (cargo test,
# cargo xtask plugins) rewrite target/plugins/ at any time.
CONF=$WORK/conf
mkdir -p "$CONF"
for p in header-router selector; do
  [[ -f $WASM_DIR/$p.wasm ]] || die "missing $WASM_DIR/$p.wasm"
  cp "$WASM_DIR/$p.wasm" "$CONF/$p.wasm"
  PLUGINS_NOTE+=" $p.wasm:$(sha256sum "$CONF/$p.wasm" | cut -c1-12)"
done

# Configs: examples/broker.toml (the defaults, no plugins) plus one plugin on every message.
# Router: SENDs with bench-route:yes on the bench destinations move to DEST.routed (the bench's
# consumers subscribe there with --consume-from). Filter: the selector plugin evaluates the
# subscriber's `selector` header on every delivery.
# The idle scenario opens 1000 connections from one address: above the default per-address cap.
sed 's/^max_connections_per_address = .*/max_connections_per_address = 4096/' \
  "$ROOT/examples/broker.toml" >"$CONF/broker.toml"
cp "$CONF/broker.toml" "$CONF/plain.toml"
{
  cat "$CONF/broker.toml"
  cat <<EOF

[[plugins]]
name = "router"
file = "$CONF/header-router.wasm"
hooks = ["send"]
destinations = ["/queue/bench.*", "/topic/bench.*"]
EOF
  for d in /queue/bench.q /topic/bench.t /queue/bench.latency; do
    cat <<EOF

[[plugins.config.rules]]
destination = "$d"
header = "bench-route"
value = "yes"
to = ["$d.routed"]
EOF
  done
} >"$CONF/router.toml"
{
  cat "$CONF/broker.toml"
  cat <<EOF

[[plugins]]
name = "selector"
file = "$CONF/selector.wasm"
hooks = ["message"]
destinations = ["*"]
EOF
} >"$CONF/filter.toml"

declare -A PORT=([plugboard]=$PB_PORT [plugboard-router]=$PB_ROUTER_PORT
  [plugboard-filter]=$PB_FILTER_PORT [rabbitmq]=$RMQ_PORT [activemq]=$AMQ_PORT
  [relay]=$RELAY_PORT)
declare -A IDLE_RSS=()
# The relay: what moving the bench's messages costs on this machine with no broker at all.
listening $RELAY_PORT && die "port $RELAY_PORT is already taken"
"$BENCH" relay --listen "127.0.0.1:$RELAY_PORT" >"$WORK/relay.out" 2>&1 &
STARTED_PIDS+=($!)
wait_port $RELAY_PORT 30 relay
for v in plugboard plugboard-router plugboard-filter; do
  listening "${PORT[$v]}" && die "port ${PORT[$v]} is already taken"
  conf=$CONF/${v#plugboard-}.toml
  [[ $v == plugboard ]] && conf=$CONF/plain.toml
  # Each instance needs a message store of its own (a data directory is locked by its broker);
  # the messages here are not persistent, so it stays empty. Fresh for every run.
  rm -rf "$WORK/data/$v"
  mkdir -p "$WORK/data/$v"
  "$PLUGBOARD" --config "$conf" --listen "127.0.0.1:${PORT[$v]}" --data-dir "$WORK/data/$v" \
    >"$WORK/$v.out" 2>"$WORK/$v.err" &
  STARTED_PIDS+=($!)
  wait_port "${PORT[$v]}" 60 "$v"
done

# Idle RSS: a freshly started broker (the peers had at least 5 s to settle).
sleep $((5 - (SECONDS - RMQ_STARTED_AT) > 1 ? 5 - (SECONDS - RMQ_STARTED_AT) : 1))
for b in "${!PORT[@]}"; do
  [[ $b == relay ]] && continue
  IDLE_RSS[$b]=$(rss_kib "$(port_pid "${PORT[$b]}")")
done

# ---- 6. The runs.
# scenario_args SCENARIO VARIANT: sets ARGS for plugboard-bench.
scenario_args() {
  local s=$1 v=$2 dest
  case $s in
    queue) ARGS=(queue --producers 4 --consumers 4 --messages "$Q_N" --size 128) dest=/queue/bench.q ;;
    topic) ARGS=(topic --producers 1 --subscribers 4 --messages "$T_N" --size 128) dest=/topic/bench.t ;;
    acked) ARGS=(queue --producers 4 --consumers 4 --messages "$A_N" --size 128 --ack client-individual) dest=/queue/bench.acked ;;
    16k) ARGS=(queue --producers 4 --consumers 4 --messages "$K_N" --size 16384) dest=/queue/bench.16k ;;
    1m) ARGS=(queue --producers 1 --consumers 1 --messages "$M_N" --size 1048576 --window 10 --prefetch 10) dest=/queue/bench.1m ;;
    latency) ARGS=(latency --rate 1000 --seconds "$LAT_S" --size 128) dest=/queue/bench.latency ;;
    idle)
      ARGS=(idle --connections "$IDLE_N")
      return
      ;;
  esac
  ARGS+=(--destination "$dest" --timeout 300)
  case $v in
    plugboard-router) ARGS+=(--header bench-route:yes --consume-from "$dest.routed") ;;
    plugboard-filter) ARGS+=(--subscribe-header "selector:p IS NOT NULL") ;;
  esac
}

# run_one ROUND BROKER SCENARIO
run_one() {
  local round=$1 b=$2 s=$3 pid out rc=0 json
  pid=$(port_pid "${PORT[$b]}")
  [[ -n $pid ]] || die "$b is not running (port ${PORT[$b]})"
  scenario_args "$s" "$b"
  out=$(timeout 600 "$BENCH" "${ARGS[@]}" --addr "127.0.0.1:${PORT[$b]}" --login $LOGIN \
    --passcode $PASSCODE --broker-pid "$pid" 2>>"$WORK/bench-stderr.log") || rc=$?
  printf '  [r%d %s] %s\n' "$round" "$b" "${out%%$'\n'*}" >&2
  json=null
  while IFS= read -r line; do
    [[ $line == '{'* ]] && json=$line
  done <<<"$out"
  printf '{"round":%d,"broker":"%s","scenario":"%s","rc":%d,"pid":%d,"result":%s}\n' \
    "$round" "$b" "$s" "$rc" "$pid" "$json" >>"$RESULTS"
}

# idle first: its per-connection figure is least disturbed by the bursts before it.
SCENARIOS=(idle queue topic acked 16k 1m latency)
PLUGIN_SCENARIOS=(queue topic latency)

log "warm-up (not recorded): a short queue and topic run per broker (JIT, Erlang schedulers)"
for b in plugboard rabbitmq activemq; do
  pid=$(port_pid "${PORT[$b]}")
  timeout 300 "$BENCH" queue --messages 20000 --destination /queue/bench.warm --addr "127.0.0.1:${PORT[$b]}" \
    --login $LOGIN --passcode $PASSCODE --timeout 120 >/dev/null 2>&1 || log "warm-up queue on $b failed"
  timeout 300 "$BENCH" topic --messages 5000 --destination /topic/bench.warm --addr "127.0.0.1:${PORT[$b]}" \
    --login $LOGIN --passcode $PASSCODE --timeout 120 >/dev/null 2>&1 || log "warm-up topic on $b failed"
done

# The machine's 1-minute load average before and after the rounds: the table and the chart
# say how busy it was (other processes compete with the brokers and the load tool).
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r of $ROUNDS"
  for s in "${SCENARIOS[@]}"; do
    for b in plugboard plugboard-router plugboard-filter rabbitmq activemq relay; do
      if [[ $b == plugboard-* ]] && [[ " ${PLUGIN_SCENARIOS[*]} " != *" $s "* ]]; then continue; fi
      if [[ $b == relay && $s == idle ]]; then continue; fi
      run_one "$r" "$b" "$s"
    done
  done
done

# ---- 7. Versions, table, doc.
{
  printf '{"kind":"meta","date":"%s","rounds":%d,"quick":%d,"load":"%s","load_end":"%s",' \
    "$(date -u '+%Y-%m-%d %H:%M UTC')" "$ROUNDS" "$QUICK" "$LOAD_START" "$(cut -d' ' -f1 /proc/loadavg)"
  peer_versions_json
  printf ','
  printf '"plugins":"%s",' "$PLUGINS_NOTE"
  printf '"plugboard":"%s","rustc":"%s","cpu":"%s","cores":%d,"kernel":"%s","idle_rss_kib":{' \
    "$PLUGBOARD_REV" "$(cd "$ROOT" && rustc --version)" \
    "$(sed -n '/^model name/{s/^model name\s*: //p;q}' /proc/cpuinfo)" "$(nproc)" "$(uname -r)"
  first=1
  for b in "${!IDLE_RSS[@]}"; do
    ((first)) || printf ','
    first=0
    printf '"%s":%d' "$b" "${IDLE_RSS[$b]}"
  done
  printf '},"counts":{"queue":%d,"topic":%d,"acked":%d,"16k":%d,"1m":%d,"latency_s":%d,"idle":%d}}\n' \
    $Q_N $T_N $A_N $K_N $M_N $LAT_S $IDLE_N
} >>"$RESULTS"

TABLE=$WORK/table.md
python3 "$ROOT/bench/compare_table.py" "$RESULTS" >"$TABLE"
cat "$TABLE"
if [[ $NO_DOC != 1 ]]; then
  python3 "$ROOT/bench/compare_table.py" --splice "$DOC" "$TABLE"
  log "wrote the comparison into $DOC"
fi

# ---- 8. The chart of the same medians (the doc's section shows docs/bench-compare.svg). A
# missing plotting package (no python3-venv, no PyPI) costs the chart, not the run.
if [[ $CHARTS == 1 ]]; then
  if python3 "$ROOT/bench/charts.py" compare "$RESULTS" "$WORK/chart.svg"; then
    if [[ $NO_DOC != 1 ]]; then
      cp "$WORK/chart.svg" "$ROOT/docs/bench-compare.svg"
      log "wrote the chart docs/bench-compare.svg"
    fi
  else
    log "WARNING: no chart (bench/charts.py failed, see above); the table is complete without it"
  fi
fi
