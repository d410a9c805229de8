#!/usr/bin/env bash
# The listeners side by side: the standard queue scenario (`queue --producers 4 --consumers 4
# --messages 200000 --size 128`, auto ack, non-persistent) over plain TCP, TLS and WebSocket,
# against Plugboard and against RabbitMQ (STOMP, STOMP+TLS, Web-STOMP) in the same run. Each
# round runs all six, in an order rotated by one every round, ROUNDS rounds; prints the medians
# of broker CPU per message and throughput, and what TLS and WebSocket add on each broker.
#
#   sudo bench/edge.sh                  # ROUNDS=5, SCALE=1
#   ROUNDS=3 sudo -E bench/edge.sh
#
# Run as root (it configures and starts RabbitMQ from Debian, see bench/peers.sh; install it
# with `peers_install` or bench/compare.sh first). Loopback only:
#   Plugboard (examples/broker.toml)  STOMP 127.0.0.1:61653, TLS :61654, WebSocket :15685/ws
#   RabbitMQ (packaged defaults)      STOMP 127.0.0.1:61614, TLS :61617, Web-STOMP :15674/ws
# Both TLS listeners use one throwaway CA and ECDSA P-256 server certificate made with openssl
# in target/edge-bench/ (nothing secret is kept; the key is made readable by the rabbitmq
# group). Broker CPU is user+system time of the broker process (Plugboard; beam.smp for
# RabbitMQ) per delivered message, read from /proc. RabbitMQ is stopped at the end and its
# rabbitmq.conf and enabled_plugins are put back as they were. Raw results:
# target/edge-bench/results.jsonl. Not part of `cargo test`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-5}
SCALE=${SCALE:-1}
WORK=$ROOT/target/edge-bench
RESULTS=$WORK/results.jsonl
LOG_TAG=edge
PB_TCP=61653 PB_TLS=61654 PB_WS=15685
RMQ_PORT=61614 RMQ_TLS=61617 RMQ_WS=15674
LOGIN=guest PASSCODE=guest
mkdir -p "$WORK"
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"

[[ $(id -u) == 0 ]] || die "run as root (configures and starts RabbitMQ)"
command -v rabbitmq-server >/dev/null 2>&1 || die "RabbitMQ is not installed (bench/compare.sh installs it)"

log "building (release, log: $WORK/build.log)"
(cd "$ROOT" && nice -n 10 cargo build --release -p plugboard -p plugboard-bench) >"$WORK/build.log" 2>&1 ||
  die "build failed: $(tail -n 20 "$WORK/build.log")"
BENCH=$ROOT/target/release/plugboard-bench
BROKER=$ROOT/target/release/plugboard

log "making a throwaway CA and server certificate"
(
  cd "$WORK"
  rm -f ca.* server.*
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout ca.key -out ca.pem -subj "/CN=plugboard bench CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout server.key -out server.csr -subj "/CN=plugboard bench" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -extfile server.ext -out server.pem 2>/dev/null
  chmod 644 ca.pem server.pem
  chgrp rabbitmq server.key && chmod 640 server.key
)

for port in $PB_TCP $PB_TLS $PB_WS $RMQ_PORT $RMQ_TLS $RMQ_WS; do
  listening "$port" && die "port $port is already taken"
done

# RabbitMQ's files, put back afterwards (start_rabbitmq rewrites both).
for f in rabbitmq.conf enabled_plugins; do
  if [[ -f /etc/rabbitmq/$f ]]; then cp -p "/etc/rabbitmq/$f" "$WORK/saved.$f"; else rm -f "$WORK/saved.$f"; fi
