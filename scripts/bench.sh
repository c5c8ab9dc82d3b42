#!/usr/bin/env bash
# scripts/bench.sh: throughput and latency through natwrp, plain tunnel and
# TLS tunnel side by side in one run, against nginx as the origin. Reports
# only: it never asserts timings. `make bench` installs wrk and nginx, builds
# build/natwrp and runs this. Everything listens on 127.0.0.1 only.
#
# Scenarios (all serve the same nginx origin):
#   direct  wrk/curl -> nginx                                  (reference)
#   plain   client --http--> serve A ==ws tunnel==> agent A -> nginx
#   wss     client --http--> serve B ==wss tunnel=> agent B -> nginx
#   tls     client --https-> serve B ==wss tunnel=> agent B -> nginx
# (serve B has an https listener, which carries the agent's wss tunnel and
# the tls clients, and a plain http listener beside it for the wss clients;
# so wss/plain is the cost of the encrypted tunnel alone and tls/plain the
# cost of TLS end to end.)
#
# Rounds are interleaved (direct, plain, wss, tls, direct, ...); each round
# runs, per scenario: a 1 KiB GET with wrk (req/s, p50, p99), a 100 MiB GET
# with curl (MB/s) and a 100 MiB POST with curl (MB/s; nginx reads the whole
# body before it answers, and answers with the number of body bytes it got).
# The table shows medians over the rounds; MB = 10^6 bytes.
#
#   ROUNDS      rounds (default 3)
#   DURATION    each wrk run (default 5s)
#   WRK_THREADS wrk threads (default 2)
#   WRK_CONNS   wrk connections (default 64)
#   BIG_MIB     size of the big download/upload in MiB (default 100)
#   NGINX_WORKERS nginx worker_processes (default 1)
#   SCENARIOS   subset/order of "direct plain wss tls" (default all four)
#   NATWRP_BIN  binary (default build/natwrp)
#   BENCH_OUT   where the report is also written (default build/bench.txt;
#               empty: nowhere)
# serve and the agents inherit the environment, so natwrp's own settings
# (POOL_SIZE, WINDOW, ...) apply to both tunnels; the report lists those that
# are set. LOG_LEVEL is forced to info: readiness is read from the logs.
#
# Exit status: 0 when every measurement succeeded, 1 if any failed (non-2xx,
# wrong sizes, curl or wrk errors, a process that died); the table is printed
# either way.
set -euo pipefail

cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-64}
BIG_MIB=${BIG_MIB:-100}
NGINX_WORKERS=${NGINX_WORKERS:-1}
SCENARIOS=${SCENARIOS:-direct plain wss tls}
BIN=${NATWRP_BIN:-build/natwrp}
BENCH_OUT=${BENCH_OUT-build/bench.txt}
PKI=build/pki

die() { echo "bench: $*" >&2; exit 1; }

# --- preconditions ----------------------------------------------------------
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ $BIG_MIB =~ ^[1-9][0-9]*$ ]] || die "BIG_MIB must be a positive integer (got '$BIG_MIB')"
[[ $WRK_THREADS =~ ^[1-9][0-9]*$ && $WRK_CONNS =~ ^[1-9][0-9]*$ ]] ||
    die "WRK_THREADS and WRK_CONNS must be positive integers"
case $DURATION in
    *[0-9]s | *[0-9]) dur_s=${DURATION%s} ;;
    *[0-9]m) dur_s=$((${DURATION%m} * 60)) ;;
    *) die "DURATION must look like 5s, 5 or 1m (got '$DURATION')" ;;
esac
[[ $dur_s =~ ^[0-9]+$ && $dur_s -gt 0 ]] || die "DURATION must be positive (got '$DURATION')"
for s in $SCENARIOS; do
    case $s in direct | plain | wss | tls) ;; *) die "unknown scenario '$s' in SCENARIOS" ;; esac
