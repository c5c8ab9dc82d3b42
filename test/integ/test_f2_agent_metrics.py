"""f2 agent metrics: the agent's admin listener (ADMIN_LISTEN) answers
/metrics with exact counters (requests by the status the client got, the
duration histogram, local errors by reason, reconnects by reason, bytes),
/api/status with the agreed schema, and /readyz that follows the tunnel
(503 before the first one, 200 while one is up, 503 when the server goes
away and at once when a drain starts). promtool accepts the exposition."""

import re
import shutil
import socket
import subprocess
import time

from harness import Conn, check, eq, fail, get, timed

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

ADMIN_ENV = {"ADMIN_LISTEN": "127.0.0.1:0"}


def admin_port(agent):
    m = agent.wait_for(r"admin listening on http://\S+:(\d+)", 15)
    return int(m.group(1))


def scrape(port):
    """/metrics as {(name, ((label, value), ...)): float}."""
    r = get(port, "/metrics")
    eq(r.status, 200, "/metrics status")
    ctype = r.header("Content-Type") or ""
    check(ctype.startswith("text/plain; version=0.0.4"), "/metrics Content-Type %r" % ctype)
    out = {}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        check(m, "unparsable sample line %r" % line)
        labels = tuple(sorted(LABEL_RE.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def series(samples, name):
    """{labels dict as tuple: value} of one metric name."""
    return {k[1]: v for k, v in samples.items() if k[0] == name}


def value(samples, name, **labels):
    want = tuple(sorted(labels.items()))
    return samples.get((name, want), 0.0)


def by_label(samples, name, label):
    out = {}
    for labels, v in series(samples, name).items():
        d = dict(labels)
        out[d.get(label)] = out.get(d.get(label), 0) + v
    return out


def status(port):
    r = get(port, "/api/status")
    eq(r.status, 200, "/api/status status")
    eq(r.header("Content-Type"), "application/json", "/api/status Content-Type")
    return r.json()


def readyz(port):
    r = get(port, "/readyz")
    return r.status, r.body.decode()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def promtool_check(text):
    exe = shutil.which("promtool")
    if not exe:
        fail("promtool is not installed (Debian package prometheus; scripts/deps.sh installs it)")
    p = subprocess.run([exe, "check", "metrics"], input=text, capture_output=True, timeout=30)
    out = (p.stdout + p.stderr).decode()
    eq((p.returncode, out), (0, ""), "promtool check metrics on the agent's /metrics")


@timed(90)
def test_local_requests_counted_by_code(t):
    """23 requests with mixed outcomes: every one is counted once, by the
    status its client got, in the histogram too; the failures are counted
    by reason; bytes both ways."""
    o = t.origin("A")
    s = t.serve()
    a = t.agent(s, o, env=ADMIN_ENV)
    port = admin_port(a)
    plan = [("/echo", 200)] * 10 + [("/status/404", 404)] * 4 + [("/status/500", 500)] * 3 + \
        [("/status/204", 204)] * 2 + [("/malformed", 502), ("/drop", 502)]
    for path, want in plan:
        eq(get(s, path).status, want, "GET %s" % path)
    o.proc.kill()  # the local service is gone: the agent cannot connect
    for i in range(2):
        eq(get(s, "/echo?gone=%d" % i).status, 502, "GET with the local service stopped")
    n = len(plan) + 2
    eq(n, 23, "requests sent")
    m = scrape(port)
    codes = by_label(m, "natwrp_local_requests_total", "code")
    eq(codes, {"200": 10, "404": 4, "500": 3, "204": 2, "502": 4},
       "natwrp_local_requests_total by code")
    eq(sum(codes.values()), n, "natwrp_local_requests_total, all codes")
    eq(value(m, "natwrp_local_request_duration_seconds_count"), n, "histogram count")
    eq(value(m, "natwrp_local_request_duration_seconds_bucket", le="+Inf"), n, "+Inf bucket")
    check(value(m, "natwrp_local_request_duration_seconds_sum") > 0, "histogram sum")
    errs = by_label(m, "natwrp_local_errors_total", "reason")
    eq(errs.get("connect_refused"), 2, "local errors: connect_refused")
    eq(errs.get("bad_response"), 1, "local errors: bad_response")
    eq(errs.get("closed"), 1, "local errors: closed (/drop)")
    eq(sum(errs.values()), 4, "local errors in all (%r)" % errs)
    check(value(m, "natwrp_local_bytes_total", direction="out") > 21 * 30,
          "bytes sent to the local service: %r" % series(m, "natwrp_local_bytes_total"))
    check(value(m, "natwrp_local_bytes_total", direction="in") > 10 * 200,
          "bytes from the local service: %r" % series(m, "natwrp_local_bytes_total"))
    eq(value(m, "natwrp_tunnels_up"), 1, "natwrp_tunnels_up")
    eq(value(m, "natwrp_local_requests_in_flight"), 0, "requests in flight")
    eq(value(m, "natwrp_reconnects_total", reason="closed"), 0, "no reconnect yet")
    st = status(port)
    eq((st["requests"], st["errors"]), (23, 7), "/api/status requests and errors (5xx)")
    eq((st["bytes_in"], st["bytes_out"]),
       (value(m, "natwrp_local_bytes_total", direction="in"),
        value(m, "natwrp_local_bytes_total", direction="out")),
       "/api/status bytes match the counters")


def test_agent_503_and_client_abort_counted(t):
    """The agent's own 503 (no local connection free, no queue) is counted
    as 503, and a request whose client went away as 499."""
    o = t.origin("A")
    s = t.serve()
    a = t.agent(s, o, env=dict(ADMIN_ENV, MAX_LOCAL_CONNS="1", LOCAL_QUEUE="0"))
    port = admin_port(a)
    mo = o.proc.mark()
    c = Conn(s.port)
    c.request("GET", "/hang")
    o.proc.wait_for(r"hang-start", 10, since=mo)
    r = get(s, "/echo")
    eq(r.status, 503, "a second request with MAX_LOCAL_CONNS=1 and LOCAL_QUEUE=0")
    m = scrape(port)
    eq(by_label(m, "natwrp_local_requests_total", "code"), {"503": 1}, "codes with one hanging")
    eq(value(m, "natwrp_local_errors_total", reason="queue_full"), 1, "queue_full")
    eq(value(m, "natwrp_local_requests_in_flight"), 1, "in flight")
    eq(value(m, "natwrp_pool_connections", state="in_use"), 1, "pool in use")
    eq(status(port)["inflight"], 1, "/api/status inflight")
    ma = a.mark()
    c.close()
    a.wait_for(r"reset by server", 10, since=ma)
    m = scrape(port)
    eq(by_label(m, "natwrp_local_requests_total", "code"), {"503": 1, "499": 1},
       "codes after the client went away")
    eq(value(m, "natwrp_local_request_duration_seconds_count"), 2, "histogram count")
    eq(value(m, "natwrp_local_requests_in_flight"), 0, "in flight after")


@timed(90)
def test_reconnects_and_readyz_follow_the_server(t):
    """The server killed: /readyz 503, reconnects{closed}, failed attempts
    counted as connect_failed; a new server on the port: 200 again; that
    server draining: reconnects{goaway}."""
    o = t.origin("A")
    s1 = t.serve(label="serve1")
    a = t.agent(s1, o, env=ADMIN_ENV)
    port = admin_port(a)
    eq(readyz(port), (200, "ready\n"), "/readyz with the tunnel up")
    mark = a.mark()
    s1.proc.kill()
    a.wait_for(r"tunnel down agent=a1\b", 10, since=mark)
    code, body = readyz(port)
    eq((code, body.strip()), (503, "no tunnel up"), "/readyz once the server is gone")
    # A failed attempt (nothing listens): the next one is attempt 2.
    a.wait_for(r"reconnecting in [\d.]+s \(attempt 2\)", 20, since=mark)
    m = scrape(port)
    eq(value(m, "natwrp_reconnects_total", reason="closed"), 1, "reconnects: closed")
    check(value(m, "natwrp_reconnects_total", reason="connect_failed") >= 1,
          "reconnects: connect_failed %r" % series(m, "natwrp_reconnects_total"))
    eq(value(m, "natwrp_tunnels_up"), 0, "tunnels up while the server is gone")
    st = status(port)
    eq((st["ready"], st["ready_reason"]), (False, "no tunnel up"), "/api/status ready")
    tun = st["tunnels"][0]
    check(tun["state"] in ("backoff", "connecting"), "slot state %r" % tun["state"])
    check("cannot connect" in tun["last_error"], "last_error %r" % tun["last_error"])
    eq(st["routes"], [], "no routes while no tunnel is up")
    mark = a.mark()
    s2 = t.serve(listen="127.0.0.1:%d" % s1.port, label="serve2")
    a.wait_for(r"tunnel up agent=a1\b", 40, since=mark)
    s2.wait_tunnel_open("a1", timeout=10)
    eq(readyz(port), (200, "ready\n"), "/readyz after the server came back")
    eq(status(port)["tunnels"][0]["state"], "up", "slot state after the restart")
    eq(get(s2, "/echo").status, 200, "a request after the restart")
    before = scrape(port)
    # A request in flight keeps the draining serve's tunnel open, so its
    # GOAWAY arrives before the tunnel closes.
    mo, mark = o.proc.mark(), a.mark()
    c = Conn(s2.port, timeout=30)
    c.request("GET", "/hang")
    o.proc.wait_for(r"hang-start", 10, since=mo)
    s2.proc.send(15)  # SIGTERM: serve drains and sends GOAWAY
    a.wait_for(r"server sent GOAWAY", 10, since=mark)
    m = scrape(port)
    eq(value(m, "natwrp_reconnects_total", reason="goaway"), 1, "reconnects: goaway")
    eq(value(before, "natwrp_reconnects_total", reason="goaway"), 0, "no goaway before")
    c.close()


@timed(60)
def test_reconnect_reasons_refused_tls_ping(t):
    """A wrong CONN_TOKEN: refused_401; TLS to a plain listener: tls; a
    server that stops answering pings: ping_timeout."""
    o = t.origin("A")
    s = t.serve("--conn-token", "right-token", "--ping-interval", "1")
    bad = t.agent(s, o, agent_id="bad", env=dict(ADMIN_ENV, CONN_TOKEN="wrong-token"),
                  wait=False, label="agent-bad")
    tls = t.agent("https://127.0.0.1:%d" % s.port, o, agent_id="tls", env=ADMIN_ENV, wait=False,
                  label="agent-tls")
    good = t.agent(s, o, agent_id="good", label="agent-good",
                   env=dict(ADMIN_ENV, CONN_TOKEN="right-token", PING_INTERVAL="1"))
    bad.wait_for(r"agent=bad unauthorized: check CONN_TOKEN", 15)
    m = scrape(admin_port(bad))
    eq(value(m, "natwrp_reconnects_total", reason="refused_401"), 1, "refused_401")
    eq(sum(by_label(m, "natwrp_reconnects_total", "reason").values()), 1, "reconnects in all")
    st = status(admin_port(bad))
    check("401" in st["tunnels"][0]["last_error"], "last_error %r" % st["tunnels"][0])
    tls.wait_for(r"tunnel down agent=tls\b", 15)
    m = scrape(admin_port(tls))
    eq(value(m, "natwrp_reconnects_total", reason="tls"), 1, "tls")
    mark = good.mark()
    s.proc.stop()
    try:
        good.wait_for(r"tunnel down agent=good\b", 10, since=mark)
    finally:
        s.proc.cont()
    m = scrape(admin_port(good))
    eq(value(m, "natwrp_reconnects_total", reason="ping_timeout"), 1, "ping_timeout")


@timed(60)
def test_readyz_before_first_tunnel_and_while_draining(t):
    o = t.origin("A")
    sport = free_port()
    a = t.agent("http://127.0.0.1:%d" % sport, o, env=dict(ADMIN_ENV, GRACE="30"), wait=False)
    port = admin_port(a)
    code, body = readyz(port)
    eq((code, body), (503, "no tunnel up\n"), "/readyz before any tunnel")
    a.wait_for(r"reconnecting in", 15)
    st = status(port)
    eq(st["ready"], False, "ready before any tunnel")
    check(st["tunnels"][0]["state"] in ("backoff", "connecting"), "state %r" % st["tunnels"])
    check(value(scrape(port), "natwrp_reconnects_total", reason="connect_failed") >= 1,
          "a failed first connect is counted")
    s = t.serve(listen="127.0.0.1:%d" % sport)
    a.wait_for(r"tunnel up agent=a1\b", 40)
    s.wait_tunnel_open("a1", timeout=10)
    eq(readyz(port), (200, "ready\n"), "/readyz with the tunnel up")
    mo = o.proc.mark()
    c = Conn(s.port, timeout=30)
    c.request("GET", "/hang")
    o.proc.wait_for(r"hang-start", 10, since=mo)
    mark = a.mark()
    a.send(15)  # SIGTERM: the agent drains; the hanging request holds it open
    a.wait_for(r"received SIGTERM", 10, since=mark)
    code, body = readyz(port)
    eq((code, body), (503, "draining\n"), "/readyz while draining")
    st = status(port)
    eq((st["ready"], st["draining"], st["ready_reason"]), (False, True, "draining"),
       "/api/status while draining")
    eq(st["inflight"], 1, "the hanging request is in flight")
    c.close()


def test_status_schema(t):
    o = t.origin("A")
    s = t.serve()
    a = t.agent(s, o, agent_id="box", env=dict(ADMIN_ENV, MAX_CONN="2"))
    port = admin_port(a)
    s.wait_tunnel_open("box-2", timeout=15)
    for i in range(3):
        eq(get(s, "/echo?i=%d" % i).status, 200, "request %d" % i)
    before = time.time()
    st = status(port)
    keys = {"role", "agent", "version", "uptime_seconds", "ready", "ready_reason", "draining",
            "local", "requests", "errors", "bytes_in", "bytes_out", "inflight", "routes", "pool",
            "tunnels", "inspect"}
    eq(set(st), keys, "/api/status keys")
    eq((st["role"], st["agent"], st["local"].rstrip("/")), ("agent", "box", o.url),
       "role, agent, local")
    check(re.match(r"^\d+\.\d+\.\d+", st["version"]), "version %r" % st["version"])
    check(0 < st["uptime_seconds"] < 60, "uptime %r" % st["uptime_seconds"])
    eq((st["ready"], st["ready_reason"], st["draining"]), (True, "", False), "ready")
    eq((st["requests"], st["errors"], st["inflight"]), (3, 0, 0), "requests, errors, inflight")
    check(st["bytes_in"] > 0 and st["bytes_out"] > 0, "bytes %r %r" % (st["bytes_in"],
                                                                     st["bytes_out"]))
    eq(st["routes"], ["*"], "routes of a tunnel without ROUTES: the default route")
    eq(set(st["pool"]), {"idle", "in_use"}, "pool keys")
    check(st["pool"]["idle"] >= 1 and st["pool"]["in_use"] == 0, "pool %r" % st["pool"])
    eq(st["inspect"], True, "inspect (INSPECT defaults to 1)")
    eq(len(st["tunnels"]), 2, "one entry per slot (MAX_CONN=2)")
    eq(sorted(x["name"] for x in st["tunnels"]), ["box-1", "box-2"], "tunnel names")
    for x in st["tunnels"]:
        eq(set(x), {"id", "name", "remote", "address", "state", "since", "streams",
                    "last_error"},
           "tunnel keys")
        eq((x["state"], x["remote"].rstrip("/"), x["streams"], x["last_error"]),
           ("up", "ws://127.0.0.1:%d" % s.port, 0, ""), "tunnel %s" % x["name"])
        check(x["id"] >= 1, "tunnel id %r" % x["id"])
        check(before - 60 < x["since"] <= before + 1, "since %r, now %r" % (x["since"], before))
    m = scrape(port)
    eq(value(m, "natwrp_tunnels_up"), 2, "natwrp_tunnels_up with MAX_CONN=2")
    eq(value(m, "natwrp_pool_connections", state="idle"), st["pool"]["idle"], "pool idle")


def test_status_routes_granted(t):
    """routes: the public URLs the server's 101 granted (ROUTES)."""
    o = t.origin("A")
    s = t.serve("--domain", "example.com")
    a = t.agent(s, o, env=dict(ADMIN_ENV, ROUTES="a.example.com/api, b.example.com"))
    port = admin_port(a)
    st = status(port)
    eq(st["routes"], ["http://a.example.com/api", "http://b.example.com"], "routes granted")


def test_promtool_accepts_agent_metrics(t):
    o = t.origin("A")
    s = t.serve()
    a = t.agent(s, o, env=ADMIN_ENV)
    port = admin_port(a)
    for path in ("/echo", "/status/404", "/malformed"):
        get(s, path)
    r = get(port, "/metrics")
    eq(r.status, 200, "/metrics")
    text = r.body
    for name in ("natwrp_tunnels_up", "natwrp_reconnects_total", "natwrp_local_requests_total",
                 "natwrp_local_request_duration_seconds", "natwrp_local_errors_total",
                 "natwrp_pool_connections", "natwrp_local_bytes_total"):
        check(("# TYPE %s " % name).encode() in text, "%s missing from /metrics" % name)
    promtool_check(text)
