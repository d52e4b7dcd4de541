#!/usr/bin/env bash
# clawgate overhead benchmark: clawgate vs a bare Pingora proxy vs an nginx reverse proxy, all in
# front of the same tiny nginx backend, on loopback, each proxy pinned to CPU core 0 with one
# worker thread. See load-tests/README.md for what is measured and how to read the output.
#
#   bash load-tests/bench.sh                      # defaults: DURATION=8 ROUNDS=3 CONNS=32
#   DURATION=5 ROUNDS=5 bash load-tests/bench.sh
#
# Environment:
#   DURATION   seconds per wrk run (default 8)
#   ROUNDS     paired rounds per comparison (default 3)
#   CONNS      connections for peak runs; a paired run gives each proxy half (default 32)
#   PROXY_CPU  core the proxies are pinned to (default 0)
#   LOAD_CPU   core for wrk and the backend (default 1)
#   KEEP_TMP=1 keep the temp dir (configs, logs, raw wrk output)
#   NO_BUILD=1 skip `cargo build`
#   PERF=1     also profile bare pingora and clawgate with `perf record` (PERF_SECONDS=5 each)
set -euo pipefail

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
WARMUP=2
READY_DEADLINE=20 # seconds to wait for a server to answer

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=load-tests/lib.sh
source "$ROOT/load-tests/lib.sh"

for v in DURATION ROUNDS CONNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
((CONNS >= 2)) || die "CONNS must be at least 2"

# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------
if [[ ${NO_BUILD:-0} != 1 ]]; then
    log "cargo build --release --bin clawgate --example bare_pingora"
    timeout 1800 cargo build --release --bin clawgate --example bare_pingora >&2 ||
        die "cargo build failed"
fi
CLAWGATE=$ROOT/target/release/clawgate
BARE=$ROOT/target/release/examples/bare_pingora
[[ -x $CLAWGATE && -x $BARE ]] || die "binaries not found under target/release"

enter_tmp

# ---------------------------------------------------------------------------------------------
# Start the servers
# ---------------------------------------------------------------------------------------------
BACKEND_PORT=$(free_port)
NGINX_PORT=$(free_port)
BARE_PORT=$(free_port)
CLAW_PORT=$(free_port)

nginx_conf "$TMP/backend" "$BACKEND_PORT" '        location / { return 200 "ok\n"; }'
taskset -c "$LOAD_CPU" nginx -p "$TMP/backend" -c "$TMP/backend/nginx.conf" -e "$TMP/backend/logs/error.log" \
    >"$TMP/backend/logs/stdout.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
wait_ready "backend (nginx)" "http://127.0.0.1:$BACKEND_PORT/" "$BACKEND_PID" "$TMP/backend/logs/error.log"

nginx_conf "$TMP/nginx-proxy" "$NGINX_PORT" '        location / {
            proxy_pass http://bench_backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }' "    upstream bench_backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }"
taskset -c "$PROXY_CPU" nginx -p "$TMP/nginx-proxy" -c "$TMP/nginx-proxy/nginx.conf" \
    -e "$TMP/nginx-proxy/logs/error.log" >"$TMP/nginx-proxy/logs/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_ready "nginx proxy" "http://127.0.0.1:$NGINX_PORT/" "$NGINX_PID" "$TMP/nginx-proxy/logs/error.log"

taskset -c "$PROXY_CPU" "$BARE" "127.0.0.1:$BARE_PORT" "127.0.0.1:$BACKEND_PORT" \
    >"$TMP/bare.log" 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID")
wait_ready "bare pingora" "http://127.0.0.1:$BARE_PORT/" "$BARE_PID" "$TMP/bare.log"

CLAW_CONF=$TMP/clawgate.yaml
cat >"$CLAW_CONF" <<EOF
name: "clawgate-bench"
version: "1.0"
gateway:
  listen: "127.0.0.1:$CLAW_PORT"
  pid_file: "$TMP/clawgate.pid"
  upgrade_sock: "$TMP/clawgate-upgrade.sock"
  threads: 1
