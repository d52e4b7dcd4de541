#!/usr/bin/env bash
# What the response cache gives and costs: cache hits against the bare Pingora proxy (which
# always goes to the backend) and against clawgate's own proxied path, paired on one core; then
# the memory bound: distinct 10 KB answers worth 3 × caching.max_size, and the gateway's RSS.
#
#   bash load-tests/bench-cache.sh                # defaults: DURATION=8 ROUNDS=3 CONNS=32
#
# Environment: DURATION, ROUNDS, CONNS, PROXY_CPU, LOAD_CPU, KEEP_TMP, NO_BUILD as in bench.sh;
# MAX_SIZE_MB (default 64): the bounded gateway's caching.max_size; ENTRIES (default 3 × what
# fits): distinct answers requested.
set -euo pipefail

MAX_SIZE_MB=${MAX_SIZE_MB:-64}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=load-tests/lib.sh
source "$ROOT/load-tests/lib.sh"
require_positive MAX_SIZE_MB DURATION ROUNDS CONNS
if [[ ${NO_BUILD:-0} != 1 ]]; then
    log "cargo build --release --bin clawgate --example bare_pingora"
    timeout 1800 cargo build --release --bin clawgate --example bare_pingora >&2 || die "cargo build failed"
fi
NO_BUILD=1 prepare_gateway_run
BARE=$ROOT/target/release/examples/bare_pingora
[[ -x $BARE ]] || die "not found: $BARE"

# A second nginx backend answering the same 10 KB file at every path (distinct cache entries).
# Its workers run as another user: the file and the folders above it must be readable.
BLOB_PORT=$(free_port)
nginx_conf "$TMP/blob" "$BLOB_PORT" "        location = /ok { return 200 \"ok\\n\"; }
        location / { root $TMP/blob/www; try_files /blob =404; }"
mkdir -p "$TMP/blob/www"
head -c 10240 /dev/zero | tr '\0' 'x' >"$TMP/blob/www/blob"
chmod 755 "$TMP" "$TMP/blob" "$TMP/blob/www"
chmod 644 "$TMP/blob/www/blob"
taskset -c "$LOAD_CPU" nginx -p "$TMP/blob" -c "$TMP/blob/nginx.conf" -e "$TMP/blob/logs/error.log" \
    >"$TMP/blob/logs/stdout.log" 2>&1 &
PIDS+=("$!")
wait_ready "blob backend (nginx)" "http://127.0.0.1:$BLOB_PORT/ok" "$!" "$TMP/blob/logs/error.log"

declare -A URL PID CONF
BARE_PORT=$(free_port)
taskset -c "$PROXY_CPU" "$BARE" "127.0.0.1:$BARE_PORT" "127.0.0.1:$BACKEND_PORT" >"$TMP/bare.log" 2>&1 &
PID[bare]=$!
PIDS+=("$!")
URL[bare]="http://127.0.0.1:$BARE_PORT/"
wait_ready "bare pingora" "${URL[bare]}" "${PID[bare]}" "$TMP/bare.log"

route() { # CACHING_YAML
    printf 'routes:\n  - path: "/*"\n    backend_url: "http://127.0.0.1:%s"\n%s\n' "$BACKEND_PORT" "$1"
}
start_gateway cached / < <(route '    caching: {enabled: true, ttl: "1h", shared: true}')
URL[cached]+=/
start_gateway proxied / < <(route '')
URL[proxied]+=/
curl -fsS -D - -o /dev/null "${URL[cached]}" >/dev/null
[[ $(curl -fsS -D - -o /dev/null "${URL[cached]}" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache" {print $2}') == HIT ]] ||
    die "the caching gateway does not answer from its cache"

log "warm-up"
for n in bare cached proxied; do
    WRK_SECONDS=2 wrk_for "$n" "$TMP/warmup-$n.txt" "$CONNS"
done

HALF=$((CONNS / 2))
declare -A RATIOS CPU P99
log "paired runs: two wrk -t1 -c$HALF at once, both servers on core $PROXY_CPU, ${DURATION}s each"
for r in $(seq 1 "$ROUNDS"); do
    pair_run cached bare "$r"
    pair_run cached proxied "$r"
done
stop_gateway cached
stop_gateway proxied

# Memory: distinct entries worth 3 × max_size through a gateway bounded to max_size.
start_gateway bounded /ok <<EOF
caching: {max_size: "${MAX_SIZE_MB}MB"}
routes:
  - path: "/*"
    backend_url: "http://127.0.0.1:$BLOB_PORT"
    caching: {enabled: true, ttl: "1h", shared: true}
EOF
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/${PID[bounded]}/status"; }
rss0=$(rss_kb)
entries=${ENTRIES:-$((3 * MAX_SIZE_MB * 1024 / 10))}
cat >"$TMP/distinct.lua" <<EOF
local i = 0
request = function()
    i = i + 1
    return wrk.format("GET", "/blob/" .. (i % $entries))
end
EOF
fill_secs=$((entries / 2000 + 5))
log "filling: $entries distinct 10 KB answers (3 × ${MAX_SIZE_MB} MB) for ${fill_secs}s"
WRK_SECONDS=$fill_secs run_wrk "$TMP/fill.txt" 16 "${URL[bounded]}/" -s "$TMP/distinct.lua"
rss1=$(rss_kb)
hwm=$(vm_hwm_kb "${PID[bounded]}")
filled=$(wrk_requests "$TMP/fill.txt")

echo "===================================================================================="
echo "Cache hits (shared route, 3-byte answer) vs the bare Pingora proxy and clawgate's proxied path"
echo "  hits / bare pingora:      $(echo "${RATIOS[cached/bare]}" | median)   rounds: ${RATIOS[cached/bare]}  (target >= 1.5)"
echo "  hits / clawgate proxied:  $(echo "${RATIOS[cached/proxied]}" | median)   rounds: ${RATIOS[cached/proxied]}"
echo "  CPU us/request: hits $(echo "${CPU[cached]}" | median), bare $(echo "${CPU[bare]}" | median), proxied $(echo "${CPU[proxied]}" | median)"
echo "  p99 ms: hits $(echo "${P99[cached]}" | median), bare $(echo "${P99[bare]}" | median), proxied $(echo "${P99[proxied]}" | median)"
echo "Memory bound: max_size ${MAX_SIZE_MB} MB, $filled requests over $entries distinct 10 KB answers"
echo "  RSS before $((rss0 / 1024)) MB, after $((rss1 / 1024)) MB (peak $((hwm / 1024)) MB): growth $(((rss1 - rss0) / 1024)) MB for a ${MAX_SIZE_MB} MB bound"
# An entry of a 10 KB answer weighs 12 KiB (body, head, measured overhead; src/cache/memory.rs).
held=$((MAX_SIZE_MB * 1024 / 12))
echo "  per entry: about $(((rss1 - rss0) * 1024 / held)) bytes of RSS per 10 KB answer held (the bound holds about $held of them)"
echo "===================================================================================="
