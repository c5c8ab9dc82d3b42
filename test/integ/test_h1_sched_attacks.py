"""h1 Attacks on issue 14's output scheduler (per-stream DATA queues, batches,
TCP_NOTSENT_LOWAT) and on serve's moved deadline timer and head filter.

Each test drives the real binaries on loopback; none waits on a sleep for
an event (sleeps only pace a slow client)."""

import hashlib
import socket
import threading
import time

from harness import Conn, check, echo, eq, hdr, pattern_sha256, timed


def sha_download(port, target, rate=None, timeout=60):
    """GET target; returns (status, length, sha256 hex). rate: bytes per
    0.01 s read (a slow reader), None: as fast as possible."""
    c = Conn(port, timeout=timeout, rcvbuf=64 * 1024 if rate else None)
    h = hashlib.sha256()
    n = [0]

    def sink(b):
        h.update(b)
        n[0] += len(b)
        if rate:
            time.sleep(0.01 * len(b) / rate)
    try:
        c.request("GET", target)
        r = c.read_response(sink=sink)
        return r.status, n[0], h.hexdigest(), r.complete
    finally:
        c.close()


@timed(90)
def test_h1_upgrade_half_close_order(t):
    """A raw upgrade moving megabytes both ways: the upper-cased echo comes
    back whole and in order, and "bye" (sent after the client's half-close)
    only after the last echoed byte."""
    o, s, a = t.stack()
    c = Conn(s.port, timeout=30)
    c.request("GET", "/raw-upgrade", [("Connection", "Upgrade"), ("Upgrade", "x-raw")])
    r = c.read_head()
    eq(r.status, 101, "upgrade status")
    size = 6 * 1024 * 1024
    payload = bytes((97 + (i % 26)) for i in range(65536))
    got = bytearray(c.buf)
    c.buf = b""

    def writer():
        left = size
        while left:
            k = min(left, len(payload))
            c.sock.sendall(payload[:k])
            left -= k
        c.sock.shutdown(socket.SHUT_WR)
    th = threading.Thread(target=writer, daemon=True)
    th.start()
    while True:
        b = c.sock.recv(1 << 16)
        if not b:
            break
        got += b
    th.join(10)
    want = payload.upper() * (size // len(payload)) + b"bye"
    eq(len(got), len(want), "bytes back through the upgrade")
    check(bytes(got) == want, "echo bytes differ from what was sent (or 'bye' came early)")


@timed(120)
def test_h1_drain_delivers_queued_downloads(t):
    """SIGTERM to the agent while slow readers hold downloads queued on its
    tunnel: every byte arrives, then the agent exits 0."""
    o, s, a = t.stack()
    n, size = 4, 8 * 1024 * 1024
    res = [None] * n

    def run(i):
        try:
            res[i] = sha_download(s.port, "/bytes?n=%d&seed=%d" % (size, i), rate=256 * 1024)
        except Exception as e:  # noqa: BLE001
            res[i] = e
    ths = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for th in ths:
        th.start()
    o.proc.wait_for(r"GET /bytes", 10)
    time.sleep(0.5)  # the downloads are under way (pace, not an event)
    a.send(15)
    for th in ths:
        th.join(90)
    for i in range(n):
        check(isinstance(res[i], tuple), "download %d: %r" % (i, res[i]))
        st, ln, sh, complete = res[i]
        eq(st, 200, "download %d status" % i)
        eq(ln, size, "download %d length" % i)
        eq(sh, pattern_sha256(size, i), "download %d sha256" % i)
    eq(a.wait_exit(30), 0, "agent exit status after the drain")


@timed(120)
def test_h1_many_streams_queued_and_reset(t):
    """300 downloads at once, a third of them cut by their clients while
    their DATA is queued: the rest arrive byte-exact and the tunnel still
    answers."""
    o, s, a = t.stack(serve_args=("--max-streams", "1000"))
    n, size = 300, 256 * 1024
    res = [None] * n

    def run(i):
        try:
            if i % 3 == 0:
                c = Conn(s.port, timeout=30)
                c.request("GET", "/bytes?n=%d&seed=%d" % (size, i))
                c.read_head()
                c.reset()
                res[i] = "cut"
                return
            res[i] = sha_download(s.port, "/bytes?n=%d&seed=%d" % (size, i), timeout=60)
        except Exception as e:  # noqa: BLE001
            res[i] = e
    ths = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(100)
    for i in range(n):
        if i % 3 == 0:
            continue
        check(isinstance(res[i], tuple), "download %d: %r" % (i, res[i]))
        eq(res[i][0], 200, "download %d status" % i)
        eq(res[i][2], pattern_sha256(size, i), "download %d sha256" % i)
    eq(echo(s)["method"], "GET", "a request after the storm")


@timed(60)
def test_h1_connection_lists_custom_names(t):
    """Connection naming a custom field next to hop-by-hop ones drops it,
    whatever the case, commas, whitespace and repetition."""
    o, s, a = t.stack()
    cases = [
        [("Connection", "keep-alive, X-Foo"), ("X-Foo", "1")],
        [("Connection", "Keep-Alive"), ("Connection", "x-foo"), ("X-Foo", "1")],
        [("Connection", " ,KEEP-ALIVE ,\t X-FOO\t, "), ("X-Foo", "1")],
        [("Connection", "keep-alive,,x-foo"), ("x-foo", "1")],
        [("Connection", "te, upgrade, X-Foo"), ("X-Foo", "1")],
    ]
    for hs in cases:
        e = echo(s, headers=hs + [("X-Keep", "k")])
        eq(hdr(e, "x-foo"), [], "X-Foo forwarded with %r" % (hs,))
        eq(hdr(e, "x-keep"), ["k"], "X-Keep with %r" % (hs,))
    e = echo(s, headers=[("Connection", "keep-alive"), ("X-Foo", "1")])
    eq(hdr(e, "x-foo"), ["1"], "X-Foo kept when Connection lists only keep-alive")


@timed(60)
def test_h1_xff_with_and_without_trust(t):
    """X-Forwarded-For: the client's address alone without --trust-proxy;
    appended to the incoming value with it."""
    o = t.origin("A")
    s1 = t.serve()
    t.agent(s1, o, agent_id="x1")
    e = echo(s1, headers=[("X-Forwarded-For", "1.2.3.4")])
    eq(hdr(e, "x-forwarded-for"), ["127.0.0.1"], "XFF without trust")
    e = echo(s1)
    eq(hdr(e, "x-forwarded-for"), ["127.0.0.1"], "XFF without trust, none sent")
    s2 = t.serve("--trust-proxy", label="serve2")
    t.agent(s2, o, agent_id="x2", label="agent2")
    e = echo(s2, headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "5.6.7.8")])
    eq(hdr(e, "x-forwarded-for"), ["1.2.3.4, 5.6.7.8, 127.0.0.1"], "XFF with trust")
    e = echo(s2)
    eq(hdr(e, "x-forwarded-for"), ["127.0.0.1"], "XFF with trust, none sent")


