#!/usr/bin/env bash
# scripts/bench.sh: natwrp against nginx, side by side in one run. Reports
# only: it never asserts timings or targets. `make bench` installs wrk and
# nginx, builds build/natwrp and runs this. Everything listens on 127.0.0.1.
# docs/benchmarks.md explains the method and holds the latest results.
#
# Paths (scenarios):
#   direct      wrk/curl -> nginx origin                            (reference)
#   nginx       -> nginx reverse proxy (one hop: upstream keepalive 64,
#                  proxy_http_version 1.1, Connection "", proxy_buffering off,
#                  proxy_request_buffering off) -> nginx origin
#   nginx2      as nginx, with worker_processes 2 (the origin unchanged): what
#                  nginx does with both cores; its CPU is the sum of its two
#                  workers
#   natwrp      --http--> serve A ==ws tunnel==> agent A -> nginx origin
#   natwrp-ops  as natwrp, through serve D + agent D that both run the admin
#                  listener (--admin) with the agent's inspector capturing,
#                  and a dashboard polling both every second during the run
#   natwrp-adm  as natwrp-ops through serve E + agent E, but with no
#                  dashboard open (what the listeners and the inspector's
#                  head capture cost when nobody looks)
#   natwrp-tls  --http--> serve B ==wss tunnel=> agent B -> nginx origin
#   tls         --https-> serve B ==wss tunnel=> agent B -> nginx origin
# (serve B has an https listener, which carries agent B's wss tunnel and the
# tls clients, and a plain http listener beside it for natwrp-tls.)
#
# Parts (BENCH_PARTS, default "cipher hold main hol stream", in this order;
# scale runs only when named):
#   cipher  single-core AEAD throughput of the mbedTLS natwrp links
#           (scripts/bench/cipher.c, built here with cc -O2 -lmbedcrypto):
#           AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 seal and open
#           over 16 KiB records, CIPHER_MIB MiB or CIPHER_SECS s of CPU each,
#           whichever comes first; reported beside the wss tunnel's MB/s and
#           the suite the natwrp-tls agent negotiated.
#   hold    open streams footprint: a fresh serve C + agent C in front of
#           scripts/bench/origin.py; HOLD_N (10000) requests held open at
#           once (a long poll); VmRSS of serve and agent idle and with them
#           all open, bytes per open stream.
#   main    interleaved rounds (direct nginx nginx2 natwrp natwrp-tls tls,
#           direct ...): per path a 1 KiB GET with wrk (req/s, p50, p99; and the CPU
#           time of the proxy and origin processes per 1000 requests), a
#           BIG_MIB GET and a BIG_MIB POST with curl (MB/s). VmRSS of every
#           proxy process idle (before this) and after it.
#   hol     head of line, natwrp, direct and nginx interleaved: small-request
#           p99 (wrk, HOL_CONNS connections) alone, then while one client
#           holds a HUGE_MIB download without reading and another downloads
#           BIG_MIB bodies back to back (direct: no proxy, that download
#           paced to the rate natwrp's reached in the round, the floor).
#   stream  streaming latency, direct to origin.py vs through serve C/agent
#           C, alone and beside a bulk download (through natwrp on the same
#           tunnel; direct on its own connection, paced to the rate the
#           tunnel reached): per-chunk delay of a response that sends a
#           chunk every STREAM_MS ms.
#   scale   (opt-in) several serve processes on one machine (docs/deploy.md):
#           serve S1 on a public port P plus its own agent port, agent S1 on
#           that port; ROUNDS wrk runs on P; then serve S2 binds P beside it
#           (SO_REUSEPORT) plus its own agent port, one agent with both
#           agent ports in REMOTE_URL replaces agent S1, and ROUNDS wrk runs
#           on P again: req/s with one and two processes, and the ratio. On
#           2 cores wrk, nginx, the agent and serve share them.
# The report (scripts/bench/report.py) shows medians over the rounds, ratios
# natwrp/nginx and natwrp/direct, and the issue's targets with PASS/MISS.
#
#   ROUNDS        rounds (default 3)
#   DURATION      each main wrk run (default 5s)
#   WRK_THREADS   wrk threads (default 2)
#   WRK_CONNS     wrk connections (default 64)
#   BIG_MIB       big download/upload in MiB (default 100)
#   HUGE_MIB      the stalled download's size in MiB (default 1024; a sparse file)
#   HOL_CONNS     wrk connections in the head-of-line runs (default 4)
#   HOL_DURATION  each head-of-line wrk run (default 5s)
#   HOLD_N        open streams to hold (default 10000; capped by RLIMIT_NOFILE)
#   STREAM_CHUNKS chunks per streaming run (default 150)
#   STREAM_MS     interval between chunks (default 20)
#   NGINX_WORKERS worker_processes of the origin and the nginx proxy (default
#                 1; nginx2 always runs 2)
#   SCENARIOS     subset/order of "direct nginx nginx2 natwrp natwrp-adm natwrp-ops
#                 natwrp-tls tls"
#   BENCH_PARTS   subset of "cipher hold main hol stream scale"
#   CIPHER_MIB    cipher part: MiB per suite and direction (default 512)
#   CIPHER_SECS   cipher part: CPU seconds cap per suite and direction (default 2)
#   CPU_SOURCE    auto (perf stat -e task-clock if it works, else /proc), perf, proc
#   NATWRP_BIN    binary (default build/natwrp)
#   BENCH_OUT     where the report is also written (default build/bench.txt;
#                 empty: nowhere)
# serve and the agents inherit the environment, so natwrp's own settings
# (POOL_SIZE, WINDOW, ...) apply to every pair; the report lists those set.
# LOG_LEVEL is forced to info: readiness is read from the logs.
#
# Exit status: 0 when every measurement succeeded, 1 if any failed (non-2xx,
# wrong sizes, wrk socket errors, a process that died, streams not held);
# the report is printed either way. Targets never change the exit status.
set -euo pipefail

cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-64}
BIG_MIB=${BIG_MIB:-100}
HUGE_MIB=${HUGE_MIB:-1024}
HOL_CONNS=${HOL_CONNS:-4}
HOL_DURATION=${HOL_DURATION:-5s}
HOLD_N=${HOLD_N:-10000}
STREAM_CHUNKS=${STREAM_CHUNKS:-150}
STREAM_MS=${STREAM_MS:-20}
NGINX_WORKERS=${NGINX_WORKERS:-1}
SCENARIOS=${SCENARIOS:-direct nginx nginx2 natwrp natwrp-adm natwrp-ops natwrp-tls tls}
BENCH_PARTS=${BENCH_PARTS:-cipher hold main hol stream}
CIPHER_MIB=${CIPHER_MIB:-512}
CIPHER_SECS=${CIPHER_SECS:-2}
CPU_SOURCE=${CPU_SOURCE:-auto}
BIN=${NATWRP_BIN:-build/natwrp}
BENCH_OUT=${BENCH_OUT-build/bench.txt}
PKI=build/pki
HERE=scripts/bench

