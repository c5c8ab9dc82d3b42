"""j3 a real Node.js application: Express and socket.io behind natwrp.

test/apps/app.js is what a user would publish through natwrp: static files
(ETag, Last-Modified, 304 on revalidation, Range and 206, HEAD), gzip and
deflate from the compression middleware, 103 Early Hints, redirects to a
relative and to the service's own absolute URL, several Set-Cookie fields,
chunked streaming, Server-Sent Events, a JSON POST, a large multipart
upload, and socket.io on the same server.

Through serve's public URL, plain and over TLS, curl must get what the app
sends direct: the same interim responses (a proxy forwards 1xx, RFC 9110
15.2) and status, every end-to-end header (hop-by-hop ones aside; an
absolute redirect to LOCAL_URL comes back with the public origin), the
same body bytes. socket.io-client (test/apps/sio_client.js) connects with
its default transports (long-polling, then the WebSocket upgrade) and with
WebSocket only, and exchanges events both ways, acks, binary payloads,
5 MB each way, then the server disconnects it; 50 clients at once get
their acks and one broadcast; a client reconnects on its own after the
agent restarts; socket.io's browser client does the same in headless
Chromium. Interim HEADs (docs/protocol.md) are checked on the wire, for
serve and for the agent.

node and the pinned npm packages (test/apps/package-lock.json) come from
scripts/deps.sh --node, chromium from --browser (make test runs both)."""

import json
import os
import re
import shutil
import signal

from harness import ROOT, check, curl, eq, fail, pki, timed

APPS = os.path.join(ROOT, "test", "apps")
MODULES = ("express", "socket.io", "socket.io-client", "compression", "busboy")
# Hop-by-hop (RFC 9110 7.6.1) or per-message: never compared.
SKIP = {"date", "connection", "keep-alive", "transfer-encoding"}


def node():
    exe = shutil.which("node")
    if not exe:
        fail("node is not installed (scripts/deps.sh --node installs it)")
    for m in MODULES:
        if not os.path.exists(os.path.join(APPS, "node_modules", m, "package.json")):
            fail("npm package %s is missing from test/apps/node_modules "
                 "(scripts/deps.sh --node installs the pinned set)" % m)
    return exe


def make_static(t):
    d = os.path.join(t.logdir, "static")
    os.makedirs(d)
    with open(os.path.join(d, "big.bin"), "wb") as f:
        f.write(bytes((i * 13 + 5) & 0xFF for i in range(256)) * (3 * 4096))  # 3 MB
    with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("".join("line %d of a text file worth compressing\n" % i for i in range(400)))
    with open(os.path.join(d, "index.html"), "w") as f:
        f.write("<!doctype html><title>natwrp</title><h1>hello</h1>\n")
    return d


def start_app(t):
    p = t.spawn("app", [node(), os.path.join(APPS, "app.js"), "--static", make_static(t)],
                cwd=APPS)
    return int(p.wait_for(r"^app listening (\d+)$", 20).group(1))


def stack(t, tls=False):
    """The app, serve (https with the test PKI when tls) and one agent.
    Returns (app port, serve, public base URL, curl's extra arguments)."""
    port = start_app(t)
    local = "http://127.0.0.1:%d" % port
    if tls:
        P = pki()
        s = t.serve("--tls-cert", P("server.pem"), "--tls-key", P("server.key"))
        t.agent(s, local, env={"CA_FILE": P("ca.pem")})
        return port, s, s.name_url, ["--cacert", P("ca.pem")]
    s = t.serve()
    t.agent(s, local)
    return port, s, s.url, []


def parse_head(text):
    lines = text.split("\r\n")
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append((name.strip().lower(), value.strip()))
    return int(lines[0].split(" ")[1]), fields


