#!/usr/bin/env bash
# What HTTP/JSON → gRPC transcoding costs (DESIGN §5.4): the same unary call
# (shop.Inventory/Restock of tests/grpc/inventory.proto) made three ways, taking turns round by
# round so the machine's noise falls on all alike:
#   direct  — a gRPC request straight to the tonic server (load-tests/grpc-backend);
#   native  — the gRPC request through clawgate's route (passed through untouched);
#   json    — a JSON POST to the same route, transcoded by clawgate into the gRPC call.
# All three over HTTP/2 cleartext from one client (h2load, with CONNS connections and one request
# in flight on each), so only what clawgate does differs. clawgate runs one worker on core
# PROXY_CPU; the server and h2load share LOAD_CPU.
#
#   bash load-tests/bench-grpc.sh   # defaults: DURATION=5 s per run, ROUNDS=3, CONNS=8
#
# Prints each run (requests/s, p50, p99 from h2load's per-request log), then the medians and
# the ratios json/native (throughput) and their p99s.
set -euo pipefail
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-8}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=load-tests/lib.sh
source "$ROOT/load-tests/lib.sh"
if ! command -v h2load >/dev/null 2>&1; then
    log "installing nghttp2-client (h2load)"
    SUDO=
    [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y nghttp2-client >&2
fi
command -v h2load >/dev/null || die "missing tool: h2load"
prepare_gateway_run # the nginx backend answers the gateway's readiness probe
declare -A URL PID CONF

if [[ ${NO_BUILD:-0} != 1 ]]; then
    log "cargo build --release -p grpc-backend"
    timeout 1800 cargo build --release -p grpc-backend >&2 || die "cargo build failed"
fi
GRPC_BIN=$ROOT/target/release/grpc-backend
[[ -x $GRPC_BIN ]] || die "binary not found: $GRPC_BIN"
taskset -c "$LOAD_CPU" "$GRPC_BIN" 127.0.0.1:0 >"$TMP/grpc.log" 2>&1 &
PIDS+=("$!")
deadline=$((SECONDS + READY_DEADLINE))
until grep -q '^ready ' "$TMP/grpc.log" 2>/dev/null; do
    ((SECONDS < deadline)) || die "grpc-backend not ready: $(cat "$TMP/grpc.log")"
    sleep 0.05
done
GRPC_PORT=$(awk '/^ready / {print $2; exit}' "$TMP/grpc.log")
log "grpc-backend ready on 127.0.0.1:$GRPC_PORT"

start_gateway grpc /ready "  h2c: true" < <(cat <<YAML
backends:
  inventory: {url: "http://127.0.0.1:$GRPC_PORT", protocol: h2c}
routes:
  - path: "/ready"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
  - path: "/shop.Inventory/*"
    backend: inventory
    grpc_transcode: {protos: ["$ROOT/tests/grpc/inventory.proto"]}
YAML
)

# RestockRequest{id: "r1", add: 41}: as JSON, and as one gRPC message (5-byte prefix, then
# field 1 "r1", field 2 varint 41).
printf '{"id":"r1","add":"41"}' >"$TMP/restock.json"
printf '\x00\x00\x00\x00\x06\x0a\x02r1\x10\x29' >"$TMP/restock.bin"

# Check each way once: an answer with count 42.
check_way() {
    local out=$TMP/check-$1.txt
    case $1 in
        json) curl -s --http2-prior-knowledge -H 'content-type: application/json' \
            --data-binary @"$TMP/restock.json" "${URL[grpc]}/shop.Inventory/Restock" >"$out" ;;
        *) return 0 ;;
    esac
    grep -q '"count":"42"' "$out" || die "the transcoded call did not answer: $(cat "$out")"
}
check_way json

# run WAY ROUND: one h2load run; prints "rps p50_ms p99_ms".
run() {
    local way=$1 round=$2 url body type logf=$TMP/$1-$2.log out=$TMP/$1-$2.txt
    case $way in
        direct) url=http://127.0.0.1:$GRPC_PORT/shop.Inventory/Restock body=restock.bin type=application/grpc ;;
        native) url=${URL[grpc]}/shop.Inventory/Restock body=restock.bin type=application/grpc ;;
        json) url=${URL[grpc]}/shop.Inventory/Restock body=restock.json type=application/json ;;
    esac
    taskset -c "$LOAD_CPU" timeout $((DURATION + 30)) h2load -c "$CONNS" -m 1 -t 1 \
        -D "$DURATION" --warm-up-time=1 -d "$TMP/$body" -H "content-type: $type" \
        -H 'te: trailers' --log-file="$logf" "$url" >"$out" 2>&1 || die "h2load failed: $(tail -5 "$out")"
    local bad
    bad=$(awk '$2 != 200 {n++} END {print n + 0}' "$logf")
    ((bad == 0)) || die "$way: $bad requests without a 200: $(tail -5 "$out")"
    local rps
    rps=$(awk '/^finished in/ {gsub(",", "", $4); printf "%.0f", $4; exit}' "$out")
    sort -n -k3 "$logf" | awk -v rps="$rps" '{v[NR] = $3} END {
        p50 = v[int(NR * 0.50) > 0 ? int(NR * 0.50) : 1]; p99 = v[int(NR * 0.99) > 0 ? int(NR * 0.99) : 1]
        printf "%s %.3f %.3f\n", rps, p50 / 1000, p99 / 1000 }'
}

declare -A RPS P50 P99
for round in $(seq 1 "$ROUNDS"); do
    for way in direct native json; do
        read -r rps p50 p99 < <(run "$way" "$round")
        RPS[$way]+="$rps " P50[$way]+="$p50 " P99[$way]+="$p99 "
        log "round $round $way: $rps req/s, p50 $p50 ms, p99 $p99 ms"
    done
done

printf '\n%-8s %12s %10s %10s\n' way "req/s" "p50 ms" "p99 ms"
for way in direct native json; do
    printf '%-8s %12s %10s %10s\n' "$way" "$(median <<<"${RPS[$way]}")" \
        "$(median <<<"${P50[$way]}")" "$(median <<<"${P99[$way]}")"
done
native=$(median <<<"${RPS[native]}") json=$(median <<<"${RPS[json]}")
awk -v n="$native" -v j="$json" 'BEGIN { printf "\njson/native throughput: %.3f\n", j / n }'
printf 'p99: native %s ms, json %s ms\n' "$(median <<<"${P99[native]}")" "$(median <<<"${P99[json]}")"
