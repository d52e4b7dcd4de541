#!/usr/bin/env bash
# What authentication costs: the same clawgate route with and without a JWT check, and the JWT
# check with its token cache switched off (a full HS256 verification per request). Three clawgate
# processes from the same configuration, pinned to one core; an nginx backend on the other.
#
#   bash load-tests/bench-auth.sh                 # defaults: DURATION=8 ROUNDS=3 CONNS=32
#
# Environment: DURATION, ROUNDS, CONNS, PROXY_CPU, LOAD_CPU, KEEP_TMP, NO_BUILD as in bench.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=load-tests/lib.sh
source "$ROOT/load-tests/lib.sh"
prepare_gateway_run

# A random secret for this run only.
export BENCH_JWT_SECRET
BENCH_JWT_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n/+=')

declare -A URL PID CONF
start_claw() { # NAME TOKEN_CACHE PATH
    start_gateway "$1" /open/ <<EOF
auth:
  jwt: {secret: "\${BENCH_JWT_SECRET}", issuer: "bench", expiry: "1h", token_cache: $2}
routes:
  - path: "/open/*"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
  - path: "/jwt/*"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
    auth_required: true
    auth_strategy: jwt
EOF
    URL[$1]+=$3
}
start_claw open 10000 /open/
start_claw jwt 10000 /jwt/
start_claw nocache 0 /jwt/
TOKEN=$("$CLAWGATE" token --config "${CONF[jwt]}" --agent bench-agent --ttl 1h)
AUTH=(-H "Authorization: Bearer $TOKEN")
code=$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "${URL[jwt]}")
[[ $code == 200 ]] || die "the JWT route answered $code with the minted token"
code=$(curl -s -o /dev/null -w '%{http_code}' "${URL[jwt]}")
[[ $code == 401 ]] || die "the JWT route answered $code without a token"

wrk_for() { # NAME OUT CONNS
    local extra=()
    [[ $1 == open ]] || extra=("${AUTH[@]}")
    run_wrk "$2" "$3" "${URL[$1]}" "${extra[@]}"
}

log "warm-up"
for n in open jwt nocache; do
    WRK_SECONDS=2 wrk_for "$n" "$TMP/warmup-$n.txt" "$CONNS"
done

HALF=$((CONNS / 2))
declare -A RATIOS CPU P99

log "paired runs: two wrk -t1 -c$HALF at once, both gateways on core $PROXY_CPU, ${DURATION}s each"
for r in $(seq 1 "$ROUNDS"); do
    # Alternate which side starts first.
    if ((r % 2)); then pair_run jwt open "$r"; else pair_run open jwt "$r"; fi
    pair_run nocache jwt "$r"
done

cpu_open=$(echo "${CPU[open]}" | median)
cpu_jwt=$(echo "${CPU[jwt]}" | median)
cpu_nocache=$(echo "${CPU[nocache]}" | median)
all_ratios=$(
    for x in ${RATIOS[jwt/open]:-}; do echo "$x"; done
    for x in ${RATIOS[open/jwt]:-}; do awk -v x="$x" 'BEGIN {printf "%.3f\n", (x > 0 ? 1 / x : 0)}'; done
)
echo "===================================================================================="
echo "clawgate JWT route vs the same route without auth ($ROUNDS paired rounds, ${DURATION}s, -c$HALF each)"
echo "  throughput ratio JWT/open, every round:  $(echo "$all_ratios" | tr '\n' ' ')"
echo "  median:                                  $(echo "$all_ratios" | tr '\n' ' ' | median)   (target >= 0.90)"
echo "  CPU per request: open $cpu_open us, JWT (cache on) $cpu_jwt us, JWT (cache off) $cpu_nocache us"
echo "  HS256 verification without the cache:    $(awk -v a="$cpu_nocache" -v b="$cpu_jwt" 'BEGIN {printf "%.2f", a - b}') us per request"
echo "  paired throughput ratio nocache/jwt:     $(echo "${RATIOS[nocache/jwt]}" | median)"
echo "===================================================================================="