die() { echo "bench: $*" >&2; exit 1; }

# --- preconditions ----------------------------------------------------------
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer (got '$2')"; }
posint ROUNDS "$ROUNDS"
posint BIG_MIB "$BIG_MIB"
posint HUGE_MIB "$HUGE_MIB"
posint WRK_THREADS "$WRK_THREADS"
posint WRK_CONNS "$WRK_CONNS"
posint HOL_CONNS "$HOL_CONNS"
posint HOLD_N "$HOLD_N"
posint STREAM_CHUNKS "$STREAM_CHUNKS"
posint STREAM_MS "$STREAM_MS"
posint NGINX_WORKERS "$NGINX_WORKERS"
posint CIPHER_MIB "$CIPHER_MIB"
posint CIPHER_SECS "$CIPHER_SECS"
secs_of() { # NAME VALUE -> seconds
    local s
    case $2 in
        *[0-9]s | *[0-9]) s=${2%s} ;;
        *[0-9]m) s=$((${2%m} * 60)) ;;
        *) die "$1 must look like 5s, 5 or 1m (got '$2')" ;;
    esac
    [[ $s =~ ^[0-9]+$ && $s -gt 0 ]] || die "$1 must be positive (got '$2')"
    echo "$s"
}
dur_s=$(secs_of DURATION "$DURATION")
hol_s=$(secs_of HOL_DURATION "$HOL_DURATION")
for s in $SCENARIOS; do
    case $s in direct | nginx | nginx2 | natwrp | natwrp-adm | natwrp-ops | natwrp-tls | tls) ;; *) die "unknown scenario '$s' in SCENARIOS" ;; esac
done
for p in $BENCH_PARTS; do
    case $p in cipher | hold | main | hol | stream | scale) ;; *) die "unknown part '$p' in BENCH_PARTS" ;; esac
done
case $CPU_SOURCE in auto | perf | proc) ;; *) die "CPU_SOURCE must be auto, perf or proc" ;; esac
has_part() { case " $BENCH_PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
has_scen() { case " $SCENARIOS " in *" $1 "*) return 0 ;; esac; return 1; }
[ -x "$BIN" ] || die "$BIN not built (run: make)"
for t in wrk nginx curl python3 openssl cmp timeout truncate; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (run: scripts/deps.sh --bench)"
done
BIG_BYTES=$((BIG_MIB * 1024 * 1024))
HUGE_BYTES=$((HUGE_MIB * 1024 * 1024))

# Open streams need about HOLD_N descriptors in each of the client, serve,
# the agent and the origin: raise the soft limit to the hard one (inherited
# by everything started below), and hold fewer streams if that is not enough.
hard_nofile=$(ulimit -Hn)
if [ "$hard_nofile" = unlimited ]; then hard_nofile=1048576; fi
ulimit -n "$hard_nofile" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
soft_nofile=$(ulimit -n)
[ "$soft_nofile" = unlimited ] && soft_nofile=1048576
HOLD_CAP=""
if [ $((HOLD_N + 100)) -gt "$soft_nofile" ]; then
    HOLD_CAP="RLIMIT_NOFILE is $soft_nofile (hard $hard_nofile): holding $((soft_nofile - 100)) streams, not $HOLD_N"
    HOLD_N=$((soft_nofile - 100))
    echo "bench: $HOLD_CAP" >&2
fi
HOLD_MAX=$((HOLD_N * 2 < 20000 ? 20000 : HOLD_N * 2))

# --- process bookkeeping ----------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/natwrp-bench.XXXXXX")
res="$tmp/res"
mkdir -p "$res"
pids=()          # our children: nginx masters, serves, agents, origin, clients
extra_pids=()    # nginx workers (children of a master, killed only if it was)
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

# jget FILE KEY: a top-level value of the JSON object on FILE's last line.
jget() {
    python3 -c 'import json,sys
try:
    v = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]).get(sys.argv[2], "")
except Exception:
    v = ""
print(v if not isinstance(v, (dict, list)) else json.dumps(v))' "$1" "$2"
}

rss_of() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
# rss3_of PID: "VmRSS RssAnon RssFile" in KiB.
rss3_of() {
    awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { print r, a, f }' \
        "/proc/$1/status" 2>/dev/null || true
}

nproblems=0
: >"$res/problems"
problem() {
    nproblems=$((nproblems + 1))
    printf '%s\n' "$*" >>"$res/problems"
    echo "bench: PROBLEM: $*" >&2
}
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$res/results.tsv"; } # section name metric value
: >"$res/results.tsv"

# --- fixtures ---------------------------------------------------------------
echo "bench: preparing fixtures in $tmp"
# A private copy of the binary: a rebuild of build/natwrp during the run
# (make test, a colleague) does not mix versions, and commands that stop
# "natwrp agent" processes by name elsewhere do not hit ours.
mkdir -p "$tmp/bin"
cp "$BIN" "$tmp/bin/natwrp-bench"
RUN_BIN="$tmp/bin/natwrp-bench"
BIN_SHA=$(sha256sum "$RUN_BIN" | cut -c1-12)
BIN_BUILT=$(date -u -r "$BIN" +%Y-%m-%dT%H:%M:%SZ)
rev=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
[ -n "$(git status --porcelain -- src 2>/dev/null)" ] && rev="$rev+dirty-src"
# A binary older than a source file was not built from what git shows.
if [ -n "$(find src -newer "$BIN" -name '*.[ch]' 2>/dev/null | head -n1)" ]; then
    rev="$rev, STALE: src/ has files newer than the binary"
    echo "bench: warning: $BIN is older than files in src/ (run make)" >&2
fi
need_tls=0
{ has_scen natwrp-tls || has_scen tls; } && has_part main && need_tls=1
if [ $need_tls = 1 ]; then
    sh test/mkpki.sh "$PKI" >/dev/null || die "test/mkpki.sh $PKI failed"
    for f in ca.pem server.pem server.key; do [ -s "$PKI/$f" ] || die "$PKI/$f missing"; done
fi
mkdir -p "$tmp/www" "$tmp/ngx-origin" "$tmp/ngx-proxy" "$tmp/ngx-proxy2"
# Run as root, nginx's workers switch to an unprivileged user (nobody): let
# them reach the fixtures (random bytes, nothing secret).
chmod 0755 "$tmp" "$tmp/www" "$tmp/ngx-origin" "$tmp/ngx-proxy" "$tmp/ngx-proxy2"
head -c 1024 /dev/urandom >"$tmp/www/small.bin"
head -c "$BIG_BYTES" /dev/urandom >"$tmp/www/big.bin"
# The stalled download: a sparse file, so it costs neither disk nor time.
truncate -s "$HUGE_BYTES" "$tmp/www/huge.bin"
chmod 0644 "$tmp/www/"*.bin
[ "$(stat -c %s "$tmp/www/big.bin")" = "$BIG_BYTES" ] || die "could not write the ${BIG_MIB} MiB file in $tmp"

