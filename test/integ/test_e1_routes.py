"""e1 many services on one server (issue 11): serve routes each request by
its host and path to the agents that registered the winning route.

Several agents (each with its own AGENT_ID and ROUTES) forward to several
test origins (test/origin.py, each with its own --name, which /echo
reports), all on loopback; clients are curl (-H Host: and --resolve) and
raw sockets. Covered: exact host, wildcard (exact beats wildcard, longer
wildcard beats shorter), dot-less names under serve's --domain (refused
without it), case and port in Host, path prefixes by whole segments and the
longest prefix between agents on one host, the default route (an agent
without ROUTES) beside named routes, 404 "natwrp: no service for HOST", an
absolute-form target routed by its authority, a WebSocket upgrade routed by
host, a route held through an agent restart (no 503 while the agent comes
back within --queue-timeout, 503 with Retry-After after it) and the end of
--route-hold, a route shared by two agents surviving one, each keep-alive or
pipelined request routed on its own, OPTIONS * routed by Host, an
absolute-form target's userinfo never forwarded, the handshake's
X-Natwrp-Routes answer with the public scheme (https on TLS, X-Forwarded-Proto
behind --trust-proxy), Location rewritten per route, and the log lines:
serve's `route NAME +tun=N agent=ID` / `-tun=N` and the agent's
`serving http://HOST/PATH`.

The other test files of issue 11 (e4 tokens, e5 per-route auth) import the
helpers below."""

import json
import re
import signal
import threading
import time
import urllib.parse

import wsclient
from harness import (Conn, TlsConn, check, curl, eq, fail, http_request, pki, timed,
                     tunnel_upgrade)

DOMAIN = "tunnel.example.com"


# ------------------------------------------------------------------ helpers


def route_agent(t, s, origin, agent_id, routes=None, names=None, env=None, wait=True,
                label=None):
    """An agent with AGENT_ID agent_id and ROUTES routes (None: the default
    route), forwarding to origin (an Origin or a LOCAL_URL). With wait:
    waits for the tunnel, then for serve's `route NAME +tun=N agent=ID` and
    the agent's `serving http://NAME` line for each full name in names
    (default: the routes as given). Returns (agent Proc, tunnel id)."""
    e = dict(env or {})
    if routes is not None:
        e["ROUTES"] = routes
    mark = s.proc.mark()
    a = t.agent(s, origin, agent_id=agent_id, env=e, wait=wait,
                label=label or "agent-" + agent_id)
    if not wait:
        return a, None
    tun = s.wait_tunnel_open(agent_id, since=mark)
    if routes is not None:
        if names is None:
            names = [x.strip() for x in routes.split(",")]
        for n in names:
            s.proc.wait_for(r"route %s \+tun=%d agent=%s\b" % (re.escape(n), tun,
                                                               re.escape(agent_id)), 10, mark)
            a.wait_for(r"serving %s://%s(\s|$)" % (s.scheme, re.escape(n)), 10)
    return a, tun


def req(s, host, target="/echo", method="GET", headers=(), body=None, timeout=10.0):
    """One request to serve with this Host (None: no Host field added by
    us: the caller's headers carry it)."""
    hdrs = list(headers)
    if host is not None:
        hdrs.insert(0, ("Host", host))
    return http_request(s.port, method, target, hdrs, body, timeout=timeout)


def served_by(s, host, target="/echo", headers=()):
    """(status, name of the origin that answered or None, echo JSON or None)."""
    r = req(s, host, target, headers=headers)
    if r.status != 200:
        return r.status, None, None
    j = r.json()
    return r.status, j.get("name"), j


def expect_origin(s, host, target, want, headers=()):
    st, name, j = served_by(s, host, target, headers)
    eq((st, name), (200, want), "Host %r %s: (status, origin)" % (host, target))
    return j


def echo_hdr(j, name):
    return [v for k, v in j["headers"] if k.lower() == name.lower()]


