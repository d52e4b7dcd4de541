# Shared by the benchmark scripts: settings, tools, process bookkeeping, readiness, wrk runs.
# Sourcing it sets the common settings (from the environment, else their defaults) and checks the
# tools; `enter_tmp` then makes the temp dir TMP, and on exit everything started (pids in PIDS)
# is stopped and TMP removed.

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
READY_DEADLINE=${READY_DEADLINE:-20}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
need_pkgs=()
command -v nginx >/dev/null 2>&1 || need_pkgs+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need_pkgs+=(wrk)
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]}"
    SUDO=
    [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${need_pkgs[@]}"
fi
for t in nginx wrk curl taskset ss pgrep timeout getconf cargo awk; do
    command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
done
WRK2=
if command -v wrk2 >/dev/null 2>&1; then WRK2=wrk2; fi
NCPU=$(getconf _NPROCESSORS_ONLN)
((PROXY_CPU < NCPU && LOAD_CPU < NCPU)) || die "need cores $PROXY_CPU and $LOAD_CPU; this machine has $NCPU"
CLK_TCK=$(getconf CLK_TCK)

PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${PIDS[@]}"; do
        kill -INT "$p" 2>/dev/null || true
    done
    for _ in $(seq 1 30); do
        local alive=0
        for p in "${PIDS[@]}"; do
            if kill -0 "$p" 2>/dev/null; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ ${KEEP_TMP:-0} == 1 || $rc -ne 0 ]]; then
        log "temp dir kept: $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
enter_tmp() {
    TMP=$(mktemp -d /tmp/clawgate-bench.XXXXXX)
    cd "$TMP" # nothing below writes into the repository
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# A free TCP port on 127.0.0.1 (not listening now, not handed out before in this run), below
# the kernel's ephemeral range (32768 and up): a port there may be the local end of a connection
# (or one in TIME_WAIT) that `ss -l` does not show, and then a listener cannot bind it.
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if [[ -z $(ss -Htln "sport = :$p") ]]; then
            USED_PORTS+="$p "
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# Polls URL until it answers 200 with body "ok", or dies after READY_DEADLINE seconds.
wait_ready() {
    local name=$1 url=$2 pid=$3 logf=$4
    local deadline=$((SECONDS + READY_DEADLINE)) body
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited during start-up; its log ($logf):"
            tail -n 30 "$logf" >&2 || true
            die "$name did not start"
        fi
        if body=$(curl -fsS --max-time 1 "$url" 2>/dev/null) && [[ $body == ok ]]; then
            log "$name ready at $url (pid $pid)"
            return 0
        fi
        sleep 0.05
    done
    log "$name log ($logf):"
    tail -n 30 "$logf" >&2 || true
    log "last answer from $url:"
    curl -sS -i --max-time 2 "$url" >&2 || true
    die "$name not ready after ${READY_DEADLINE}s"
}

nginx_conf() { # DIR PORT BODY_OF_SERVER_BLOCK [HTTP_EXTRA]
    local dir=$1 port=$2 server_body=$3 http_extra=${4:-}
    mkdir -p "$dir/logs" "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
    access_log off;
    default_type text/plain;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
$http_extra
    server {
        listen 127.0.0.1:$port reuseport;
$server_body
    }
}
EOF
}

# Process tree CPU of a server: the pid itself plus its direct children (nginx workers).
pids_of() {
    local pid=$1
    echo "$pid"
    pgrep -P "$pid" || true
}
# utime+stime in clock ticks, summed over the pids given (all threads of each).
cpu_ticks() {
    local total=0 p t
    for p in "$@"; do
        t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
cpu_ticks_of() { # SERVER_PID
    # shellcheck disable=SC2046
    cpu_ticks $(pids_of "$1")
}
vm_hwm_kb() { # max VmHWM over the server's processes
    local best=0 p v
    for p in $(pids_of "$1"); do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        ((${v:-0} > best)) && best=$v
    done
    echo "$best"
}
# Per-core idle: prints "idle_ticks total_ticks" for cpuN.
core_ticks() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t }' /proc/stat
}
idle_pct() { # "before" "after"
    awk -v b="$1" -v a="$2" 'BEGIN { split(b, x, " "); split(a, y, " ");
        dt = y[2] - x[2]; printf "%.0f", (dt > 0 ? 100 * (y[1] - x[1]) / dt : 0) }'
}

