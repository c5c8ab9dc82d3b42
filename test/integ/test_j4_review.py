"""j4 review: interim (1xx) responses across the tunnel, and WebDAV
Destination/If rewriting in the agent, attacked from a hostile local
service, a hand-made agent and a client."""

import socket
import struct
import threading
import time

from harness import Conn, check, eq, fail, http_request, timed
from test_a4_agent import LocalService


def canned_service(replies):
    """A local service that answers each request head (no body read) with
    the next bytes of replies (the last one repeats); records the heads."""
    def handler(svc, rec):
        pos = 0
        i = 0
        while True:
            while b"\r\n\r\n" not in rec.data[pos:]:
                if not svc.recv(rec):
                    return
            end = rec.data.index(b"\r\n\r\n", pos) + 4
            with svc.cond:
                svc.heads.append(rec.data[pos:end].decode("latin-1"))
                svc.cond.notify_all()
            rec.sock.sendall(replies[min(i, len(replies) - 1)])
            i += 1
            pos = end
    svc = LocalService(handler)
    svc.heads = []
    return svc


def read_all(cc, timeout=5.0):
    """Everything the client gets until serve closes or goes quiet."""
    cc.sock.settimeout(timeout)
    out = b""
    try:
        while True:
            b = cc.sock.recv(65536)
            if not b:
                break
            out += b
    except socket.timeout:
        pass
    return out