done
[ -x "$BIN" ] || die "$BIN not built (run: make)"
for t in wrk nginx curl python3 openssl cmp timeout; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (run: scripts/deps.sh --bench)"
done
BIG_BYTES=$((BIG_MIB * 1024 * 1024))

# --- process bookkeeping ----------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/natwrp-bench.XXXXXX")
pids=()          # our children: nginx master, serves, agents
extra_pids=()    # nginx workers (children of the master, killed only if it was)
cleanup() {
    local rc=$? p wd
    trap - EXIT INT TERM
    if [ ${#pids[@]} -gt 0 ]; then
        for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        # Bounded wait: a watchdog KILLs whatever is still there after 5 s.
        (sleep 5; for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done) &
        wd=$!
        for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
        kill "$wd" 2>/dev/null || true
        wait "$wd" 2>/dev/null || true
    fi
    for p in "${extra_pids[@]}"; do
        if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT
trap 'echo "bench: terminated" >&2; exit 143' TERM

# alive PID: the process exists and is not a zombie.
alive() {
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [ "${st:0:1}" != Z ]
}

# wait_log PID FILE ERE SECS WHAT: poll FILE until a line matches ERE; prints
# the first matching line. Fails (with the log's tail) if PID dies or SECS
# pass.
wait_log() {
    local pid=$1 file=$2 pat=$3 secs=$4 what=$5 line end=$((SECONDS + $4))
    while :; do
        line=$(grep -m1 -E "$pat" "$file" 2>/dev/null || true)
        if [ -n "$line" ]; then
            printf '%s\n' "$line"
            return 0
        fi
        if ! alive "$pid"; then
            echo "bench: $what exited before it was ready; its log ($file):" >&2
            tail -n 20 "$file" >&2 || true
            return 1
        fi
        if [ $SECONDS -ge $end ]; then
            echo "bench: $what not ready after ${secs}s (waiting for /$pat/); its log:" >&2
            tail -n 20 "$file" >&2 || true
            return 1
        fi
        sleep 0.05
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- fixtures ---------------------------------------------------------------
echo "bench: preparing fixtures in $tmp"
sh test/mkpki.sh "$PKI" || die "test/mkpki.sh $PKI failed"
for f in ca.pem server.pem server.key; do [ -s "$PKI/$f" ] || die "$PKI/$f missing"; done
mkdir -p "$tmp/www" "$tmp/ngx"
# Run as root, nginx's workers switch to an unprivileged user (nobody): let
# them reach the fixtures (random bytes, nothing secret).
chmod 0755 "$tmp" "$tmp/www" "$tmp/ngx"
head -c 1024 /dev/urandom >"$tmp/www/small.bin"
head -c "$BIG_BYTES" /dev/urandom >"$tmp/www/big.bin"
chmod 0644 "$tmp/www/small.bin" "$tmp/www/big.bin"
[ "$(stat -c %s "$tmp/www/big.bin")" = "$BIG_BYTES" ] || die "could not write the ${BIG_MIB} MiB file in $tmp"

# --- origin: nginx ----------------------------------------------------------
# /small.bin and /big.bin are static files. POST /upload: nginx reads the
# whole body (proxy_request_buffering is on by default; kept in memory up to
# client_body_buffer_size), then asks its own /sink without the body, passing
# $content_length (the body bytes received, also for chunked bodies), and
# answers 200 with that number.
start_nginx() {
    local port=$1 conf="$tmp/ngx/nginx.conf"
    : >"$tmp/ngx/error.log"
    cat >"$conf" <<CONF
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $tmp/ngx/nginx.pid;
error_log $tmp/ngx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/ngx/client_body;
    proxy_temp_path $tmp/ngx/proxy;
    fastcgi_temp_path $tmp/ngx/fastcgi;
    uwsgi_temp_path $tmp/ngx/uwsgi;
    scgi_temp_path $tmp/ngx/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        root $tmp/www;
        location = /upload {
            client_max_body_size 0;
            client_body_buffer_size $((BIG_MIB + 1))m;
            proxy_pass http://127.0.0.1:$port/sink;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Body-Bytes \$content_length;
        }
        location = /sink {
            return 200 "\$http_x_body_bytes\n";
        }
    }
}
CONF
    nginx -p "$tmp/ngx/" -c "$conf" -e "$tmp/ngx/error.log" >"$tmp/ngx/stdout.log" 2>&1 &
    NGINX_PID=$!
    pids+=("$NGINX_PID")
    local end=$((SECONDS + 10)) code
    while :; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/small.bin" || true)
        [ "$code" = 200 ] && return 0
        if [ -n "$code" ] && [ "$code" != 000 ]; then
            echo "bench: nginx on 127.0.0.1:$port answered $code for /small.bin; error.log:" >&2
            tail -n 5 "$tmp/ngx/error.log" >&2 || true
            exit 1
        fi
        if ! alive "$NGINX_PID"; then
            wait "$NGINX_PID" 2>/dev/null || true
            return 1
        fi
        if [ $SECONDS -ge $end ]; then
            echo "bench: nginx on 127.0.0.1:$port not answering after 10s; error.log:" >&2
            tail -n 20 "$tmp/ngx/error.log" >&2 || true
            exit 1
        fi
        sleep 0.05
    done
}
NGX_PORT=
for attempt in 1 2 3; do
    port=$(free_port)
    if start_nginx "$port"; then NGX_PORT=$port; break; fi
    # Most likely someone took the port between free_port and bind: retry.
    echo "bench: nginx did not start on 127.0.0.1:$port (attempt $attempt):" >&2
    tail -n 5 "$tmp/ngx/error.log" "$tmp/ngx/stdout.log" >&2 || true
done
[ -n "$NGX_PORT" ] || die "nginx would not start"
while read -r w; do [ -n "$w" ] && extra_pids+=("$w"); done < <(pgrep -P "$NGINX_PID" || true)
echo "bench: nginx origin on 127.0.0.1:$NGX_PORT (pid $NGINX_PID, workers: ${extra_pids[*]:-?})"

# --- the two tunnels --------------------------------------------------------
export LOG_LEVEL=info
"$BIN" serve --listen http://127.0.0.1:0 >"$tmp/serve-plain.log" 2>&1 &
SERVE_A=$!
pids+=("$SERVE_A")
"$BIN" serve --listen https://127.0.0.1:0 --listen http://127.0.0.1:0 \
    --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key" >"$tmp/serve-tls.log" 2>&1 &
SERVE_B=$!
pids+=("$SERVE_B")

line=$(wait_log "$SERVE_A" "$tmp/serve-plain.log" 'listening on http://127\.0\.0\.1:[0-9]+' 10 "serve (plain)") || exit 1
PA=${line##*:}
line=$(wait_log "$SERVE_B" "$tmp/serve-tls.log" 'listening on https://127\.0\.0\.1:[0-9]+' 10 "serve (tls)") || exit 1
PB_TLS=${line##*:}
line=$(wait_log "$SERVE_B" "$tmp/serve-tls.log" 'listening on http://127\.0\.0\.1:[0-9]+' 10 "serve (tls)") || exit 1
PB_HTTP=${line##*:}
for p in "$PA" "$PB_TLS" "$PB_HTTP"; do [[ $p =~ ^[0-9]+$ ]] || die "could not read serve's port from its log"; done

env AGENT_ID=plain REMOTE_URL="http://127.0.0.1:$PA" LOCAL_URL="http://127.0.0.1:$NGX_PORT" \
    "$BIN" agent --env /dev/null >"$tmp/agent-plain.log" 2>&1 &
AGENT_A=$!
pids+=("$AGENT_A")
env AGENT_ID=tls REMOTE_URL="https://localhost:$PB_TLS" CA_FILE="$PKI/ca.pem" \
    LOCAL_URL="http://127.0.0.1:$NGX_PORT" \
    "$BIN" agent --env /dev/null >"$tmp/agent-tls.log" 2>&1 &
AGENT_B=$!
pids+=("$AGENT_B")

wait_log "$AGENT_A" "$tmp/agent-plain.log" 'tunnel up' 15 "agent (plain)" >/dev/null || exit 1
wait_log "$AGENT_B" "$tmp/agent-tls.log" 'tunnel up' 15 "agent (tls)" >/dev/null || exit 1
wait_log "$SERVE_A" "$tmp/serve-plain.log" 'tunnel open .*agent=plain' 5 "serve (plain)" >/dev/null || exit 1
wait_log "$SERVE_B" "$tmp/serve-tls.log" 'tunnel open .*agent=tls' 5 "serve (tls)" >/dev/null || exit 1
TLS_LINE=$(grep -m1 -oE 'tls: connected to .*' "$tmp/agent-tls.log" || echo "tls: ?")
echo "bench: plain tunnel: serve http://127.0.0.1:$PA (pid $SERVE_A), agent pid $AGENT_A"
echo "bench: tls tunnel:   serve https://127.0.0.1:$PB_TLS + http://127.0.0.1:$PB_HTTP (pid $SERVE_B), agent pid $AGENT_B ($TLS_LINE)"

# --- scenarios --------------------------------------------------------------
# scen NAME: sets WRK_URL (base for wrk), CURL_URL (base for curl) and the
# array CX (extra curl arguments).
scen() {
    CX=()
    case $1 in
        direct) WRK_URL="http://127.0.0.1:$NGX_PORT"; CURL_URL=$WRK_URL ;;
        plain) WRK_URL="http://127.0.0.1:$PA"; CURL_URL=$WRK_URL ;;
        wss) WRK_URL="http://127.0.0.1:$PB_HTTP"; CURL_URL=$WRK_URL ;;
        tls)
            # wrk does not verify certificates; curl does, by name.
            WRK_URL="https://127.0.0.1:$PB_TLS"
            CURL_URL="https://localhost:$PB_TLS"
            CX=(--cacert "$PKI/ca.pem" --resolve "localhost:$PB_TLS:127.0.0.1")
            ;;
    esac
}

nproblems=0
: >"$tmp/problems"
problem() {
    nproblems=$((nproblems + 1))
    printf '%s\n' "$*" >>"$tmp/problems"
    echo "bench: PROBLEM: $*" >&2
}

# Every natwrp process must still be running.
check_alive() {
    local what pid log
    for what in "serve-plain:$SERVE_A" "serve-tls:$SERVE_B" "agent-plain:$AGENT_A" "agent-tls:$AGENT_B" \
        "nginx:$NGINX_PID"; do
        pid=${what#*:}
        what=${what%%:*}
        if ! alive "$pid"; then
            log="$tmp/$what.log"
            [ "$what" = nginx ] && log="$tmp/ngx/error.log"
            echo "bench: $what (pid $pid) died; its log:" >&2
            tail -n 30 "$log" >&2 || true
            wait "$pid" 2>/dev/null && rc=0 || rc=$?
            die "$what exited (status $rc) during the benchmark"
        fi
    done
}

mkdir -p "$tmp/res"
record() { printf '%s\n' "$3" >>"$tmp/res/$1.$2"; }  # scenario metric value

# Sanity pass (also a warm-up): right bytes through every path.
echo "bench: checking every path returns the right bytes"
for s in $SCENARIOS; do
    scen "$s"
    code=$(curl -sS --max-time 30 "${CX[@]}" -o "$tmp/small.got" -w '%{http_code}' "$CURL_URL/small.bin") ||
        die "$s: GET /small.bin failed (curl exit status $?)"
    [ "$code" = 200 ] || die "$s: GET /small.bin answered $code: $(head -c 200 "$tmp/small.got")"
    cmp -s "$tmp/small.got" "$tmp/www/small.bin" || die "$s: GET /small.bin returned different bytes"
    if ! curl -sS --max-time 300 "${CX[@]}" "$CURL_URL/big.bin" 2>"$tmp/curl.err" |
        cmp - "$tmp/www/big.bin" >"$tmp/cmp.out" 2>&1; then
        problem "$s: GET /big.bin (${BIG_MIB} MiB) differs from the file: $(cat "$tmp/cmp.out" "$tmp/curl.err" | tr '\n' ' ')"
    fi
    # wrk over https must be able to talk to it too.
    if ! timeout 30 wrk -t1 -c1 -d1s "$WRK_URL/small.bin" >"$tmp/wrk.sanity" 2>&1 ||
        ! grep -q '^Requests/sec:' "$tmp/wrk.sanity"; then
        die "$s: wrk cannot fetch $WRK_URL/small.bin: $(tail -n 3 "$tmp/wrk.sanity" | tr '\n' ' ')"
    fi
done
check_alive

# wrk latency "1.23ms" / "456.00us" / "1.02s" / "1.50m" -> milliseconds.
to_ms() {
    awk '{ v = $1
           if (v ~ /us$/)      { sub(/us$/, "", v); v = v / 1000 }
           else if (v ~ /ms$/) { sub(/ms$/, "", v) }
           else if (v ~ /s$/)  { sub(/s$/, "", v); v = v * 1000 }
           else if (v ~ /m$/)  { sub(/m$/, "", v); v = v * 60000 }
           else if (v ~ /h$/)  { sub(/h$/, "", v); v = v * 3600000 }
           printf "%.3f\n", v }'
}

run_wrk() { # scenario round
    local s=$1 out="$tmp/wrk.$1.$2.out" rc=0 rps p50 p99 n2xx serr
    timeout $((dur_s + 60)) wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$DURATION" --latency --timeout 10s \
        "$WRK_URL/small.bin" >"$out" 2>&1 || rc=$?
    if [ $rc -ne 0 ]; then
        problem "$s round $2: wrk exit status $rc: $(tail -n 3 "$out" | tr '\n' ' ')"
        return 0
    fi
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(awk '$1 == "50%" { print $2 }' "$out" | to_ms)
    p99=$(awk '$1 == "99%" { print $2 }' "$out" | to_ms)
    n2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$out")
    serr=$(grep -m1 'Socket errors' "$out" | sed 's/^ *//' || true)
    if [ -z "$rps" ] || [ -z "$p50" ] || [ -z "$p99" ]; then
        problem "$s round $2: could not parse wrk's output: $(tr '\n' ' ' <"$out" | head -c 300)"
        return 0
    fi
    [ -n "$n2xx" ] && problem "$s round $2: wrk saw $n2xx non-2xx/3xx responses"
    [ -n "$serr" ] && problem "$s round $2: wrk $serr"
    # A run with errors still gets its numbers recorded: they are reported,
    # and the problem list says why they may be off.
    record "$s" rps "$rps"
    record "$s" p50 "$p50"
    record "$s" p99 "$p99"
    WRK_SUMMARY=$(printf '%.0f req/s p50 %.2f ms p99 %.2f ms' "$rps" "$p50" "$p99")
}

run_down() { # scenario round
    local s=$1 w rc=0 code size speed
    w=$(curl -sS --max-time 300 "${CX[@]}" -o /dev/null \
        -w '%{http_code} %{size_download} %{speed_download}' "$CURL_URL/big.bin" 2>"$tmp/curl.err") || rc=$?
    read -r code size speed <<<"$w" || true
    if [ $rc -ne 0 ]; then
        problem "$s round $2: download: curl exit status $rc ($(tr '\n' ' ' <"$tmp/curl.err")), got ${size:-?} bytes"
        return 0
    fi
    if [ "$code" != 200 ] || [ "$size" != "$BIG_BYTES" ]; then
        problem "$s round $2: download: status $code, $size bytes (want 200, $BIG_BYTES)"
        return 0
    fi
    speed=$(awk -v b="$speed" 'BEGIN { printf "%.1f", b / 1e6 }')
    record "$s" down "$speed"
    DOWN_SUMMARY="down $speed MB/s"
}

run_up() { # scenario round
    local s=$1 w rc=0 code size speed got
    # Expect: 100-continue off, so that only the body transfer is timed (the
    # 100 would come from serve itself anyway, not from the origin).
    w=$(curl -sS --max-time 300 "${CX[@]}" -o "$tmp/up.body" -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' --data-binary @"$tmp/www/big.bin" \
        -w '%{http_code} %{size_upload} %{speed_upload}' "$CURL_URL/upload" 2>"$tmp/curl.err") || rc=$?
    read -r code size speed <<<"$w" || true
    if [ $rc -ne 0 ]; then
        problem "$s round $2: upload: curl exit status $rc ($(tr '\n' ' ' <"$tmp/curl.err")), sent ${size:-?} bytes"
        return 0
    fi
    got=$(tr -d ' \r\n' <"$tmp/up.body" | head -c 100)
    if [ "$code" != 200 ] || [ "$size" != "$BIG_BYTES" ] || [ "$got" != "$BIG_BYTES" ]; then
        problem "$s round $2: upload: status $code, sent $size bytes, origin got '$got' (want 200, $BIG_BYTES, $BIG_BYTES)"
        return 0
    fi
    speed=$(awk -v b="$speed" 'BEGIN { printf "%.1f", b / 1e6 }')
    record "$s" up "$speed"
    UP_SUMMARY="up $speed MB/s"
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "bench: $ROUNDS rounds of: $SCENARIOS (wrk -t$WRK_THREADS -c$WRK_CONNS -d$DURATION; ${BIG_MIB} MiB down/up)"
for r in $(seq 1 "$ROUNDS"); do
    for s in $SCENARIOS; do
        scen "$s"
        WRK_SUMMARY="wrk failed" DOWN_SUMMARY="down failed" UP_SUMMARY="up failed"
        run_wrk "$s" "$r"
        check_alive
        run_down "$s" "$r"
        check_alive
        run_up "$s" "$r"
        check_alive
        printf 'round %d/%d %-6s  %s, %s, %s\n' "$r" "$ROUNDS" "$s" "$WRK_SUMMARY" "$DOWN_SUMMARY" "$UP_SUMMARY"
    done
done

# --- report -----------------------------------------------------------------
median() { # file -> median (empty if no samples)
    [ -s "$1" ] || return 0
    sort -g "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for s in $SCENARIOS; do
    for m in rps p50 p99 down up; do
        eval "M_${s}_$m=\$(median \"\$tmp/res/\$s.\$m\")"
    done
done
get() { eval "printf '%s' \"\${M_$1_$2:-}\""; }
fmt() { # value decimals
    if [ -z "$1" ]; then printf -- '-'; else printf "%.${2}f" "$1"; fi
}
ratio() { # a b
    if [ -z "$1" ] || [ -z "$2" ]; then printf -- '-'; else awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2fx", a / b }'; fi
}
nsamples() { [ -f "$tmp/res/$1.$2" ] && wc -l <"$tmp/res/$1.$2" | tr -d ' ' || echo 0; }

cpu=$(grep -m1 -E '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
rev=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
[ -n "$(git status --porcelain -- src 2>/dev/null)" ] && rev="$rev+dirty-src"
report="$tmp/report"
{
    echo "natwrp bench, $started (UTC)"
    echo "machine: $(nproc) CPUs, ${cpu:-unknown CPU}, $(uname -srm)"
    echo "natwrp:  $BIN (git $rev); $TLS_LINE"
    echo "tools:   $(nginx -v 2>&1 | sed 's/.*: //') (worker_processes $NGINX_WORKERS), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}'), $(curl --version | head -n1 | awk '{print $1, $2}')"
    echo "method:  $ROUNDS interleaved rounds; 1 KiB GET: wrk -t$WRK_THREADS -c$WRK_CONNS -d$DURATION;"
    echo "         ${BIG_MIB} MiB GET and POST: curl, one transfer each; medians; MB = 10^6 bytes"
    echo "paths:   direct = nginx; plain = http + ws tunnel; wss = http + wss tunnel; tls = https + wss tunnel"
    echo "         (each wrk run opens its $WRK_CONNS connections at its start: for tls, that many TLS"
    echo "         handshakes on serve's event loop, which weigh on tls p99 in short runs)"
    settings=""
    for v in POOL_SIZE WINDOW MAX_HEAD PING_INTERVAL CONNECT_TIMEOUT RESPONSE_TIMEOUT; do
        [ -n "${!v:-}" ] && settings="$settings $v=${!v}"
    done
    echo "natwrp settings:${settings:- defaults}"
    echo
    printf '%-8s %10s %9s %9s %11s %11s %8s\n' scenario "req/s" "p50 ms" "p99 ms" "down MB/s" "up MB/s" samples
    for s in $SCENARIOS; do
        printf '%-8s %10s %9s %9s %11s %11s %8s\n' "$s" \
            "$(fmt "$(get "$s" rps)" 0)" "$(fmt "$(get "$s" p50)" 2)" "$(fmt "$(get "$s" p99)" 2)" \
            "$(fmt "$(get "$s" down)" 1)" "$(fmt "$(get "$s" up)" 1)" \
            "$(nsamples "$s" rps)/$(nsamples "$s" down)/$(nsamples "$s" up)"
    done
    echo
    for pair in wss/plain tls/plain tls/wss plain/direct; do
        a=${pair%/*} b=${pair#*/}
        case " $SCENARIOS " in *" $a "*) ;; *) continue ;; esac
        case " $SCENARIOS " in *" $b "*) ;; *) continue ;; esac
        printf '%-12s %6s %9s %9s %11s %11s\n' "$pair" \
            "$(ratio "$(get "$a" rps)" "$(get "$b" rps)")" "$(ratio "$(get "$a" p50)" "$(get "$b" p50)")" \
            "$(ratio "$(get "$a" p99)" "$(get "$b" p99)")" "$(ratio "$(get "$a" down)" "$(get "$b" down)")" \
            "$(ratio "$(get "$a" up)" "$(get "$b" up)")"
    done
    echo "(ratios of medians; for req/s and MB/s higher is better, for latency lower)"
    echo
    warn=0
    for f in serve-plain serve-tls agent-plain agent-tls; do
        n=$(grep -cE '^[^ ]+ +(warn|error) ' "$tmp/$f.log" || true)
        warn=$((warn + n))
        if [ "$n" -gt 0 ]; then
            echo "$f logged $n warnings/errors, first ones:"
            grep -m5 -E '^[^ ]+ +(warn|error) ' "$tmp/$f.log" | sed 's/^/    /'
        fi
    done
    n=$(grep -cE '\[(warn|error|crit|alert|emerg)\]' "$tmp/ngx/error.log" || true)
    if [ "$n" -gt 0 ]; then
        echo "nginx logged $n warnings/errors, first ones:"
        grep -m5 -E '\[(warn|error|crit|alert|emerg)\]' "$tmp/ngx/error.log" | sed 's/^/    /'
    fi
    if [ "$nproblems" -gt 0 ]; then
        echo "problems ($nproblems):"
        sed 's/^/    /' "$tmp/problems"
    else
        echo "problems: none (all transfers 200 with exact sizes, no wrk errors; natwrp warnings: $warn)"
    fi
} >"$report"

echo
cat "$report"
if [ -n "$BENCH_OUT" ]; then
    mkdir -p "$(dirname "$BENCH_OUT")"
    cp "$report" "$BENCH_OUT"
    echo "(also written to $BENCH_OUT)"
fi
[ "$nproblems" -eq 0 ]