# --- nginx: origin and reverse proxy ----------------------------------------
# Origin: /small.bin, /big.bin, /huge.bin are static files. POST /upload:
# nginx reads the whole body (kept in memory up to client_body_buffer_size),
# then asks its own /sink without the body, passing $content_length (the
# body bytes received), and answers 200 with that number.
conf_common() { # DIR [WORKERS]
    cat <<CONF
daemon off;
master_process on;
worker_processes ${2:-$NGINX_WORKERS};
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
CONF
}
conf_origin() { # DIR PORT
    conf_common "$1"
    cat <<CONF
    server {
        listen 127.0.0.1:$2;
        root $tmp/www;
        location = /upload {
            client_max_body_size 0;
            client_body_buffer_size $((BIG_MIB + 1))m;
            proxy_pass http://127.0.0.1:$2/sink;
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
}
# The one-hop reverse proxy natwrp is compared with: keep-alive upstream
# connections, no buffering either way (natwrp streams both ways too).
conf_proxy() { # DIR PORT [WORKERS]
    conf_common "$1" "${3:-}"
    cat <<CONF
    upstream origin {
        server 127.0.0.1:$NGX_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            client_max_body_size 0;
        }
    }
}
CONF
}
# nginx2: the same proxy with two workers, one per core.
conf_proxy2() { conf_proxy "$1" "$2" 2; }

