#!/usr/bin/env bash
# scripts/demo.sh: run natwrp end to end on loopback: a demo local service
# (test/origin.py), `natwrp serve` on 127.0.0.1:$DEMO_PORT (default 8000) and
# an agent joining them. Prints the URL to try and stays in the foreground,
# showing serve's and the agent's logs, until Ctrl-C.
#
#   DEMO_PORT   public port (default 8000)
#   NATWRP_BIN  binary (default build/natwrp; `make demo` builds it)
set -euo pipefail

cd "$(dirname "$0")/.."
PORT=${DEMO_PORT:-8000}
BIN=${NATWRP_BIN:-build/natwrp}
[ -x "$BIN" ] || { echo "demo: $BIN not built (run: make)" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
    trap - INT TERM EXIT
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo; echo "demo: stopping"; exit 0' INT TERM

# read_until FD PATTERN SECONDS PREFIX: echo lines from FD (prefixed) until
# one matches PATTERN; fails on EOF or when SECONDS pass.
read_until() {
    local fd=$1 pat=$2 secs=$3 prefix=$4 line end=$((SECONDS + $3))
    while [ $SECONDS -lt $end ]; do
        if ! IFS= read -r -t $((end - SECONDS)) -u "$fd" line; then
            return 1
        fi
        echo "$prefix $line"
        if [[ $line =~ $pat ]]; then
            MATCH=("${BASH_REMATCH[@]}")
            return 0
        fi
    done
    return 1
}

# 1. The local service, on a free port.
mkfifo "$tmp/origin.out"
python3 test/origin.py --port 0 --name demo >"$tmp/origin.out" 2>"$tmp/origin.log" &
pids+=($!)
exec 5<"$tmp/origin.out"
read_until 5 '^origin listening ([0-9]+)$' 10 "[local]" || {
    echo "demo: the demo service did not start" >&2; exit 1; }
LOCAL_PORT=${MATCH[1]}
exec 5<&-

# 2. The public side. A fresh token, so only our agent may open a tunnel
# (without one, serve lets any agent register and says so).
TOKEN=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
exec 3< <(exec env CONN_TOKEN="$TOKEN" "$BIN" serve --listen "127.0.0.1:$PORT" 2>&1)
pids+=($!)
read_until 3 'listening on http://' 10 "[serve]" || {
    echo "demo: natwrp serve did not start (is port $PORT free? set DEMO_PORT)" >&2; exit 1; }

# 3. The agent, configured through the environment.
exec 4< <(exec env AGENT_ID=demo@loopback REMOTE_URL="http://127.0.0.1:$PORT" \
    LOCAL_URL="http://127.0.0.1:$LOCAL_PORT" CONN_TOKEN="$TOKEN" "$BIN" agent 2>&1)
pids+=($!)
read_until 3 'tunnel open' 15 "[serve]" || {
    echo "demo: the agent did not connect; its log:" >&2
    timeout 1 cat <&4 >&2 || true
    exit 1; }

# From here on, show both logs as they come.
sed -u 's/^/[agent] /' <&4 &
pids+=($!)
sed -u 's/^/[serve] /' <&3 &
pids+=($!)

cat <<MSG

natwrp demo is up: public http://127.0.0.1:$PORT -> tunnel -> local http://127.0.0.1:$LOCAL_PORT
Agents need CONN_TOKEN=$TOKEN to open a tunnel.
Try:
  curl http://127.0.0.1:$PORT/echo
  curl http://127.0.0.1:$PORT/bytes?n=1000000 | wc -c
  curl -i http://127.0.0.1:$PORT/cookies
Ctrl-C stops everything.

MSG
wait