routes:
  - path: "/*"
    backend_url: "http://127.0.0.1:$BACKEND_PORT"
EOF
if ! "$CLAWGATE" check --config "$CLAW_CONF" >"$TMP/clawgate-check.log" 2>&1; then
    log "clawgate check --config refused the generated config:"
    cat "$TMP/clawgate-check.log" >&2
    log "config was:"
    cat "$CLAW_CONF" >&2
    die "clawgate check failed"
fi
log "clawgate check: $(tr '\n' ' ' <"$TMP/clawgate-check.log")"
taskset -c "$PROXY_CPU" "$CLAWGATE" start --config "$CLAW_CONF" >"$TMP/clawgate.log" 2>&1 &
CLAW_PID=$!
PIDS+=("$CLAW_PID")
wait_ready "clawgate" "http://127.0.0.1:$CLAW_PORT/" "$CLAW_PID" "$TMP/clawgate.log"

declare -A URL=(
    [backend]="http://127.0.0.1:$BACKEND_PORT/"
    [nginx]="http://127.0.0.1:$NGINX_PORT/"
    [bare]="http://127.0.0.1:$BARE_PORT/"
    [clawgate]="http://127.0.0.1:$CLAW_PORT/"
)
declare -A PID=([backend]=$BACKEND_PID [nginx]=$NGINX_PID [bare]=$BARE_PID [clawgate]=$CLAW_PID)
declare -A LABEL=([backend]="backend direct (nginx)" [nginx]="nginx proxy" [bare]="bare pingora" [clawgate]="clawgate")
PROXIES=(nginx bare clawgate)

log "backend :$BACKEND_PORT  nginx-proxy :$NGINX_PORT  bare-pingora :$BARE_PORT  clawgate :$CLAW_PORT"
log "proxies on core $PROXY_CPU, wrk + backend on core $LOAD_CPU; DURATION=${DURATION}s ROUNDS=$ROUNDS CONNS=$CONNS"
est=$((WARMUP * 4 + DURATION * (1 + 3 + 2 * ROUNDS + 6) + 8 * ROUNDS * (DURATION / 4 < 2 ? 2 : DURATION / 4)))
log "measuring for about ${est}s"

# Warm-up: fill the connection pools, fault in the code.
for p in "${PROXIES[@]}"; do
    timeout $((WARMUP + 20)) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${URL[$p]}" \
        >"$TMP/warmup-$p.txt" 2>&1 || die "warm-up against $p failed: $(cat "$TMP/warmup-$p.txt")"
done

# ---------------------------------------------------------------------------------------------
# (a) backend direct and (c) solo peak runs with CPU per request
# ---------------------------------------------------------------------------------------------
declare -A PEAK_RPS PEAK_P50 PEAK_P99 SOLO_CPU_US SOLO_UTIL PAIR_CPU_US
declare -A LAT_RPS LAT_P50 LAT_P99 C1_RPS C1_P50 C1_P99 HWM

solo() { # NAME
    local n=$1 out=$TMP/solo-$1.txt c0 c1 t0 t1 w0 w1 reqs
    c0=$(core_ticks "$PROXY_CPU")
    c1=$(core_ticks "$LOAD_CPU")
    t0=$(cpu_ticks_of "${PID[$n]}")
    w0=$(date +%s%N)
    run_wrk "$out" "$CONNS" "${URL[$n]}"
    w1=$(date +%s%N)
    t1=$(cpu_ticks_of "${PID[$n]}")
    reqs=$(wrk_requests "$out")
    PEAK_RPS[$n]=$(wrk_rps "$out")
    PEAK_P50[$n]=$(wrk_pct_ms "$out" 50%)
    PEAK_P99[$n]=$(wrk_pct_ms "$out" 99%)
    SOLO_CPU_US[$n]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v r="$reqs" 'BEGIN {printf "%.2f", (r > 0 ? d / hz * 1e6 / r : 0)}')
    SOLO_UTIL[$n]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v w=$((w1 - w0)) 'BEGIN {printf "%.0f", 100 * d / hz / (w / 1e9)}')
    log "$(printf '%-24s %8s req/s  p50 %7sms  p99 %7sms  server CPU %6s us/req (%s%% of a core)  idle: core%s %s%%, core%s %s%%' \
        "${LABEL[$n]}" "${PEAK_RPS[$n]}" "${PEAK_P50[$n]}" "${PEAK_P99[$n]}" "${SOLO_CPU_US[$n]}" "${SOLO_UTIL[$n]}" \
        "$PROXY_CPU" "$(idle_pct "$c0" "$(core_ticks "$PROXY_CPU")")" "$LOAD_CPU" "$(idle_pct "$c1" "$(core_ticks "$LOAD_CPU")")")"
}

