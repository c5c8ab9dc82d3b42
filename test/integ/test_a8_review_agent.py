"""a8 review of the agent and the tunnel session (after issue 9).

Attacks from a hostile server (fakeserver.py), hostile local services and
hostile tunnel peers that the issue-9 hardening still let through; each test
failed before its fix."""

import os
import signal
import socket
import struct
import time

from fakeserver import FakeServer
from harness import check, eq, fail, timed
from test_a4_agent import LocalService, expect_rst, ok_forever, start_agent

PROTOCOL = 4  # RST code
AGENT_WINDOW = 262144  # the agent's default WINDOW


def early_answer_service(svc, rec):
    """Answers each request as soon as its head is in (keep-alive, without
    waiting for the body), then reads the body its Content-Length announced
    before the next request, as an HTTP/1.1 server must. Records every
    request line it parsed."""
    pos = 0
    svc.lines = getattr(svc, "lines", [])
    while True:
        while b"\r\n\r\n" not in rec.data[pos:]:
            if not svc.recv(rec):
                return
        end = rec.data.index(b"\r\n\r\n", pos) + 4
        lines = rec.data[pos:end - 4].decode("latin-1").split("\r\n")
        with svc.cond:
            svc.lines.append(lines[0])
            svc.cond.notify_all()
        n = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                n = int(v.strip())
        rec.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        while len(rec.data) < end + n:
            if not svc.recv(rec):
                return
        pos = end + n


@timed(30)
def test_a8_open_end_with_content_length(t):
    """An OPEN that ends the request (END) while announcing Content-Length > 0:
    the service is told a body follows that never will, and the next request
    on that keep-alive connection is read as its body (a desync a hostile
    server can aim). The stream is reset (PROTOCOL) and never reaches the
    service."""
    svc = LocalService(early_answer_service)
    fs = FakeServer()
    a, tun = start_agent(t, fs, svc)
    tun.open(1, "POST", "/a", [("Content-Length", "20")], end=True)
    f, _ = tun.expect(lambda f: f.sid == 1 and (f.type == 5 or f.end), "stream 1 answered")
    tun.open(3, "GET", "/next", end=True)
    head, body, rst = tun.response(3)
    eq((head.status, body), (200, b"ok"), "the next request")
    lines = list(getattr(svc, "lines", []))
    for line in lines:
        check(line.split(" ")[0] in ("GET", "POST") and line.split(" ")[1].startswith("/"),
              "the service parsed a request the agent never sent: %r (all: %r)" % (line, lines))
    eq((f.type, f.code), (5, PROTOCOL), "OPEN with END and Content-Length: 20 is reset")
    check(not any("/a" in line for line in lines), "the bodiless POST reached the service: %r"
          % lines)


# --------------------------------------------------------------------------
# Pings whose length uses the 16- or 64-bit form (RFC 6455 allows it for
# any length; only the value must be <= 125 for a control frame)
# --------------------------------------------------------------------------