def past_start_window(started, queue_timeout):
    """A serve that has just started holds requests for its first tunnels
    for --queue-timeout; wait that out where a test needs answers that do
    not wait (a wait on time itself, not on an event)."""
    left = started + queue_timeout + 0.3 - time.time()
    if left > 0:
        time.sleep(left)


def expect_404(s, host, target="/echo", name=None):
    """404 at once with the one-line body naming the host."""
    t0 = time.time()
    r = req(s, host, target)
    dt = time.time() - t0
    eq(r.status, 404, "Host %r %s: status (body %r)" % (host, target, r.body[:200]))
    body = r.body.decode("latin-1")
    want = "natwrp: no service for %s" % (name or host)
    eq(body.rstrip("\r\n"), want, "404 body for Host %r" % host)
    check(body.count("\n") <= 1, "404 body is one line: %r" % body)
    check(dt < 1.0, "404 for an unclaimed host took %.2fs: not at once" % dt)


# ------------------------------------------------------------------ routing


@timed(60)
def test_e1_exact_wildcard_domain_default(t):
    """Exact host, wildcards (exact beats wildcard, longer wildcard beats
    shorter, a wildcard needs one more label), a dot-less name under
    --domain, case and port in Host, and the default agent taking what no
    route matches."""
    s = t.serve("--domain", DOMAIN)
    oa, ow, ox, oo, od = (t.origin(n) for n in ("A", "W", "X", "O", "D"))
    route_agent(t, s, oa, "ra", "a.example.com")
    route_agent(t, s, ow, "rw", "*.w.example.com")
    route_agent(t, s, ox, "rx", "exact.w.example.com, *.deep.w.example.com")
    route_agent(t, s, oo, "ro", "ollama", names=["ollama." + DOMAIN])
    route_agent(t, s, od, "rd")  # no ROUTES: the default route
    cases = [
        ("a.example.com", "A"),
        ("A.Example.COM", "A"),
        ("a.example.com:8080", "A"),
        ("A.EXAMPLE.com:443", "A"),
        ("x.w.example.com", "W"),
        ("y.x.w.example.com", "W"),
        ("X.W.Example.Com:81", "W"),
        ("exact.w.example.com", "X"),       # exact beats *.w.example.com
        ("other.w.example.com", "W"),
        ("z.deep.w.example.com", "X"),      # *.deep.w beats *.w
        ("deep.w.example.com", "W"),        # *.deep.w needs a label in front
        ("w.example.com", "D"),             # so does *.w: the default route
        ("ollama." + DOMAIN, "O"),
        ("OLLAMA.Tunnel.Example.com:8000", "O"),
        ("ollama", "D"),                    # a request's Host is not resolved under --domain
        ("b.example.com", "D"),
        ("aa.example.com", "D"),
        ("example.com", "D"),
        ("127.0.0.1:%d" % s.port, "D"),
    ]
    for host, want in cases:
        j = expect_origin(s, host, "/echo/p?q=1", want)
        eq(j["path"], "/echo/p?q=1", "path the origin saw for Host %r" % host)
    # curl, with --resolve and with -H Host:
    url = "http://a.example.com:%d/name" % s.port
    r = curl("--resolve", "a.example.com:%d:127.0.0.1" % s.port, url)
    eq((r.rc, r.out), (0, b"A\n"), "curl --resolve a.example.com %r" % r)
    r = curl("-H", "Host: q.w.example.com", "http://127.0.0.1:%d/name" % s.port)
    eq((r.rc, r.out), (0, b"W\n"), "curl -H Host: q.w.example.com %r" % r)
    r = curl("--resolve", "ollama.%s:%d:127.0.0.1" % (DOMAIN, s.port),
             "http://ollama.%s:%d/name" % (DOMAIN, s.port))
    eq((r.rc, r.out), (0, b"O\n"), "curl ollama under --domain %r" % r)
    r = curl("http://127.0.0.1:%d/name" % s.port)
    eq((r.rc, r.out), (0, b"D\n"), "curl by address: the default route %r" % r)