def fetch(t, url, args):
    """curl URL; returns (status, [(name, value)], body bytes, interim
    heads [(status, fields)])."""
    hd = os.path.join(t.logdir, "curl-head")
    bd = os.path.join(t.logdir, "curl-body")
    for f in (hd, bd):
        if os.path.exists(f):
            os.unlink(f)
    r = curl("-D", hd, "-o", bd, *(list(args) + [url]), timeout=30)
    eq(r.rc, 0, "curl %s %s: %s" % (" ".join(args), url, r.err))
    with open(hd, "rb") as f:
        # The final head last, after any interim (1xx) ones.
        heads = [parse_head(h) for h in
                 f.read().decode("latin-1").strip("\r\n").split("\r\n\r\n")]
    body = b""
    if os.path.exists(bd) and "--head" not in args:  # no file for an empty body
        with open(bd, "rb") as f:
            body = f.read()
    return heads[-1][0], heads[-1][1], body, heads[:-1]


def comparable(fields, direct_origin=None, public_origin=None):
    """fields without the per-hop ones; a Location at direct_origin is
    what the client should get through serve: the same at public_origin."""
    out = []
    for name, value in fields:
        if name in SKIP:
            continue
        if name == "set-cookie":  # Expires counts from "now"
            value = re.sub(r"Expires=[^;]*", "Expires=*", value)
        if name == "location" and direct_origin and value.startswith(direct_origin + "/"):
            value = public_origin + value[len(direct_origin):]
        out.append((name, value))
    return out


def same_as_direct(t, port, base, extra, target, *args):
    """The request through serve gets what the app sends direct."""
    direct = "http://127.0.0.1:%d" % port
    ds, dh, db, di = fetch(t, direct + target, list(args))
    ps, ph, pb, pi = fetch(t, base + target, extra + list(args))
    what = "%s %s" % (" ".join(args), target)
    eq([(st, comparable(f)) for st, f in pi], [(st, comparable(f)) for st, f in di],
       "interim responses to " + what)
    eq(ps, ds, "status of " + what)
    eq(comparable(ph), comparable(dh, direct, base), "headers of " + what)
    check(pb == db, "body of %s: %d bytes through serve, %d direct" % (what, len(pb), len(db)))
    for name, _ in ph:
        check(name not in ("connection", "keep-alive"),
              "hop-by-hop %s passed through serve on %s" % (name, what))
    return ps, Fields(ph), pb


class Fields(dict):
    """A response's fields by name (the last of repeated ones), with its
    Set-Cookie values in order as .cookies."""

    def __init__(self, fields):
        super().__init__(fields)
        self.cookies = [v for k, v in fields if k == "set-cookie"]