log "(a) backend direct, (c) each proxy alone: wrk -t1 -c$CONNS -d${DURATION}s"
for n in backend "${PROXIES[@]}"; do
    solo "$n"
done

# ---------------------------------------------------------------------------------------------
# (b) paired runs: two proxies loaded at the same time, sharing core PROXY_CPU
# ---------------------------------------------------------------------------------------------
HALF=$((CONNS / 2))
declare -A RATIOS CPU_SAMPLES
pair() { # A B ROUND
    local a=$1 b=$2 r=$3 oa=$TMP/pair-$1-$2-$3-a.txt ob=$TMP/pair-$1-$2-$3-b.txt
    local ta0 tb0 ta1 tb1 ra rb pa pb c0 c1
    c0=$(core_ticks "$PROXY_CPU")
    c1=$(core_ticks "$LOAD_CPU")
    ta0=$(cpu_ticks_of "${PID[$a]}")
    tb0=$(cpu_ticks_of "${PID[$b]}")
    run_wrk "$oa" "$HALF" "${URL[$a]}" &
    pa=$!
    run_wrk "$ob" "$HALF" "${URL[$b]}" &
    pb=$!
    wait "$pa" || die "paired wrk against $a failed"
    wait "$pb" || die "paired wrk against $b failed"
    ta1=$(cpu_ticks_of "${PID[$a]}")
    tb1=$(cpu_ticks_of "${PID[$b]}")
    ra=$(wrk_rps "$oa")
    rb=$(wrk_rps "$ob")
    local ratio cua cub
    ratio=$(awk -v a="$ra" -v b="$rb" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')
    cua=$(awk -v d=$((ta1 - ta0)) -v hz="$CLK_TCK" -v n="$(wrk_requests "$oa")" 'BEGIN {printf "%.2f", (n > 0 ? d / hz * 1e6 / n : 0)}')
    cub=$(awk -v d=$((tb1 - tb0)) -v hz="$CLK_TCK" -v n="$(wrk_requests "$ob")" 'BEGIN {printf "%.2f", (n > 0 ? d / hz * 1e6 / n : 0)}')
    RATIOS[$a/$b]+="$ratio "
    CPU_SAMPLES[$a]+="$cua "
    CPU_SAMPLES[$b]+="$cub "
    log "$(printf '[pair %s/%s] %-8s %7s req/s (%s us/req)  %-6s %7s req/s (%s us/req)  ratio %s  idle: core%s %s%%, core%s %s%%' \
        "$r" "$ROUNDS" "$a" "$ra" "$cua" "$b" "$rb" "$cub" "$ratio" \
        "$PROXY_CPU" "$(idle_pct "$c0" "$(core_ticks "$PROXY_CPU")")" "$LOAD_CPU" "$(idle_pct "$c1" "$(core_ticks "$LOAD_CPU")")")"
}

log "(b) paired runs: two wrk -t1 -c$HALF at the same time, both proxies on core $PROXY_CPU"
for r in $(seq 1 "$ROUNDS"); do
    pair clawgate bare "$r"
    pair clawgate nginx "$r"
done
for n in "${PROXIES[@]}"; do
    PAIR_CPU_US[$n]=$(echo "${CPU_SAMPLES[$n]:-}" | median)
done

# (b2) interleaved solo runs. Sharing a core adds context switches and cache misses to both
# proxies of a pair, which pulls the paired ratio towards 1. Short solo runs in the order
# A B B A cancel drift that is linear over a round and keep each proxy alone on its core.
SHORT=$((DURATION / 4 < 2 ? 2 : DURATION / 4))
declare -A ABBA ABBA_CPU
abba() { # A B ROUND
    local a=$1 b=$2 r=$3 k n t0 t1 ra=0 rb=0 ca=0 cb=0 na=0 nb=0 out
    for k in 1 2 3 4; do
        if ((k == 1 || k == 4)); then n=$a; else n=$b; fi
        out=$TMP/abba-$a-$b-$r-$k.txt
        t0=$(cpu_ticks_of "${PID[$n]}")
        WRK_SECONDS=$SHORT run_wrk "$out" "$CONNS" "${URL[$n]}"
        t1=$(cpu_ticks_of "${PID[$n]}")
        if [[ $n == "$a" ]]; then
            ra=$((ra + $(wrk_requests "$out"))); ca=$((ca + t1 - t0))
        else
            rb=$((rb + $(wrk_requests "$out"))); cb=$((cb + t1 - t0))
        fi
    done
    local ratio cpur
    ratio=$(awk -v a="$ra" -v b="$rb" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')
    cpur=$(awk -v a="$ca" -v b="$cb" -v na="$ra" -v nb="$rb" 'BEGIN {printf "%.3f", (b > 0 && na > 0 ? (a / na) / (b / nb) : 0)}')
    ABBA[$a/$b]+="$ratio "
    ABBA_CPU[$a/$b]+="$cpur "
    log "$(printf '[abba %s/%s] %-8s vs %-6s requests ratio %s, CPU/request ratio %s' "$r" "$ROUNDS" "$a" "$b" "$ratio" "$cpur")"
}
log "(b2) interleaved solo runs: ${SHORT}s each, order A B B A, wrk -c$CONNS"
for r in $(seq 1 "$ROUNDS"); do
    abba clawgate bare "$r"
    abba clawgate nginx "$r"
done

# ---------------------------------------------------------------------------------------------
# (d) latency at about half of bare Pingora's peak rate, and with a single connection
# ---------------------------------------------------------------------------------------------
TARGET=$(awk -v p="${PEAK_RPS[bare]}" 'BEGIN {printf "%.0f", p / 2}')
((TARGET > 0)) || die "bare pingora peak rate is zero"
if [[ -n $WRK2 ]]; then
    LAT_METHOD="wrk2 -c$CONNS -R$TARGET (open loop, corrected for coordinated omission)"
    lat_run() { # NAME
        local out=$TMP/lat-$1.txt
        timeout $((DURATION + 30)) taskset -c "$LOAD_CPU" "$WRK2" -t1 -c"$CONNS" -d"${DURATION}s" \
            -R"$TARGET" --latency "${URL[$1]}" >"$out" 2>&1 || die "wrk2 failed: $(cat "$out")"
    }
else
    # wrk has no rate option. Its Lua delay() hook pauses each connection before each request
    # (wrk starts the latency clock after the pause), so N connections pausing DELAY_MS each
    # offer roughly N / (DELAY_MS + round trip) req/s. wrk's timers have 1 ms resolution, so the
    # paced requests leave in small bursts (about TARGET/1000 per millisecond tick) and the
    # percentiles include that burst queueing: compare the proxies with each other, not with
    # an open-loop tool. N is calibrated in a short run against bare pingora, then used for all.
    DELAY_MS=${LAT_DELAY_MS:-1}
    printf 'function delay()\n    return %d\nend\n' "$DELAY_MS" >"$TMP/pace.lua"
    guess=$(awk -v t="$TARGET" -v d="$DELAY_MS" 'BEGIN {c = int(t * (d + 0.7) / 1000 + 0.5); print (c < 1 ? 1 : c)}')
    timeout $((WARMUP + 20)) taskset -c "$LOAD_CPU" wrk -t1 -c"$guess" -d"${WARMUP}s" -s "$TMP/pace.lua" \
        "${URL[bare]}" >"$TMP/lat-calibration.txt" 2>&1 || die "calibration failed: $(cat "$TMP/lat-calibration.txt")"
    LAT_CONNS=$(awk -v g="$guess" -v t="$TARGET" -v a="$(wrk_rps "$TMP/lat-calibration.txt")" \
        'BEGIN {c = (a > 0 ? int(g * t / a + 0.5) : g); print (c < 1 ? 1 : c)}')
    LAT_METHOD="wrk -c$LAT_CONNS, Lua delay() ${DELAY_MS}ms before each request (wrk2 is not packaged in Debian)"
    lat_run() { # NAME
        run_wrk "$TMP/lat-$1.txt" "$LAT_CONNS" "${URL[$1]}" -s "$TMP/pace.lua"
    }
fi
log "(d) latency at ~$TARGET req/s (half of bare pingora's peak): $LAT_METHOD; then wrk -c1"
for n in bare clawgate nginx; do
    lat_run "$n"
    LAT_RPS[$n]=$(wrk_rps "$TMP/lat-$n.txt")
    LAT_P50[$n]=$(wrk_pct_ms "$TMP/lat-$n.txt" 50%)
    LAT_P99[$n]=$(wrk_pct_ms "$TMP/lat-$n.txt" 99%)
    log "$(printf '%-24s paced  %8s req/s  p50 %7sms  p99 %7sms' "${LABEL[$n]}" "${LAT_RPS[$n]}" "${LAT_P50[$n]}" "${LAT_P99[$n]}")"
done
# One connection, no pause: the latency a request sees with no queueing at all.
for n in bare clawgate nginx; do
    run_wrk "$TMP/c1-$n.txt" 1 "${URL[$n]}"
    C1_RPS[$n]=$(wrk_rps "$TMP/c1-$n.txt")
    C1_P50[$n]=$(wrk_pct_ms "$TMP/c1-$n.txt" 50%)
    C1_P99[$n]=$(wrk_pct_ms "$TMP/c1-$n.txt" 99%)
    log "$(printf '%-24s -c1    %8s req/s  p50 %7sms  p99 %7sms' "${LABEL[$n]}" "${C1_RPS[$n]}" "${C1_P50[$n]}" "${C1_P99[$n]}")"
done

# ---------------------------------------------------------------------------------------------
# (f) optional: where the CPU goes (PERF=1): a sampled profile of bare pingora and clawgate under
# the same peak load, self time per symbol converted to microseconds per request.
# ---------------------------------------------------------------------------------------------
declare -A PERF_US
if [[ ${PERF:-0} == 1 ]]; then
    PERF_SECONDS=${PERF_SECONDS:-5}
    if ! command -v perf >/dev/null 2>&1; then
        log "installing linux-perf"
        DEBIAN_FRONTEND=noninteractive apt-get install -y linux-perf >&2 || die "cannot install linux-perf"
    fi
    perf stat -e cpu-clock true >/dev/null 2>&1 || die "perf cannot count cpu-clock here"
    for n in bare clawgate; do
        out=$TMP/perf-wrk-$n.txt
        t0=$(cpu_ticks_of "${PID[$n]}")
        timeout $((PERF_SECONDS + 30)) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$((PERF_SECONDS + 1))s" \
            "${URL[$n]}" >"$out" 2>&1 &
        wpid=$!
        timeout $((PERF_SECONDS + 30)) taskset -c "$LOAD_CPU" perf record -q -F 999 -e cpu-clock \
            -p "${PID[$n]}" -o "$TMP/perf-$n.data" -- sleep "$PERF_SECONDS" >"$TMP/perf-record-$n.log" 2>&1 ||
            die "perf record failed: $(cat "$TMP/perf-record-$n.log")"
        wait "$wpid" || die "wrk under perf failed"
        t1=$(cpu_ticks_of "${PID[$n]}")
        PERF_US[$n]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v r="$(wrk_requests "$out")" \
            'BEGIN {printf "%.2f", (r > 0 ? d / hz * 1e6 / r : 0)}')
        # "pct<TAB>symbol" for every symbol, self time.
        perf report -i "$TMP/perf-$n.data" --stdio --no-children --sort dso,sym -g none \
            --percent-limit 0 2>/dev/null |
            awk '/^ *[0-9.]+%/ { pct = $1; sub(/%/, "", pct); dso = $2; $1 = ""; $2 = ""; $3 = "";
                 sym = $0; sub(/^ +/, "", sym); print pct "\t" dso ": " sym }' >"$TMP/perf-$n.tsv"
        log "perf: $n profiled for ${PERF_SECONDS}s at ${PERF_US[$n]} us/req (with perf running)"
    done