@timed(60)
def test_e1_path_prefix_by_segments(t):
    """Paths match whole segments (/api matches /api, /api/, /api/x and
    /api?q=1, never /apix); the longest prefix wins between agents on one
    host; paths are forwarded unchanged."""
    s = t.serve()
    oroot, oapi, ov2 = t.origin("ROOT"), t.origin("API"), t.origin("V2")
    route_agent(t, s, oapi, "api", "app.example.com/api")
    route_agent(t, s, oroot, "root", "app.example.com")
    route_agent(t, s, ov2, "v2", "app.example.com/api/v2")
    h = "app.example.com"
    cases = [
        ("/api", "API"),
        ("/api/", "API"),
        ("/api/x", "API"),
        ("/api?q=1", "API"),
        ("/api/?q=1", "API"),
        ("/api/x/y?z=/api/v2", "API"),
        ("/apix", "ROOT"),
        ("/apix/y", "ROOT"),
        ("/ap", "ROOT"),
        ("/", "ROOT"),
        ("/x/api", "ROOT"),
        ("/api/v2", "V2"),
        ("/api/v2/", "V2"),
        ("/api/v2/x?y=1", "V2"),
        ("/api/v2?y=1", "V2"),
        ("/api/v2x", "API"),
        ("/api/v", "API"),
    ]
    for target, want in cases:
        j = expect_origin(s, h, target, want)
        eq(j["path"], target, "path forwarded unchanged for %s" % target)
    # The same through curl.
    r = curl("--resolve", "app.example.com:%d:127.0.0.1" % s.port,
             "http://app.example.com:%d/api/v2/name" % s.port)
    eq((r.rc, r.out), (0, b"V2\n"), "curl /api/v2/name %r" % r)
    r = curl("-H", "Host: APP.example.com:%d" % s.port,
             "http://127.0.0.1:%d/apix/name" % s.port)
    eq((r.rc, r.out), (0, b"ROOT\n"), "curl /apix/name %r" % r)


@timed(60)
def test_e1_unclaimed_host_404(t):
    """No route matches and no default agent: 404 at once with the one-line
    body `natwrp: no service for HOST` (host lowercased, port removed); a
    path beside a path route (/apix next to /api) is unclaimed too."""
    s = t.serve("--queue-timeout", "1")
    started = time.time()
    oa = t.origin("A")
    route_agent(t, s, oa, "ra", "a.example.com, app.example.com/api")
    past_start_window(started, 1)
    expect_origin(s, "a.example.com", "/echo", "A")
    expect_origin(s, "app.example.com", "/api/x", "A")
    expect_404(s, "nope.example.com")
    expect_404(s, "Nope.Example.COM:8080", name="nope.example.com")
    expect_404(s, "app.example.com", "/apix", name="app.example.com")
    expect_404(s, "app.example.com", "/", name="app.example.com")
    expect_404(s, "b.a.example.com", name="b.a.example.com")
    r = curl("-w", "%{stderr}CODE=%{http_code}", "--resolve",
             "unclaimed.example.com:%d:127.0.0.1" % s.port,
             "http://unclaimed.example.com:%d/x" % s.port)
    check("CODE=404" in r.err, "curl on an unclaimed host: %r" % r)
    eq(r.out.rstrip(b"\n"), b"natwrp: no service for unclaimed.example.com", "curl 404 body")
    # serve stays healthy: the claimed host still answers.
    expect_origin(s, "a.example.com", "/echo", "A")