# start_nginx NAME: on a free port (retried: someone may take it between
# free_port and bind). Sets NGX_STARTED_PORT, NGX_STARTED_PID, and the
# worker pids in NGX_STARTED_WORKERS.
start_nginx() {
    local name=$1 dir="$tmp/ngx-$1" attempt port pid code end
    for attempt in 1 2 3; do
        port=$(free_port)
        : >"$dir/error.log"
        "conf_$name" "$dir" "$port" >"$dir/nginx.conf"
        nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
        pid=$!
        pids+=("$pid")
        end=$((SECONDS + 10))
        while :; do
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/small.bin" || true)
            if [ "$code" = 200 ]; then
                NGX_STARTED_PORT=$port NGX_STARTED_PID=$pid
                NGX_STARTED_WORKERS=$(pgrep -P "$pid" | paste -sd, -)
                local w
                for w in ${NGX_STARTED_WORKERS//,/ }; do extra_pids+=("$w"); done
                return 0
            fi
            if [ -n "$code" ] && [ "$code" != 000 ]; then
                echo "bench: nginx $name on 127.0.0.1:$port answered $code for /small.bin; error.log:" >&2
                tail -n 5 "$dir/error.log" >&2 || true
                exit 1
            fi
            alive "$pid" || break
            if [ $SECONDS -ge $end ]; then
                echo "bench: nginx $name on 127.0.0.1:$port not answering after 10s; error.log:" >&2
                tail -n 20 "$dir/error.log" >&2 || true
                exit 1
            fi
            sleep 0.05
        done
        wait "$pid" 2>/dev/null || true
        echo "bench: nginx $name did not start on 127.0.0.1:$port (attempt $attempt):" >&2
        tail -n 5 "$dir/error.log" "$dir/stdout.log" >&2 || true
    done
    die "nginx $name would not start"
}
start_nginx origin
NGX_PORT=$NGX_STARTED_PORT NGX_PID=$NGX_STARTED_PID NGX_WORKERS=$NGX_STARTED_WORKERS
echo "bench: nginx origin on 127.0.0.1:$NGX_PORT (pid $NGX_PID, workers $NGX_WORKERS)"
start_nginx proxy
PX_PORT=$NGX_STARTED_PORT PX_PID=$NGX_STARTED_PID PX_WORKERS=$NGX_STARTED_WORKERS
echo "bench: nginx proxy on 127.0.0.1:$PX_PORT (pid $PX_PID, workers $PX_WORKERS)"
PX2_PORT="" PX2_PID="" PX2_WORKERS=""
if has_scen nginx2 && has_part main; then
    start_nginx proxy2
    PX2_PORT=$NGX_STARTED_PORT PX2_PID=$NGX_STARTED_PID PX2_WORKERS=$NGX_STARTED_WORKERS
    echo "bench: nginx proxy2 on 127.0.0.1:$PX2_PORT (pid $PX2_PID, workers $PX2_WORKERS)"
fi

# --- origin.py (long polls, streams) -----------------------------------------
PY_PORT="" PY_PID=""
if has_part hold || has_part stream; then
    python3 "$HERE/origin.py" >"$tmp/origin-py.log" 2>&1 &
    PY_PID=$!
    pids+=("$PY_PID")
    line=$(wait_log "$PY_PID" "$tmp/origin-py.log" '^origin listening [0-9]+' 10 "origin.py") || exit 1
    PY_PORT=${line##* }
    echo "bench: origin.py on 127.0.0.1:$PY_PORT (pid $PY_PID)"
fi

# --- natwrp pairs -------------------------------------------------------------
export LOG_LEVEL=info
# start_serve NAME ARGS...: sets SERVE_PID; ports are read from the log.
start_serve() {
    local name=$1
    shift
    "$RUN_BIN" serve "$@" >"$tmp/serve-$name.log" 2>&1 &
    SERVE_PID=$!
    pids+=("$SERVE_PID")
}
serve_port() { # PID NAME SCHEME
    local line
    line=$(wait_log "$1" "$tmp/serve-$2.log" "listening on $3://127\\.0\\.0\\.1:[0-9]+" 10 "serve ($2)") || exit 1
    line=${line##*:}
    [[ $line =~ ^[0-9]+$ ]] || die "could not read serve ($2)'s port from its log"
    echo "$line"
}
start_agent() { # NAME ENV... : sets AGENT_PID
    local name=$1
    shift
    env AGENT_ID="$name" "$@" "$RUN_BIN" agent --env /dev/null >"$tmp/agent-$name.log" 2>&1 &
    AGENT_PID=$!
    pids+=("$AGENT_PID")
}
wait_tunnel() { # NAME SERVE_PID AGENT_PID
    wait_log "$3" "$tmp/agent-$1.log" 'tunnel up' 15 "agent ($1)" >/dev/null || exit 1
    wait_log "$2" "$tmp/serve-$1.log" "tunnel open .*agent=$1( |\$)" 5 "serve ($1)" >/dev/null || exit 1
}

SERVE_A="" AGENT_A="" SERVE_B="" AGENT_B="" SERVE_C="" AGENT_C="" SERVE_D="" AGENT_D="" SERVE_E="" AGENT_E="" TLS_LINE=""
TLS_SUITE=""
if has_part main || has_part hol; then
    start_serve natwrp --listen http://127.0.0.1:0
    SERVE_A=$SERVE_PID
    PA=$(serve_port "$SERVE_A" natwrp http)
    start_agent natwrp REMOTE_URL="http://127.0.0.1:$PA" LOCAL_URL="http://127.0.0.1:$NGX_PORT"
    AGENT_A=$AGENT_PID
fi
admin_port() { # PID LOG NAME: the admin listener's port, from its log
    local line
    line=$(wait_log "$1" "$2" 'admin listening on http://127\.0\.0\.1:[0-9]+' 10 "admin ($3)") || exit 1
    echo "${line##*:}"
}
if has_scen natwrp-ops && { has_part main || has_part hol; }; then
    start_serve natwrp-ops --listen http://127.0.0.1:0 --admin 127.0.0.1:0
    SERVE_D=$SERVE_PID
    PD=$(serve_port "$SERVE_D" natwrp-ops http)
    start_agent natwrp-ops REMOTE_URL="http://127.0.0.1:$PD" LOCAL_URL="http://127.0.0.1:$NGX_PORT" \
        ADMIN_LISTEN=127.0.0.1:0 INSPECT=1
    AGENT_D=$AGENT_PID
    SD_ADMIN=$(admin_port "$SERVE_D" "$tmp/serve-natwrp-ops.log" serve)
    AD_ADMIN=$(admin_port "$AGENT_D" "$tmp/agent-natwrp-ops.log" agent)
fi
if has_scen natwrp-adm && { has_part main || has_part hol; }; then
    start_serve natwrp-adm --listen http://127.0.0.1:0 --admin 127.0.0.1:0
    SERVE_E=$SERVE_PID
    PE=$(serve_port "$SERVE_E" natwrp-adm http)
    start_agent natwrp-adm REMOTE_URL="http://127.0.0.1:$PE" LOCAL_URL="http://127.0.0.1:$NGX_PORT" \
        ADMIN_LISTEN=127.0.0.1:0 INSPECT=1
    AGENT_E=$AGENT_PID
fi
if [ $need_tls = 1 ]; then
    start_serve natwrp-tls --listen https://127.0.0.1:0 --listen http://127.0.0.1:0 \
        --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key"
    SERVE_B=$SERVE_PID
    PB_TLS=$(serve_port "$SERVE_B" natwrp-tls https)
    PB_HTTP=$(serve_port "$SERVE_B" natwrp-tls http)
    start_agent natwrp-tls REMOTE_URL="https://localhost:$PB_TLS" CA_FILE="$PKI/ca.pem" \
        LOCAL_URL="http://127.0.0.1:$NGX_PORT"
    AGENT_B=$AGENT_PID
fi
# Pair C, for open streams and streaming: limits raised above HOLD_N.
HOLD_SERVE_ARGS="--max-streams $HOLD_MAX --max-conns $HOLD_MAX --response-timeout 300"
HOLD_AGENT_ENV="MAX_LOCAL_CONNS=$HOLD_MAX"
if [ -n "$PY_PORT" ]; then
    # shellcheck disable=SC2086
    start_serve hold --listen http://127.0.0.1:0 $HOLD_SERVE_ARGS
    SERVE_C=$SERVE_PID
    PC=$(serve_port "$SERVE_C" hold http)
    start_agent hold REMOTE_URL="http://127.0.0.1:$PC" LOCAL_URL="http://127.0.0.1:$PY_PORT" "$HOLD_AGENT_ENV"
    AGENT_C=$AGENT_PID
fi
[ -n "$SERVE_A" ] && wait_tunnel natwrp "$SERVE_A" "$AGENT_A"
if [ -n "$SERVE_B" ]; then
    wait_tunnel natwrp-tls "$SERVE_B" "$AGENT_B"
    TLS_LINE=$(grep -m1 -oE 'tls: connected to .*' "$tmp/agent-natwrp-tls.log" || echo "tls: ?")
    TLS_SUITE=$(grep -m1 -oE 'tls: cipher suite [A-Z0-9-]+' "$tmp/agent-natwrp-tls.log" | awk '{print $NF}' || true)
fi
[ -n "$SERVE_C" ] && wait_tunnel hold "$SERVE_C" "$AGENT_C"
[ -n "$SERVE_D" ] && wait_tunnel natwrp-ops "$SERVE_D" "$AGENT_D"
[ -n "$SERVE_E" ] && wait_tunnel natwrp-adm "$SERVE_E" "$AGENT_E"
[ -n "$SERVE_A" ] && echo "bench: natwrp:     serve http://127.0.0.1:$PA (pid $SERVE_A), agent pid $AGENT_A"
[ -n "$SERVE_B" ] && echo "bench: natwrp-tls: serve https://127.0.0.1:$PB_TLS + http://127.0.0.1:$PB_HTTP (pid $SERVE_B), agent pid $AGENT_B ($TLS_LINE)"
[ -n "$SERVE_C" ] && echo "bench: hold:       serve http://127.0.0.1:$PC (pid $SERVE_C), agent pid $AGENT_C -> origin.py"

# Every process we started must still be running.
check_alive() {
    local what pid log rc
    for what in "serve-natwrp:$SERVE_A" "agent-natwrp:$AGENT_A" "serve-natwrp-tls:$SERVE_B" \
        "agent-natwrp-tls:$AGENT_B" "serve-hold:$SERVE_C" "agent-hold:$AGENT_C" \
        "serve-natwrp-ops:$SERVE_D" "agent-natwrp-ops:$AGENT_D" "serve-natwrp-adm:$SERVE_E" \
        "agent-natwrp-adm:$AGENT_E" "nginx-origin:$NGX_PID" "nginx-proxy:$PX_PID" \
        "nginx-proxy2:$PX2_PID" "origin-py:$PY_PID"; do
        pid=${what#*:}
        what=${what%%:*}
        [ -n "$pid" ] || continue
        if ! alive "$pid"; then
            case $what in
                nginx-*) log="$tmp/ngx-${what#nginx-}/error.log" ;;
                *) log="$tmp/$what.log" ;;
            esac
            echo "bench: $what (pid $pid) died; its log:" >&2
            tail -n 30 "$log" >&2 || true
            wait "$pid" 2>/dev/null && rc=0 || rc=$?
            die "$what exited (status $rc) during the benchmark"
        fi
    done
}

# --- idle footprint -------------------------------------------------------------
sleep 1
rss_sample() { # WHEN
    local k pid w sum r a f
    for k in "serve-natwrp:$SERVE_A" "agent-natwrp:$AGENT_A" "serve-natwrp-tls:$SERVE_B" \
        "agent-natwrp-tls:$AGENT_B" "serve-hold:$SERVE_C" "agent-hold:$AGENT_C" \
        "serve-natwrp-ops:$SERVE_D" "agent-natwrp-ops:$AGENT_D" "serve-natwrp-adm:$SERVE_E" \
        "agent-natwrp-adm:$AGENT_E"; do
        pid=${k#*:}
        [ -n "$pid" ] || continue
        read -r r a f <<<"$(rss3_of "$pid")"
        [ -n "$r" ] && record rss "${k%%:*}" "$1" "$r"
        [ -n "$a" ] && record rss "${k%%:*}" "$1_anon" "$a"
        [ -n "$f" ] && record rss "${k%%:*}" "$1_file" "$f"
    done
    for k in "nginx-proxy:$PX_WORKERS" "nginx-proxy2:$PX2_WORKERS" "nginx-origin:$NGX_WORKERS"; do
        [ -n "${k#*:}" ] || continue
        sum=0
        for w in $(echo "${k#*:}" | tr , ' '); do sum=$((sum + $(rss_of "$w"))); done
        record rss "${k%%:*}" "$1" "$sum"
    done
}
rss_sample idle
check_alive

# --- scenarios ----------------------------------------------------------------
# scen NAME: sets WRK_URL (base for wrk), CURL_URL (base for curl), the array
# CX (extra curl arguments) and CPU_ROLES ("role:pid,pid ...") for the CPU
# accounting of the wrk run.
scen() {
    CX=()
    case $1 in
        direct)
            WRK_URL="http://127.0.0.1:$NGX_PORT"
            CPU_ROLES="origin:$NGX_WORKERS"
            ;;
        nginx)
            WRK_URL="http://127.0.0.1:$PX_PORT"
            CPU_ROLES="proxy:$PX_WORKERS origin:$NGX_WORKERS"
            ;;
        nginx2)
            # proxy: both workers' CPU, summed (perf stat -p PID,PID).
            WRK_URL="http://127.0.0.1:$PX2_PORT"
            CPU_ROLES="proxy:$PX2_WORKERS origin:$NGX_WORKERS"
            ;;
        natwrp)
            WRK_URL="http://127.0.0.1:$PA"
            CPU_ROLES="serve:$SERVE_A agent:$AGENT_A origin:$NGX_WORKERS"
            ;;
        natwrp-adm)
            WRK_URL="http://127.0.0.1:$PE"
            CPU_ROLES="serve:$SERVE_E agent:$AGENT_E origin:$NGX_WORKERS"
            ;;
        natwrp-ops)
            WRK_URL="http://127.0.0.1:$PD"
            CPU_ROLES="serve:$SERVE_D agent:$AGENT_D origin:$NGX_WORKERS"
            ;;
        natwrp-tls)
            WRK_URL="http://127.0.0.1:$PB_HTTP"
            CPU_ROLES="serve:$SERVE_B agent:$AGENT_B origin:$NGX_WORKERS"
            ;;
        tls)
            # wrk does not verify certificates; curl does, by name.
            WRK_URL="https://127.0.0.1:$PB_TLS"
            CURL_URL="https://localhost:$PB_TLS"
            CX=(--cacert "$PKI/ca.pem" --resolve "localhost:$PB_TLS:127.0.0.1")
            CPU_ROLES="serve:$SERVE_B agent:$AGENT_B origin:$NGX_WORKERS"
            return
            ;;
    esac
    CURL_URL=$WRK_URL
}

