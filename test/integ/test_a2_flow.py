"""a2 flow (issue 9, items 1, 10, 13): what a public client sends must not
outrun what serve has decided.

1. Bytes after an Upgrade request (and its body) stay in serve until the
   local service answers 101; after any other answer they are dropped and the
   connection closes. A hostile local service that answers an upgrade
   normally and keeps reading must never see them.
10. A client that pipelines requests and never reads: serve stops parsing
   (and reading) while its unsent output is over a small bound, so its memory
   stays flat; it goes on as the client reads.
13. --body-timeout: a request body that makes no progress is reset end to
   end, 408, close; the stream slot is free again. A slow body that keeps
   moving is not cut.
"""

import os
import re
import select
import socket
import threading
import time

import wsclient
from harness import Conn, TestFailure, check, eq, fail, sample_rss, timed


# ---------------------------------------------------------------- helpers

class Hostile:
    """A local service on loopback that records every byte each connection
    sends it. mode "normal": parses HTTP/1.1 requests (Content-Length or
    chunked bodies) and answers each with 200 and `body`, keeping the connection;
    an Upgrade is answered like any request, and it keeps reading.
    mode "late101": reads one request head, waits `wait` seconds noting any
    byte that arrives before it answers, then answers 101 and echoes what
    follows (a non-WebSocket upgrade)."""

    def __init__(self, mode="normal", wait=0.5, body=b"ok"):
        self.mode, self.wait = mode, wait
        self.answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.cond = threading.Condition()
        self.record = True
        self.conns = []       # per connection: {"data": bytes, "eof": bool, "early": bytes}
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            rec = {"data": b"", "eof": False, "early": b"", "requests": []}
            with self.cond:
                self.conns.append(rec)
            threading.Thread(target=self._serve, args=(s, rec), daemon=True).start()

    def _recv(self, s, rec):
        try:
            b = s.recv(65536)
        except OSError:
            b = b""
        with self.cond:
            if b and self.record:
                rec["data"] += b
            else:
                rec["eof"] = True
            self.cond.notify_all()
        return b

    def _serve(self, s, rec):
        s.settimeout(20)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    b = self._recv(s, rec)
                    if not b:
                        return
                    buf += b
                head, buf = buf.split(b"\r\n\r\n", 1)
                line = head.split(b"\r\n", 1)[0]
                with self.cond:
                    rec["requests"].append(line)
                    self.cond.notify_all()
                if self.mode == "late101":
                    early = buf
                    end = time.monotonic() + self.wait
                    while time.monotonic() < end:
                        r, _, _ = select.select([s], [], [], max(0, end - time.monotonic()))
                        if r:
                            b = self._recv(s, rec)
                            if not b:
                                break
                            early += b
                    with self.cond:
                        rec["early"] = early
                    s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-echo\r\n"
                              b"Connection: Upgrade\r\n\r\n" + early)
                    while True:
                        b = self._recv(s, rec)
                        if not b:
                            return
                        s.sendall(b)
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if m:
                    n = int(m.group(1))
                    while len(buf) < n:
                        b = self._recv(s, rec)
                        if not b:
                            return
                        buf += b
                    buf = buf[n:]
                elif re.search(rb"(?i)\r\ntransfer-encoding: *chunked", head):
                    while True:
                        while b"\r\n" not in buf:
                            b = self._recv(s, rec)
                            if not b:
                                return
                            buf += b
                        size_line, buf = buf.split(b"\r\n", 1)
                        size = int(size_line.split(b";")[0], 16)
                        while len(buf) < size + 2:
                            b = self._recv(s, rec)
                            if not b:
                                return
                            buf += b
                        if size == 0:
                            buf = buf[2:]
                            break
                        buf = buf[size + 2:]
                s.sendall(self.answer)
        except OSError:
            pass
        finally:
            with self.cond:
                rec["eof"] = True
                self.cond.notify_all()
            s.close()

    def wait_eof(self, n, timeout=10.0):
        """Wait until n connections were made and all of them ended."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (len(self.conns) >= n and all(c["eof"] for c in self.conns)):
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("local service: %d connection(s), not all ended within %.0fs"
                         % (len(self.conns), timeout))
                self.cond.wait(left)

    def wait_requests(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(len(c["requests"]) for c in self.conns) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("local service saw fewer than %d requests" % n)
                self.cond.wait(left)

    def all_bytes(self):
        with self.cond:
            return b"".join(c["data"] for c in self.conns)


SMUGGLED = b"GET /private/SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"


def _upgrade_shapes():
    """(name, request bytes); each is followed at once by SMUGGLED."""
    ws = (b"GET /public/ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          b"Sec-WebSocket-Version: 13\r\n\r\n")
    other = (b"GET /public/other HTTP/1.1\r\nHost: a\r\nUpgrade: foo/1\r\n"
             b"Connection: Upgrade\r\n\r\n")
    post = (b"POST /public/post HTTP/1.1\r\nHost: a\r\nUpgrade: foo/1\r\nConnection: Upgrade\r\n"
            b"Content-Length: 5\r\n\r\nhello")
    chunked = (b"POST /public/chunked HTTP/1.1\r\nHost: a\r\nUpgrade: foo/1\r\n"
               b"Connection: Upgrade\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    # An upgrade to HTTP itself is ignored too (h2c smuggling, test_a7).
    h2c = (b"GET /public/h2c HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n"
           b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    return [("websocket", ws), ("other", other), ("post-body", post), ("post-chunked", chunked),
            ("h2c-ignored", h2c)]


# ------------------------------------------------------ item 1: upgrades

@timed(60)
def test_upgrade_bytes_held_until_101(t):
    """A hostile service answers every upgrade with 200 and keeps reading:
    the request smuggled right after the upgrade (for an AUTH_RULE path,
    without the token) must never reach it."""
    svc = Hostile("normal")
    s = t.serve("--auth-token", "sekrit", "--auth-rule", "^/private")
    t.agent(s, svc.url)
    problems = []
    for i, (name, raw) in enumerate(_upgrade_shapes()):
        c = Conn(s.port, timeout=5)
        c.send(raw + SMUGGLED)
        try:
            r = c.read_response("GET" if raw.startswith(b"GET") else "POST")
            if r.status != 200 or r.body != b"ok":
                problems.append("%s: got %s %r, want the service's 200 ok"
                                % (name, r.status, r.body))
            if name in ("post-chunked", "h2c-ignored"):
                # Upgrade ignored (a chunked body cannot be forwarded with an
                # upgrade; h2c would carry unchecked requests): the next
                # request is an ordinary, checked one.
                r2 = c.read_response()
                if r2.status != 401:
                    problems.append("%s: pipelined /private got %s, want 401"
                                    % (name, r2.status))
            elif not c.wait_closed(5):
                problems.append("%s: connection not closed after the refused upgrade" % name)
        except TestFailure as e:
            problems.append("%s: %s" % (name, e))
        c.close()
        if name not in ("post-chunked", "h2c-ignored"):  # their local connections are pooled
            svc.wait_eof(i + 1)
        if b"SMUGGLED" in svc.all_bytes():
            problems.append("%s: the local service received the smuggled request" % name)
    for c in svc.conns:
        if b"X-Forwarded-For" not in c["data"]:
            problems.append("a request without X-Forwarded-For reached the service: %r"
                            % c["data"][:200])
    if problems:
        fail("; ".join(problems))


@timed(60)
def test_upgrade_early_bytes_after_101(t):
    """Bytes sent right after the upgrade head, before the 101: the service
    must see none of them before it answers 101, then all of them, in order,
    before what the client sends later. And a real WebSocket with a frame
    sent before its 101 still works."""
    svc = Hostile("late101", wait=0.6)
    s = t.serve()
    o = t.origin("A")
    t.agent(s, svc.url, agent_id="late")
    c = Conn(s.port, timeout=10)
    c.send(b"GET /up HTTP/1.1\r\nHost: a\r\nUpgrade: x-echo\r\nConnection: Upgrade\r\n\r\n"
           b"early-1;early-2;")
    r = c.read_head()
    eq(r.status, 101, "upgrade status")
    c.send(b"late-3;")
    want = b"early-1;early-2;late-3;"
    while len(c.buf) < len(want) and c._fill():
        pass
    eq(c.buf[:len(want)], want, "echoed bytes, in order")
    with svc.cond:
        early = svc.conns[0]["early"]
    eq(early, b"", "bytes the service received before it answered 101")
    c.close()

    # More than serve holds (64 KiB): it stops reading, then all of it
    # follows the 101, in order.
    big = bytes(range(256)) * 1024
    c = Conn(s.port, timeout=10)
    sender = threading.Thread(target=c.send, args=(
        b"GET /up HTTP/1.1\r\nHost: a\r\nUpgrade: x-echo\r\nConnection: Upgrade\r\n\r\n" + big,),
        daemon=True)
    sender.start()
    r = c.read_head()
    eq(r.status, 101, "upgrade status (256 KiB sent early)")
    while len(c.buf) < len(big) and c._fill():
        pass
    sender.join(10)
    check(c.buf == big, "256 KiB sent before the 101 came back as %d bytes%s" % (
        len(c.buf), "" if len(c.buf) != len(big) else ", reordered or changed"))
    with svc.cond:
        early = svc.conns[1]["early"]
    eq(len(early), 0, "bytes the service received before it answered 101 (256 KiB case)")
    c.close()

    # A real WebSocket (origin /ws) through a second tunnel/agent pair, its
    # first frame sent in the same write as the handshake.
    s2 = t.serve(label="serve-ws")
    t.agent(s2, o, agent_id="ws")
    sock = socket.create_connection(("127.0.0.1", s2.port), timeout=10)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    mkey = os.urandom(4)
    frame = bytes([0x81, 0x80 | 5]) + mkey + wsclient.mask(b"first", mkey)
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key.encode()
                 + frame)
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = sock.recv(65536)
        check(b, "connection closed before the 101")
        buf += b
    head, rest = buf.split(b"\r\n\r\n", 1)
    check(head.startswith(b"HTTP/1.1 101"), "websocket handshake: %r" % head[:80])
    ws = wsclient.WebSocket(sock, rest, 101, [])
    eq(ws.recv().data, b"first", "echo of the frame sent before the 101")
    ws.send("second")
    eq(ws.recv().data, b"second", "echo of a frame sent after the 101")
    ws.close()
    ws.close_socket()


# ------------------------------------------------ item 10: pipelining

def _pipeline_attack(port, n, target):
    """Pipeline n GETs on one connection that never reads; returns Conn."""
    c = Conn(port, timeout=30, rcvbuf=16384)
    req = b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target.encode()
    c.send(req * n)
    return c


@timed(90)
def test_pipeline_unread_output_bounded(t):
    """185 KB+ of pipelined GETs for 32 KiB responses from a client that
    never reads: serve must not queue their answers (RSS stays small), and
    once the client reads, the answers come, in order."""
    svc = Hostile("normal", body=b"x" * 32768)  # fast: the origin's /bytes is too slow here
    s = t.serve()
    t.agent(s, svc.url)
    svc.record = False
    target = "/bytes?n=32768"
    n = 190000 // len(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target.encode()) + 1
    base = s.proc.rss_kib()
    holder = {}

    def attack():
        holder["c"] = _pipeline_attack(s.port, n, target)

    peaks = sample_rss([s.proc], 5.0, during=attack)
    grew = (peaks[s.proc.label] - base) // 1024
    msg = "serve RSS before %d KiB, peak %d KiB while %d pipelined GETs were unread (+%d MiB)" % (
        base, peaks[s.proc.label], n, grew)
    print(msg)
    with open(os.path.join(t.logdir, "rss.txt"), "w") as f:
        f.write(msg + "\n")
    check(grew < 40, "serve RSS grew by %d MiB for a client that never reads" % grew)
    c = holder["c"]
    c.sock.settimeout(20)
    for i in range(60):
        r = c.read_response()
        eq((r.status, len(r.body)), (200, 32768), "pipelined response %d" % i)
    c.close()


# ------------------------------------------------ item 13: --body-timeout

@timed(60)
def test_body_timeout_stalled(t):
    """With BODY_TIMEOUT=1 and one stream slot: a POST whose body never comes
    (Content-Length with no body; chunked that stops mid-way) gets 408 and a
    close; the local service's request is reset and the slot serves the next
    request. A body that keeps moving, slowly, is not cut."""
    o = t.origin("A")
    s = t.serve("--max-streams", "1", env={"BODY_TIMEOUT": "1"})
    t.agent(s, o)
    shapes = [
        ("content-length", b"POST /hang/cl HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"),
        ("chunked", b"POST /hang/chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                    b"\r\n5\r\nhello\r\n"),
    ]
    for name, raw in shapes:
        path = "/hang/" + ("cl" if name == "content-length" else "chunked")
        since = o.proc.mark()
        c = Conn(s.port, timeout=8)
        t0 = time.monotonic()
        c.send(raw)
        o.proc.wait_for(r"event hang-start path=%s" % re.escape(path), 10, since)
        r = c.read_response("POST")
        dt = time.monotonic() - t0
        eq(r.status, 408, "%s: status for a stalled body" % name)
        check(0.8 <= dt <= 4.0, "%s: 408 after %.2fs with BODY_TIMEOUT=1" % (name, dt))
        check(c.wait_closed(5), "%s: connection not closed after the 408" % name)
        c.close()
        o.wait_event("aborted", path, since)
        # The only slot is free again: a request on another connection.
        c2 = Conn(s.port, timeout=8)
        c2.request("GET", "/echo/after-" + name)
        eq(c2.read_response().status, 200, "%s: next request with --max-streams 1" % name)
        c2.close()
    # Slow but steady: 10 bytes, one every 0.3 s (3 s in all, > BODY_TIMEOUT).
    c = Conn(s.port, timeout=10)
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
    for i in range(10):
        time.sleep(0.3)  # the slowness under test, not a synchronisation
        c.send(b"x")
    r = c.read_response("POST")
    eq(r.status, 200, "slow body status")
    check(b'"len": 10' in r.body or b'"len":10' in r.body, "upload saw %r" % r.body[:200])
    c.close()
    check(s.proc.count(r"request body made no progress") == 2,
          "serve logged %d body timeouts, want 2" % s.proc.count(r"request body made no progress"))


@timed(60)
def test_body_timeout_service_not_reading(t):
    """BODY_TIMEOUT=1 and a local service that never reads the body of a
    large upload: once serve has nothing to send (no credit) for a second,
    the stream is reset, the client gets 504 and a close, and the service's
    connection is dropped."""
    o = t.origin("A")
    s = t.serve(env={"BODY_TIMEOUT": "1"})
    t.agent(s, o)
    c = Conn(s.port, timeout=10)
    n = 64 << 20
    c.send(b"POST /hang/up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % n)
    o.proc.wait_for(r"event hang-start path=/hang/up", 10)

    def upload():
        try:
            chunk = b"u" * 65536
            for _ in range(n // len(chunk)):
                c.sock.sendall(chunk)
        except OSError:
            pass  # serve closed the connection: expected

    th = threading.Thread(target=upload, daemon=True)
    th.start()
    r = c.read_response("POST")
    eq(r.status, 504, "status when the service stops reading the body")
    s.proc.wait_for(r"request body made no progress .*the local service stopped reading it", 5)
    o.wait_event("aborted", "/hang/up")
    c.reset()
    th.join(10)
