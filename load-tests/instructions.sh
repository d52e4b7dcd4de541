#!/usr/bin/env bash
# Instructions per request, counted by callgrind: a deterministic measure for changes smaller
# than the paired benchmarks' noise (about 1 %). One clawgate (release build) runs under
# valgrind in front of the nginx backend; a Python client sends WARMUP requests on one
# keep-alive connection, the counters are zeroed, REQUESTS more are sent, and the profile is
# dumped. Counts cover every thread of the process (writer and exporter included, which at
# valgrind's slow pace weigh more per request than at full speed).
#
#   bash load-tests/instructions.sh                        # OBSERVE=none
#   OBSERVE="metrics log tracing console" bash load-tests/instructions.sh
#
# Environment: OBSERVE (none, or any of metrics log tracing console), SAMPLER (0.1), REQUESTS (2000),
# WARMUP (300), KEEP_TMP, NO_BUILD. The profile is left in the temp dir with KEEP_TMP=1
# (`callgrind_annotate --inclusive=yes FILE` shows where the instructions go).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=load-tests/lib.sh
source "$ROOT/load-tests/lib.sh"
if ! command -v valgrind >/dev/null 2>&1; then
    log "installing valgrind"
    SUDO=
    [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y valgrind
fi
for t in valgrind callgrind_control callgrind_annotate python3; do
    command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
done
REQUESTS=${REQUESTS:-2000}
WARMUP=${WARMUP:-300}
DURATION=1 ROUNDS=1 CONNS=1
require_positive REQUESTS WARMUP
prepare_gateway_run

OBSERVE=${OBSERVE:-none}
monitoring=$(observe_yaml "$OBSERVE" "$TMP/access.log")
port=$(free_port)
cat >"$TMP/cg.yaml" <<EOT
gateway:
  listen: "127.0.0.1:$port"
  pid_file: "$TMP/cg.pid"
  upgrade_sock: "$TMP/cg.sock"
  threads: 1
routes:
  - path: "/*"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
$monitoring
EOT
"$CLAWGATE" check --config "$TMP/cg.yaml" >"$TMP/check.log" 2>&1 || die "check failed: $(cat "$TMP/check.log")"
valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out" \
    "$CLAWGATE" start --config "$TMP/cg.yaml" >"$TMP/cg.log" 2>&1 &
PIDS+=("$!")
READY_DEADLINE=60 wait_ready "clawgate under callgrind" "http://127.0.0.1:$port/" "$!" "$TMP/cg.log"
python3 - "$port" "$WARMUP" "$REQUESTS" <<'PY'
import http.client, subprocess, sys
port, warmup, requests = (int(a) for a in sys.argv[1:])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
def send(n):
    for _ in range(n):
        c.request("GET", "/x?y=1", headers={"User-Agent": "instructions"})
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
send(warmup)
subprocess.run(["callgrind_control", "-z"], check=True, stdout=subprocess.DEVNULL)
send(requests)
subprocess.run(["callgrind_control", "-d"], check=True, stdout=subprocess.DEVNULL)
PY
total=$(callgrind_annotate "$TMP/callgrind.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "===================================================================================="
echo "OBSERVE=$OBSERVE: $(awk -v t="$total" -v n="$REQUESTS" 'BEGIN {printf "%.0f", t / n}') instructions per request ($REQUESTS requests)"
echo "===================================================================================="