def long_form_ping(payload, ext, mask):
    """A ping whose (short) length is written in the 16-bit (ext=126) or
    64-bit (ext=127) form."""
    n = len(payload)
    hdr = bytes([0x89, (0x80 if mask else 0) | ext])
    hdr += struct.pack(">H", n) if ext == 126 else struct.pack(">Q", n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


@timed(30)
def test_a8_serve_pong_for_long_form_ping(t):
    """serve answers a ping written with a 16- or 64-bit length with a
    well-formed pong carrying the same payload (it used to read the payload
    at the short form's offset and send a pong whose length byte said 126:
    a corrupt frame, and 126 bytes written into a 125-byte buffer)."""
    from test_55_wire import raw_agent, read_msg
    s, c = raw_agent(t, "lping")
    for ext, payload in ((126, b"hello"), (127, b"x" * 125), (126, b"")):
        c.send(long_form_ping(payload, ext, mask=True))
        kind, p = read_msg(c)
        eq((kind, p), ("pong", payload), "pong for a ping in the %d-bit length form"
           % (16 if ext == 126 else 64))
    c.send(long_form_ping(b"again", 126, mask=True))
    eq(read_msg(c), ("pong", b"again"), "the tunnel is still in step")


@timed(30)
def test_a8_agent_pong_for_long_form_ping(t):
    """The agent's pong to a long-form ping from the server is well formed."""
    svc = LocalService(ok_forever)
    fs = FakeServer()
    a, tun = start_agent(t, fs, svc)
    for ext, payload in ((126, b"hello"), (127, b"y" * 125)):
        tun.sock.sendall(long_form_ping(payload, ext, mask=False))
        deadline = time.monotonic() + 5
        while True:
            try:
                f = tun._ws_frame(deadline)
            except socket.timeout:
                fail("no well-formed pong (%d-bit length form): the frame read so far: %r"
                     % (16 if ext == 126 else 64, bytes(tun.buf[:16])))
            check(f is not None, "tunnel ended instead of a pong")
            fin, op, p = f
            if op == 0xA and p != b"":
                break
            check(op in (0x9, 0xA), "unexpected frame op %d %r" % (op, p[:40]))
        eq(p, payload, "agent's pong payload (%d-bit length form)" % (16 if ext == 126 else 64))
    tun.open(1, "GET", "/x", end=True)
    head, body, rst = tun.response(1)
    eq((head.status, body), (200, b"ok"), "the tunnel is still in step")


# --------------------------------------------------------------------------
# The tunnel's read pause must never stop two honest peers at once
# --------------------------------------------------------------------------

BIG_FIELD = b"X-Big: " + b"b" * 60000 + b"\r\n"


def big_head_service(svc, rec):
    """Answers every request with a 60 KB response head."""
    pos = 0
    while True:
        line, hdrs, body, pos = svc.read_request(rec, pos)
        rec.sock.sendall(b"HTTP/1.1 200 OK\r\n" + BIG_FIELD + b"Content-Length: 2\r\n\r\nok")


@timed(90)
def test_a8_big_heads_both_ways_no_deadlock(t):
    """serve queues OPENs for requests with big heads (public clients decide
    how many: up to --max-streams, each up to --max-head) while its agent is
    briefly busy (SIGSTOP here; a slow uplink in life); the agent answers
    with big response heads. serve used to count its own OPENs in the bound
    that stops it reading the agent, the agent its HEADs: both stopped
    reading at once, neither output could drain, and the stall timer cut
    the tunnel (every request 502). The OPENs serve chose to send are not
    answers the agent forced on it: they never stop serve's reading."""
    import select
    from test_a4_agent import wait_stopped
    n = 500
    svc = LocalService(big_head_service)
    s = t.serve("--ping-interval", "3")
    a = t.agent(s, svc.url, env={"PING_INTERVAL": "3", "MAX_LOCAL_CONNS": "32"})
    wait_stopped(a)
    socks = []
    try:
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            c.sendall(b"GET /r%d HTTP/1.1\r\nHost: x\r\n" % i + BIG_FIELD +
                      b"Connection: close\r\n\r\n")
            socks.append(c)
        time.sleep(0.5)  # serve parses them and queues the OPENs
    finally:
        a.cont()
    got = {c: b"" for c in socks}
    open_ = set(socks)
    deadline = time.monotonic() + 40
    while open_ and time.monotonic() < deadline:
        r, _, _ = select.select(list(open_), [], [], 1.0)
        for c in r:
            try:
                b = c.recv(262144)
            except OSError:
                b = b""
            if b:
                got[c] += b
            else:
                open_.discard(c)
                c.close()
    statuses = {}
    for c in socks:
        st = got[c][:12].decode("latin-1") or ("(no answer)" if c in open_ else "(empty)")
        statuses[st] = statuses.get(st, 0) + 1
    eq(statuses, {"HTTP/1.1 200": n}, "every request with a big head answered")
    for p in (s.proc, a):
        check("read nothing" not in p.text(), "%s cut the tunnel as stalled" % p.label)


# --------------------------------------------------------------------------
# Pool desync over TLS: stray bytes whose record is cut across reads
# --------------------------------------------------------------------------

class TlsRec:
    """Server-side TLS over a raw socket through memory BIOs, so the test
    decides where each record's bytes are cut."""

    def __init__(self, sock):
        import ssl
        from harness import pki
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # no tickets after the handshake
        ctx.load_cert_chain(pki()("server.pem"), pki()("server.key"))
        self.ssl = ssl
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.plain = b""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._feed()
        self._flush()

    def _flush(self):
        b = self.out.read()
        if b:
            self.sock.sendall(b)

    def _feed(self):
        b = self.sock.recv(65536)
        if not b:
            raise EOFError()
        self.inc.write(b)

    def wire(self, data):
        """The TLS records carrying data, not sent."""
        self.obj.write(data)
        return self.out.read()

    def read_head(self):
        while b"\r\n\r\n" not in self.plain:
            try:
                self.plain += self.obj.read(65536)
            except self.ssl.SSLWantReadError:
                self._feed()
            except self.ssl.SSLZeroReturnError:
                raise EOFError()
        head, self.plain = self.plain.split(b"\r\n\r\n", 1)
        return head.decode("latin-1").split("\r\n")[0]


def tls_stray_service(svc, rec):
    """/first: a response, then the first bytes of a record carrying a second
    (stray) response; the rest of that record follows once this connection
    receives another request, as if a network had delayed its last segment."""
    tls = TlsRec(rec.sock)
    rest = b""
    while True:
        line = tls.read_head()
        with svc.cond:
            svc.lines = getattr(svc, "lines", []) + [line]
            svc.cond.notify_all()
        if line.startswith("GET /first"):
            resp = tls.wire(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            stray = tls.wire(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
            rec.sock.sendall(resp + stray[:3])
            rest = stray[3:]
        else:
            if rest:
                rec.sock.sendall(rest)
                rest = b""
                time.sleep(0.2)
            rec.sock.sendall(tls.wire(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"))


@timed(40)
def test_a8_tls_pool_partial_stray_record(t):
    """A TLS local service's stray bytes that arrive as a partial record are
    in the agent's TLS layer, not on the socket: the idle read callback
    (no plaintext yet) and the reuse check (an empty socket) both missed
    them, and the next request on that pooled connection got them as its
    response. A connection whose TLS layer holds input is never reused."""
    svc = LocalService(tls_stray_service)
    fs = FakeServer()
    a = t.agent(fs.url, "https://127.0.0.1:%d" % svc.port, agent_id="h4",
                env={"LOCAL_INSECURE": "1", "LOG_LEVEL": "debug"}, wait=False)
    tun = fs.accept()
    a.wait_for(r"tunnel up agent=h4\b", 15)
    sid = 1
    for i in range(3):
        tun.open(sid, "GET", "/first?%d" % i, end=True)
        head, body, rst = tun.response(sid)
        eq((head.status, body), (200, b"first"), "round %d: first response" % i)
        time.sleep(0.3)  # the connection is back in the pool, a partial record in its TLS
        tun.open(sid + 2, "GET", "/second", end=True)
        head, body, rst = tun.response(sid + 2)
        check(rst is None, "round %d: second request reset: %r" % (i, rst))
        eq((head.status, body), (200, b"second"),
           "round %d: the next request got its own response, not stray bytes" % i)
        sid += 4
    # A clean TLS connection is still reused.
    n = len(svc.conns)
    for i in range(3):
        tun.open(sid, "GET", "/plain", end=True)
        head, body, rst = tun.response(sid)
        eq((head.status, body), (200, b"second"), "plain request %d" % i)
        sid += 2
    eq(len(svc.conns), n, "clean pooled TLS connections are reused (new connections)")


# --------------------------------------------------------------------------
# A pipe closed while its local service reads nothing
# --------------------------------------------------------------------------

def pipe_no_read_service(svc, rec):
    """Accepts the upgrade (101), then never reads again."""
    rec.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    line, hdrs, body, pos = svc.read_request(rec, 0)
    rec.sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\n"
                     b"Connection: Upgrade\r\n\r\n")
    svc.set("piped")
    svc.wait(lambda: svc.events.get("never"), "never", 3600)


def fill_pipe(tun, sid, limit=64 << 20):
    """Send pipe bytes on sid while the agent grants credit; returns once it
    has granted none for a second (its writes to the service are stuck)."""
    from fakeserver import WINDOW as WIN
    credit, sent, chunk = AGENT_WINDOW, 0, b"z" * 65536
    while sent < limit:
        while credit >= len(chunk) and sent < limit:
            tun.data(sid, chunk)
            credit -= len(chunk)
            sent += len(chunk)
        deadline = time.monotonic() + 1.0
        got = 0
        while time.monotonic() < deadline:
            try:
                f = tun._ws_frame(deadline)
            except socket.timeout:
                break
            if f is None:
                fail("tunnel ended while filling the pipe")
            fin, op, p = f
            if op == 0x9:
                tun.send_ws(0xA, p)
            elif op == 2 and p[0] == WIN and struct.unpack(">I", p[2:6])[0] == sid:
                got += struct.unpack(">I", p[6:10])[0]
                break
        if not got:
            return sent
        credit += got
    fail("the agent kept granting credit for %d bytes to a service that reads nothing" % sent)


@timed(60)
def test_a8_sigterm_pipe_to_service_that_reads_nothing(t):
    """SIGTERM closes upgraded pipes once plain requests are done: the pipe
    is closed after its pending bytes reach the service. A service that
    reads nothing never takes them: the agent must still exit within its
    grace (it used to wait for that flush forever, never exiting)."""
    svc = LocalService(pipe_no_read_service)
    fs = FakeServer()
    a, tun = start_agent(t, fs, svc, env={"GRACE": "2"})
    tun.open(1, "GET", "/ws", [("Connection", "Upgrade"), ("Upgrade", "raw")], end=False)
    f, _ = tun.expect(lambda f: f.sid == 1 and f.type == 2, "HEAD 101")
    eq(f.status, 101, "upgrade accepted")
    sent = fill_pipe(tun, 1)
    print("pipe bytes sent before the agent stopped granting credit: %d" % sent)
    a.send(signal.SIGTERM)
    a.wait_for(r"closing 1 upgraded pipe", 5)
    rc = a.wait_exit(8)
    eq(rc, 0, "the agent exited (status) after SIGTERM within its grace")