def check_http(t, tls):
    port, _s, base, extra = stack(t, tls)
    got = lambda *a: same_as_direct(t, port, base, extra, *a)  # noqa: E731
    st, h, body = got("/static/big.bin")
    eq((st, len(body), h.get("content-length")), (200, 3 * 1024 * 1024, "3145728"), "big.bin")
    etag, lm = h.get("etag"), h.get("last-modified")
    check(etag and lm, "static file without ETag/Last-Modified: %r" % h)
    eq(got("/static/big.bin", "-H", "If-None-Match: " + etag)[0], 304, "If-None-Match")
    eq(got("/static/notes.txt", "-H", "If-Modified-Since: " + lm)[0], 304, "If-Modified-Since")
    st, h, body = got("/static/big.bin", "-r", "100-199")
    eq((st, h.get("content-range"), len(body)), (206, "bytes 100-199/3145728", 100), "Range")
    eq(got("/static/big.bin", "-r", "-100")[0], 206, "suffix Range")
    eq(got("/static/big.bin", "-r", "9000000-")[0], 416, "unsatisfiable Range")
    got("/static/big.bin", "-r", "0-9,20-29")
    got("/static/big.bin", "-r", "0-9", "-H", "If-Range: " + lm)
    eq(got("/static/big.bin", "--head")[1].get("content-length"), "3145728", "HEAD length")
    got("/static/notes.txt", "--head", "-H", "Accept-Encoding: gzip")
    for enc in ("gzip", "deflate"):
        st, h, _ = got("/static/notes.txt", "-H", "Accept-Encoding: " + enc)
        eq(h.get("content-encoding"), enc, "compressed static file")
        got("/text", "-H", "Accept-Encoding: " + enc)
        got("/stream?n=8", "-H", "Accept-Encoding: " + enc)
    got("/stream?n=8")
    got("/static/")
    got("/static")
    eq(got("/nope")[0], 404, "unknown path")
    st, h, body = got("/early-hints")  # its 103 compared above
    eq((st, body), (200, b"<!doctype html><p>hinted</p>\n"), "page after early hints")
    eq(got("/redirect/relative")[1].get("location"), "/target?from=relative", "relative")
    eq(got("/redirect/absolute")[1].get("location"), base + "/target?from=absolute",
       "absolute redirect to LOCAL_URL")
    r = curl("-L", *(extra + [base + "/redirect/absolute"]))
    eq(json.loads(r.out), {"target": True, "query": {"from": "absolute"}}, "redirect followed")
    cookies = [v.split(";")[0] for v in got("/cookies")[1].cookies]
    eq(cookies, ["a=1", "b=two%20words", "c=3"], "Set-Cookie fields, in order")
    st, _, body = got("/api/json", "-H", "Content-Type: application/json",
                      "--data-binary", '{"a":[1,2,{"b":"\u00e9"}]}')
    eq((st, json.loads(body)["received"]), (201, {"a": [1, 2, {"b": "\u00e9"}]}), "JSON POST")
    up = os.path.join(t.logdir, "upload.bin")
    with open(up, "wb") as f:
        f.write(os.urandom(1 << 20) * 24)  # 24 MB
    st, _, body = got("/upload", "-F", "file=@" + up, "-F", "note=hi")
    res = json.loads(body)
    eq((st, res["files"][0]["size"], res["fields"]), (200, 24 << 20, {"note": "hi"}), "upload")
    got("/upload", "-H", "Transfer-Encoding: chunked", "-F", "file=@" + up)
    check_sse(base, extra)


def check_sse(base, extra):
    """SSE arrives live (plain and gzip-flushed): the stream never ends, so
    an event held back until the response ends would never come."""
    for enc in ((), ("--compressed",)):
        r = curl("-N", *(extra + list(enc) + [base + "/sse"]), timeout=2)
        eq(r.rc, 28, "curl on a never-ending SSE stream ends by its timeout: %r" % r)
        events = re.findall(rb"id: (\d+)\nevent: tick\ndata: \{\"n\":(\d+)\}\n\n", r.out)
        check(len(events) >= 5, "only %d SSE events in 2 s %r: %r" % (len(events), enc, r.out[:300]))


@timed(90)
def test_express_http_same_as_direct(t):
    check_http(t, tls=False)


@timed(90)
def test_express_https_same_as_direct(t):
    check_http(t, tls=True)


def sio(t, url, *args, env=None, timeout=60.0):
    """Run sio_client.js to the end; returns its 'ok' JSON."""
    e = dict(os.environ)
    e.update(env or {})
    p = t.spawn("sio-" + args[0], [node(), os.path.join(APPS, "sio_client.js"), url] +
                list(args), env=e, cwd=APPS)
    rc = p.wait_exit(timeout)
    m = re.search(r"^ok (.*)$", p.text(), re.M)
    check(rc == 0 and m, "sio_client %s: exit %s:\n%s" % (" ".join(args), rc, p.tail_text()))
    return json.loads(m.group(1))


