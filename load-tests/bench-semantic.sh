#!/usr/bin/env bash
# What the semantic cache adds to a request, and what an entry costs in memory. One clawgate
# worker and its embedding thread pinned to core PROXY_CPU (the model's own threads too), the
# nginx backend and the client on LOAD_CPU; requests one at a time on a keep-alive connection.
#
#   bash load-tests/bench-semantic.sh        # defaults: COUNT=400 ENTRIES=3000
#
# Prints p50/p90/p99 of: a route without cache; an exact hit of the response cache
# (strategy exact); an exact repeat, a semantic hit and a semantic miss on a semantic route; then
# the memory the index holds per entry once ENTRIES distinct questions were stored.
set -euo pipefail
COUNT=${COUNT:-400}
ENTRIES=${ENTRIES:-3000}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=load-tests/lib.sh
source "$ROOT/load-tests/lib.sh"
require_positive COUNT ENTRIES
command -v python3 >/dev/null || die "missing tool: python3"
MODEL=${CLAWGATE_MODEL_DIR:-$ROOT/models/all-MiniLM-L6-v2}
[[ -f $MODEL/model.safetensors ]] || die "no model in $MODEL: run scripts/fetch-model.sh"
export CLAWGATE_MODEL_DIR=$MODEL
prepare_gateway_run
declare -A URL PID CONF
LAT="taskset -c $LOAD_CPU python3 $ROOT/load-tests/semantic/latency.py"

start_gateway semantic /plain/ < <(cat <<YAML
caching: {ttl: "1h", max_size: "256MB"}
routes:
  - path: "/plain/*"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
  - path: "/exact/*"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
    caching: {enabled: true, strategy: exact}
  - path: "/semantic/*"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
    caching: {enabled: true, strategy: semantic}
YAML
)
base=${URL[semantic]}
log "latency, $COUNT requests each, one at a time"
$LAT "$base/plain/v1/chat" proxied "$COUNT"
$LAT "$base/exact/v1/chat" exact "$COUNT"
$LAT "$base/semantic/v1/chat" exact "$COUNT"
$LAT "$base/semantic/v1/chat" paraphrase "$COUNT"
$LAT "$base/semantic/v1/chat" miss "$COUNT"
stop_gateway semantic

start_gateway memory / < <(cat <<YAML
caching: {ttl: "1h", strategy: semantic}
monitoring: {metrics: {enabled: true}}
routes:
  - path: "/*"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
    caching: {enabled: true}
YAML
)
log "storing $ENTRIES distinct questions"
$LAT "${URL[memory]}/v1/chat" miss "$ENTRIES"
gauge() { curl -fsS "${URL[memory]}/metrics" | awk -v m="openclaw_gateway_$1" '$1 ~ "^" m "[{]" {print $2}'; }
entries=$(gauge cache_semantic_entries)
bytes=$(gauge cache_semantic_bytes)
# The process's RSS says little here: the model's working buffers are freed and taken again
# around each embedding, moving RSS by more than thousands of entries hold.
awk -v e="$entries" -v by="$bytes" 'BEGIN {
    printf "index: %d entries, %d bytes: %.0f bytes per entry (vector 384 + question + the backend'"'"'s 3-byte answer and its headers)\n", e, by, by / e }'
stop_gateway memory
