"""f1 serve's metrics, /readyz and /api/status on the admin listener
(issue 12; serve/ops.c).

Covered, with real agents and origins on loopback: after 37 requests of
mixed outcomes (proxied 200 and 404, serve's own 404 for an unknown host
and 401 for AUTH_TOKEN, 502 for a dead local service, some on one
keep-alive connection) natwrp_requests_total adds up to exactly 37, per
route and code; the duration histogram counts 37; natwrp_errors_total
counts serve's own replies by reason; /api/status agrees; the default
route is labelled "*". Tunnel events (open, close, replace) and refusals by
reason (token, bad handshake), and that handshakes are not requests.
/api/status's tunnel and route fields, with a stream in flight (and
natwrp_streams_active). /readyz: 503 "no tunnel" before the first agent
and after the tunnel is lost, 200 while one is up, 503 "draining" at once
on SIGTERM (the agent's GOAWAY arrives after it), and 503 "no tunnel" while
the only tunnel drains after its agent's GOAWAY. A request waiting for a
tunnel (natwrp_requests_waiting), then its queue timeout. Every scrape passes
`promtool check metrics` with no output, route names with sub-delims
included."""

import json
import re
import shutil
import signal
import subprocess
import threading

from harness import Conn, check, eq, fail, http_request, tunnel_upgrade

DOMAIN = "example.test"


# ---- helpers ---------------------------------------------------------------

def admin_serve(t, *args, label="serve", env=None):
    """serve with --admin on a free loopback port; returns (Serve, admin port)."""
    s = t.serve("--admin", "127.0.0.1:0", *args, label=label, env=env)
    m = s.proc.wait_for(r"admin listening on http://127\.0\.0\.1:(\d+)", 10)
    return s, int(m.group(1))


def admin_get(port, path, headers=()):
    return http_request(port, "GET", path, headers)


