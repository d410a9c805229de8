#!/usr/bin/env bash
# STOMP over TLS beside plain TCP: one release broker with both listeners, the standard queue
# scenario (`queue --producers 4 --consumers 4 --messages 200000 --size 128`) run against each
# in turn (round r alternates which goes first), ROUNDS rounds; prints the medians of broker CPU
# per message (the figure that is stable on these machines) and throughput, and the TLS cost
# per message (TLS minus plain).
#
#   bench/tls.sh
#   ROUNDS=9 SCALE=2 bench/tls.sh
#
# A throwaway CA and server certificate are made with openssl in target/tls-bench/ (nothing
# secret is kept). The broker runs examples/broker.toml on loopback ports 61643 (plain) and
# 61644 (TLS; TLS 1.3 with AES-GCM is negotiated). Raw results:
# target/tls-bench/results.jsonl. Not part of `cargo test`; the release build takes about 8
# minutes here.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-5}
SCALE=${SCALE:-1}
WORK=$ROOT/target/tls-bench
RESULTS=$WORK/results.jsonl
LOG_TAG=tls
mkdir -p "$WORK"
# shellcheck source=bench/peers.sh
source "$ROOT/bench/peers.sh"

log "building (release)"
(cd "$ROOT" && cargo build --release -p plugboard -p plugboard-bench) >"$WORK/build.log" 2>&1 \
  || die "build failed: $(tail -n 20 "$WORK/build.log")"
BENCH=$ROOT/target/release/plugboard-bench
BROKER=$ROOT/target/release/plugboard

log "making a throwaway CA and server certificate"
(
  cd "$WORK"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout ca.key -out ca.pem -subj "/CN=plugboard bench CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout server.key -out server.csr -subj "/CN=plugboard bench" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -extfile server.ext -out server.pem 2>/dev/null
)

PLAIN=61643
TLS=61644
for port in $PLAIN $TLS; do listening "$port" && die "port $port is already taken"; done
rm -rf "$WORK/data" && mkdir -p "$WORK/data"
"$BROKER" --config "$ROOT/examples/broker.toml" --listen "127.0.0.1:$PLAIN" \
  --tls-listen "127.0.0.1:$TLS" --tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key" \
  --data-dir "$WORK/data" >"$WORK/broker.out" 2>"$WORK/broker.err" &
BROKER_PID=$!
trap 'kill $BROKER_PID 2>/dev/null; wait $BROKER_PID 2>/dev/null' EXIT
wait_port $PLAIN 60 plugboard
wait_port $TLS 60 plugboard-tls

declare -A EXTRA=([plain]="" [tls]="--tls-ca $WORK/ca.pem")
declare -A PORT=([plain]=$PLAIN [tls]=$TLS)
ARGS=(queue --producers 4 --consumers 4 --messages $((200000 * SCALE)) --size 128 --timeout 300)

: >"$RESULTS"
log "warm-up (not recorded)"
for v in plain tls; do
  # shellcheck disable=SC2086
  "$BENCH" queue --messages 20000 --destination /queue/tls.warm --addr "127.0.0.1:${PORT[$v]}" \
    ${EXTRA[$v]} --timeout 120 >/dev/null 2>&1 || log "warm-up on $v failed"
done
for ((r = 1; r <= ROUNDS; r++)); do
  order=(plain tls)
  ((r % 2 == 0)) && order=(tls plain)
  log "round $r of $ROUNDS (${order[*]})"
  for v in "${order[@]}"; do
    # shellcheck disable=SC2086
    out=$("$BENCH" "${ARGS[@]}" --destination "/queue/tls.$v" --addr "127.0.0.1:${PORT[$v]}" \
      ${EXTRA[$v]} --broker-pid "$BROKER_PID" 2>>"$WORK/bench-stderr.log") || true
    printf '  [r%d %s] %s\n' "$r" "$v" "${out%%$'\n'*}" >&2
    json=$(grep '^{' <<<"$out" | tail -n 1 || true)
    printf '{"round":%d,"listener":"%s","result":%s}\n' "$r" "$v" "${json:-null}" >>"$RESULTS"
  done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(listener, key):
    vals = [r["result"][key] for r in rows
            if r["listener"] == listener and r["result"] and r["result"].get(key) is not None]
    return statistics.median(vals) if vals else None
cpu = {v: med(v, "cpu_us_per_msg") for v in ("plain", "tls")}
rate = {v: med(v, "msgs_per_s") for v in ("plain", "tls")}
n = len([r for r in rows if r["listener"] == "tls"])
print(f"queue 4->4, 128 B, medians of {n} rounds")
print("| listener | broker CPU us/msg | msg/s |")
print("|---|---|---|")
for v in ("plain", "tls"):
    c = f"{cpu[v]:.2f}" if cpu[v] is not None else "-"
    m = f"{rate[v]:,.0f}" if rate[v] is not None else "-"
    print(f"| {v} | {c} | {m} |")
if cpu["plain"] is not None and cpu["tls"] is not None:
    print(f"TLS costs {cpu['tls'] - cpu['plain']:.2f} us of broker CPU per message "
          f"({cpu['tls'] / cpu['plain']:.2f}x plain)")
PY