fi

# ---------------------------------------------------------------------------------------------
# (e) peak RSS
# ---------------------------------------------------------------------------------------------
for n in "${PROXIES[@]}"; do
    HWM[$n]=$(vm_hwm_kb "${PID[$n]}")
done

# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
fmt_ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}'; }
{
    echo
    echo "================================ clawgate benchmark ================================"
    echo "$(date -u +%FT%TZ)  $(nproc) cores  $(uname -r)  commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty tree)')"
    echo "proxies pinned to core $PROXY_CPU, 1 worker each; wrk and the nginx backend on core $LOAD_CPU;"
    echo "backend: nginx 'return 200 \"ok\\n\"'; wrk -t1, ${DURATION}s per run, --timeout 5s"
    echo
    echo "Peak (each alone, wrk -c$CONNS)"
    printf '  %-24s %10s %9s %9s %12s %8s\n' "" "req/s" "p50 ms" "p99 ms" "CPU us/req" "core %"
    for n in backend "${PROXIES[@]}"; do
        printf '  %-24s %10s %9s %9s %12s %8s\n' "${LABEL[$n]}" "${PEAK_RPS[$n]}" "${PEAK_P50[$n]}" \
            "${PEAK_P99[$n]}" "${SOLO_CPU_US[$n]}" "${SOLO_UTIL[$n]}"
    done
    echo "  (CPU us/req for the backend row is the backend's own cost per request)"
    echo
    echo "Latency: paced at ~$TARGET req/s (half of bare pingora's peak), and one connection unpaced"
    echo "  paced: $LAT_METHOD"
    printf '  %-24s %10s %9s %9s   %10s %9s %9s\n' "" "paced" "" "" "wrk -c1" "" ""
    printf '  %-24s %10s %9s %9s   %10s %9s %9s\n' "" "req/s" "p50 ms" "p99 ms" "req/s" "p50 ms" "p99 ms"
    for n in bare clawgate nginx; do
        printf '  %-24s %10s %9s %9s   %10s %9s %9s\n' "${LABEL[$n]}" "${LAT_RPS[$n]}" "${LAT_P50[$n]}" \
            "${LAT_P99[$n]}" "${C1_RPS[$n]}" "${C1_P50[$n]}" "${C1_P99[$n]}"
    done
    echo
    echo "Paired throughput ratios (both loaded at once on core $PROXY_CPU, wrk -c$HALF each; >1 = clawgate faster)"
    printf '  %-28s %8s   %s\n' "" "median" "rounds"
    printf '  %-28s %8s   %s\n' "clawgate / bare pingora" "$(echo "${RATIOS[clawgate/bare]}" | median)" "${RATIOS[clawgate/bare]}"
    printf '  %-28s %8s   %s\n' "clawgate / nginx proxy" "$(echo "${RATIOS[clawgate/nginx]}" | median)" "${RATIOS[clawgate/nginx]}"
    echo "Interleaved solo runs (A B B A, ${SHORT}s each, wrk -c$CONNS, each proxy alone on core $PROXY_CPU)"
    printf '  %-28s %8s   %-22s %12s   %s\n' "" "median" "rounds" "CPU/req ratio" "rounds"
    for k in clawgate/bare clawgate/nginx; do
        printf '  %-28s %8s   %-22s %12s   %s\n' "clawgate / ${LABEL[${k#*/}]}" "$(echo "${ABBA[$k]}" | median)" \
            "${ABBA[$k]}" "$(echo "${ABBA_CPU[$k]}" | median)" "${ABBA_CPU[$k]}"
    done
    echo "  single solo runs above (subject to VM drift):" \
        "clawgate/bare $(fmt_ratio "${PEAK_RPS[clawgate]}" "${PEAK_RPS[bare]}")," \
        "clawgate/nginx $(fmt_ratio "${PEAK_RPS[clawgate]}" "${PEAK_RPS[nginx]}")"
    echo
    echo "CPU time per request (utime+stime from /proc/PID/stat, CLK_TCK=$CLK_TCK)"
    printf '  %-24s %12s %14s %14s\n' "" "solo us/req" "paired median" "peak RSS (MiB)"
    for n in "${PROXIES[@]}"; do
        printf '  %-24s %12s %14s %14s\n' "${LABEL[$n]}" "${SOLO_CPU_US[$n]}" "${PAIR_CPU_US[$n]}" \
            "$(awk -v k="${HWM[$n]}" 'BEGIN {printf "%.1f", k / 1024}')"
    done
    echo "  clawgate CPU/req relative to bare pingora: solo $(fmt_ratio "${SOLO_CPU_US[clawgate]}" "${SOLO_CPU_US[bare]}")," \
        "paired $(fmt_ratio "${PAIR_CPU_US[clawgate]}" "${PAIR_CPU_US[bare]}")"
    echo "  peak RSS is VmHWM after all runs (nginx: its largest process)"
    if [[ ${PERF:-0} == 1 ]]; then
        for n in bare clawgate; do
            echo
            echo "perf (cpu-clock, self time) top 20 for ${LABEL[$n]}: ${PERF_US[$n]} us/req in all while profiled"
            printf '  %6s %8s  %s\n' "%" "us/req" "dso: symbol"
            sort -t$'\t' -k1,1gr "$TMP/perf-$n.tsv" | awk 'NR <= 20' |
                awk -F'\t' -v u="${PERF_US[$n]}" '{printf "  %6.2f %8.2f  %s\n", $1, $1 * u / 100, substr($2, 1, 110)}'
        done
        echo
        echo "perf: largest per-request differences, clawgate minus bare pingora (us/req, same symbol)"
        awk -F'\t' -v ub="${PERF_US[bare]}" -v uc="${PERF_US[clawgate]}" '
            { key = $2; sub(/^[^:]*: /, "", key) }   # compare by symbol, not binary
            FILENAME ~ /bare/ { b[key] += $1 * ub / 100; next }
            { c[key] += $1 * uc / 100 }
            END { for (k in c) d[k] = c[k] - b[k]; for (k in b) if (!(k in c)) d[k] = -b[k];
                  for (k in d) printf "%.2f\t%.2f\t%.2f\t%s\n", d[k], c[k], b[k], k }' \
            "$TMP/perf-bare.tsv" "$TMP/perf-clawgate.tsv" | sort -t$'\t' -k1,1gr | awk 'NR <= 25' |
            awk -F'\t' 'BEGIN {printf "  %7s %9s %7s  %s\n", "diff", "clawgate", "bare", "symbol"}
                         {printf "  %7.2f %9.2f %7.2f  %s\n", $1, $2, $3, substr($4, 1, 100)}'
    fi
    echo "===================================================================================="
}