done
BROKER_PID=
cleanup() {
  local rc=$?
  set +e
  [[ -n $BROKER_PID ]] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  stop_rabbitmq
  for f in rabbitmq.conf enabled_plugins; do
    [[ -f $WORK/saved.$f ]] && cp -p "$WORK/saved.$f" "/etc/rabbitmq/$f"
  done
  log "done (exit $rc); raw results in $RESULTS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RMQ_PLUGINS="rabbitmq_stomp rabbitmq_web_stomp"
RMQ_EXTRA_CONF="stomp.listeners.ssl.1 = 127.0.0.1:$RMQ_TLS
ssl_options.cacertfile = $WORK/ca.pem
ssl_options.certfile = $WORK/server.pem
ssl_options.keyfile = $WORK/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
web_stomp.tcp.ip = 127.0.0.1
web_stomp.tcp.port = $RMQ_WS"
start_rabbitmq

rm -rf "$WORK/data" && mkdir -p "$WORK/data"
"$BROKER" --config "$ROOT/examples/broker.toml" --listen "127.0.0.1:$PB_TCP" \
  --tls-listen "127.0.0.1:$PB_TLS" --tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key" \
  --ws-listen "127.0.0.1:$PB_WS" --data-dir "$WORK/data" >"$WORK/broker.out" 2>"$WORK/broker.err" &
BROKER_PID=$!
for port in $PB_TCP $PB_TLS $PB_WS; do wait_port "$port" 60 plugboard; done
for port in $RMQ_PORT $RMQ_TLS $RMQ_WS; do wait_port "$port" 180 RabbitMQ; done
RMQ_PID=$(port_pid "$RMQ_PORT")
[[ -n $RMQ_PID && $(cat "/proc/$RMQ_PID/comm") == beam.smp ]] || die "no beam.smp on port $RMQ_PORT"

VARIANTS=(plugboard-tcp plugboard-tls plugboard-ws rabbitmq-tcp rabbitmq-tls rabbitmq-ws)
declare -A ADDR=([plugboard-tcp]="127.0.0.1:$PB_TCP" [plugboard-tls]="127.0.0.1:$PB_TLS"
  [plugboard-ws]="ws://127.0.0.1:$PB_WS/ws" [rabbitmq-tcp]="127.0.0.1:$RMQ_PORT"
  [rabbitmq-tls]="127.0.0.1:$RMQ_TLS" [rabbitmq-ws]="ws://127.0.0.1:$RMQ_WS/ws")
declare -A PID=([plugboard-tcp]=$BROKER_PID [plugboard-tls]=$BROKER_PID [plugboard-ws]=$BROKER_PID
  [rabbitmq-tcp]=$RMQ_PID [rabbitmq-tls]=$RMQ_PID [rabbitmq-ws]=$RMQ_PID)
# bench_args VARIANT: the connection options.
bench_args() {
  CONN=(--addr "${ADDR[$1]}" --login "$LOGIN" --passcode "$PASSCODE")
  [[ $1 == *-tls ]] && CONN+=(--tls-ca "$WORK/ca.pem")
  return 0
}

# What each TLS listener negotiates with a default client (rustls offers the same TLS 1.3 suites).
declare -A NEGOTIATED=()
for v in plugboard-tls rabbitmq-tls; do
  NEGOTIATED[$v]=$(timeout 10 openssl s_client -connect "${ADDR[$v]}" -CAfile "$WORK/ca.pem" \
    </dev/null 2>/dev/null | awk '/^New, / {sub(/^New, /, ""); print; exit}')
  log "$v: ${NEGOTIATED[$v]:-?}"
done

: >"$RESULTS"
: >"$WORK/bench-stderr.log"
log "warm-up (not recorded)"
for v in "${VARIANTS[@]}"; do
  bench_args "$v"
  timeout 300 "$BENCH" queue --messages 20000 --destination /queue/edge.warm "${CONN[@]}" \
    --timeout 120 >/dev/null 2>>"$WORK/bench-stderr.log" || log "warm-up on $v failed"
done
ARGS=(queue --producers 4 --consumers 4 --messages $((200000 * SCALE)) --size 128 --timeout 300)
for ((r = 1; r <= ROUNDS; r++)); do
  order=()
  for ((i = 0; i < ${#VARIANTS[@]}; i++)); do
    order+=("${VARIANTS[(i + r - 1) % ${#VARIANTS[@]}]}")
  done
  log "round $r of $ROUNDS (${order[*]})"
  for v in "${order[@]}"; do
    bench_args "$v"
    rc=0
    out=$(timeout 600 "$BENCH" "${ARGS[@]}" --destination "/queue/edge.${v#*-}" "${CONN[@]}" \
      --broker-pid "${PID[$v]}" 2>>"$WORK/bench-stderr.log") || rc=$?
    printf '  [r%d %s] %s\n' "$r" "$v" "${out%%$'\n'*}" >&2
    json=$(grep '^{' <<<"$out" | tail -n 1 || true)
    printf '{"round":%d,"variant":"%s","rc":%d,"result":%s}\n' "$r" "$v" "$rc" "${json:-null}" >>"$RESULTS"
  done
done

printf '{"kind":"meta","date":"%s","rounds":%d,"scale":%d,"plugboard":"%s",%s,"cores":%d,"tls":{"plugboard":"%s","rabbitmq":"%s"}}\n' \
  "$(date -u '+%Y-%m-%d %H:%M UTC')" "$ROUNDS" "$SCALE" "$(git -C "$ROOT" describe --always --dirty)" \
  "$(peer_versions_json)" "$(nproc)" "${NEGOTIATED[plugboard-tls]}" "${NEGOTIATED[rabbitmq-tls]}" >>"$RESULTS"

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs, meta = defaultdict(list), {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get("kind") == "meta":
        meta = d
    elif d["result"]:
        runs[d["variant"]].append(d["result"])
def med(v, f):
    x = [r[f] for r in runs[v] if r.get(f) is not None]
    return statistics.median(x) if x else None
fmt = lambda x, d=2: "–" if x is None else f"{x:,.{d}f}"
print(f"Plugboard {meta.get('plugboard')}, RabbitMQ {meta.get('rabbitmq')} (Erlang {meta.get('erlang')}), "
      f"{meta.get('cores')} cores; queue 4 -> 4, 128 B, {200000 * meta.get('scale', 1):,} messages; "
      f"medians of {meta.get('rounds')} rounds")
print(f"TLS negotiated: Plugboard {meta['tls']['plugboard'] or '?'}; RabbitMQ {meta['tls']['rabbitmq'] or '?'}")
print()
print("| broker | listener | broker CPU µs/msg | adds over TCP | msg/s | per run (µs/msg) | lost/dup |")
print("|---|---|---|---|---|---|---|")
names = {"tcp": "STOMP over TCP", "tls": "STOMP over TLS", "ws": "STOMP over WebSocket"}
for b in ("plugboard", "rabbitmq"):
    base = med(f"{b}-tcp", "cpu_us_per_msg")
    for t in ("tcp", "tls", "ws"):
        v = f"{b}-{t}"
        c = med(v, "cpu_us_per_msg")
        if t == "tcp" or c is None or base is None:
            add = "–"
        else:
            add = f"{c - base:+.2f} µs ({c / base:.2f}×)"
        per = " / ".join(fmt(r.get("cpu_us_per_msg")) for r in runs[v]) or "–"
        bad = sum(r.get("lost", 0) + r.get("duplicates", 0) for r in runs[v])
        print(f"| {b} | {names[t]} | {fmt(c)} | {add} | {fmt(med(v, 'msgs_per_s'), 0)} | {per} | {bad} |")
PY