# --- CPU accounting -------------------------------------------------------------
# cpu_begin "role:pid,pid ..." ... cpu_end: prints "role ms" lines, the CPU
# time each role's processes used in between. perf stat -e task-clock when
# it works (CPU_SOURCE=auto|perf), else utime+stime from /proc/PID/stat.
CLK_TCK=$(getconf CLK_TCK)
ticks_of() { # pid,pid -> utime+stime ticks summed
    local p st sum=0 f
    for p in ${1//,/ }; do
        st=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        st=${st##*) }
        read -ra f <<<"$st"
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}
USE_PERF=0
if [ "$CPU_SOURCE" != proc ] && command -v perf >/dev/null 2>&1; then
    if out=$(perf stat -e task-clock -x, -p "$NGX_PID" -- sleep 0.1 2>&1) && grep -q 'task-clock' <<<"$out"; then
        USE_PERF=1
    fi
fi
[ "$CPU_SOURCE" = perf ] && [ $USE_PERF = 0 ] && die "CPU_SOURCE=perf but perf stat -e task-clock -p does not work here"
if [ $USE_PERF = 1 ]; then
    CPU_LABEL="perf stat -e task-clock -p PID ($(perf --version 2>&1 | head -n1))"
else
    CPU_LABEL="utime+stime from /proc/PID/stat (CLK_TCK $CLK_TCK)"
fi
cpu_begin() {
    local rp role p
    CPU_STATE=()
    for rp in $1; do
        role=${rp%%:*}
        p=${rp#*:}
        if [ $USE_PERF = 1 ]; then
            perf stat -e task-clock -x, -o "$tmp/perf.$role" -p "$p" >/dev/null 2>&1 &
            CPU_STATE+=("$role:$!")
            pids+=("$!")
        else
            CPU_STATE+=("$role:$p:$(ticks_of "$p")")
        fi
    done
    [ $USE_PERF = 1 ] && sleep 0.2   # let perf attach
    return 0
}
# wait_bounded PID SECS: wait for a child, KILLing it after SECS.
wait_bounded() {
    local end=$((SECONDS + $2))
    while alive "$1" && [ $SECONDS -lt $end ]; do sleep 0.05; done
    alive "$1" && kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
cpu_end() {
    local e role rest p t0 v
    for e in "${CPU_STATE[@]}"; do
        role=${e%%:*}
        rest=${e#*:}
        if [ $USE_PERF = 1 ]; then
            kill -INT "$rest" 2>/dev/null || true
            wait_bounded "$rest" 5 || true
            # "<not counted>" (the process never ran) counts as 0.
            v=$(awk -F, '$3 == "task-clock" { print ($1 ~ /^[0-9.]+$/) ? $1 : 0; exit }' "$tmp/perf.$role" 2>/dev/null || true)
            echo "$role ${v:-}"
        else
            p=${rest%:*}
            t0=${rest##*:}
            echo "$role $((($(ticks_of "$p") - t0) * 1000 / CLK_TCK))"
        fi
    done
}

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

# wrk_run WHAT OUT SECS ARGS...: runs wrk (given SECS + 60 s at most), parses
# W_RPS W_P50 W_P99 W_REQ; returns 1 (after recording a problem) if it failed
# or its output makes no sense. Non-2xx answers and socket errors are
# problems, but the numbers are kept.
wrk_run() {
    local what=$1 out=$2 limit=$(($3 + 60)) rc=0 n2xx serr
    shift 3
    W_RPS="" W_P50="" W_P99="" W_REQ=""
    timeout "$limit" wrk "$@" >"$out" 2>&1 || rc=$?
    if [ $rc -ne 0 ]; then
        problem "$what: wrk exit status $rc: $(tail -n 3 "$out" | tr '\n' ' ')"
        return 1
    fi
    W_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    W_P50=$(awk '$1 == "50%" { print $2 }' "$out" | to_ms)
    W_P99=$(awk '$1 == "99%" { print $2 }' "$out" | to_ms)
    W_REQ=$(awk '/ requests in / { print $1; exit }' "$out")
    n2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$out")
    serr=$(grep -m1 'Socket errors' "$out" | sed 's/^ *//' || true)
    if [ -z "$W_RPS" ] || [ -z "$W_P50" ] || [ -z "$W_P99" ] || [ -z "$W_REQ" ]; then
        problem "$what: could not parse wrk's output: $(tr '\n' ' ' <"$out" | head -c 300)"
        return 1
    fi
    [ -n "$n2xx" ] && problem "$what: wrk saw $n2xx non-2xx/3xx responses"
    [ -n "$serr" ] && problem "$what: wrk $serr"
    return 0
}

# --- sanity pass (also a warm-up): the right bytes through every path ----------
sanity_scens=""
has_part main && sanity_scens=$SCENARIOS
if has_part hol; then
    for s in nginx natwrp; do case " $sanity_scens " in *" $s "*) ;; *) sanity_scens="$sanity_scens $s" ;; esac; done
fi
echo "bench: checking every path returns the right bytes"
for s in $sanity_scens; do
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
if [ -n "$SERVE_C" ]; then
    for base in "http://127.0.0.1:$PY_PORT" "http://127.0.0.1:$PC"; do
        code=$(curl -sS --max-time 30 -o "$tmp/small.got" -w '%{http_code} %{size_download}' "$base/small") ||
            die "GET $base/small failed"
        [ "$code" = "200 1024" ] || die "GET $base/small: $code (want 200 1024)"
    done
fi
check_alive
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# --- part: cipher (single-core AEAD throughput) ------------------------------------
# The ceiling the wss tunnel is read against: each end of the tunnel seals
# or opens every byte once, on one core.
if has_part cipher; then
    echo "bench: cipher: AEAD seal/open over 16 KiB records (${CIPHER_MIB} MiB or ${CIPHER_SECS} s CPU each)"
    if cc -O2 -o "$tmp/bin/cipher" "$HERE/cipher.c" -lmbedcrypto 2>"$tmp/cipher.err"; then
        if timeout $((CIPHER_SECS * 6 * 4 + 30)) "$tmp/bin/cipher" 16384 "$CIPHER_MIB" "$CIPHER_SECS" \
            >"$tmp/cipher.out" 2>>"$tmp/cipher.err"; then
            while read -r kind name dir mbps _; do
                case $kind in
                    cipher) record cipher "$name" "$dir" "$mbps" ;;
                    aesni) record cipher aesni have "$name" ;;
                esac
            done <"$tmp/cipher.out"
            sed 's/^/bench: cipher: /' "$tmp/cipher.out"
        else
            problem "cipher: scripts/bench/cipher.c failed: $(tr '\n' ' ' <"$tmp/cipher.err")"
        fi
    else
        problem "cipher: cc scripts/bench/cipher.c -lmbedcrypto failed: $(head -c 300 "$tmp/cipher.err" | tr '\n' ' ')"
    fi
fi

# --- part: hold (open streams footprint) -------------------------------------------
if has_part hold; then
    echo "bench: holding $HOLD_N requests open through serve C/agent C"
    rc=0
    timeout 300 python3 "$HERE/clients.py" hold --target "127.0.0.1:$PC" --control "127.0.0.1:$PY_PORT" \
        --n "$HOLD_N" --pid serve="$SERVE_C" --pid agent="$AGENT_C" >"$res/hold.json" 2>"$tmp/hold.err" || rc=$?
    if [ $rc -ne 0 ]; then
        err=$(jget "$res/hold.json" error)
        problem "open streams: clients.py hold exit status $rc: ${err:-$(tail -n 3 "$tmp/hold.err" | tr '\n' ' ')}"
    fi
    echo "bench: held $(jget "$res/hold.json" held) of $HOLD_N: during $(jget "$res/hold.json" during)"
    check_alive
fi

# --- part: main (interleaved rounds) -------------------------------------------------
# A dashboard open on both admin listeners of pair D: what a browser polls
# every second (its own CPU is not counted; natwrp's answering it is).
dashboard_poll() {
    while :; do
        curl -s -o /dev/null "http://127.0.0.1:$AD_ADMIN/api/status"
        curl -s -o /dev/null "http://127.0.0.1:$AD_ADMIN/api/requests"
        curl -s -o /dev/null "http://127.0.0.1:$SD_ADMIN/api/status"
        curl -s -o /dev/null "http://127.0.0.1:$SD_ADMIN/metrics"
        sleep 1
    done
}
run_main_wrk() { # scenario round
    local s=$1 role ms poller="" ok=1
    [ "$s" = natwrp-ops ] && { dashboard_poll & poller=$!; }
    cpu_begin "$CPU_ROLES"
    wrk_run "$s round $2" "$tmp/wrk.$1.$2.out" "$dur_s" -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$DURATION" \
        --latency --timeout 10s "$WRK_URL/small.bin" || ok=0
    [ -n "$poller" ] && { kill "$poller" 2>/dev/null; wait "$poller" 2>/dev/null || true; }
    if [ $ok = 0 ]; then
        cpu_end >/dev/null
        return 0
    fi
    cpu_end >"$tmp/cpu.out"
    record main "$s" rps "$W_RPS"
    record main "$s" p50 "$W_P50"
    record main "$s" p99 "$W_P99"
    while read -r role ms; do
        [ -n "$ms" ] && [ "$W_REQ" -gt 0 ] &&
            record cpu "$s" "$role" "$(awk -v m="$ms" -v n="$W_REQ" 'BEGIN { printf "%.3f", m * 1000 / n }')"
    done <"$tmp/cpu.out"
    WRK_SUMMARY=$(printf '%.0f req/s p50 %.2f ms p99 %.2f ms' "$W_RPS" "$W_P50" "$W_P99")
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
    record main "$s" down "$speed"
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
    record main "$s" up "$speed"
    UP_SUMMARY="up $speed MB/s"
}

if has_part main; then
    echo "bench: $ROUNDS rounds of: $SCENARIOS (wrk -t$WRK_THREADS -c$WRK_CONNS -d$DURATION; ${BIG_MIB} MiB down/up)"
    for r in $(seq 1 "$ROUNDS"); do
        for s in $SCENARIOS; do
            scen "$s"
            WRK_SUMMARY="wrk failed" DOWN_SUMMARY="down failed" UP_SUMMARY="up failed"
            run_main_wrk "$s" "$r"
            check_alive
            run_down "$s" "$r"
            check_alive
            run_up "$s" "$r"
            check_alive
            printf 'round %d/%d %-10s  %s, %s, %s\n' "$r" "$ROUNDS" "$s" "$WRK_SUMMARY" "$DOWN_SUMMARY" "$UP_SUMMARY"
        done
    done
    rss_sample load
fi

# --- part: hol (head of line) -----------------------------------------------------
: >"$res/notes"
hol_wrk() { # scenario round alone|load base
    if wrk_run "hol $1 round $2 ($3)" "$tmp/wrk.hol.$1.$2.$3.out" "$hol_s" -t1 -c"$HOL_CONNS" -d"$HOL_DURATION" \
        --latency --timeout 10s "$4/small.bin"; then
        local k=idle
        [ "$3" = load ] && k=load
        record hol "$1" "p99_$k" "$W_P99"
        record hol "$1" "p50_$k" "$W_P50"
        record hol "$1" "rps_$k" "$W_RPS"
        HOL_SUMMARY="$HOL_SUMMARY $3: p50 $W_P50 p99 $W_P99 ms;"
    fi
}
run_hol() { # scenario round
    local s=$1 r=$2 base spid bpid rc mbps err alive_end pace
    case $s in
        direct) base="http://127.0.0.1:$NGX_PORT" ;;
        nginx) base="http://127.0.0.1:$PX_PORT" ;;
        natwrp) base="http://127.0.0.1:$PA" ;;
    esac
    HOL_SUMMARY=""
    hol_wrk "$s" "$r" alone "$base"
    check_alive
    python3 "$HERE/clients.py" stall --url "$base/huge.bin" --secs $((hol_s + 30)) >"$tmp/stall.out" 2>&1 &
    spid=$!
    pids+=("$spid")
    if ! wait_log "$spid" "$tmp/stall.out" '^stalled' 15 "stalled reader" >/dev/null; then
        problem "hol $s round $r: the stalled reader did not get its response head: $(tr '\n' ' ' <"$tmp/stall.out")"
        kill -TERM "$spid" 2>/dev/null || true
        wait_bounded "$spid" 5 || true
        return 0
    fi
    pace=()
    [ "$s" = direct ] && [ -n "$HOL_TUNNEL_MBPS" ] && pace=(--rate "$HOL_TUNNEL_MBPS")
    python3 "$HERE/clients.py" bulk --url "$base/big.bin" --secs $((hol_s + 2)) --bytes "$BIG_BYTES" \
        "${pace[@]}" >"$tmp/bulk.out" 2>&1 &
    bpid=$!
    pids+=("$bpid")
    sleep 0.5
    hol_wrk "$s" "$r" load "$base"
    rc=0
    wait_bounded "$bpid" $((hol_s + 30)) || rc=$?
    err=$(jget "$tmp/bulk.out" error)
    mbps=$(jget "$tmp/bulk.out" mbps)
    if [ $rc -ne 0 ] || [ -n "$err" ] || [ -z "$mbps" ]; then
        problem "hol $s round $r: bulk download: status $rc ${err:-$(tail -n 2 "$tmp/bulk.out" | tr '\n' ' ')}"
    else
        record hol "$s" bulk "$mbps"
        [ "$s" = natwrp ] && HOL_TUNNEL_MBPS=$mbps
    fi
    kill -TERM "$spid" 2>/dev/null || true
    rc=0
    wait_bounded "$spid" 10 || rc=$?
    alive_end=$(jget "$tmp/stall.out" alive_at_end)
    if [ $rc -ne 0 ]; then
        problem "hol $s round $r: stalled reader: status $rc: $(tail -n 2 "$tmp/stall.out" | tr '\n' ' ')"
    elif [ "$alive_end" != True ]; then
        echo "hol $s round $r: the stalled download's connection was closed by the proxy before the client let go" >>"$res/notes"
    fi
    check_alive
    printf 'hol round %d/%d %-7s %s bulk %s MB/s\n' "$r" "$ROUNDS" "$s" "$HOL_SUMMARY" "${mbps:-?}"
}
if has_part hol; then
    echo "bench: head of line: wrk -t1 -c$HOL_CONNS -d$HOL_DURATION alone, then beside a stalled ${HUGE_MIB} MiB download and ${BIG_MIB} MiB downloads"
    for r in $(seq 1 "$ROUNDS"); do
        HOL_TUNNEL_MBPS=""
        for s in natwrp direct nginx; do run_hol "$s" "$r"; done
    done