def check_socketio(t, tls):
    _port, _s, base, _extra = stack(t, tls)
    env = {"NODE_EXTRA_CA_CERTS": pki()("ca.pem")} if tls else None
    for transports in ("default", "websocket"):
        r = sio(t, base, "suite", transports, env=env)
        want_first = "polling" if transports == "default" else "websocket"
        eq(r["transports"], [want_first], "first transport (%s)" % transports)
        if transports == "default":
            eq(r["upgraded_to"], "websocket", "upgrade from long-polling")
        eq(r["server_transport"], "websocket", "transport the server sees (%s)" % transports)
        eq(r["echo_event"], {"hello": "world", "n": [1, 2, 3]}, "event both ways")
        eq(r["echo_ack"], {"unicode": "h\u00e9llo \u2603", "big": 70000}, "ack")
        eq(r["bin"], {"size": 1000, "ok": True}, "binary ack")
        eq(r["up5"], {"size": 5 << 20, "ok": True}, "5 MB to the server (%s)" % transports)
        eq(r["down5"], {"size": 5 << 20, "ok": True}, "5 MB from the server (%s)" % transports)
        eq(r["disconnect"], "io server disconnect", "server-initiated disconnect")
    eq(sio(t, base, "many", "50", env=env), {"clients": 50, "acks": 50, "broadcast": 50},
       "50 clients at once")


@timed(90)
def test_socketio_plain(t):
    check_socketio(t, tls=False)


@timed(90)
def test_socketio_tls(t):
    check_socketio(t, tls=True)


@timed(60)
def test_socketio_reconnects_after_agent_restart(t):
    port = start_app(t)
    local = "http://127.0.0.1:%d" % port
    s = t.serve()
    a = t.agent(s, local)
    c = t.spawn("sio-reconnect", [node(), os.path.join(APPS, "sio_client.js"), s.url,
                                  "reconnect"], cwd=APPS)
    c.wait_for(r"^connected \S+ websocket$", 20)
    since = s.proc.mark()
    a.send(signal.SIGTERM)
    eq(a.wait_exit(15), 0, "agent exit status on SIGTERM")
    c.wait_for(r"^disconnect transport (close|error)$", 15)
    t.agent(s, local, label="agent2")
    s.wait_tunnel_open("a1", since)
    c.wait_for(r"^reconnected \S+ websocket$", 20)
    eq(c.wait_exit(20), 0, "client after the restart:\n%s" % c.tail_text())
    check(re.search(r"^ok ", c.text(), re.M), "no echo after the reconnect:\n%s" % c.tail_text())


@timed(40)
def test_interim_heads_on_the_wire(t):
    """serve's side of interim HEADs, from a hand-made agent: its 101 offers
    them (X-Natwrp-Interim: 1); a 103 HEAD then the final HEAD reach the
    client in order; an interim HEAD with END, or after the final HEAD, is a
    stream protocol error (RST PROTOCOL; 502 when nothing was sent yet)."""
    from harness import Conn, tunnel_upgrade
    from test_a3_answers import RST_PROTOCOL, head_frame, next_open, wait_rst
    from test_55_wire import mux, ws_frame
    s = t.serve()
    c, r = tunnel_upgrade(s.port, agent_id="wire")
    eq((r.status, r.header("X-Natwrp-Interim")), (101, "1"), "tunnel 101 offers interim HEADs")
    s.wait_tunnel_open("wire")
    # A Content-Length in a 1xx (which has no body) must not reach the
    # client: one that believed it would read the final response as body.
    hint = [("Link", "</a.css>; rel=preload; as=style"), ("Connection", "x"), ("X", "y"),
            ("Content-Length", "5")]
    cc = Conn(s.port)
    cc.request("GET", "/hinted")
    sid, _ = next_open(c)
    c.send(ws_frame(2, head_frame(sid, 103, hint)) + ws_frame(2, head_frame(sid, 102)) +
           ws_frame(2, head_frame(sid, 200, [("Content-Length", "2")])) +
           ws_frame(2, mux(3, 1, sid, b"ok")))
    heads = [cc.read_head() for _ in range(2)]
    eq([(h.status, h.headers) for h in heads],
       [(103, [("Link", "</a.css>; rel=preload; as=style"), ("X", "y")]), (102, [])],
       "interim heads, hop-by-hop fields and Content-Length removed")
    r = cc.read_response()
    eq((r.status, r.body), (200, b"ok"), "final response after the interim ones")
    cc.request("GET", "/end-on-interim")
    sid, _ = next_open(c)
    c.send(ws_frame(2, head_frame(sid, 103, end=True)))
    eq(wait_rst(c, sid), RST_PROTOCOL, "RST for an interim HEAD with END")
    eq(cc.read_response().status, 502, "client after an interim HEAD with END")
    cc.close()
    cc = Conn(s.port)
    cc.request("GET", "/interim-after-final")
    sid, _ = next_open(c)
    c.send(ws_frame(2, head_frame(sid, 200)) + ws_frame(2, head_frame(sid, 103)))
    eq(wait_rst(c, sid), RST_PROTOCOL, "RST for an interim HEAD after the final one")
    cc.close()