@timed(60)
def test_h1_slowloris_head_cut(t):
    """A head trickling one byte every 0.2 s is cut at --head-timeout, even
    after a first request on the connection moved the deadline around."""
    o, s, a = t.stack(serve_args=("--head-timeout", "1", "--idle-timeout", "5"))
    c = Conn(s.port, timeout=10)
    c.request("GET", "/echo")
    eq(c.read_response().status, 200, "first request")
    start = time.monotonic()
    req = b"GET /echo HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    closed = False
    for b in req:
        try:
            c.sock.sendall(bytes([b]))
        except OSError:
            closed = True
            break
        time.sleep(0.2)
        if time.monotonic() - start > 6:
            break
    el = time.monotonic() - start
    if not closed:
        r = c.read_response(allow_eof=True)
        check(r is None or r.status == 408, "slow head answered %r" % (r,))
    check(el < 4, "a trickled head lived %.1f s with --head-timeout 1" % el)


def _agent_on_fake(t, window=262144):
    from fakeserver import FakeServer
    o = t.origin("A")
    fs = FakeServer(window=window)
    a = t.agent(fs.url, o, wait=False)
    return o, fs, fs.accept(), a


@timed(60)
def test_h1_agent_rst_while_queued(t):
    """agent: the server resets a download whose DATA is queued behind a
    batch; the other download on the tunnel still arrives whole, and a new
    request after it is answered."""
    o, fs, tun, a = _agent_on_fake(t)
    size = 4 * 1024 * 1024
    tun.open(1, "GET", "/bytes?n=%d&seed=1" % size, [("Host", "x")])
    tun.open(3, "GET", "/bytes?n=%d&seed=3" % size, [("Host", "x")])
    _, seen = tun.expect(lambda f: f.sid == 1 and f.type == 3 and f.payload, "DATA on stream 1")
    tun.rst(1, 1)
    tun.window(1, 1 << 20)  # crosses the reset: ignored
    # Stream 3's first frames may have come before stream 1's first DATA.
    head3 = next((f for f in seen if f.sid == 3 and f.type == 2), None)
    early = b"".join(f.payload for f in seen if f.sid == 3 and f.type == 3)
    if early:
        tun.window(3, len(early))
    head, body, rst = tun.response(3, timeout=30)
    head, body = head or head3, early + body
    check(rst is None, "stream 3 reset: %r" % (rst,))
    eq(head.status, 200, "stream 3 status")
    eq(len(body), size, "stream 3 length")
    eq(hashlib.sha256(body).hexdigest(), pattern_sha256(size, 3), "stream 3 sha256")
    tun.open(5, "GET", "/echo", [("Host", "x")])
    head, body, rst = tun.response(5)
    eq(head.status, 200, "a request after the reset")
    check(a.alive(), "agent still running")