@timed(40)
def test_j4_interim_with_body_from_service(t):
    """A 1xx has no body (RFC 9110 15.2), whatever its fields say: a
    service's 150 with Content-Length (or chunked) must not have those
    bytes taken as body (DATA before the final HEAD, or the final response
    read as the 1xx's body); the client gets the 1xx then the 200."""
    for hint in (b"Content-Length: 5\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n"):
        svc = canned_service([b"HTTP/1.1 150 Odd\r\n" + hint +
                              b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
        s = t.serve()
        t.agent(s, svc.url)
        cc = Conn(s.port)
        cc.request("GET", "/x")
        got = read_all(cc, 3.0)
        cc.close()
        check(got.startswith(b"HTTP/1.1 150 Odd\r\n"), "interim first: %r" % got)
        check(b"\r\n\r\nHTTP/1.1 200 OK\r\n" in got and got.endswith(b"\r\n\r\nok"),
              "the final response whole after it (%r): %r" % (hint, got))


def raw_head(sid, status, reason=b"OK", fields=(), end=False):
    """A HEAD frame with raw bytes for the reason and fields."""
    from test_55_wire import mux
    p = struct.pack(">H", status) + bytes([len(reason)]) + reason + struct.pack(">H", len(fields))
    for k, v in fields:
        p += struct.pack(">H", len(k)) + k + struct.pack(">H", len(v)) + v
    return mux(2, 1 if end else 0, sid, p)


def wire_stack(t, *serve_args):
    from harness import tunnel_upgrade
    s = t.serve(*serve_args)
    c, r = tunnel_upgrade(s.port, agent_id="wire")
    eq(r.status, 101, "tunnel upgrade")
    s.wait_tunnel_open("wire")
    return s, c


@timed(40)
def test_j4_interim_from_agent_is_checked(t):
    """A hand-made agent's interim HEADs: CR/LF in its reason or a field,
    or a bad field name, never reach the client (502 instead); an
    HTTP/1.0 client gets none of the valid ones; a 1xx on a stream the
    client left is dropped; a stream of 1xx does not hold off the response
    timeout."""
    from test_55_wire import mux, ws_frame
    from test_a3_answers import next_open
    s, c = wire_stack(t, "--response-timeout", "2")
    bad = [(b"OK\r\nX-Injected: 1", ()), (b"OK", ((b"Link", b"<a>\r\nX-Injected: 1"),)),
           (b"OK", ((b"X Injected", b"1"),)), (b"OK", ((b"X:", b"1"),))]
    for reason, fields in bad:
        cc = Conn(s.port)
        cc.request("GET", "/bad")
        sid, _ = next_open(c)
        c.send(ws_frame(2, raw_head(sid, 103, reason, fields)))
        got = read_all(cc, 3.0)
        cc.close()
        check(got.startswith(b"HTTP/1.1 502 ") and b"Injected" not in got,
              "invalid interim %r %r: %r" % (reason, fields, got))
    cc = Conn(s.port)
    cc.send(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
    sid, _ = next_open(c)
    c.send(ws_frame(2, raw_head(sid, 103, b"Early", ((b"Link", b"<a>"),))) +
           ws_frame(2, raw_head(sid, 199)) +
           ws_frame(2, raw_head(sid, 200, fields=((b"Content-Length", b"2"),))) +
           ws_frame(2, mux(3, 1, sid, b"ok")))
    got = read_all(cc, 3.0)
    cc.close()
    check(got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\nok") and
          got.count(b"HTTP/1.") == 1, "HTTP/1.0 client: the final response only: %r" % got)
    # 100 from the agent is not forwarded (serve answers Expect itself); 199 is.
    cc = Conn(s.port)
    cc.request("GET", "/hundred")
    sid, _ = next_open(c)
    c.send(ws_frame(2, raw_head(sid, 100, b"Continue")) + ws_frame(2, raw_head(sid, 199, b"X")) +
           ws_frame(2, raw_head(sid, 204, end=True)))
    got = read_all(cc, 2.0)
    cc.close()
    check(got.startswith(b"HTTP/1.1 199 X\r\n\r\nHTTP/1.1 204 ") and b" 100 " not in got,
          "100 dropped, 199 forwarded: %r" % got)
    # 1xx every 200 ms: the response timeout (2 s) still ends the wait.
    cc = Conn(s.port)
    cc.request("GET", "/slow")
    sid, _ = next_open(c)
    t0 = time.time()
    status = None
    while time.time() - t0 < 8:
        c.send(ws_frame(2, raw_head(sid, 102, b"Processing")))
        cc.sock.settimeout(0.2)
        try:
            r = cc.read_head()
        except (socket.timeout, TimeoutError):
            continue
        if r.status >= 200:
            status = r.status
            break
    cc.close()
    eq(status, 504, "final status while 102s keep coming")
    check(time.time() - t0 < 5, "504 after the response timeout, not later")


@timed(40)
def test_j4_interim_from_service_edge_cases(t):
    """Through a real agent: 103 then 101 for an upgrade; 1xx to a HEAD;
    a flood of 1xx (at most 8 forwarded) then the final response; 100
    Continue from the service is not forwarded."""
    svc = canned_service([b"HTTP/1.1 103 Early\r\nLink: <a>\r\n\r\n"
                          b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\n\r\n"])
    s = t.serve()
    t.agent(s, svc.url)
    cc = Conn(s.port)
    cc.request("GET", "/ws", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                             ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                             ("Sec-WebSocket-Version", "13")])
    heads = [cc.read_head(), cc.read_head()]
    eq([(h.status, h.header("Upgrade")) for h in heads], [(103, None), (101, "websocket")],
       "103 then 101")
    cc.close()
    flood = b"HTTP/1.1 102 P\r\n\r\n" * 50 + b"HTTP/1.1 100 Continue\r\n\r\n"
    svc2 = canned_service([flood + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    t.agent(s, svc2.url, agent_id="a2", env={"ROUTES": "flood.example"})
    for method in ("GET", "HEAD"):
        cc = Conn(s.port)
        cc.request(method, "/f", host="flood.example")
        got = read_all(cc, 2.0)
        cc.close()
        want = b"HTTP/1.1 102 P\r\n\r\n" * 8 + b"HTTP/1.1 200 OK\r\n"
        check(got.startswith(want) and b" 100 " not in got, "%s: %r" % (method, got))
        check(got.endswith(b"\r\n\r\nok" if method == "GET" else b"\r\n\r\n"),
              "%s: the final response: %r" % (method, got))


@timed(40)
def test_j4_interim_connection_close(t):
    """A 1xx whose Connection says close (or an HTTP/1.0 1xx) ends nothing:
    the final response still follows on the same connection and reaches
    the client (llhttp would take the 1xx as the connection's last
    message and fail the final response as data after it)."""
    for interim in (b"HTTP/1.1 103 E\r\nConnection: close\r\n\r\n",
                    b"HTTP/1.0 103 E\r\n\r\n"):
        svc = canned_service([interim + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
        s = t.serve()
        t.agent(s, svc.url)
        cc = Conn(s.port)
        cc.request("GET", "/x")
        got = read_all(cc, 2.0)
        cc.close()
        check(b"HTTP/1.1 200 OK\r\n" in got and got.endswith(b"\r\n\r\nok"),
              "%r: the final response: %r" % (interim, got))


def dest_seen(svc, s, fields, host="pub.example.com"):
    """The Destination and If values the service got for a COPY with fields."""
    n = len(svc.heads)
    r = http_request(s.port, "COPY", "/src", [("Host", host)] + list(fields))
    eq(r.status, 201, "COPY status")
    with svc.cond:
        svc.cond.wait_for(lambda: len(svc.heads) > n, 5)
        head = svc.heads[n]
    out = []
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.lower() in ("destination", "if"):
            out.append((k, v.strip()))
    return head.split("\r\n")[0], out


@timed(40)
def test_j4_destination_and_if_hostile(t):
    """Client-made Destination and If values with a LOCAL_URL base path:
    only URLs on the public origin (or paths) change; userinfo, other
    hosts and ports, bad ports, network-path references, unbalanced If
    values pass as sent; several fields keep their order; a long If with
    many tags comes out whole."""
    svc = canned_service([b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"])
    s = t.serve()
    t.agent(s, svc.url + "/app")
    loc = "http://127.0.0.1:%d" % svc.port
    same = ["http://user@pub.example.com/x", "http://pub.example.com@evil/x",
            "http://evil/x", "https://pub.example.com/x", "http://pub.example.com:0/x",
            "http://pub.example.com:99999/x", "http://pub.example.com:8080/x",
            "//pub.example.com/x", "http:/x", "x/y", "http://pub.example.com.evil/x",
            "http://[::1]/x", "mailto:pub.example.com"]
    for d in same:
        eq(dest_seen(svc, s, [("Destination", d)])[1], [("Destination", d)],
           "Destination %r passes as sent" % d)
    changed = [("http://pub.example.com/x", loc + "/app/x"),
               ("HTTP://PUB.EXAMPLE.COM:80/x?q#f", loc + "/app/x?q#f"),
               ("http://pub.example.com", loc + "/app"),
               ("http://pub.example.com:/x", loc + "/app/x"),
               ("/x", "/app/x")]
    for d, want in changed:
        eq(dest_seen(svc, s, [("Destination", d)])[1], [("Destination", want)],
           "Destination %r made local" % d)
    eq(dest_seen(svc, s, [("Destination", "http://[::1]:8080/y")], host="[::1]:8080")[1],
       [("Destination", loc + "/app/y")], "IPv6 public host")
    ifs = [("<http://pub.example.com/a", None), ("(<urn:x> [\"e\"]", None),
           ("(<http://pub.example.com/a>)", None), ("<http://pub.example.com/a> ([\"x)<\"])",
                                                    "<%s/app/a> ([\"x)<\"])" % loc)]
    for v, want in ifs:
        eq(dest_seen(svc, s, [("If", v)])[1], [("If", want or v)], "If %r" % v)
    many = " ".join("<http://pub.example.com/%d> (<urn:uuid:%d>)" % (i, i) for i in range(300))
    want = " ".join("<%s/app/%d> (<urn:uuid:%d>)" % (loc, i, i) for i in range(300))
    eq(dest_seen(svc, s, [("If", many)])[1], [("If", want)], "300 tagged lists")
    eq(dest_seen(svc, s, [("Destination", "/a"), ("If", "<http://evil/b>"),
                          ("Destination", "http://pub.example.com/c")])[1],
       [("Destination", "/app/a"), ("If", "<http://evil/b>"),
        ("Destination", loc + "/app/c")], "several fields, in order")
    big = "/" + "a" * 30000
    eq(dest_seen(svc, s, [("Destination", big)])[1], [("Destination", "/app" + big)],
       "a 30 KB Destination")
    eq(dest_seen(svc, s, [("Destination", "http://pub.example.com/%d" % i) for i in range(60)])[1],
       [("Destination", "%s/app/%d" % (loc, i)) for i in range(60)], "60 Destination fields")


@timed(60)
def test_j4_interim_flood_to_a_client_that_does_not_read(t):
    """A hand-made agent sends 32 MB of 103s to a client that reads
    nothing: serve drops them over its bound (RSS stays flat), the final
    response still comes whole, and 103s for a stream the client left are
    dropped without harm."""
    from test_55_wire import mux, ws_frame
    from test_a3_answers import next_open
    s, c = wire_stack(t)
    cc = Conn(s.port, rcvbuf=4096)
    cc.request("GET", "/flood")
    sid, _ = next_open(c)
    link = b"<" + b"a" * 8000 + b">"
    hint = ws_frame(2, raw_head(sid, 103, b"Early", ((b"Link", link),)))
    base = s.proc.rss_kib()
    for _ in range(40):
        c.send(hint * 100)
    c.send(ws_frame(2, raw_head(sid, 200, fields=((b"Content-Length", b"2"),))) +
           ws_frame(2, mux(3, 1, sid, b"ok")))
    time.sleep(1.0)
    grew = s.proc.rss_kib() - base
    check(grew < 12 * 1024, "serve grew %d KiB for 32 MB of 103s nobody read" % grew)
    got = read_all(cc, 3.0)
    cc.close()
    n = got.count(b"HTTP/1.1 103 Early\r\n")
    check(n < 4000 and got.endswith(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
          "%d 103s then the final response: %r" % (n, got[-200:]))
    cc = Conn(s.port)
    cc.request("GET", "/left")
    sid, _ = next_open(c)
    cc.reset()
    time.sleep(0.3)
    c.send(ws_frame(2, raw_head(sid, 103, b"Early")) * 10)
    cc = Conn(s.port)  # serve and the tunnel still work
    cc.request("GET", "/after")
    sid, _ = next_open(c)
    c.send(ws_frame(2, raw_head(sid, 204, end=True)))
    eq(cc.read_response().status, 204, "a request after them")
    cc.close()


@timed(40)
def test_j4_interim_pipelined_in_order(t):
    """Two pipelined requests: request 2's stream opens only once response
    1 has ended, so its 103 can never reach the client inside response 1."""
    from test_55_wire import mux, ws_frame
    from test_a3_answers import next_open
    s, c = wire_stack(t)
    cc = Conn(s.port)
    cc.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    sid1, _ = next_open(c)
    c.send(ws_frame(2, raw_head(sid1, 103, b"One")) +
           ws_frame(2, raw_head(sid1, 200, fields=((b"Content-Length", b"2"),))))
    c.sock.settimeout(0.7)
    try:
        b = c.sock.recv(1 << 16)
    except socket.timeout:
        b = b""
    c.sock.settimeout(10)
    eq(b, b"", "serve's frames before response 1 ended (no OPEN for request 2)")
    c.send(ws_frame(2, mux(3, 1, sid1, b"ok")))
    sid2, _ = next_open(c)
    c.send(ws_frame(2, raw_head(sid2, 103, b"Two")) +
           ws_frame(2, raw_head(sid2, 200, fields=((b"Content-Length", b"2"),))) +
           ws_frame(2, mux(3, 1, sid2, b"OK")))
    got = read_all(cc, 2.0)
    cc.close()
    want = (b"HTTP/1.1 103 One\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.1 103 Two\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    eq(got, want, "pipelined responses with their 103s, in order")


@timed(40)
def test_j4_auth_rule_covers_destination(t):
    """AUTH_RULE protects paths; a WebDAV COPY or MOVE writes its
    Destination, which mod_dav reads as a path on any host (README): a
    client without the token must not copy or move into a protected path
    from an open one. Open Destinations, and the token, still pass."""
    svc = canned_service([b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"])
    s = t.serve("--auth-token", "sekret-token", "--auth-rule", "^/private/")
    t.agent(s, svc.url)
    host = [("Host", "pub.example.com")]
    for d in ("/private/x", "http://pub.example.com/private/x", "http://evil/private/x",
              "/open/../private/x", "/%70rivate/x", "//evil/private/x", "/open/x#/../../private/x"):
        for m in ("COPY", "MOVE"):
            r = http_request(s.port, m, "/open/a", host + [("Destination", d)])
            eq(r.status, 401, "%s /open/a to %r without the token" % (m, d))
    r = http_request(s.port, "MOVE", "/open/a", host + [("Destination", "/open/b"),
                                                         ("Destination", "/private/b")])
    eq(r.status, 401, "a second Destination into /private/")
    for d in ("/open/b", "http://pub.example.com/open/b"):
        eq(http_request(s.port, "COPY", "/open/a", host + [("Destination", d)]).status, 201,
           "COPY to %r" % d)
    eq(http_request(s.port, "COPY", "/open/a", host + [("Destination", "/private/x"),
                                                       ("X-Auth-Token", "sekret-token")]).status,
       201, "COPY into /private/ with the token")
