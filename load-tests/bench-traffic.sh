#!/usr/bin/env bash
# What traffic management costs: weighted round robin over three addresses against a single
# address, and HTTP/2 without TLS (h2c, multiplexed) to the backend against HTTP/1.1, each pair of
# gateways loaded at the same time on one core (the other runs wrk and nginx).
#
#   bash load-tests/bench-traffic.sh              # defaults: DURATION=8 ROUNDS=3 CONNS=32
#
# Environment: DURATION, ROUNDS, CONNS, PROXY_CPU, LOAD_CPU, KEEP_TMP, NO_BUILD as in bench.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=load-tests/lib.sh
source "$ROOT/load-tests/lib.sh"
prepare_gateway_run

# One nginx answering "ok" on three more ports, one of them HTTP/2 only (h2c, prior knowledge).
P2=$(free_port)
P3=$(free_port)
PH=$(free_port)
P1=$(free_port)
nginx_conf "$TMP/pool" "$P1" "        listen 127.0.0.1:$P2 reuseport;
        listen 127.0.0.1:$P3 reuseport;
        listen 127.0.0.1:$PH http2;
        location / { return 200 \"ok\\n\"; }"
taskset -c "$LOAD_CPU" nginx -p "$TMP/pool" -c "$TMP/pool/nginx.conf" -e "$TMP/pool/logs/error.log" \
    >"$TMP/pool/logs/stdout.log" 2>&1 &
PIDS+=("$!")
wait_ready "pool backend (nginx)" "http://127.0.0.1:$P1/" "$!" "$TMP/pool/logs/error.log"

declare -A URL PID CONF
start_pair_member() { # NAME BACKENDS_AND_ROUTES_YAML
    start_gateway "$1" / <<<"$2"
    URL[$1]+=/
}
start_pair_member single "routes:
  - path: \"/*\"
    backend_url: \"http://127.0.0.1:$P1\""
# three_backend [EXTRA_LINES]: one backend of the three addresses weighted 5/3/2, and the route.
three_backend() {
    printf 'backends:\n  three:\n    urls:\n'
    printf '      - {url: "http://127.0.0.1:%s", weight: %s}\n' "$P1" 5 "$P2" 3 "$P3" 2
    [[ -z ${1:-} ]] || printf '%s\n' "$1"
    printf 'routes:\n  - path: "/*"\n    backend: three\n'
}
start_pair_member weighted "$(three_backend)"
# The same three addresses hashed by client address: wrk's one address always lands on one of
# them. Same selection work, one pool of upstream connections: what spreading costs apart.
start_pair_member hashed "$(three_backend '    load_balancing: hash
    hash_by: client_ip')"
start_pair_member h2c "backends:
  multiplexed:
    url: \"http://127.0.0.1:$PH\"
    protocol: h2c
    max_h2_streams: 100
routes:
  - path: \"/*\"
    backend: multiplexed"

HALF=$((CONNS / 2))
declare -A RATIOS CPU P99
for n in single weighted hashed h2c; do
    WRK_SECONDS=2 wrk_for "$n" "$TMP/warmup-$n.txt" "$CONNS"
done
log "paired runs: two wrk -t1 -c$HALF at once, both gateways on core $PROXY_CPU, ${DURATION}s each"
for r in $(seq 1 "$ROUNDS"); do
    if ((r % 2)); then pair_run weighted single "$r"; else pair_run single weighted "$r"; fi
    if ((r % 2)); then pair_run hashed single "$r"; else pair_run single hashed "$r"; fi
    if ((r % 2)); then pair_run h2c single "$r"; else pair_run single h2c "$r"; fi
done

# ratio NAME: NAME/single throughput over all rounds (pairs in either order).
ratio() {
    local all
    all="${RATIOS[$1/single]:-} $(for x in ${RATIOS[single/$1]:-}; do awk -v x="$x" 'BEGIN {printf "%.3f ", 1 / x}'; done)"
    printf '%s' "$all"
}
w=$(ratio weighted)
k=$(ratio hashed)
h=$(ratio h2c)
echo "===================================================================================="
echo "Traffic management ($ROUNDS paired rounds, ${DURATION}s, -c$HALF each)"
echo "  weighted round robin over 3 addresses / single address, every round: $w"
echo "  median: $(median <<<"$w")   (target >= 0.97)"
echo "  the same three addresses hashed by client address (one address, one connection pool): $k"
echo "  median: $(median <<<"$k")"
echo "  h2c upstream (max_h2_streams 100) / HTTP/1.1 upstream, every round: $h"
echo "  median: $(median <<<"$h")"
for n in single weighted hashed h2c; do
    echo "  $n: CPU us/request $(median <<<"${CPU[$n]}"), p99 ms $(median <<<"${P99[$n]}")"
done
echo "===================================================================================="