@timed(60)
def test_h1_agent_goaway_delivers_queue_then_closes(t):
    """agent: GOAWAY while a download is queued: every byte and its END go
    out (the server closes a tunnel it sent GOAWAY on)."""
    o, fs, tun, a = _agent_on_fake(t, window=16 * 1024 * 1024)
    size = 6 * 1024 * 1024
    tun.open(1, "GET", "/bytes?n=%d&seed=7" % size, [("Host", "x")])
    tun.expect(lambda f: f.sid == 1 and f.type == 2, "HEAD on stream 1")
    tun.goaway(1)
    body, end = b"", False
    while True:
        f = tun.recv(30)
        if f is None:
            break
        if f.sid == 1 and f.type == 3:
            body += f.payload
            end = f.end
        if end:
            break
    check(end, "the tunnel ended before stream 1's END (%d of %d bytes)" % (len(body), size))
    eq(len(body), size, "stream 1 length")
    eq(hashlib.sha256(body).hexdigest(), pattern_sha256(size, 7), "stream 1 sha256")


BIG_HEAD = b"X-Big: " + b"b" * 30000 + b"\r\n"
BODY = 200 * 1024


def _big_head_body_service(svc, rec):
    pos = 0
    while True:
        line, hdrs, body, pos = svc.read_request(rec, pos)
        rec.sock.sendall(b"HTTP/1.1 200 OK\r\n" + BIG_HEAD + b"Content-Length: %d\r\n\r\n"
                         % (BODY + 32) + hashlib.sha256(body).hexdigest()[:32].encode()
                         + b"r" * BODY)


