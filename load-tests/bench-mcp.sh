#!/usr/bin/env bash
# What a `protocol: mcp` route adds to a tools/call. One clawgate worker pinned to core
# PROXY_CPU; the MCP server (the official Python SDK's, tests/mcp/server.py --json) and the
# client (mcp/latency.py: raw JSON-RPC over one keep-alive connection, one call at a time) on
# LOAD_CPU.
#
#   bash load-tests/bench-mcp.sh        # defaults: COUNT=500 calls per target and round, ROUNDS=3
#
# Three ways to the same server, taking turns call by call (so the machine's noise falls on all
# three alike): straight to it; through an MCP route (an agent with a tools grant: JSON-RPC
# read and checked, the call authorised); through a plain route (same API key, no MCP checks).
# Prints each round, then the medians over the rounds of p50/p90/p99 and what each way through
# clawgate adds to the direct call.
set -euo pipefail
COUNT=${COUNT:-500}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=load-tests/lib.sh
source "$ROOT/load-tests/lib.sh"
require_positive COUNT
command -v python3 >/dev/null || die "missing tool: python3"
TOOLS=${CLAWGATE_TOOLS:-$HOME/.cache/clawgate-tools}
MCP_PY=$TOOLS/bin/python
[[ -x $MCP_PY ]] && "$MCP_PY" -c 'import mcp' 2>/dev/null ||
    die "no MCP Python SDK in $TOOLS: run scripts/setup.sh"
prepare_gateway_run # the nginx backend only answers the gateway's readiness probe
declare -A URL PID CONF

# The MCP server, answering POSTs with JSON; ready once it prints "ready <port>". Run through
# mcp/nodelay.py: without TCP_NODELAY every answer waits ~40 ms for a delayed ACK (see there).
MCP_PORT=$(free_port)
taskset -c "$LOAD_CPU" "$MCP_PY" "$ROOT/load-tests/mcp/nodelay.py" "$ROOT/tests/mcp/server.py" \
    --port "$MCP_PORT" --json \
    >"$TMP/mcp-server.log" 2>&1 &
PIDS+=("$!")
mcp_pid=$!
deadline=$((SECONDS + READY_DEADLINE))
until grep -q "^ready $MCP_PORT" "$TMP/mcp-server.log" 2>/dev/null; do
    kill -0 "$mcp_pid" 2>/dev/null || die "MCP server exited: $(tail -n 20 "$TMP/mcp-server.log")"
    ((SECONDS < deadline)) || die "MCP server not ready after ${READY_DEADLINE}s"
    sleep 0.05
done
log "MCP server ready at http://127.0.0.1:$MCP_PORT/mcp (pid $mcp_pid)"

KEY=da_9876543210fedcba
start_gateway mcp /ready < <(cat <<YAML
agents:
  "data-agent": {api_key: "$KEY", tools: ["search_*", "list_*", "!delete_*"]}
routes:
  - path: "/ready"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
  - path: "/mcp"
    protocol: mcp
    auth_required: true
    mcp:
      servers:
        tools: {backend_url: "http://127.0.0.1:$MCP_PORT/mcp"}
  - path: "/plain"
    backend_url: "http://127.0.0.1:$MCP_PORT/mcp"
    strip_prefix: true
    auth_required: true
YAML
)
base=${URL[mcp]}
LAT="taskset -c $LOAD_CPU python3 $ROOT/load-tests/mcp/latency.py"
declare -A P50 P90 P99
log "tools/call search_web, $COUNT calls per target and round, one at a time, $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
    out=$($LAT "$COUNT" -H "x-api-key:$KEY" direct="http://127.0.0.1:$MCP_PORT/mcp" \
        mcp="$base/mcp" plain="$base/plain") || die "latency.py failed: $out"
    while read -r line; do
        log "[$r/$ROUNDS] $line"
        kind=${line%% *}
        read -r p50 p90 p99 < <(awk '{for (i = 1; i < NF; i++) if ($i ~ /^p(50|90|99)$/) printf "%s ", $(i + 1); print ""}' <<<"$line")
        P50[$kind]+="$p50 "
        P90[$kind]+="$p90 "
        P99[$kind]+="$p99 "
    done <<<"$out"
done
stop_gateway mcp

printf '\n%-30s %9s %9s %9s\n' "tools/call (ms, median of $ROUNDS)" p50 p90 p99
declare -A M
for kind in direct mcp plain; do
    for p in 50 90 99; do
        var="P$p[$kind]"
        M[$kind$p]=$(median <<<"${!var}")
    done
    printf '%-30s %9s %9s %9s\n' "$kind" "${M[${kind}50]}" "${M[${kind}90]}" "${M[${kind}99]}"
done
added() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.3f", a - b}'; }
for pair in "mcp direct" "plain direct" "mcp plain"; do
    read -r a b <<<"$pair"
    printf '%-30s %9s %9s %9s\n' "added: $a - $b" "$(added "${M[${a}50]}" "${M[${b}50]}")" \
        "$(added "${M[${a}90]}" "${M[${b}90]}")" "$(added "${M[${a}99]}" "${M[${b}99]}")"
done
