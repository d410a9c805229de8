# shellcheck shell=bash
# The peer brokers for the side-by-side benchmarks: install, configure, start and stop RabbitMQ
# (with rabbitmq_stomp) and ActiveMQ Classic from Debian, on loopback only. Sourced by
# bench/compare.sh and bench/persistent.sh; not a script of its own.
#
# Before sourcing, set LOG_TAG (the script's name in log lines) and WORK (a directory for
# logs); `log MESSAGE...` and `die MESSAGE...` are defined here. Optional, with their defaults: RMQ_PORT (61614), AMQ_PORT (61615), LOGIN/PASSCODE
# (guest/guest), AMQ_CONF (the Debian instance `main`), RMQ_PLUGINS (the RabbitMQ plugins to
# run, exactly these: `rabbitmq_stomp`), RMQ_EXTRA_CONF (lines appended to rabbitmq.conf, e.g.
# more listeners; empty).
#
#   peers_install            # apt-get install what is missing (rabbitmq-server, activemq)
#   start_rabbitmq           # writes /etc/rabbitmq/rabbitmq.conf, starts it detached
#   start_activemq           # enables instance `main` with a stomp:// connector, starts it
#   wait_port PORT SECS NAME # then wait until they listen
#   stop_rabbitmq; stop_activemq
#   peer_versions_json       # "rabbitmq":"…","erlang":"…","activemq":"…","java":"…"

: "${RMQ_PORT:=61614}"
: "${AMQ_PORT:=61615}"
: "${LOGIN:=guest}"
: "${PASSCODE:=guest}"
: "${AMQ_CONF:=/etc/activemq/instances-available/main/activemq.xml}"
: "${RMQ_PLUGINS:=rabbitmq_stomp}"
: "${RMQ_EXTRA_CONF:=}"

log() { printf '[%s %(%H:%M:%S)T] %s\n' "${LOG_TAG:-bench}" -1 "$*" >&2; }
die() {
  log "FATAL: $*"
  exit 1
}

# PID of the process listening on 127.0.0.1:PORT (empty if none).
port_pid() {
  local l
  l=$(ss -ltnpH "sport = :$1" 2>/dev/null || true)
  [[ $l =~ pid=([0-9]+) ]] && printf '%s\n' "${BASH_REMATCH[1]}"
  return 0
}

listening() { ss -ltnH "sport = :$1" 2>/dev/null | grep -q LISTEN; }

# wait_port PORT SECONDS NAME
wait_port() {
  local deadline=$((SECONDS + $2))
  until listening "$1"; do
    ((SECONDS < deadline)) || die "$3 is not listening on port $1 after $2 s"
    sleep 0.5
  done
}