@timed(120)
def test_h1_big_heads_and_bodies_both_ways(t):
    """test_a8's deadlock with bodies too: 300 POSTs with 30 KB heads and
    200 KiB bodies queue while the agent is stopped; it answers each with
    a 30 KB head and a 200 KiB body. Every request is answered whole and
    neither side cuts the tunnel as stalled."""
    import select
    from test_a4_agent import LocalService, wait_stopped
    n = 300
    svc = LocalService(_big_head_body_service)
    s = t.serve("--ping-interval", "3")
    a = t.agent(s, svc.url, env={"PING_INTERVAL": "3", "MAX_LOCAL_CONNS": "32"})
    wait_stopped(a)
    body = b"q" * BODY
    want_sha = hashlib.sha256(body).hexdigest()[:32].encode()
    socks = []
    try:
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            c.setblocking(False)
            socks.append([c, b"GET /r%d HTTP/1.1\r\nHost: x\r\n" % i + BIG_HEAD +
                          b"Content-Length: %d\r\nConnection: close\r\n\r\n" % BODY + body])
        time.sleep(0.5)  # serve parses heads and queues the OPENs
    finally:
        a.cont()
    got = {c: b"" for c, _ in socks}
    out = {c: data for c, data in socks}
    open_ = set(got)
    deadline = time.monotonic() + 60
    while open_ and time.monotonic() < deadline:
        w = [c for c in open_ if out[c]]
        r, wr, _ = select.select(list(open_), w, [], 1.0)
        for c in wr:
            try:
                k = c.send(out[c][:262144])
                out[c] = out[c][k:]
            except BlockingIOError:
                pass
            except OSError:
                out[c] = b""
        for c in r:
            try:
                b = c.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                b = b""
            if b:
                got[c] += b
            else:
                open_.discard(c)
                c.close()
    bad = {}
    for c, _ in socks:
        g = got[c]
        ok = g.startswith(b"HTTP/1.1 200") and g.endswith(want_sha + b"r" * BODY)
        if not ok:
            k = g[:12].decode("latin-1") or ("(no answer)" if c in open_ else "(empty)")
            bad[k] = bad.get(k, 0) + 1
    eq(bad, {}, "requests not answered whole")
    for p in (s.proc, a):
        check("read nothing" not in p.text(), "%s cut the tunnel as stalled" % p.label)


def _duplex(conn, size):
    """POST size pattern bytes to /duplex (chunked echo) while reading the
    echo; returns (status, echoed length, echoed sha256, sent sha256)."""
    from harness import pattern_chunks
    sent = hashlib.sha256()
    err = []

    def writer():
        try:
            for b in pattern_chunks(size, "dx"):
                sent.update(b)
                conn.send(b)
        except OSError as e:
            err.append(e)
    conn.request("POST", "/duplex", [("Content-Length", str(size))])
    th = threading.Thread(target=writer, daemon=True)
    th.start()
    h = hashlib.sha256()
    n = [0]

    def sink(b):
        h.update(b)
        n[0] += len(b)
    r = conn.read_response(sink=sink)
    th.join(30)
    check(not err, "upload failed: %r" % err)
    return r.status, n[0], h.hexdigest(), sent.hexdigest()


def _duplex_run(t, tls_client):
    from harness import TlsConn, pki
    P = pki()
    o = t.origin()
    plain, tls = t.serve_multi(["http://127.0.0.1:0", "https://127.0.0.1:0"],
                               "--tls-cert", P("server.pem"), "--tls-key", P("server.key"))
    t.agent(tls, o, env={"CA_FILE": P("ca.pem")})

    def conn(timeout):
        if tls_client:
            return TlsConn(tls.port, cafile=P("ca.pem"), timeout=timeout)
        return Conn(plain.port, timeout=timeout)
    size = 64 * 1024 * 1024
    res = []
    big = conn(120)
    th = threading.Thread(target=lambda: res.append(_duplex(big, size)), daemon=True)
    th.start()
    o.proc.wait_for(r"POST /duplex", 10)
    small = conn(20)
    small.request("GET", "/echo", host="localhost")
    eq(small.read_response().status, 200, "small request beside the duplex")
    th.join(150)
    check(res, "duplex did not finish")
    st, n, got, sent = res[0]
    eq(st, 200, "duplex status")
    eq(n, size, "duplex echoed length")
    eq(got, sent, "duplex echo sha256")


@timed(180)
def test_h1_duplex_both_ways_over_wss(t):
    """64 MiB each way at once on one stream through a wss tunnel (TLS
    under TCP_NOTSENT_LOWAT and the batch hand-off), with a small request
    beside it: byte-exact both ways, the small one answered meanwhile. The
    client is plain HTTP: a Python ssl client reading and writing from two
    threads stalled at 12-42 MB (at i14start too), most likely the test's
    own ssl use; curl over TLS moved 64 MiB each way at both."""
    _duplex_run(t, False)


