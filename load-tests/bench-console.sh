#!/usr/bin/env bash
# What the admin console costs: the same route on two clawgate processes sharing one core, one
# with the admin listener on and a console open on it, one without. "A console open" is what a
# browser on the overview page asks for (GET /api/overview and /api/agents once a second), plus
# the live tail held open (every request's line streamed to it): more than one open page does.
# wrk, the console's client (curl) and the nginx backend run on the other core.
#
#   bash load-tests/bench-console.sh            # defaults: DURATION=8 ROUNDS=4 CONNS=32
#
# As in bench-observe.sh both gateways are restarted every 2 rounds, the start order
# alternating, and the paired ratio's median is over all rounds.
set -euo pipefail
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-4}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=load-tests/lib.sh
source "$ROOT/load-tests/lib.sh"
prepare_gateway_run

declare -A URL PID CONF
ADMIN_PORT=$(free_port)
start_claw() { # NAME [ADMIN]
    local admin=
    [[ -z ${2:-} ]] || admin="admin: {listen: \"127.0.0.1:$ADMIN_PORT\"}"
    start_gateway "$1" / <<EOF
$admin
routes:
  - path: "/*"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
EOF
    URL[$1]+=/
}

# The open console: polls once a second and holds the tail; stopped with the gateway.
CONSOLE_PIDS=()
open_console() {
    local base=http://127.0.0.1:$ADMIN_PORT
    if [[ ${TAIL:-1} == 1 ]]; then
        taskset -c "$LOAD_CPU" curl -s -N "$base/api/tail" >/dev/null 2>&1 &
        CONSOLE_PIDS+=("$!")
    fi
    (
        while sleep 1; do
            curl -s "$base/api/overview" "$base/api/agents" >/dev/null 2>&1 || true
        done
    ) &
    CONSOLE_PIDS+=("$!")
    PIDS+=("${CONSOLE_PIDS[@]}")
}
close_console() {
    local p
    for p in "${CONSOLE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    CONSOLE_PIDS=()
}

start_both() { # FIRST SECOND
    local n
    for n in "$1" "$2"; do
        if [[ $n == on ]]; then start_claw on admin; else start_claw off; fi
    done
    open_console
}
warm_up() {
    local n
    for n in off on; do
        WRK_SECONDS=2 wrk_for "$n" "$TMP/warmup-$n.txt" "$CONNS"
    done
}
start_both off on
log "warm-up"
warm_up
HALF=$((CONNS / 2))
declare -A RATIOS CPU P99
log "paired runs: two wrk -t1 -c$HALF at once, both gateways on core $PROXY_CPU, ${DURATION}s each"
restart_pair() { # FIRST
    close_console
    stop_gateway on
    stop_gateway off
    if [[ $1 == on ]]; then start_both on off; else start_both off on; fi
    warm_up
}
paired_rounds
all=$ALL
tail_lines=$(curl -s "http://127.0.0.1:$ADMIN_PORT/api/overview" | grep -o '"requests":[0-9]*' | head -1)
close_console
echo "===================================================================================="
echo "Admin listener on with a console open vs off ($ROUNDS paired rounds, ${DURATION}s, -c$HALF each)"
echo "  throughput on/off, every round: $(echo "$all" | tr '\n' ' ')"
echo "  median: $(echo "$all" | tr '\n' ' ' | median)"
echo "  CPU us/request: off $(echo "${CPU[off]}" | median), on $(echo "${CPU[on]}" | median)"
echo "  p99 ms (paired runs): off $(echo "${P99[off]}" | median), on $(echo "${P99[on]}" | median)"
echo "  the console's count since the last restart: $tail_lines"
echo "===================================================================================="