def promtool_check(text):
    exe = shutil.which("promtool")
    check(exe, "promtool not installed (Debian package prometheus; scripts/deps.sh)")
    p = subprocess.run([exe, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    out = (p.stdout + p.stderr).decode("utf-8", "replace").strip()
    eq((p.returncode, out), (0, ""), "promtool check metrics (exit status, output)")


LINE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def unescape(v):
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse_metrics(text):
    """{(name, frozenset of (label, value))}: value, from the exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE_RE.match(line)
        check(m, "unparsable metrics line %r" % line)
        labels = frozenset((k, unescape(v)) for k, v in LABEL_RE.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def scrape(port):
    """GET /metrics: checked with promtool, parsed."""
    r = admin_get(port, "/metrics")
    eq(r.status, 200, "/metrics status")
    check((r.header("Content-Type") or "").startswith("text/plain; version=0.0.4"),
          "/metrics Content-Type %r" % r.header("Content-Type"))
    text = r.text()
    promtool_check(text)
    return parse_metrics(text)


def series(ms, name, **want):
    """{labels dict as a sorted tuple: value} of name's series whose labels
    include want."""
    got = {}
    for (n, labels), v in ms.items():
        d = dict(labels)
        if n == name and all(d.get(k) == w for k, w in want.items()):
            got[tuple(sorted(d.items()))] = v
    return got


def total(ms, name, **want):
    return sum(series(ms, name, **want).values())


def by(ms, name, *keys, **want):
    """name's values summed by the labels keys: {(k1 value, ...): value}."""
    out = {}
    for labels, v in series(ms, name, **want).items():
        d = dict(labels)
        k = tuple(d.get(x) for x in keys)
        out[k] = out.get(k, 0) + v
    return out


def status(port):
    r = admin_get(port, "/api/status")
    eq(r.status, 200, "/api/status status")
    check((r.header("Content-Type") or "").startswith("application/json"),
          "/api/status Content-Type %r" % r.header("Content-Type"))
    return json.loads(r.body.decode())


def readyz(port):
    r = admin_get(port, "/readyz")
    return r.status, r.text()


def route_agent(t, s, origin, agent_id, routes=None, env=None):
    """An agent with ROUTES routes (None: the default route); waits for its
    tunnel and routes. Returns the agent Proc."""
    e = dict(env or {})
    if routes is not None:
        e["ROUTES"] = routes
    mark = s.proc.mark()
    a = t.agent(s, origin, agent_id=agent_id, env=e, label="agent-" + agent_id)
    tun = s.wait_tunnel_open(agent_id, since=mark)
    for n in ([x.strip() for x in routes.split(",")] if routes else []):
        s.proc.wait_for(r"route %s \+tun=%d agent=%s\b" % (re.escape(n), tun,
                                                           re.escape(agent_id)), 10, mark)
    return a


def req(s, host, target, headers=()):
    return http_request(s.port, "GET", target, [("Host", host)] + list(headers))


# ---- tests -------------------------------------------------------------------

ROUTE_A = "a." + DOMAIN
ROUTE_B = "b." + DOMAIN + "/o'k(1)*+=:@!$&"  # sub-delims in a label value
ROUTE_C = "c." + DOMAIN


def test_requests_counted_exactly(t):
    """37 requests of mixed outcomes: natwrp_requests_total adds up to 37,
    exactly, per route and code; so do the histogram counts and
    /api/status; serve's own replies are in natwrp_errors_total by reason."""
    o = t.origin()
    s, ap = admin_serve(t, "--domain", DOMAIN, "--auth-token", "sekret",
                        "--auth-rule", "^/private")
    route_agent(t, s, o, "ra", ROUTE_A)
    route_agent(t, s, o, "rb", ROUTE_B)
    route_agent(t, s, "http://127.0.0.1:1", "rc", ROUTE_C)  # nothing listens there
    ms = scrape(ap)
    eq(total(ms, "natwrp_requests_total"), 0, "requests before any (handshakes are not)")
    want = {}

    def expect(route, code, n=1):
        want[(route, str(code))] = want.get((route, str(code)), 0) + n

    # 12 proxied 200 and 6 proxied 404 on route a, 8 + 4 of them on one
    # keep-alive connection.
    c = Conn(s.port)
    for i in range(12):
        c.request("GET", "/echo/%d" % i if i < 8 else "/status/404", host=ROUTE_A)
        r = c.read_response()
        eq(r.status, 200 if i < 8 else 404, "keep-alive request %d on route a" % i)
    c.close()
    for i in range(4):
        eq(req(s, ROUTE_A, "/echo/x%d" % i).status, 200, "route a 200")
    for i in range(2):
        eq(req(s, ROUTE_A, "/status/404").status, 404, "route a proxied 404")
    expect(ROUTE_A, 200, 12)
    expect(ROUTE_A, 404, 6)
    # 5 on route b (its path has sub-delims).
    for i in range(5):
        eq(req(s, "b." + DOMAIN, "/o'k(1)*+=:@!$&/echo").status, 200, "route b 200")
    expect(ROUTE_B, 200, 5)
    # 4 to a local service that is down: 502.
    for i in range(4):
        eq(req(s, ROUTE_C, "/").status, 502, "route c (local down) status")
    expect(ROUTE_C, 502, 4)
    # 5 for a host no route serves: serve's own 404, no route ("-").
    for i in range(5):
        eq(req(s, "nobody." + DOMAIN, "/echo").status, 404, "unknown host status")
    expect("-", 404, 5)
    # 5 without the token AUTH_RULE asks for: serve's own 401.
    for i in range(5):
        eq(req(s, ROUTE_A, "/private/x").status, 401, "AUTH_RULE path without token")
    expect("-", 401, 5)
    n = sum(want.values())
    eq(n, 37, "requests sent")

    ms = scrape(ap)
    got = {k: int(v) for k, v in by(ms, "natwrp_requests_total", "route", "code").items()}
    eq(got, want, "natwrp_requests_total by (route, code)")
    eq(int(total(ms, "natwrp_requests_total")), 37, "natwrp_requests_total summed")
    counts = {k[0]: int(v) for k, v in
              by(ms, "natwrp_request_duration_seconds_count", "route").items() if v}
    eq(counts, {ROUTE_A: 18, ROUTE_B: 5, ROUTE_C: 4, "-": 10},
       "natwrp_request_duration_seconds_count by route")
    eq(int(total(ms, "natwrp_request_duration_seconds_bucket", le="+Inf")), 37,
       "histogram +Inf buckets summed")
    errs = {k[0]: int(v) for k, v in by(ms, "natwrp_errors_total", "reason").items() if v}
    eq(errs, {"no_route": 5, "auth": 5, "local_unreachable": 4},
       "natwrp_errors_total by reason")
    check(total(ms, "natwrp_response_bytes_total", route=ROUTE_A) > 0,
          "route a's response bytes are counted")
    eq(total(ms, "natwrp_tunnels"), 3, "natwrp_tunnels summed")
    eq(series(ms, "natwrp_tunnels", route=ROUTE_B, group="rb"),
       {(("group", "rb"), ("route", ROUTE_B)): 1.0}, "natwrp_tunnels of route b")
    eq(total(ms, "natwrp_tunnel_events_total", event="open"), 3, "tunnels opened")

    st = status(ap)
    eq((st["role"], st["requests"], st["errors"]), ("serve", 37, 14),
       "/api/status role, requests, errors (502s and serve's own 4xx)")
    routes = {r["route"]: r for r in st["routes"]}
    eq(sorted(routes), sorted([ROUTE_A, ROUTE_B, ROUTE_C]), "/api/status routes")
    eq((routes[ROUTE_A]["requests"], routes[ROUTE_A]["errors"]), (18, 0), "route a in status")
    eq((routes[ROUTE_C]["requests"], routes[ROUTE_C]["errors"]), (4, 4), "route c in status")
    check(routes[ROUTE_A]["bytes_out"] > 0 and st["bytes_out"] >= routes[ROUTE_A]["bytes_out"],
          "bytes_out in status: %r" % routes[ROUTE_A])
    rc = [x for x in st["tunnels"] if x["agent"] == "rc"]
    eq(len(rc), 1, "tunnel rc in status")
    eq(rc[0]["last_error"], "local_unreachable", "tunnel rc's last_error")


def test_default_route_label(t):
    """The default route is labelled "*"; a 400 before routing is "-"."""
    o = t.origin()
    s, ap = admin_serve(t)
    route_agent(t, s, o, "d1")
    for i in range(3):
        eq(http_request(s.port, "GET", "/echo").status, 200, "default route 200")
    c = Conn(s.port)
    c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
           b"Content-Length: 3\r\n\r\n0\r\n\r\n")
    eq(c.read_response().status, 400, "CL and TE status")
    c.close()
    # After an answered request on a keep-alive connection, a head the
    # scanner refuses before the parser sees it (bare LF) counts too.
    c = Conn(s.port)
    c.request("GET", "/echo")
    eq(c.read_response().status, 200, "first request on the connection")
    c.send(b"GET /echo HTTP/1.1\nHost: x\n\n")
    eq(c.read_response().status, 400, "bare LF status")
    c.close()
    ms = scrape(ap)
    got = {k: int(v) for k, v in by(ms, "natwrp_requests_total", "route", "code").items()}
    eq(got, {("*", "200"): 4, ("-", "400"): 2}, "natwrp_requests_total by (route, code)")
    eq(int(total(ms, "natwrp_errors_total", reason="smuggling")), 2,
       "natwrp_errors_total{reason=smuggling}")
    eq(int(total(ms, "natwrp_request_duration_seconds_count")), 6, "durations observed")
    eq([r["route"] for r in status(ap)["routes"]], ["*"], "/api/status routes")


def test_tunnel_events_and_refusals(t):
    """Refusals by reason; open, close and replace; handshakes are not
    counted as requests."""
    o = t.origin()
    s, ap = admin_serve(t, env={"CONN_TOKEN": "tok"})
    c, r = tunnel_upgrade(s.port, "raw1", extra=[("Authorization", "Bearer wrong")])
    eq(r.status, 401, "wrong token status")
    c.close()
    c, r = tunnel_upgrade(s.port, "raw2", extra=[("Authorization", "Bearer tok")],
                          drop=("Sec-WebSocket-Key",))
    eq(r.status, 400, "handshake without a key")
    c.close()
    c, r = tunnel_upgrade(s.port, "raw3", version="8", extra=[("Authorization", "Bearer tok")])
    eq(r.status, 426, "handshake of another WebSocket version")
    c.close()
    ms = scrape(ap)
    got = {k[0]: int(v) for k, v in by(ms, "natwrp_tunnel_refusals_total", "reason").items()}
    eq(got, {"token": 1, "bad_handshake": 2}, "natwrp_tunnel_refusals_total by reason")
    eq(total(ms, "natwrp_requests_total"), 0, "handshakes counted as requests")

    a = route_agent(t, s, o, "ev", env={"CONN_TOKEN": "tok"})
    # Frozen, as after a silent network loss: its successor replaces it.
    a.stop()
    mark = s.proc.mark()
    a2 = t.agent(s, o, agent_id="ev", env={"CONN_TOKEN": "tok"}, label="agent-ev2")
    s.proc.wait_for(r"tunnel replaced tun=\d+ agent=ev by", 10, mark)
    s.wait_tunnel_closed("ev", since=mark)
    a.kill()
    mark = s.proc.mark()
    a2.kill()
    s.wait_tunnel_closed("ev", since=mark)
    ms = scrape(ap)
    got = {k[0]: int(v) for k, v in by(ms, "natwrp_tunnel_events_total", "event").items()}
    eq(got, {"open": 2, "close": 2, "replace": 1}, "natwrp_tunnel_events_total by event")
    eq(total(ms, "natwrp_tunnels"), 0, "natwrp_tunnels with no tunnel left")


def test_status_fields_and_streams(t):
    """/api/status names each tunnel (id, agent, group, routes, peer,
    since, streams, state) and route; a request in flight is a stream."""
    o = t.origin()
    s, ap = admin_serve(t, "--domain", DOMAIN)
    mark = s.proc.mark()
    a = t.agent(s, o, agent_id="web-1", label="agent-web",
                env={"ROUTES": "w." + DOMAIN + ", w." + DOMAIN + "/api"})
    tun = s.wait_tunnel_open("web-1", since=mark)
    s.proc.wait_for(r"route w\.%s/api \+tun=%d" % (re.escape(DOMAIN), tun), 10, mark)
    st = status(ap)
    eq(len(st["tunnels"]), 1, "tunnels in status")
    tn = st["tunnels"][0]
    eq((tn["id"], tn["state"], tn["streams"], tn["last_error"]), (tun, "open", 0, ""),
       "tunnel id, state, streams, last_error")
    eq((tn["agent"], tn["group"]), ("web-1", "web-1"), "tunnel agent and group")
    eq(sorted(tn["routes"]), sorted(["w." + DOMAIN, "w." + DOMAIN + "/api"]), "tunnel routes")
    check(re.match(r"^127\.0\.0\.1:\d+$", tn["peer"]), "tunnel peer %r" % tn["peer"])
    check(isinstance(tn["since"], int) and tn["since"] > 1600000000, "since %r" % tn["since"])
    eq(sorted((r["route"], r["tunnels"], r["held"]) for r in st["routes"]),
       [("w." + DOMAIN, 1, False), ("w." + DOMAIN + "/api", 1, False)], "routes in status")
    eq((st["ready"], st["ready_reason"], st["draining"]), (True, "", False), "ready in status")
    for k in ("version", "uptime_seconds", "connections", "streams", "waiting", "bytes_in",
              "bytes_out"):
        check(k in st, "/api/status has no %r" % k)

    # A request in flight: one stream, one connection.
    omark = o.proc.mark()
    c = Conn(s.port)
    c.request("GET", "/hang", host="w." + DOMAIN)
    o.proc.wait_for(r"event hang-start", 10, omark)
    st = status(ap)
    eq((st["streams"], st["tunnels"][0]["streams"], st["connections"]), (1, 1, 1),
       "streams (total, tunnel) and connections with a request in flight")
    ms = scrape(ap)
    eq((total(ms, "natwrp_streams_active"), total(ms, "natwrp_connections_active")), (1, 1),
       "natwrp_streams_active, natwrp_connections_active")
    c.reset()
    body = b"x" * 1000
    r = http_request(s.port, "POST", "/upload", [("Host", "w." + DOMAIN)], body)
    eq(r.status, 200, "upload status")
    st = status(ap)
    routes = {r["route"]: r for r in st["routes"]}
    eq(routes["w." + DOMAIN]["bytes_in"], 1000, "request body bytes of the route")
    eq(st["tunnels"][0]["bytes_in"], 1000, "request body bytes of the tunnel")
    mark = s.proc.mark()
    a.kill()
    s.wait_tunnel_closed("web-1", since=mark)
    st = status(ap)
    eq(sorted((r["route"], r["tunnels"], r["held"]) for r in st["routes"]),
       [("w." + DOMAIN, 0, True), ("w." + DOMAIN + "/api", 0, True)], "held routes in status")


def test_readyz_tunnel_loss_and_drain(t):
    """/readyz: 503 "no tunnel" before the first tunnel and after it is
    lost; 200 with one; 503 "draining" at once on SIGTERM, before the
    agent sees GOAWAY."""
    o = t.origin()
    s, ap = admin_serve(t, "--grace", "10")
    st, body = readyz(ap)
    eq((st, body.strip()), (503, "no tunnel"), "/readyz with no tunnel")
    a = route_agent(t, s, o, "r1")
    eq(readyz(ap)[0], 200, "/readyz with a tunnel")
    mark = s.proc.mark()
    a.kill()
    s.wait_tunnel_closed("r1", since=mark)
    st, body = readyz(ap)
    eq((st, body.strip()), (503, "no tunnel"), "/readyz after the tunnel was lost")
    eq(status(ap)["ready_reason"], "no tunnel", "ready_reason in status")

    a = route_agent(t, s, o, "r2")
    eq(readyz(ap)[0], 200, "/readyz with a tunnel again")
    # A request in flight keeps the drain going.
    omark = o.proc.mark()
    c = Conn(s.port)
    c.request("GET", "/hang")
    o.proc.wait_for(r"event hang-start", 10, omark)
    amark, smark = a.mark(), s.proc.mark()
    s.proc.send(signal.SIGTERM)
    # Event-driven: the agent has the GOAWAY, so serve's handler ran.
    a.wait_for(r"server sent GOAWAY", 10, amark)
    st, body = readyz(ap)
    eq((st, body.strip()), (503, "draining"), "/readyz once draining")
    j = status(ap)
    eq((j["ready"], j["ready_reason"], j["draining"]), (False, "draining", True),
       "status while draining")
    s.proc.wait_for(r"received SIGTERM: draining", 5, smark)
    c.reset()  # the last request ends: the drain is over
    eq(s.proc.wait_exit(10), 0, "serve's exit status after the drain")


def test_readyz_only_tunnel_going_away(t):
    """The only tunnel sent GOAWAY (its agent drains) and still finishes a
    request: serve has no tunnel that takes new requests, so /readyz is
    503 "no tunnel" already, and the tunnel shows as draining."""
    o = t.origin()
    s, ap = admin_serve(t)
    a = route_agent(t, s, o, "g1", env={"GRACE": "10"})
    eq(readyz(ap)[0], 200, "/readyz with a tunnel")
    omark = o.proc.mark()
    c = Conn(s.port)
    c.request("GET", "/hang")
    o.proc.wait_for(r"event hang-start", 10, omark)
    mark = s.proc.mark()
    a.send(signal.SIGTERM)
    s.proc.wait_for(r"tunnel draining tun=\d+ agent=g1 \(GOAWAY", 10, mark)
    st, body = readyz(ap)
    eq((st, body.strip()), (503, "no tunnel"), "/readyz while the only tunnel drains")
    eq([x["state"] for x in status(ap)["tunnels"]], ["draining"], "tunnel state")
    c.reset()
    eq(a.wait_exit(10), 0, "agent exit status after its drain")


def test_waiting_and_queue_timeout(t):
    """A request waiting for a tunnel is in natwrp_requests_waiting (and
    /api/status "waiting"); when --queue-timeout passes it is a queue
    timeout and serve's own 503 for that reason."""
    s, ap = admin_serve(t, "--queue-timeout", "1")
    mark = s.proc.mark()
    c = Conn(s.port)
    c.request("GET", "/echo")
    s.proc.wait_for(r"no tunnel serves .* now: waiting up to", 10, mark)
    ms = scrape(ap)
    eq(total(ms, "natwrp_requests_waiting"), 1, "natwrp_requests_waiting")
    eq(status(ap)["waiting"], 1, "waiting in /api/status")
    eq(c.read_response().status, 503, "status after --queue-timeout")
    c.close()
    ms = scrape(ap)
    eq((total(ms, "natwrp_requests_waiting"), total(ms, "natwrp_queue_timeouts_total")), (0, 1),
       "natwrp_requests_waiting, natwrp_queue_timeouts_total")
    eq(series(ms, "natwrp_errors_total"), {(("reason", "queue_timeout"),): 1.0},
       "natwrp_errors_total")
    eq(series(ms, "natwrp_requests_total"), {(("code", "503"), ("route", "*")): 1.0},
       "natwrp_requests_total (the default route it waited for)")


def test_max_conns_refusal_counted(t):
    """A connection over --max-conns gets serve's own 503: counted, with
    no route, as natwrp_errors_total{reason="too_many_connections"}."""
    s, ap = admin_serve(t, "--max-conns", "1")
    held = Conn(s.port)
    held.request("GET", "/echo")  # waits for a tunnel: its connection stays
    s.proc.wait_for(r"waiting up to", 10)
    c = Conn(s.port)
    eq(c.read_response().status, 503, "status over --max-conns")
    c.close()
    ms = scrape(ap)
    eq(series(ms, "natwrp_errors_total"), {(("reason", "too_many_connections"),): 1.0},
       "natwrp_errors_total")
    eq(series(ms, "natwrp_requests_total"), {(("code", "503"), ("route", "-")): 1.0},
       "natwrp_requests_total")
    held.close()