@timed(60)
def test_e1_absolute_form_routed_by_authority(t):
    """An absolute-form target whose authority differs from Host is routed
    by the authority, and the agent sees that host: in X-Forwarded-Host, and
    as Host with PRESERVE_HOST=1."""
    s = t.serve()
    oa, ob, oc = t.origin("A"), t.origin("B"), t.origin("C")
    route_agent(t, s, oa, "ra", "a.example.com")
    route_agent(t, s, ob, "rb", "b.example.com")
    route_agent(t, s, oc, "rc", "c.example.com", env={"PRESERVE_HOST": "1"})
    j = expect_origin(s, "b.example.com", "http://a.example.com/echo?x=1", "A")
    eq(j["path"], "/echo?x=1", "origin-form target at the origin")
    eq(echo_hdr(j, "X-Forwarded-Host"), ["a.example.com"], "X-Forwarded-Host at A")
    j = expect_origin(s, "a.example.com", "http://B.Example.com:8080/echo", "B")
    eq([v.lower() for v in echo_hdr(j, "X-Forwarded-Host")], ["b.example.com:8080"],
       "X-Forwarded-Host at B")
    j = expect_origin(s, "a.example.com", "http://c.example.com/echo/z", "C")
    eq(j["path"], "/echo/z", "path at C")
    eq(echo_hdr(j, "Host"), ["c.example.com"], "Host at C with PRESERVE_HOST")
    eq(echo_hdr(j, "X-Forwarded-Host"), ["c.example.com"], "X-Forwarded-Host at C")
    # The same with curl (--request-target sends the absolute form).
    r = curl("-H", "Host: a.example.com", "--request-target", "http://b.example.com/name",
             "http://127.0.0.1:%d/" % s.port)
    eq((r.rc, r.out), (0, b"B\n"), "curl absolute-form to b with Host a %r" % r)


@timed(60)
def test_e1_websocket_routed_by_host(t):
    """A WebSocket upgrade goes to the agent of its Host; echo works."""
    s = t.serve()
    oa, ob = t.origin("A"), t.origin("B")
    route_agent(t, s, oa, "ra", "a.example.com")
    route_agent(t, s, ob, "rb", "b.example.com")
    for host, o, other in (("b.example.com", ob, oa), ("A.example.com:9", oa, ob)):
        mo, mx = o.proc.mark(), other.proc.mark()
        ws = wsclient.connect(s.port, "/ws?hello=1", host_header=host)
        try:
            hello = ws.recv()
            j = json.loads(hello.data.decode())
            xfh = [v.lower() for k, v in j["headers"] if k.lower() == "x-forwarded-host"]
            eq(xfh, [host.lower()], "X-Forwarded-Host of the upgrade at the origin")
            ws.send("hi " + host)
            eq(ws.recv().data, ("hi " + host).encode(), "echo over the routed WebSocket")
            ws.close()
        finally:
            ws.close_socket()
        o.proc.wait_for(r"ws open path=/ws\?hello=1", 5, mo)
        eq(other.proc.count(r"ws open", mx), 0, "the other origin saw no upgrade for %s" % host)


@timed(40)
def test_e1_handshake_routes_and_dotless_without_domain(t):
    """The tunnel handshake: X-Natwrp-Routes in the upgrade is answered in
    the 101 with the granted routes as public URLs (dot-less names resolved
    under --domain). Without --domain a dot-less route is refused with 403
    and a one-line body naming it; the agent logs that, and another agent's
    routes are not affected."""
    s = t.serve("--domain", DOMAIN, label="serve-domain")
    c, r = tunnel_upgrade(s.port, agent_id="raw1",
                          extra=[("X-Natwrp-Routes", "a.example.com/api, ollama, *.w.example.com")])
    try:
        eq(r.status, 101, "raw upgrade with routes")
        got = [x.strip() for x in (r.header("X-Natwrp-Routes") or "").split(",")]
        eq(sorted(got), sorted(["http://a.example.com/api", "http://ollama." + DOMAIN,
                                "http://*.w.example.com"]), "granted routes in the 101")
    finally:
        c.close()
    # A version-1 peer without routes gets no X-Natwrp-Routes back.
    c, r = tunnel_upgrade(s.port, agent_id="raw2")
    try:
        eq(r.status, 101, "raw upgrade without routes")
        eq(r.header("X-Natwrp-Routes"), None, "X-Natwrp-Routes without routes asked")
    finally:
        c.close()

    s2 = t.serve("--queue-timeout", "1", label="serve-nodomain")
    started = time.time()
    oa = t.origin("A")
    route_agent(t, s2, oa, "ok", "a.example.com")
    c, r = tunnel_upgrade(s2.port, agent_id="raw3",
                          extra=[("X-Natwrp-Routes", "b.example.com, ollama")])
    c.close()
    eq(r.status, 403, "dot-less route without --domain")
    body = r.body.decode("latin-1")
    # One line naming the route and why (docs/protocol.md: `natwrp: route
    # 'NAME' refused: WHY`; either quote accepted).
    check(body.count("\n") <= 1 and body.startswith("natwrp: ") and
          re.search(r"route ['\"]ollama['\"]", body) and "domain" in body,
          "403 body: %r" % body)
    mark = s2.proc.mark()
    a, _ = route_agent(t, s2, oa, "dotless", "ollama", wait=False)
    a.wait_for(r"403.*route ['\"]ollama['\"]", 15)
    s2.proc.wait_for(r"agent=dotless\b.*403", 10, mark)
    eq(s2.proc.count(r"tunnel open tun=\d+ agent=dotless\b", mark), 0, "refused agent's tunnel")
    past_start_window(started, 1)
    expect_origin(s2, "a.example.com", "/echo", "A")
    expect_404(s2, "b.example.com")
    check(a.alive(), "a refused agent keeps running (it retries at the slow cap)")