@timed(90)
def test_h1_stalled_agent_cut_with_uploads_queued(t):
    """serve: an agent that stops reading while 100 uploads have DATA
    queued in their streams: the stall timer still cuts the tunnel (two
    ping intervals), every upload is answered 502 or closed, and serve's
    memory stays bounded (each stream holds at most one read)."""
    from test_h0_fairness import raw_agent
    s = t.serve("--ping-interval", "1")
    c = raw_agent(s.port, "stall", 256 * 1024 * 1024)
    s.wait_tunnel_open("stall")
    rss0 = s.proc.rss_kib()
    n, size = 100, 8 * 1024 * 1024
    ups = []
    for i in range(n):
        u = Conn(s.port, timeout=30)
        u.sock.setblocking(False)
        u.send_left = b"POST /up%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (i, size)
        u.body_left = size
        ups.append(u)
    import select
    chunk = b"u" * 65536
    peak = rss0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not s.proc.find(r"dropping tunnel"):
        w = {u.sock: u for u in ups if u.send_left or u.body_left}
        _, wr, _ = select.select([], list(w), [], 0.2)
        for u in (w[x] for x in wr):
            try:
                if u.send_left:
                    k = u.sock.send(u.send_left)
                    u.send_left = u.send_left[k:]
                else:
                    k = u.sock.send(chunk[:u.body_left])
                    u.body_left -= k
            except (BlockingIOError, OSError):
                pass
        peak = max(peak, s.proc.rss_kib())
    check(s.proc.find(r"dropping tunnel"), "serve never cut the stalled tunnel")
    print("serve rss %d KiB before, peak %d KiB" % (rss0, peak))
    check(peak - rss0 < 64 * 1024, "serve grew %d KiB with %d uploads stalled" % (peak - rss0, n))
    for u in ups:
        u.sock.setblocking(True)
        u.sock.settimeout(10)
        r = u.read_response(allow_eof=True)
        check(r is None or r.status == 502, "upload answered %r" % (r,))
        u.close()
    c.close()


@timed(90)
def test_h1_unsent_open_retried_on_other_tunnel(t):
    """serve: GETs whose OPEN waits in the batch behind an upload's backlog
    (the agent reads nothing) never left: when that tunnel dies they go to
    the other tunnel, and every one is answered 200."""
    from test_h0_fairness import Uploader, raw_agent
    o = t.origin("A")
    s = t.serve(env={"LOG_LEVEL": "debug"})
    c = raw_agent(s.port, "stuck", 256 * 1024 * 1024)
    s.wait_tunnel_open("stuck")
    up = Uploader(s.port)
    up.wait_stalled()
    t.agent(s, o, agent_id="good")
    n = 8
    gets = []
    for i in range(n):
        g = Conn(s.port, timeout=20)
        g.request("GET", "/echo/g%d" % i)
        gets.append(g)
    s.proc.wait_for(r"strm=\d+ GET /echo/g%d\b" % (n - 1), 10)
    c.reset()
    got = [g.read_response().status for g in gets]
    up.stop = True
    up.c.reset()
    eq(got, [200] * n, "GETs answered after the stuck tunnel died")
    check(s.proc.find(r"retrying on another tunnel"),
          "no GET was on the stuck tunnel (nothing retried): the test proved nothing")


@timed(60)
def test_h1_deadline_later_then_earlier(t):
    """serve's deadline moves later (--response-timeout 20 while the
    origin sleeps) then earlier (--idle-timeout 1 after the response): the
    idle close comes at about 1 s, not when the first timer would fire."""
    o, s, a = t.stack(serve_args=("--response-timeout", "20", "--idle-timeout", "1",
                                  "--head-timeout", "30"))
    c = Conn(s.port, timeout=30)
    c.request("GET", "/sleep?ms=1200")
    eq(c.read_response().status, 200, "slow response")
    t0 = time.monotonic()
    check(c.wait_closed(15), "connection not closed after --idle-timeout")
    el = time.monotonic() - t0
    check(0.5 <= el < 4, "idle close after %.1f s with --idle-timeout 1" % el)
    # Pipelined: the second request's head is already read when the first
    # response ends; the idle deadline comes only after the second.
    c = Conn(s.port, timeout=30)
    c.send(b"GET /sleep?ms=300 HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    eq(c.read_response().status, 200, "pipelined 1")
    eq(c.read_response().status, 200, "pipelined 2")
    t0 = time.monotonic()
    check(c.wait_closed(15), "pipelined connection not closed after --idle-timeout")
    el = time.monotonic() - t0
    check(el < 4, "idle close after %.1f s (pipelined)" % el)