# wrk output parsing.
wrk_requests() { awk '/ requests in / {print $1; exit}' "$1"; }
wrk_rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2; exit}' "$1"; }
wrk_bad() { # non-2xx responses + socket errors
    awk '/Non-2xx or 3xx responses:/ {n += $NF}
         /Socket errors:/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) {gsub(",", "", $i); n += $i}}
         END {print n + 0}' "$1"
}
# The latency at percentile P ("50%", "99%") from --latency output, in ms.
wrk_pct_ms() {
    awk -v p="$2" '$1 == p && NF == 2 {
        v = $2; u = v; sub(/^[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000;
        printf "%.3f", v; exit }' "$1"
}

# run_wrk OUT CONNS URL [extra wrk args...]: one bounded wrk run pinned to LOAD_CPU, lasting
# WRK_SECONDS (default DURATION).
run_wrk() {
    local out=$1 conns=$2 url=$3 secs=${WRK_SECONDS:-$DURATION}
    shift 3
    timeout $((secs + 30)) taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" \
        --timeout 5s --latency "$@" "$url" >"$out" 2>&1 || {
        log "wrk failed against $url:"
        cat "$out" >&2
        die "wrk failed"
    }
    local bad
    bad=$(wrk_bad "$out")
    if ((bad > 0)); then
        log "WARNING: $bad non-2xx responses or socket errors against $url (see $out)"
        grep -E 'Non-2xx|Socket errors' "$out" >&2 || true
    fi
}