fi

# --- part: stream (streaming latency) ------------------------------------------------
stream_s=$(((STREAM_CHUNKS * STREAM_MS + 999) / 1000))
# The bulk download beside a direct stream is paced to the rate the tunnel
# reached in the same round (natwrp runs first), so that both runs load the
# CPUs alike: unpaced, the direct one moves ten times the bytes.
run_stream() { # direct|natwrp idle|bulk round
    local c=$1 load=$2 r=$3 base bpid="" rc=0 err mbps pace=()
    case $c in
        direct) base="http://127.0.0.1:$PY_PORT" ;;
        natwrp) base="http://127.0.0.1:$PC" ;;
    esac
    if [ "$load" = bulk ]; then
        [ "$c" = direct ] && [ -n "$STREAM_TUNNEL_MBPS" ] && pace=(--rate "$STREAM_TUNNEL_MBPS")
        python3 "$HERE/clients.py" bulk --url "$base/big?bytes=$BIG_BYTES" --secs $((stream_s + 2)) \
            --bytes "$BIG_BYTES" "${pace[@]}" >"$tmp/sbulk.out" 2>&1 &
        bpid=$!
        pids+=("$bpid")
        sleep 0.5
    fi
    timeout $((stream_s + 60)) python3 "$HERE/clients.py" stream \
        --url "$base/stream?n=$STREAM_CHUNKS&ms=$STREAM_MS" --out "$res/stream.$c.$load.$r" \
        --expect "$STREAM_CHUNKS" >"$tmp/stream.out" 2>&1 || rc=$?
    if [ $rc -ne 0 ]; then
        problem "stream $c $load round $r: status $rc: $(tail -n 2 "$tmp/stream.out" | tr '\n' ' ')"
        rm -f "$res/stream.$c.$load.$r"
    fi
    STREAM_SUMMARY="$STREAM_SUMMARY $c/$load p50 $(jget "$tmp/stream.out" p50_ms | cut -c1-5) p99 $(jget "$tmp/stream.out" p99_ms | cut -c1-5);"
    if [ -n "$bpid" ]; then
        rc=0
        wait_bounded "$bpid" $((stream_s + 30)) || rc=$?
        err=$(jget "$tmp/sbulk.out" error)
        mbps=$(jget "$tmp/sbulk.out" mbps)
        if [ $rc -ne 0 ] || [ -n "$err" ] || [ -z "$mbps" ]; then
            problem "stream $c round $r: bulk download: status $rc ${err:-$(tail -n 2 "$tmp/sbulk.out" | tr '\n' ' ')}"
        else
            record stream "$c" bulk "$mbps"
            [ "$c" = natwrp ] && STREAM_TUNNEL_MBPS=$mbps
        fi
    fi
    check_alive
}
if has_part stream; then
    echo "bench: streaming latency: $STREAM_CHUNKS chunks every $STREAM_MS ms, direct vs natwrp, alone and beside a bulk download"
    for r in $(seq 1 "$ROUNDS"); do
        STREAM_SUMMARY="" STREAM_TUNNEL_MBPS=""
        run_stream direct idle "$r"
        run_stream natwrp idle "$r"
        run_stream natwrp bulk "$r"
        run_stream direct bulk "$r"
        printf 'stream round %d/%d (ms):%s\n' "$r" "$ROUNDS" "$STREAM_SUMMARY"
    done