@timed(40)
def test_agent_sends_interim_heads_only_when_offered(t):
    """The agent's side, against a hand-made server: a local service's 103s
    become interim HEADs (at most 8 per request) only on a tunnel whose 101
    offered them (X-Natwrp-Interim: 1); an older server's tunnel gets just
    the final HEAD, as that server would reset the stream."""
    from fakeserver import HEAD, RST, FakeServer
    o = t.origin()
    for offered in (True, False):
        fake = FakeServer()
        try:
            a = t.agent(fake.url, o, wait=False, label="agent-offered" if offered else "agent")
            tun = fake.accept(extra=[("X-Natwrp-Interim", "1")] if offered else ())
            tun.open(1, "GET", "/interim?n=20")
            heads = []
            while not heads or heads[-1].status < 200:
                f, _ = tun.expect(lambda f: f.sid == 1 and f.type in (HEAD, RST),
                                  "the agent's heads")
                check(f.type == HEAD, "agent reset the stream: %r" % f)
                heads.append(f)
            interim = [(f.status, f.end, f.headers) for f in heads[:-1]]
            want = [(103, False, [("Link", "</s.css>; rel=preload")])] * (8 if offered else 0)
            eq(interim, want, "interim HEADs (offered=%s)" % offered)
            eq(heads[-1].status, 200, "final HEAD")
        finally:
            fake.close()
        a.terminate()


@timed(90)
def test_socketio_in_a_browser(t):
    """socket.io's own browser client (/socket.io/socket.io.js) in headless
    Chromium, on a page the app serves through serve: long-polling, then
    the upgrade, acks, 300 KB binary, a broadcast, the server's disconnect,
    cookies set through serve (chromium from scripts/deps.sh --browser)."""
    import tempfile
    from test_c1_browser import CHROMIUM_FLAGS, Cdp, http_json
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        fail("chromium is not installed (scripts/deps.sh --browser installs it)")
    port = start_app(t)
    s = t.serve()
    t.agent(s, "http://127.0.0.1:%d" % port)
    profile = tempfile.mkdtemp(prefix="natwrp-chromium-", dir=t.logdir)
    b = t.spawn("chromium", [exe] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile,
                                                     "about:blank"])
    m = b.wait_for(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)", 30)
    pages = [x for x in http_json(int(m.group(2)), "/json/list") if x.get("type") == "page"]
    check(pages, "no page target in %r" % pages)
    cdp = Cdp(pages[0]["webSocketDebuggerUrl"])
    try:
        cdp.call("Page.enable")
        cdp.call("Page.navigate", url=s.url + "/pages/sio.html")
        cdp.wait_event("Page.loadEventFired")
        out = cdp.call("Runtime.evaluate", awaitPromise=True, returnByValue=True, expression=(
            "new Promise(r => window.natwrpResult ? r(window.natwrpResult) : "
            "window.addEventListener('natwrp-done', () => r(window.natwrpResult)))"))
        out = out["result"]["value"]
    finally:
        cdp.close()
    eq(out, {"first": "polling", "upgraded": "websocket", "server": "websocket",
             "echo": {"text": "h\u00e9llo", "n": [1, 2]},
             "bin": {"size": 300000, "reversed": True}, "news": "to the browser",
             "disconnect": "io server disconnect", "cookies": "a=1; c=3"},
       "socket.io in the browser")
