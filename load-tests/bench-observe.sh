#!/usr/bin/env bash
# What observability costs: the same route with metrics, the JSON access log and tracing off,
# and on (the article's custom metrics, tracing at sampler 0.1 exporting to the nginx backend,
# which answers the OTLP POSTs with 200). Two clawgate processes sharing one core; wrk and the
# nginx backend on the other.
#
#   bash load-tests/bench-observe.sh              # defaults: DURATION=8 ROUNDS=3 CONNS=32
#
# Environment: DURATION, ROUNDS, CONNS, PROXY_CPU, LOAD_CPU, KEEP_TMP, NO_BUILD as in bench.sh;
# OBSERVE (default "metrics log tracing"): which of the three the "on" gateway has.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=load-tests/lib.sh
source "$ROOT/load-tests/lib.sh"
prepare_gateway_run

declare -A URL PID CONF
start_claw() { # NAME MONITORING_YAML
    start_gateway "$1" / <<EOF
routes:
  - path: "/*"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
$2
EOF
    URL[$1]+=/
}
start_claw off ""
OBSERVE=${OBSERVE:-metrics log tracing}
on="monitoring:"
[[ $OBSERVE != *metrics* ]] || on+="
  metrics:
    enabled: true
    custom_metrics:
      - {name: agent_token_usage, type: counter, labels: [agent_id, model]}
      - {name: request_latency, type: histogram, labels: [route, method]}"
[[ $OBSERVE != *log* ]] || on+="
  logging: {format: json, output: \"$TMP/access.log\"}"
[[ $OBSERVE != *tracing* ]] || on+="
  tracing: {enabled: true, sampler: \"${SAMPLER:-0.1}\", endpoint: \"http://127.0.0.1:$BACKEND_PORT\"}"
start_claw on "$on"

log "warm-up"
for n in off on; do
    WRK_SECONDS=2 wrk_for "$n" "$TMP/warmup-$n.txt" "$CONNS"
done
HALF=$((CONNS / 2))
declare -A RATIOS CPU P99
log "paired runs: two wrk -t1 -c$HALF at once, both gateways on core $PROXY_CPU, ${DURATION}s each"
for r in $(seq 1 "$ROUNDS"); do
    if ((r % 2)); then pair_run on off "$r"; else pair_run off on "$r"; fi
done
all=$(
    for x in ${RATIOS[on/off]:-}; do echo "$x"; done
    for x in ${RATIOS[off/on]:-}; do awk -v x="$x" 'BEGIN {printf "%.3f\n", (x > 0 ? 1 / x : 0)}'; done
)
sleep 1
lines=$(grep -c '"type":"access"' "$TMP/access.log" 2>/dev/null || true)
echo "===================================================================================="
echo "On ($OBSERVE) vs off ($ROUNDS paired rounds, ${DURATION}s, -c$HALF each)"
echo "  throughput on/off, every round: $(echo "$all" | tr '\n' ' ')"
echo "  median: $(echo "$all" | tr '\n' ' ' | median)   (target >= 0.95)"
echo "  CPU us/request: off $(echo "${CPU[off]}" | median), on $(echo "${CPU[on]}" | median)"
echo "  p99 ms (paired runs): off $(echo "${P99[off]}" | median), on $(echo "${P99[on]}" | median)"
echo "  access-log lines written: $lines (warm-up included)"
echo "===================================================================================="