# The median of whitespace-separated numbers on stdin ("n/a" when there are none).
median() { tr ' ' '\n' | { grep . || true; } | sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# wrk_for NAME OUT CONNS: one run against gateway NAME (URL[NAME]); scripts may redefine it
# (to add headers, say).
wrk_for() { run_wrk "$2" "$3" "${URL[$1]}"; }

# pair_run A B ROUND: gateways A and B loaded at the same time, HALF connections each, sharing
# PROXY_CPU. Appends to RATIOS[A/B] (throughput A/B), CPU[A], CPU[B] (CPU us per request) and
# P99[A], P99[B] (ms); needs PID[], HALF and associative arrays RATIOS, CPU, P99 declared.
pair_run() {
    local a=$1 b=$2 r=$3 oa=$TMP/pair-$1-$2-$3-a.txt ob=$TMP/pair-$1-$2-$3-b.txt
    local ta0 tb0 ta1 tb1 ra rb pa pb ratio cua cub
    ta0=$(cpu_ticks_of "${PID[$a]}")
    tb0=$(cpu_ticks_of "${PID[$b]}")
    wrk_for "$a" "$oa" "$HALF" &
    pa=$!
    wrk_for "$b" "$ob" "$HALF" &
    pb=$!
    wait "$pa" || die "wrk against $a failed"
    wait "$pb" || die "wrk against $b failed"
    ta1=$(cpu_ticks_of "${PID[$a]}")
    tb1=$(cpu_ticks_of "${PID[$b]}")
    ra=$(wrk_rps "$oa")
    rb=$(wrk_rps "$ob")
    ratio=$(awk -v a="$ra" -v b="$rb" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')
    cua=$(awk -v d=$((ta1 - ta0)) -v hz="$CLK_TCK" -v n="$(wrk_requests "$oa")" 'BEGIN {printf "%.2f", (n > 0 ? d / hz * 1e6 / n : 0)}')
    cub=$(awk -v d=$((tb1 - tb0)) -v hz="$CLK_TCK" -v n="$(wrk_requests "$ob")" 'BEGIN {printf "%.2f", (n > 0 ? d / hz * 1e6 / n : 0)}')
    RATIOS[$a/$b]+="$ratio "
    CPU[$a]+="$cua "
    CPU[$b]+="$cub "
    P99[$a]+="$(wrk_pct_ms "$oa" 99%) "
    P99[$b]+="$(wrk_pct_ms "$ob" 99%) "
    log "$(printf '[%s/%s] %-8s %7s req/s (%s us/req)  %-8s %7s req/s (%s us/req)  ratio %s' \
        "$r" "$ROUNDS" "$a" "$ra" "$cua" "$b" "$rb" "$cub" "$ratio")"
}

# paired_rounds: ROUNDS paired runs of gateways "on" and "off" (pair_run, alternating which is
# loaded first); every EVERY_RESTART rounds (default 2) both are restarted by the script's
# restart_pair FIRST, the start order alternating. Sets ALL to the on/off ratio of every round,
# one per line (not printed: a subshell would lose pair_run's arrays). Needs what pair_run needs.
paired_rounds() {
    local first=off r every=${EVERY_RESTART:-2}
    for r in $(seq 1 "$ROUNDS"); do
        if ((r > 1 && (r - 1) % every == 0)); then
            if [[ $first == off ]]; then first=on; else first=off; fi
            log "restarting both gateways, \"$first\" first this time"
            restart_pair "$first"
        fi
        if ((r % 2)); then pair_run on off "$r"; else pair_run off on "$r"; fi
    done
    ALL=$(
        for r in ${RATIOS[on/off]:-}; do echo "$r"; done
        for r in ${RATIOS[off/on]:-}; do awk -v x="$r" 'BEGIN {printf "%.3f\n", (x > 0 ? 1 / x : 0)}'; done
    )
}

# require_positive VAR...: each variable holds a positive integer, else die.
require_positive() {
    local v
    for v in "$@"; do
        [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
    done
}

# build_clawgate: a release build of clawgate (unless NO_BUILD=1); sets CLAWGATE.
build_clawgate() {
    if [[ ${NO_BUILD:-0} != 1 ]]; then
        log "cargo build --release --bin clawgate"
        timeout 1800 cargo build --release --bin clawgate >&2 || die "cargo build failed"
    fi
    CLAWGATE=$ROOT/target/release/clawgate
    [[ -x $CLAWGATE ]] || die "binary not found: $CLAWGATE"
}

# start_backend: the nginx backend answering "ok" on core LOAD_CPU; sets BACKEND_PORT.
start_backend() {
    BACKEND_PORT=$(free_port)
    nginx_conf "$TMP/backend" "$BACKEND_PORT" '        location / { return 200 "ok\n"; }'
    taskset -c "$LOAD_CPU" nginx -p "$TMP/backend" -c "$TMP/backend/nginx.conf" -e "$TMP/backend/logs/error.log" \
        >"$TMP/backend/logs/stdout.log" 2>&1 &
    PIDS+=("$!")
    wait_ready "backend (nginx)" "http://127.0.0.1:$BACKEND_PORT/" "$!" "$TMP/backend/logs/error.log"
}

# start_gateway NAME READY_PATH [GATEWAY_LINES]: a clawgate with one worker on core PROXY_CPU.
# Its configuration is a gateway section (listener, pid file, socket, GATEWAY_LINES) followed by
# the YAML read from stdin; it must pass `clawgate check`. Sets PID[NAME], URL[NAME] (no path)
# and CONF[NAME].
start_gateway() {
    local name=$1 ready=$2 extra=${3:-} port conf
    port=$(free_port)
    conf=$TMP/$name.yaml
    {
        printf 'gateway:\n  listen: "127.0.0.1:%s"\n  pid_file: "%s"\n  upgrade_sock: "%s"\n  threads: 1\n' \
            "$port" "$TMP/$name.pid" "$TMP/$name.sock"
        [[ -z $extra ]] || printf '%s\n' "$extra"
        cat
    } >"$conf"
    "$CLAWGATE" check --config "$conf" >"$TMP/$name-check.log" 2>&1 ||
        die "clawgate check failed for $name: $(cat "$TMP/$name-check.log")"
    taskset -c "$PROXY_CPU" "$CLAWGATE" start --config "$conf" >"$TMP/$name.log" 2>&1 &
    PID[$name]=$!
    PIDS+=("$!")
    URL[$name]="http://127.0.0.1:$port"
    CONF[$name]=$conf
    wait_ready "clawgate ($name)" "http://127.0.0.1:$port$ready" "$!" "$TMP/$name.log"
}

# observe_yaml OBSERVE LOG_FILE: the `monitoring` section with what OBSERVE names (metrics,
# log, tracing, console; "none" for nothing): the article's custom metrics, the JSON access log
# to LOG_FILE, tracing at SAMPLER (default 0.1) exporting to the nginx backend, the admin
# listener (top-level `admin`, printed after the section) on a free port.
observe_yaml() {
    local observe=$1 yaml="monitoring:"
    [[ $observe != *metrics* ]] || yaml+="
  metrics:
    enabled: true
    custom_metrics:
      - {name: agent_token_usage, type: counter, labels: [agent_id, model]}
      - {name: request_latency, type: histogram, labels: [route, method]}"
    [[ $observe != *log* ]] || yaml+="
  logging: {format: json, output: \"$2\"}"
    [[ $observe != *tracing* ]] || yaml+="
  tracing: {enabled: true, sampler: \"${SAMPLER:-0.1}\", endpoint: \"http://127.0.0.1:$BACKEND_PORT\"}"
    [[ $observe != *console* ]] || yaml+="
admin: {listen: \"127.0.0.1:$(free_port)\"}"
    printf '%s' "$yaml"
}

# stop_gateway NAME: stops gateway NAME (SIGINT, then SIGKILL after 3 s) and waits for it.
stop_gateway() {
    local pid=${PID[$1]} i
    kill -INT "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# prepare_gateway_run: the common start of the clawgate-only benchmarks: settings checked, a
# release build, the temp dir, the nginx backend.
prepare_gateway_run() {
    require_positive DURATION ROUNDS CONNS
    build_clawgate
    enter_tmp
    start_backend
}