fi
check_alive

# --- part: scale (one and two serve processes on one public port) ------------------
if has_part scale; then
    SP=$(free_port)
    SA1=$(free_port)
    SA2=$(free_port)
    start_serve scale1 --listen "http://127.0.0.1:$SP" --listen "http://127.0.0.1:$SA1"
    SERVE_S1=$SERVE_PID
    start_agent scale1 REMOTE_URL="http://127.0.0.1:$SA1" LOCAL_URL="http://127.0.0.1:$NGX_PORT"
    AGENT_S1=$AGENT_PID
    wait_tunnel scale1 "$SERVE_S1" "$AGENT_S1"
    scale_wrk() { # one|two round
        wrk_run "scale $1 round $2" "$tmp/wrk.scale.$1.$2.out" "$dur_s" -t"$WRK_THREADS" \
            -c"$WRK_CONNS" -d"$DURATION" --latency --timeout 10s "http://127.0.0.1:$SP/small.bin" &&
            record scale "$1" rps "$W_RPS" &&
            printf 'scale %s process(es) round %d/%d: %.0f req/s\n' "$1" "$2" "$ROUNDS" "$W_RPS"
    }
    echo "bench: scale: one serve process on 127.0.0.1:$SP"
    for r in $(seq 1 "$ROUNDS"); do scale_wrk one "$r" || true; done
    start_serve scale2 --listen "http://127.0.0.1:$SP" --listen "http://127.0.0.1:$SA2"
    SERVE_S2=$SERVE_PID
    # One agent for both, as docs/deploy.md says: every agent port in
    # REMOTE_URL. It replaces agent S1 (which drains on SIGTERM).
    start_agent scale REMOTE_URL="http://127.0.0.1:$SA1,http://127.0.0.1:$SA2" \
        LOCAL_URL="http://127.0.0.1:$NGX_PORT"
    AGENT_S2=$AGENT_PID
    wait_log "$SERVE_S1" "$tmp/serve-scale1.log" 'tunnel open .*agent=scale( |$)' 15 "serve (scale1)" >/dev/null || exit 1
    wait_log "$SERVE_S2" "$tmp/serve-scale2.log" 'tunnel open .*agent=scale( |$)' 15 "serve (scale2)" >/dev/null || exit 1
    kill -TERM "$AGENT_S1" 2>/dev/null || true
    wait_bounded "$AGENT_S1" 40 || problem "scale: agent S1 did not exit after SIGTERM"
    echo "bench: scale: two serve processes on 127.0.0.1:$SP (SO_REUSEPORT)"
    for r in $(seq 1 "$ROUNDS"); do scale_wrk two "$r" || true; done
    for pid in "$SERVE_S1" "$SERVE_S2" "$AGENT_S2"; do
        alive "$pid" || problem "scale: process $pid died during the runs"
    done
    # Both processes took requests (the kernel spread the connections).
    for nm in scale1 scale2; do
        grep -q "tunnel open" "$tmp/serve-$nm.log" || problem "scale: serve $nm never held a tunnel"
    done
