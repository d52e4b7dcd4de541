#!/usr/bin/env bash
# Several clawgate instances behind HAProxy on this machine, without containers: 3 gateways
# (daemons) sharing one redis-server for rate limits and the cache, the mock backend, and
# HAProxy in front with health checks. Everything on 127.0.0.1, on free ports.
#
#   bash deploy/local-cluster.sh up      # prints the front address; state in $CLUSTER_DIR
#   bash deploy/local-cluster.sh status
#   bash deploy/local-cluster.sh down
#
# CLUSTER_DIR (default /tmp/clawgate-cluster) holds the configurations, logs, pid files and
# env.sh (FRONT_URL, INSTANCE_CONFIGS, API_KEY, JWT, ...) for load-tests/run.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${CLUSTER_DIR:-/tmp/clawgate-cluster}
INSTANCES=${INSTANCES:-3}
CLAWGATE=${CLAWGATE:-$ROOT/target/release/clawgate}
BACKEND=${BACKEND:-$ROOT/target/release/mock-backend}

log() { printf '[cluster] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # URL WHAT
    local i
    for i in $(seq 1 100); do
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$2 did not answer at $1"
}

up() {
    [[ ! -f $DIR/env.sh ]] || die "a cluster is already up in $DIR (run: $0 down)"
    bash "$ROOT/scripts/setup.sh" haproxy
    if [[ ! -x $CLAWGATE || ! -x $BACKEND ]]; then
        log "cargo build --release --bin clawgate --bin mock-backend"
        (cd "$ROOT" && cargo build --release --bin clawgate -p mock-backend >&2)
    fi
    mkdir -p "$DIR"
    local redis_port backend_port front_port
    redis_port=$(free_port)
    backend_port=$(free_port)
    front_port=$(free_port)

    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize yes --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log"
    for _ in $(seq 1 50); do
        [[ $(redis-cli -p "$redis_port" ping 2>/dev/null) == PONG ]] && break
        sleep 0.1
    done
    setsid "$BACKEND" "127.0.0.1:$backend_port" >"$DIR/backend.log" 2>&1 &
    echo $! >"$DIR/backend.pid"
    wait_http "http://127.0.0.1:$backend_port/echo" "the mock backend"

    local secret="local-cluster-secret-0123456789abcdef" configs=() servers="" i port
    for i in $(seq 1 "$INSTANCES"); do
        port=$(free_port)
        cat >"$DIR/instance-$i.yaml" <<EOF
name: "clawgate-$i"
version: "1.0"
gateway:
  listen: "127.0.0.1:$port"
  base_path: "/api/v1"
  pid_file: "$DIR/instance-$i.pid"
  upgrade_sock: "$DIR/instance-$i.sock"
  error_log: "$DIR/instance-$i.log"
  threads: 1
  grace_period: "10s"
  trusted_proxies: ["127.0.0.1/32"]
auth:
  jwt: {secret: "$secret", expiry: "24h"}
agents:
  "finance-agent": {api_key: "cg-local-finance-key", rate_limit: "1000000/minute"}
  "data-agent": {rate_limit: "1000000/minute"}
  "probe-agent": {api_key: "cg-local-probe-key", rate_limit: "10/minute"}
rate_limiting:
  default: "1000000/minute"
  store: "redis://127.0.0.1:$redis_port"
caching:
  ttl: "30s"
  store: "redis://127.0.0.1:$redis_port"
routes:
  - {path: "/tools/*", name: "tools", backend_url: "http://127.0.0.1:$backend_port/echo", strip_prefix: "/tools", auth_required: true}
  - {path: "/cached/*", name: "cached", backend_url: "http://127.0.0.1:$backend_port/echo", strip_prefix: "/cached", auth_required: true, caching: {enabled: true, shared: true}}
  - {path: "/slow/*", name: "slow", backend_url: "http://127.0.0.1:$backend_port", strip_prefix: "/slow", auth_required: true}
monitoring:
  metrics: {enabled: true}
EOF
        "$CLAWGATE" start --daemon --config "$DIR/instance-$i.yaml" >&2
        configs+=("$DIR/instance-$i.yaml")
        servers+="    server g$i 127.0.0.1:$port check"$'\n'
    done

    cat >"$DIR/haproxy.cfg" <<EOF
global
    maxconn 8192
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    # A request that found a dead or draining instance goes to another one.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
frontend front
    bind 127.0.0.1:$front_port
    option forwardfor
    default_backend gateways
backend gateways
    balance roundrobin
    option httpchk GET /api/v1/health
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions
$servers
EOF
    haproxy -f "$DIR/haproxy.cfg" -D -p "$DIR/haproxy.pid" >"$DIR/haproxy.log" 2>&1 ||
        die "haproxy did not start: $(cat "$DIR/haproxy.log")"
    wait_http "http://127.0.0.1:$front_port/api/v1/health" "HAProxy"

    local jwt
    jwt=$("$CLAWGATE" token --config "$DIR/instance-1.yaml" --agent data-agent)
    cat >"$DIR/env.sh" <<EOF
FRONT_URL=http://127.0.0.1:$front_port
REDIS_PORT=$redis_port
BACKEND_URL=http://127.0.0.1:$backend_port
INSTANCE_CONFIGS="${configs[*]}"
API_KEY=cg-local-finance-key
PROBE_KEY=cg-local-probe-key
JWT=$jwt
EOF
    log "up: http://127.0.0.1:$front_port/api/v1/ -> ${#configs[@]} gateways, redis :$redis_port, backend :$backend_port (state in $DIR)"
    echo "http://127.0.0.1:$front_port"
}

down() {
    [[ -d $DIR ]] || return 0
    local f
    for f in "$DIR"/instance-*.yaml; do
        [[ -f $f ]] && "$CLAWGATE" stop --config "$f" >/dev/null 2>&1 || true
    done
    for f in haproxy backend redis; do
        [[ -f $DIR/$f.pid ]] && kill "$(cat "$DIR/$f.pid")" 2>/dev/null || true
    done
    rm -f "$DIR/env.sh" "$DIR"/*.pid
    log "down"
}

status() {
    [[ -f $DIR/env.sh ]] || {
        echo "no cluster in $DIR"
        return 3
    }
    # shellcheck disable=SC1091
    source "$DIR/env.sh"
    echo "front: $FRONT_URL"
    local f
    for f in $INSTANCE_CONFIGS; do
        "$CLAWGATE" status --config "$f" | sed -n 1,2p | tr '\n' ' '
        echo
    done
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 2
        ;;
esac