# wait_gone PORT SECONDS
wait_gone() {
  local deadline=$((SECONDS + $2))
  while listening "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Installs the peers if missing (one apt-get update).
peers_install() {
  local need=()
  command -v rabbitmq-server >/dev/null 2>&1 || need+=(rabbitmq-server)
  [[ -x /usr/bin/activemq ]] || need+=(activemq)
  if ((${#need[@]})); then
    log "installing ${need[*]}"
    timeout 900 apt-get update >"$WORK/apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive timeout 1800 apt-get install -y "${need[@]}" >>"$WORK/apt.log" 2>&1
  fi
}

stop_rabbitmq() {
  listening "$RMQ_PORT" || return 0
  log "stopping RabbitMQ"
  local pid
  pid=$(port_pid "$RMQ_PORT")
  timeout 60 rabbitmqctl stop >/dev/null 2>&1 || true
  if ! wait_gone "$RMQ_PORT" 30 && [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
  wait_gone "$RMQ_PORT" 15 || log "RabbitMQ still listening on $RMQ_PORT"
}

stop_activemq() {
  listening "$AMQ_PORT" || return 0
  log "stopping ActiveMQ"
  local pid
  pid=$(port_pid "$AMQ_PORT")
  timeout 60 /etc/init.d/activemq stop >/dev/null 2>&1 || true
  if ! wait_gone "$AMQ_PORT" 20 && [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
  wait_gone "$AMQ_PORT" 15 || log "ActiveMQ still listening on $AMQ_PORT"
}

# RabbitMQ: STOMP plugin on 127.0.0.1:RMQ_PORT, LOGIN/PASSCODE, everything on loopback; the
# plugins RMQ_PLUGINS and only those (a plugin enabled by an earlier run does not linger), and
# RMQ_EXTRA_CONF at the end of rabbitmq.conf.
# Returns once `rabbitmq-server -detached` has returned; wait_port before using it.
start_rabbitmq() {
  stop_rabbitmq
  {
    cat <<EOF
# Written by plugboard bench/peers.sh
listeners.tcp.default = 127.0.0.1:5672
stomp.listeners.tcp.1 = 127.0.0.1:$RMQ_PORT
stomp.default_user = $LOGIN
stomp.default_pass = $PASSCODE
loopback_users = none
EOF
    [[ -z $RMQ_EXTRA_CONF ]] || printf '%s\n' "$RMQ_EXTRA_CONF"
  } >/etc/rabbitmq/rabbitmq.conf
  grep -q '^NODE_IP_ADDRESS=127.0.0.1' /etc/rabbitmq/rabbitmq-env.conf 2>/dev/null ||
    echo 'NODE_IP_ADDRESS=127.0.0.1' >>/etc/rabbitmq/rabbitmq-env.conf
  # shellcheck disable=SC2086 # a list of plugin names
  rabbitmq-plugins set --offline $RMQ_PLUGINS >"$WORK/rabbitmq-plugins.log" 2>&1 ||
    die "rabbitmq-plugins set $RMQ_PLUGINS failed: $(tail -n 5 "$WORK/rabbitmq-plugins.log")"
  log "starting RabbitMQ"
  # The same file-descriptor limit for every broker (ActiveMQ and Plugboard inherit ours).
  # Debian's rabbitmq-server wrapper goes through `su`, whose PAM session resets it to 1024 (too
  # few for compare.sh's idle scenario with 1000 connections), so start the real script as the
  # rabbitmq user directly.
  ulimit -n "$(ulimit -Hn)"
  if ! (cd /var/lib/rabbitmq && HOME=/var/lib/rabbitmq ERL_EPMD_ADDRESS=127.0.0.1 timeout 60 \
    setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
    /usr/lib/rabbitmq/bin/rabbitmq-server -detached) >"$WORK/rabbitmq-start.log" 2>&1; then
    log "setpriv start failed ($(tail -n 1 "$WORK/rabbitmq-start.log")); using rabbitmq-server -detached"
    ERL_EPMD_ADDRESS=127.0.0.1 timeout 60 rabbitmq-server -detached >>"$WORK/rabbitmq-start.log" 2>&1 ||
      die "rabbitmq-server -detached failed: $(tail -n 5 "$WORK/rabbitmq-start.log")"
  fi
}

# ActiveMQ Classic: instance `main` with a stomp:// connector on 127.0.0.1:AMQ_PORT. Its
# persistence settings are left as packaged (KahaDB in /var/lib/activemq/main/data/kahadb).
start_activemq() {
  stop_activemq
  mkdir -p /etc/activemq/instances-enabled
  ln -sfn /etc/activemq/instances-available/main /etc/activemq/instances-enabled/main
  if ! grep -q "stomp://127.0.0.1:$AMQ_PORT" "$AMQ_CONF"; then
    sed -i "s|</transportConnectors>|    <transportConnector name=\"stomp\" uri=\"stomp://127.0.0.1:$AMQ_PORT\"/>\n        </transportConnectors>|" "$AMQ_CONF"
  fi
  grep -q "stomp://127.0.0.1:$AMQ_PORT" "$AMQ_CONF" || die "could not add the STOMP connector to $AMQ_CONF"
  log "starting ActiveMQ"
  timeout 120 /etc/init.d/activemq start >"$WORK/activemq-start.log" 2>&1 ||
    die "activemq start failed: $(tail -n 5 "$WORK/activemq-start.log")"
}

# The peers' versions as JSON object members (no braces).
peer_versions_json() {
  printf '"rabbitmq":"%s","erlang":"%s","activemq":"%s","java":"%s"' \
    "$(dpkg-query -W -f='${Version}' rabbitmq-server)" "$(dpkg-query -W -f='${Version}' erlang-base 2>/dev/null || echo '?')" \
    "$(dpkg-query -W -f='${Version}' activemq)" "$(java -version 2>&1 | awk 'NR == 1' | tr -d '"')"
}
