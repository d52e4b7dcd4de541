#!/usr/bin/env bash
# What observability costs: the same route with metrics, the JSON access log and tracing off,
# and on (the article's custom metrics, tracing at sampler 0.1 exporting to the nginx backend,
# which answers the OTLP POSTs with 200). Two clawgate processes sharing one core; wrk and the
# nginx backend on the other.
#
# A pair of processes is not a fair sample: two identical gateways gave medians from 0.976 to
# 1.037 from one start to the next (the one started second was often slower). So both are
# restarted every EVERY_RESTART rounds (default 2), the start order alternating, and the median
# is over all rounds. OBSERVE=none compares two identical gateways: the harness's own noise.
#
#   bash load-tests/bench-observe.sh              # defaults: DURATION=8 ROUNDS=3 CONNS=32
#
# Environment: DURATION, ROUNDS, CONNS, PROXY_CPU, LOAD_CPU, KEEP_TMP, NO_BUILD as in bench.sh;
# OBSERVE (default "metrics log tracing"): which of the three the "on" gateway has ("none":
# nothing); SAMPLER (default 0.1): the tracing ratio; LOG_OUT=fifo: the access log goes to a FIFO
# that nobody reads (the writer blocks; requests must not); LOG_OUT=null: to /dev/null (lines
# formatted and written, without the file system's cost).
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
OBSERVE=${OBSERVE:-metrics log tracing}
EVERY_RESTART=${EVERY_RESTART:-2}
require_positive EVERY_RESTART
LOG_FILE=$TMP/access.log
case ${LOG_OUT:-file} in
    fifo) LOG_FILE=$TMP/access.fifo && mkfifo "$LOG_FILE" ;;
    null) LOG_FILE=/dev/null ;;
    file) ;;
    *) echo "LOG_OUT must be file, fifo or null" >&2 && exit 2 ;;
esac
on=$(observe_yaml "$OBSERVE" "$LOG_FILE")

# start_both FIRST SECOND: both gateways, in that order.
start_both() {
    local n
    for n in "$1" "$2"; do
        if [[ $n == on ]]; then start_claw on "$on"; else start_claw off ""; fi
    done
}
start_both off on
warm_up() {
    local n
    for n in off on; do
        WRK_SECONDS=2 wrk_for "$n" "$TMP/warmup-$n.txt" "$CONNS"
    done
}
log "warm-up"
warm_up
HALF=$((CONNS / 2))
declare -A RATIOS CPU P99
log "paired runs: two wrk -t1 -c$HALF at once, both gateways on core $PROXY_CPU, ${DURATION}s each"
restart_pair() { # FIRST
    stop_gateway on
    stop_gateway off
    if [[ $1 == on ]]; then start_both on off; else start_both off on; fi
    warm_up
}
paired_rounds
all=$ALL
sleep 1
lines=$( [[ -f $TMP/access.log ]] && grep -c '"type":"access"' "$TMP/access.log" || echo "none (${LOG_OUT:-file})")
echo "===================================================================================="
echo "On ($OBSERVE) vs off ($ROUNDS paired rounds, ${DURATION}s, -c$HALF each)"
echo "  throughput on/off, every round: $(echo "$all" | tr '\n' ' ')"
echo "  median: $(echo "$all" | tr '\n' ' ' | median)   (target >= 0.95)"
echo "  CPU us/request: off $(echo "${CPU[off]}" | median), on $(echo "${CPU[on]}" | median)"
echo "  p99 ms (paired runs): off $(echo "${P99[off]}" | median), on $(echo "${P99[on]}" | median)"
echo "  access-log lines written: $lines (warm-up included)"
echo "===================================================================================="
