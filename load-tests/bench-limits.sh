#!/usr/bin/env bash
# What rate limits cost: the same open route with no limit, with a local limit, and with the
# limit shared through Redis, exactly and in lease mode (a limit high enough never to refuse, so
# every request pays the check). Also the memory held by many distinct anonymous clients. One core for the gateways,
# the other for wrk, the nginx backend and redis-server.
#
#   bash load-tests/bench-limits.sh               # defaults: DURATION=8 ROUNDS=3 CONNS=32
#
# Environment: DURATION, ROUNDS, CONNS, PROXY_CPU, LOAD_CPU, KEEP_TMP, NO_BUILD as in bench.sh;
# CLIENTS_SECONDS (default 10): how long the distinct-clients run lasts.
set -euo pipefail

CLIENTS_SECONDS=${CLIENTS_SECONDS:-10}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=load-tests/lib.sh
source "$ROOT/load-tests/lib.sh"
require_positive CLIENTS_SECONDS
command -v redis-server >/dev/null 2>&1 || bash "$ROOT/scripts/setup.sh"
command -v redis-cli >/dev/null 2>&1 || die "missing tool: redis-cli"
prepare_gateway_run

REDIS_PORT=$(free_port)
taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    >"$TMP/redis.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do
    [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && break
    sleep 0.05
done
[[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] || die "redis-server did not start"

declare -A URL PID CONF
start_claw() { # NAME RATE_LIMITING_YAML [GATEWAY_LINES]
    start_gateway "$1" / "${3:-}" <<EOF
$2
routes:
  - path: "/*"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
EOF
    URL[$1]+=/
}
HIGH='"100000000/second"'
start_claw off ""
start_claw local "rate_limiting: {default: $HIGH}"
start_claw redis "rate_limiting: {default: $HIGH, store: \"redis://127.0.0.1:$REDIS_PORT\"}"
start_claw lease "rate_limiting: {default: $HIGH, store: \"redis://127.0.0.1:$REDIS_PORT\", sync: lease}"
start_claw clients "rate_limiting: {default: \"10/minute\"}" '  trusted_proxies: ["127.0.0.1/32"]'
curl -fsS -D - -o /dev/null "${URL[redis]}" | grep -qi '^x-ratelimit-limit' ||
    die "the redis gateway sent no rate-limit headers"

log "warm-up"
for n in off local redis lease; do
    WRK_SECONDS=2 run_wrk "$TMP/warmup-$n.txt" "$CONNS" "${URL[$n]}"
done

HALF=$((CONNS / 2))
declare -A RATIOS CPU P99

calls_before=$(redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,:]' '/^cmdstat_evalsha/ {print $3}')
log "paired runs: two wrk -t1 -c$HALF at once, both gateways on core $PROXY_CPU, ${DURATION}s each"
for r in $(seq 1 "$ROUNDS"); do
    pair_run local off "$r"
    pair_run redis off "$r"
done
calls_after=$(redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,:]' '/^cmdstat_evalsha/ {print $3}')
redis_requests=0
for f in "$TMP"/pair-redis-off-*-a.txt; do
    redis_requests=$((redis_requests + $(wrk_requests "$f")))
done

# Lease mode against the local limit it should cost no more than (slices taken from Redis).
lease_before=$(redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,:]' '/^cmdstat_evalsha/ {print $3}')
for r in $(seq 1 "$ROUNDS"); do
    pair_run lease local "$r"
done
lease_after=$(redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,:]' '/^cmdstat_evalsha/ {print $3}')
lease_requests=0
for f in "$TMP"/pair-lease-local-*-a.txt; do
    lease_requests=$((lease_requests + $(wrk_requests "$f")))
done

# Distinct anonymous clients: every request names a new address in X-Forwarded-For.
cat >"$TMP/clients.lua" <<'EOF'
local i = 0
request = function()
    i = i + 1
    local ip = string.format("10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
    return wrk.format("GET", "/", { ["X-Forwarded-For"] = ip })
end
EOF
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
rss0=$(rss_kb "${PID[clients]}")
WRK_SECONDS=$CLIENTS_SECONDS run_wrk "$TMP/clients-1.txt" 1 "${URL[clients]}" -s "$TMP/clients.lua"
n1=$(wrk_requests "$TMP/clients-1.txt")
rss1=$(rss_kb "${PID[clients]}")
WRK_SECONDS=$CLIENTS_SECONDS run_wrk "$TMP/clients-2.txt" 1 "${URL[clients]}" -s "$TMP/clients.lua"
n2=$(wrk_requests "$TMP/clients-2.txt")
rss2=$(rss_kb "${PID[clients]}")

echo "===================================================================================="
echo "Rate limits on an open route ($ROUNDS paired rounds, ${DURATION}s, -c$HALF each; never refusing)"
echo "  local limit / no limit, throughput:   median $(echo "${RATIOS[local/off]}" | median)   rounds ${RATIOS[local/off]}  (target >= 0.95)"
echo "  Redis limit / no limit, throughput:   median $(echo "${RATIOS[redis/off]}" | median)   rounds ${RATIOS[redis/off]}"
echo "  lease / local limit, throughput:      median $(echo "${RATIOS[lease/local]}" | median)   rounds ${RATIOS[lease/local]}  (target >= 0.95)"
echo "  p99 ms (paired runs): off $(echo "${P99[off]}" | median), local $(echo "${P99[local]}" | median), redis $(echo "${P99[redis]}" | median), lease $(echo "${P99[lease]}" | median)"
echo "  CPU us/request (gateway): off $(echo "${CPU[off]}" | median), local $(echo "${CPU[local]}" | median), redis $(echo "${CPU[redis]}" | median), lease $(echo "${CPU[lease]}" | median)"
echo "  Redis round trips per request: $(awk -v c=$((calls_after - calls_before)) -v n="$redis_requests" 'BEGIN {printf "%.3f", (n > 0 ? c / n : 0)}') ($((calls_after - calls_before)) EVALSHA for $redis_requests requests)"
echo "  Lease mode Redis round trips per request: $(awk -v c=$((lease_after - lease_before)) -v n="$lease_requests" 'BEGIN {printf "%.5f", (n > 0 ? c / n : 0)}') ($((lease_after - lease_before)) EVALSHA for $lease_requests requests)"
echo "Distinct anonymous clients (10/minute each, X-Forwarded-For from a trusted proxy)"
echo "  RSS before: $((rss0 / 1024)) MiB; after $n1 distinct clients: $((rss1 / 1024)) MiB; after $((n1 + n2)): $((rss2 / 1024)) MiB"
echo "===================================================================================="