# ------------------------------------------------------------- held routes


def _load(s, host, nthreads, stop, results, lock):
    """Threads sending GET /echo with Host host on keep-alive connections
    until stop; each result is (status, origin name) or a string."""

    def run(k):
        cc = None
        n = 0
        while not stop.is_set():
            try:
                if cc is None:
                    cc = Conn(s.port, timeout=20)
                cc.request("GET", "/echo?t=%d&n=%d" % (k, n), [("Host", host)])
                r = cc.read_response()
                if not r.complete:
                    st = "cut"
                elif r.status == 200:
                    st = (200, r.json().get("name"))
                else:
                    st = (r.status, None)
                if not r.complete or (r.header("Connection") or "").lower() == "close":
                    cc.close()
                    cc = None
            except Exception as e:  # noqa: B902
                st = "error %r" % e
                if cc is not None:
                    cc.close()
                cc = None
            n += 1
            with lock:
                results.append(st)
        if cc is not None:
            cc.close()

    ths = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(nthreads)]
    for th in ths:
        th.start()
    return ths


def _wait_count(results, lock, n, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with lock:
            if len(results) >= n:
                return
        time.sleep(0.05)
    fail("%s: only %d results within %.0fs" % (what, len(results), timeout))


@timed(90)
def test_e1_route_held_through_agent_restart(t):
    """A named route whose only agent restarts is held: a client loop sees
    only 200s from that agent's origin (never 503, never the default agent)
    while the agent is back within --queue-timeout. When it stays away
    longer, requests get 503 with Retry-After after waiting, while other
    hosts keep going to the default agent. serve logs the route on open and
    close."""
    qt = 3
    s = t.serve("--queue-timeout", str(qt))
    started = time.time()
    oa, od = t.origin("A"), t.origin("D")
    a, tun = route_agent(t, s, oa, "ra", "a.example.com")
    route_agent(t, s, od, "rd")
    past_start_window(started, qt)

    stop = threading.Event()
    results, lock = [], threading.Lock()
    ths = _load(s, "a.example.com", 4, stop, results, lock)
    _wait_count(results, lock, 100, 15, "load before the restart")
    mark = s.proc.mark()
    a.send(signal.SIGTERM)  # drains: GOAWAY, then exits when its streams are done
    s.proc.wait_for(r"route a\.example\.com -tun=%d agent=ra\b" % tun, 10, mark)
    eq(a.wait_exit(10), 0, "exit status of the drained agent")
    time.sleep(1)  # the restart delay of the scenario (< --queue-timeout), not a synchronisation
    with lock:
        at_restart = len(results)
    a2, tun2 = route_agent(t, s, oa, "ra", "a.example.com", label="agent-ra2")
    _wait_count(results, lock, at_restart + 100, 20, "load after the restart")
    stop.set()
    for th in ths:
        th.join(25)
    bad = [x for x in results if x != (200, "A")]
    check(not bad, "requests for a held route failed or went elsewhere across the agent's "
          "restart: %r (of %d)" % (bad[:10], len(results)))

    # Away for longer than --queue-timeout: 503 with Retry-After.
    mark = s.proc.mark()
    a2.send(signal.SIGTERM)
    s.proc.wait_for(r"route a\.example\.com -tun=%d agent=ra\b" % tun2, 10, mark)
    eq(a2.wait_exit(10), 0, "exit status of the second agent")
    out = []

    def held():
        t0 = time.time()
        try:
            out.append((req(s, "a.example.com", "/echo", timeout=qt + 10), time.time() - t0))
        except Exception as e:  # noqa: B902
            out.append((e, time.time() - t0))

    th = threading.Thread(target=held, daemon=True)
    th.start()
    # Meanwhile the default route answers at once.
    expect_origin(s, "other.example.com", "/echo", "D")
    th.join(qt + 15)
    check(out and not isinstance(out[0][0], BaseException), "held request: %r" % out)
    r, dt = out[0]
    eq(r.status, 503, "held route after --queue-timeout (body %r)" % r.body[:200])
    check(r.header("Retry-After"), "503 without Retry-After: %r" % r.headers)
    check(dt >= qt - 0.5, "503 after %.2fs: the request did not wait for the route" % dt)
    check(0 < len(r.body) < 200, "503 body %r" % r.body)


@timed(40)
def test_e1_route_log_lines(t):
    """serve logs `route NAME +tun=N agent=ID` for each route when a tunnel
    opens and `route NAME -tun=N agent=ID` when it closes (N the tunnel's
    id); the agent logs `serving http://HOST/PATH` per granted route."""
    s = t.serve("--domain", DOMAIN)
    oa = t.origin("A")
    mark = s.proc.mark()
    a, tun = route_agent(t, s, oa, "logs", "a.example.com/api/v1, ollama, *.w.example.com",
                         names=["a.example.com/api/v1", "ollama." + DOMAIN, "*.w.example.com"])
    m = s.proc.wait_for(r"tunnel open tun=(\d+) agent=logs\b", 5, mark)
    eq(int(m.group(1)), tun, "tunnel id")
    for n in ("a.example.com/api/v1", "ollama." + DOMAIN, "*.w.example.com"):
        eq(a.count(r"serving http://%s(\s|$)" % re.escape(n)), 1, "agent's serving line for %s" % n)
        eq(s.proc.count(r"route %s \+tun=%d agent=logs\b" % (re.escape(n), tun), mark), 1,
           "serve's route + line for %s" % n)
    mark = s.proc.mark()
    a.terminate()
    for n in ("a.example.com/api/v1", "ollama." + DOMAIN, "*.w.example.com"):
        s.proc.wait_for(r"route %s -tun=%d agent=logs\b" % (re.escape(n), tun), 10, mark)


@timed(40)
def test_e1_asterisk_form_options(t):
    """`OPTIONS * HTTP/1.1` (asterisk form, RFC 9112 3.2.4) has no path and
    no authority: it is routed by Host to the route covering the host's
    root and reaches the service as `OPTIONS *`, as before routing existed;
    serve keeps running."""
    s = t.serve()
    oa, od = t.origin("A"), t.origin("D")

    def options(host, want):
        c = Conn(s.port, timeout=10)
        try:
            c.send(b"OPTIONS * HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
            r = c.read_response(allow_eof=True)
        finally:
            c.close()
        check(r is not None, "serve closed the connection on OPTIONS * (alive: %s)" %
              s.proc.alive())
        eq(r.status, 200, "OPTIONS * to %s (body %r)" % (host, r.body[:200]))
        j = r.json()
        eq((j["name"], j["method"], j["path"]), (want, "OPTIONS", "*"), "OPTIONS * at the origin")

    route_agent(t, s, od, "rd")  # the default route only, as before issue 11
    options("a.example.com", "D")
    route_agent(t, s, oa, "ra", "a.example.com")
    for host, want in (("a.example.com", "A"), ("b.example.com", "D"), ("A.example.com:1", "A")):
        options(host, want)
    expect_origin(s, "a.example.com", "/echo", "A")


@timed(40)
def test_e1_absolute_form_userinfo_not_forwarded(t):
    """An absolute-form target with userinfo (http://user:pw@host/, which
    RFC 9110 4.2.4 says to treat as an error) is refused with 400, or routed
    by its host with the userinfo dropped: it never reaches the service in
    X-Forwarded-Host or Host."""
    s = t.serve()
    oa = t.origin("A")
    route_agent(t, s, oa, "ra", "a.example.com", env={"PRESERVE_HOST": "1"})
    for target in ("http://user:pw@a.example.com/echo", "http://user@a.example.com/echo"):
        r = req(s, "b.example.com", target)
        check(r.status in (200, 400), "%s: status %d (body %r)" % (target, r.status,
                                                                  r.body[:200]))
        if r.status == 200:
            j = r.json()
            eq(j["name"], "A", "origin for %s" % target)
            for f in ("Host", "X-Forwarded-Host"):
                eq(echo_hdr(j, f), ["a.example.com"], "%s at the service for %s" % (f, target))


@timed(60)
def test_e1_public_scheme_of_granted_routes(t):
    """serve answers the granted routes with the public scheme it knows:
    https on a TLS listener (the agent logs `serving https://HOST/PATH`),
    X-Forwarded-Proto behind --trust-proxy, else http."""
    P = pki()
    s = t.serve("--tls-cert", P("server.pem"), "--tls-key", P("server.key"), label="serve-tls")
    o = t.origin("A")
    route_agent(t, s, o, "ra", "a.example.com/x", env={"CA_FILE": P("ca.pem")})
    c = TlsConn(s.port, cafile=P("ca.pem"))
    try:
        c.request("GET", "/x/echo", [("Host", "a.example.com")])
        r = c.read_response()
        eq((r.status, r.json()["name"]), (200, "A"), "routed over TLS")
        eq(echo_hdr(r.json(), "X-Forwarded-Proto"), ["https"], "X-Forwarded-Proto over TLS")
    finally:
        c.close()
    s2 = t.serve("--trust-proxy", label="serve-proxy")
    for proto, want in (("https", "https://a.example.com/x"), (None, "http://a.example.com/x")):
        extra = [("X-Natwrp-Routes", "a.example.com/x")]
        if proto:
            extra.append(("X-Forwarded-Proto", proto))
        c, r = tunnel_upgrade(s2.port, agent_id="raw-%s" % proto, extra=extra)
        c.close()
        eq(r.status, 101, "upgrade behind --trust-proxy")
        eq(r.header("X-Natwrp-Routes"), want, "granted route with X-Forwarded-Proto %s" % proto)


@timed(60)
def test_e1_location_rewritten_per_route(t):
    """Two routes to one local service: an absolute Location at LOCAL_URL
    becomes the public origin of the route the client used (its host and
    port); relative and foreign ones pass unchanged."""
    from test_d1_agent_http import local_service
    lp = local_service(t)
    local = "http://127.0.0.1:%d" % lp
    s = t.serve()
    route_agent(t, s, local, "ra", "a.example.com")
    route_agent(t, s, local, "rb", "b.example.com/app")
    for host, target, loc, want in (
            ("a.example.com", "/redir", local + "/login?x=1", "http://a.example.com/login?x=1"),
            ("B.example.com:8080", "/app/redir", local + "/app/in",
             "http://B.example.com:8080/app/in"),
            ("a.example.com", "/redir", "/relative", "/relative"),
            ("b.example.com", "/app/redir", "http://foreign.example/x",
             "http://foreign.example/x")):
        r = req(s, host, target + "?" + urllib.parse.urlencode([("h", "Location:" + loc)]))
        eq(r.status, 302, "redirect via %s (body %r)" % (host, r.body[:200]))
        got = r.header("Location")
        eq(got.lower(), want.lower(), "Location via %s" % host)


@timed(60)
def test_e1_keepalive_connection_routes_each_request(t):
    """Requests on one keep-alive connection (and pipelined ones) are each
    routed by their own Host: a connection is not bound to the agent of its
    first request."""
    s = t.serve()
    oa, ob, od = t.origin("A"), t.origin("B"), t.origin("D")
    route_agent(t, s, oa, "ra", "a.example.com")
    route_agent(t, s, ob, "rb", "b.example.com")
    route_agent(t, s, od, "rd")
    c = Conn(s.port)
    try:
        for host, want in (("a.example.com", "A"), ("b.example.com", "B"),
                           ("c.example.com", "D"), ("A.example.com", "A")):
            c.request("GET", "/name", [("Host", host)])
            r = c.read_response()
            eq((r.status, r.body), (200, want.encode() + b"\n"), "keep-alive request to %s" % host)
        # Pipelined: three requests in one write.
        c.send(b"".join(b"GET /name HTTP/1.1\r\nHost: %s\r\n\r\n" % h for h in
                        (b"b.example.com", b"a.example.com", b"b.example.com")))
        got = [c.read_response().body for _ in range(3)]
        eq(got, [b"B\n", b"A\n", b"B\n"], "pipelined requests to three hosts")
    finally:
        c.close()


@timed(60)
def test_e1_shared_route_survives_one_agent(t):
    """Two agents (two AGENT_IDs) registered one route share its traffic;
    when one dies the other takes every request at once (the route is not
    held, no request waits)."""
    s = t.serve("--balance", "round-robin", "--queue-timeout", "5")
    o1, o2 = t.origin("ONE"), t.origin("TWO")
    a1, tun1 = route_agent(t, s, o1, "one", "a.example.com/app")
    route_agent(t, s, o2, "two", "a.example.com/app")
    seen = {served_by(s, "a.example.com", "/app/x")[1] for _ in range(6)}
    eq(seen, {"ONE", "TWO"}, "origins behind a shared route")
    mark = s.proc.mark()
    a1.kill()
    s.proc.wait_for(r"route a\.example\.com/app -tun=%d agent=one\b" % tun1, 10, mark)
    for _ in range(6):
        t0 = time.time()
        expect_origin(s, "a.example.com", "/app/x", "TWO")
        check(time.time() - t0 < 1.0, "a request waited although the route had a tunnel")
    eq(s.proc.count(r": waiting", mark), 0, "requests that waited for a tunnel")


@timed(60)
def test_e1_route_hold_expires(t):
    """--route-hold: a route whose last tunnel left is held that long
    (requests wait --queue-timeout, then 503); after it the host is
    unclaimed again: the default route takes it at once."""
    s = t.serve("--queue-timeout", "1", "--route-hold", "2")
    started = time.time()
    oa, od = t.origin("A"), t.origin("D")
    a, tun = route_agent(t, s, oa, "ra", "a.example.com")
    route_agent(t, s, od, "rd")
    past_start_window(started, 1)
    mark = s.proc.mark()
    a.terminate()
    s.proc.wait_for(r"route a\.example\.com -tun=%d agent=ra\b" % tun, 10, mark)
    gone = time.time()
    r = req(s, "a.example.com", "/echo")
    eq(r.status, 503, "held route within --route-hold (body %r)" % r.body[:200])
    # After the hold: wait it out (a wait on time itself), then the
    # default route answers without waiting.
    left = gone + 2 + 0.5 - time.time()
    if left > 0:
        time.sleep(left)
    t0 = time.time()
    expect_origin(s, "a.example.com", "/echo", "D")
    check(time.time() - t0 < 1.0, "request after the hold waited")