fi

# --- report -----------------------------------------------------------------------
{
    for f in serve-natwrp agent-natwrp serve-natwrp-tls agent-natwrp-tls serve-hold agent-hold; do
        [ -f "$tmp/$f.log" ] || continue
        n=$(grep -cE '^[^ ]+ +(warn|error) ' "$tmp/$f.log" || true)
        if [ "$n" -gt 0 ]; then
            echo "$f logged $n warnings/errors, first ones:"
            grep -m5 -E '^[^ ]+ +(warn|error) ' "$tmp/$f.log" | sed 's/^/    /'
        fi
    done
    for f in origin proxy proxy2; do
        [ -f "$tmp/ngx-$f/error.log" ] || continue
        n=$(grep -cE '\[(warn|error|crit|alert|emerg)\]' "$tmp/ngx-$f/error.log" || true)
        if [ "$n" -gt 0 ]; then
            echo "nginx $f logged $n warnings/errors, first ones:"
            grep -m5 -E '\[(warn|error|crit|alert|emerg)\]' "$tmp/ngx-$f/error.log" | sed 's/^/    /'
        fi
    done
    if [ -s "$tmp/origin-py.log" ] && grep -q 'Traceback\|Error' "$tmp/origin-py.log"; then
        echo "origin.py logged errors, first lines:"
        grep -m5 -B2 'Traceback\|Error' "$tmp/origin-py.log" | sed 's/^/    /'
    fi
    if [ -s "$res/notes" ]; then
        echo "notes:"
        sed 's/^/    /' "$res/notes"
    fi
} >"$res/logsum"

cpu=$(grep -m1 -E '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
settings=""
for v in POOL_SIZE WINDOW MAX_HEAD PING_INTERVAL CONNECT_TIMEOUT RESPONSE_TIMEOUT MAX_LOCAL_CONNS LOCAL_QUEUE; do
    [ -n "${!v:-}" ] && settings="$settings $v=${!v}"
done
{
    echo "started=$started"
    echo "machine=$(nproc) CPUs, ${cpu:-unknown CPU}, $(uname -srm), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "natwrp=$BIN (git $rev, built $BIN_BUILT, sha256 $BIN_SHA, run as a private copy)${TLS_LINE:+; $TLS_LINE}"
    echo "tools=$(nginx -v 2>&1 | sed 's/.*: //') (worker_processes $NGINX_WORKERS each), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}'), $(curl --version | head -n1 | awk '{print $1, $2}'), Python $(python3 -c 'import platform; print(platform.python_version())')"
    echo "cpu_source=$CPU_LABEL"
    echo "tls_suite=$TLS_SUITE"
    [ -s "$tmp/cipher.out" ] && echo "cipher_lib=mbedTLS $(awk '$1 == "mbedtls" { print $2 }' "$tmp/cipher.out")"
    echo "rounds=$ROUNDS"
    echo "scenarios=$SCENARIOS"
    echo "wrk=-t$WRK_THREADS -c$WRK_CONNS -d$DURATION"
    echo "hol_wrk=-t1 -c$HOL_CONNS -d$HOL_DURATION"
    echo "big_mib=$BIG_MIB"
    echo "huge_mib=$HUGE_MIB"
    echo "stream_ms=$STREAM_MS"
    echo "settings=${settings:-defaults (POOL_SIZE 64, WINDOW 262144, MAX_LOCAL_CONNS 256, --max-streams 1000)}"
    echo "hold_settings=serve $HOLD_SERVE_ARGS; agent $HOLD_AGENT_ENV, POOL_SIZE ${POOL_SIZE:-64}; RLIMIT_NOFILE $soft_nofile${HOLD_CAP:+; $HOLD_CAP}"
} >"$res/meta.txt"

report="$tmp/report"
python3 "$HERE/report.py" "$res" >"$report" || die "scripts/bench/report.py failed"
echo
cat "$report"
if [ -n "$BENCH_OUT" ]; then
    mkdir -p "$(dirname "$BENCH_OUT")"
    cp "$report" "$BENCH_OUT"
    echo "(also written to $BENCH_OUT)"
fi
[ "$nproblems" -eq 0 ]
