"""h2 body slice: a hostile review of 325442e ("serve: send a read's request
body from the read buffer").

Since that commit serve no longer copies a read's request body into
pc->body_acc: the first piece llhttp reports in a read is only pointed at
(pc->body_at/body_n, into the buffer pc_feed parses: conn.c's one shared
read_scratch for every connection, or a pipeline buffer pc_feed frees when
it moves on), and is copied only when a second piece (the next chunk)
arrives in the same read. These tests try to make that pointer outlive its
buffer or to lose, repeat or reorder body bytes: bodies split across reads
at awkward offsets, many chunks per read, pipelined POSTs in one write (the
later ones parsed from pc->pipeline), bodies of requests that waited for a
tunnel, upgrades with a body and bytes after it, many uploads at once with
tiny windows (the shared read buffer reused between connections), TLS
clients, streams that die mid-body, errors raised inside llhttp callbacks
and deferred error answers, and what a stalled chunked upload can make
serve hold.

Every body is checked byte for byte where a local service (BodyRecorder,
below) received it, after the agent re-framed it.

Result of the review: no defect. The only uses of body_at are in the same
llhttp_execute (pc_body_add, on_message_complete) and right after it in
pc_feed, before pc_feed frees or leaves its buffer; nw_strm_send copies
(into a frame or the stream's queue) and calls back into nothing; reads
land in read_scratch only from the loop (tls_drain too), never inside
pc_feed. These tests stay as guards: a flush moved to the next read fails
all 8 of them with wrong bytes, and one moved past pc_feed's free of the
pipeline buffer fails 4 with heap-use-after-free."""

import hashlib
import random
import socket
import threading
import time

from harness import (Conn, TlsConn, check, eq, fail, pattern_chunks, pki, sample_rss, timed)

# Keep ASan's quarantine small so RSS measures the proxy (as test_80_flow).
TOKEN = "body-slice-token"
FLOW_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=4"}


class BodyRecorder:
    """A local HTTP/1.1 service that keeps every request body exactly as it
    arrived (Content-Length or chunked, de-chunked here) and answers 200 with
    "LEN SHA256". Targets under /stall are never read past their head (an
    upload that stalls at the service) until release(). An Upgrade to a
    target under /up is answered 101 after its Content-Length body; then
    every byte is recorded in piped[target] and echoed back."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.bodies = {}   # target -> [body bytes, ...] in arrival order
        self.order = []    # targets in arrival order
        self.piped = {}    # target -> bytes after a 101
        self.stalled = []  # targets under /stall whose head arrived
        self.cond = threading.Condition()
        self.released = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _more(c, buf):
        b = c.recv(65536)
        if not b:
            raise EOFError
        return buf + b

    def _line(self, c, buf):
        while b"\r\n" not in buf:
            buf = self._more(c, buf)
        line, _, buf = buf.partition(b"\r\n")
        return line, buf

    def _exact(self, c, buf, n):
        while len(buf) < n:
            buf = self._more(c, buf)
        return buf[:n], buf[n:]

    def _chunked(self, c, buf):
        parts = []
        while True:
            line, buf = self._line(c, buf)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailer section
                    line, buf = self._line(c, buf)
                    if not line:
                        return b"".join(parts), buf
            data, buf = self._exact(c, buf, size)
            parts.append(data)
            crlf, buf = self._exact(c, buf, 2)
            if crlf != b"\r\n":
                raise ValueError("no CRLF after chunk data")

    def _record(self, target, body):
        with self.cond:
            self.bodies.setdefault(target, []).append(body)
            self.order.append(target)
            self.cond.notify_all()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    buf = self._more(c, buf)
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                hdrs = {}
                for l in lines[1:]:
                    k, _, v = l.partition(":")
                    hdrs[k.strip().lower()] = v.strip()
                if target.startswith("/drop"):
                    return  # closes without reading the body or answering
                if target.startswith("/early"):
                    # Answers at once, reads none of the body, closes.
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                              b"Connection: close\r\n\r\nearly")
                    return
                if target.startswith("/stall"):
                    with self.cond:
                        self.stalled.append(target)
                        self.cond.notify_all()
                    self.released.wait(120)
                    return
                if hdrs.get("transfer-encoding", "").lower() == "chunked":
                    body, buf = self._chunked(c, buf)
                else:
                    body, buf = self._exact(c, buf, int(hdrs.get("content-length", "0")))
                self._record(target, body)
                if target.startswith("/up") and "upgrade" in hdrs:
                    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\n"
                              b"Connection: Upgrade\r\n\r\n" % hdrs["upgrade"].encode())
                    self._pipe(c, target, buf)
                    return
                out = b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(out) + out)
        except (OSError, EOFError, ValueError):
            return
        finally:
            c.close()

    def _pipe(self, c, target, buf):
        while True:
            if buf:
                with self.cond:
                    self.piped[target] = self.piped.get(target, b"") + buf
                    self.cond.notify_all()
                c.sendall(buf)
            buf = c.recv(65536)
            if not buf:
                return

    def body(self, target, timeout=20.0):
        """The one body recorded for target (waits for it)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while target not in self.bodies:
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("the local service never received %s (got %r)" %
                         (target, self.order[-20:]))
                self.cond.wait(left)
            got = self.bodies[target]
        eq(len(got), 1, "requests for %s at the local service" % target)
        return got[0]

    def wait(self, what, pred, timeout=20.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("local service: %s did not happen" % what)
                self.cond.wait(left)

    def close(self):
        self.released.set()
        self.ls.close()


def _stack(t, serve_args=(), agent_env=None, serve_env=None):
    rec = BodyRecorder()
    s = t.serve(*serve_args, env=serve_env)
    a = t.agent(s, rec.url, env=agent_env)
    return rec, s, a


def _data(n, seed):
    return b"".join(pattern_chunks(n, seed))


def _head(method, target, hdrs=(), host="h"):
    h = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, target, host)
    h += "".join("%s: %s\r\n" % kv for kv in hdrs)
    return (h + "\r\n").encode("latin-1")


def _post(target, body, hdrs=(), host="h"):
    return _head("POST", target, [("Content-Length", str(len(body)))] + list(hdrs),
                 host=host) + body


def _chunked(data, sizes, ext_every=0, trailers=b""):
    """data framed as chunks of the given sizes (cycled); every ext_every-th
    chunk carries an extension."""
    out = []
    off = i = 0
    while off < len(data):
        n = min(sizes[i % len(sizes)], len(data) - off)
        ext = b";e=%d" % i if ext_every and i % ext_every == 0 else b""
        out.append(b"%x%s\r\n" % (n, ext) + data[off:off + n] + b"\r\n")
        off += n
        i += 1
    return b"".join(out) + b"0\r\n" + trailers + b"\r\n"


def _post_chunked(target, data, sizes, ext_every=0, trailers=b"", host="h"):
    return _head("POST", target, [("Transfer-Encoding", "chunked")], host=host) + \
        _chunked(data, sizes, ext_every, trailers)


def _nodelay(c):
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _send_pieces(c, pieces, gap=0.02):
    """Each piece in its own segment, a moment apart, so serve reads them
    one by one (the split is what the test is about)."""
    _nodelay(c)
    for p in pieces:
        c.send(p)
        time.sleep(gap)


def _answer(r, body, what):
    eq(r.status, 200, "%s: status (body %r)" % (what, r.body[:200]))
    eq(r.body, b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode()),
       "%s: what the local service reports" % what)


def _exact(rec, target, want, what):
    got = rec.body(target)
    if got != want:
        i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]),
                 min(len(got), len(want)))
        fail("%s: body at the local service differs: %d bytes, want %d; first difference at "
             "%d: got %r, want %r" % (what, len(got), len(want), i, got[i:i + 24],
                                      want[i:i + 24]))


def _sender(c, blob):
    """sendall in a thread (serve stops reading pipelined bytes past a
    bound until it has answered, so a large blob blocks the writer)."""
    err = []

    def run():
        try:
            c.send(blob)
        except OSError as e:
            err.append(e)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, err


# -- 1. Content-Length bodies split across reads at awkward offsets --------

@timed(90)
def test_h2_cl_body_split_awkwardly(t):
    """One keep-alive connection, each body cut differently: the head with
    the first byte, 1-byte reads, the end of a body glued to the next
    request's head and part of its body (held in pc->pipeline, then parsed
    from there), a head alone then 200 KB in one send, a body sent after
    100 Continue, a body of exactly 64 KiB, a 1-byte body. Every byte
    reaches the service once, in order."""
    rec, s, a = _stack(t)
    try:
        c = Conn(s.port, timeout=30)
        _nodelay(c)
        b1 = _data(1000, "s1")
        h1 = _head("POST", "/b/1", [("Content-Length", "1000")])
        _send_pieces(c, [h1 + b1[:1], b1[1:2], b1[2:3], b1[3:500], b1[500:999], b1[999:]])
        _answer(c.read_response(), b1, "/b/1")
        _exact(rec, "/b/1", b1, "/b/1 (1-byte reads)")

        # /b/2's body with /b/3's head and half its body in the same send.
        b2, b3 = _data(200000, "s2"), _data(70001, "s3")
        h2 = _head("POST", "/b/2", [("Content-Length", str(len(b2)))])
        h3 = _head("POST", "/b/3", [("Content-Length", str(len(b3)))])
        _send_pieces(c, [h2])
        c.send(b2 + h3 + b3[:35000])
        _answer(c.read_response(), b2, "/b/2")
        _send_pieces(c, [b3[35000:35001], b3[35001:]])
        _answer(c.read_response(), b3, "/b/3")
        _exact(rec, "/b/2", b2, "/b/2 (200 KB after its head)")
        _exact(rec, "/b/3", b3, "/b/3 (its head and first half pipelined)")

        # Expect: 100-continue, the body sent only after the 100, in two.
        b6 = _data(5000, "s6")
        c.send(_head("POST", "/b/6", [("Content-Length", "5000"), ("Expect", "100-continue")]))
        eq(c.read_response(interim=True).status, 100, "interim answer to Expect")
        _send_pieces(c, [b6[:2500], b6[2500:]])
        _answer(c.read_response(), b6, "/b/6")
        _exact(rec, "/b/6", b6, "/b/6 (after 100 Continue)")

        # Exactly one read's worth, then a 1-byte body, in one send.
        b4, b5 = _data(65536, "s4"), b"Z"
        c.send(_post("/b/4", b4) + _post("/b/5", b5))
        _answer(c.read_response(), b4, "/b/4")
        _answer(c.read_response(), b5, "/b/5")
        _exact(rec, "/b/4", b4, "/b/4 (64 KiB)")
        _exact(rec, "/b/5", b5, "/b/5 (1 byte)")
        c.close()
    finally:
        rec.close()


# -- 2. chunked: many chunks per read, chunk framing straddling reads -------

@timed(90)
def test_h2_chunked_many_chunks_per_read(t):
    """3000 chunks of 1 to 40 bytes (extensions on some, trailers) and a
    pipelined GET in one send: a read holds hundreds of pieces, the first
    pointed at and then gathered. Then big and tiny chunks cut at awkward
    offsets (size lines, CRLFs and data split between reads)."""
    rec, s, a = _stack(t)
    try:
        rnd = random.Random(7)
        sizes = [rnd.randint(1, 40) for _ in range(3000)]
        d1 = _data(sum(sizes), "c1")
        c = Conn(s.port, timeout=30)
        c.send(_post_chunked("/c/1", d1, sizes, ext_every=7, trailers=b"X-T: 1\r\n") +
               _head("GET", "/c/after"))
        _answer(c.read_response(), d1, "/c/1")
        _answer(c.read_response(), b"", "/c/after")
        _exact(rec, "/c/1", d1, "/c/1 (3000 chunks in few reads)")

        # A chunk bigger than a read between tiny ones, the wire cut into
        # pieces of 1 to 300 bytes and a few big ones.
        d2 = _data(1 + 2 + 70000 + 3 + 131072 + 1 + 5000, "c2")
        wire = _post_chunked("/c/2", d2, [1, 2, 70000, 3, 131072, 1, 5000], ext_every=2)
        pieces, off = [], 0
        while off < len(wire):
            n = rnd.choice([1, 2, 3, 5, 17, 300, 40000])
            pieces.append(wire[off:off + n])
            off += n
        _nodelay(c)
        # Small pieces one by one (each its own read); merge runs of them
        # so the test stays short.
        batch = b""
        for p in pieces:
            batch += p
            if len(batch) > 20000 or rnd.random() < 0.05:
                c.send(batch)
                batch = b""
                time.sleep(0.002)
        c.send(batch)
        _answer(c.read_response(), d2, "/c/2")
        _exact(rec, "/c/2", d2, "/c/2 (chunk framing across reads)")

        # One byte per chunk, one send: the worst gather.
        d3 = _data(20000, "c3")
        c.send(_post_chunked("/c/3", d3, [1]))
        _answer(c.read_response(), d3, "/c/3")
        _exact(rec, "/c/3", d3, "/c/3 (1-byte chunks)")
        c.close()
    finally:
        rec.close()


# -- 3. pipelined POSTs and upgrades: bodies followed by more bytes ---------

@timed(90)
def test_h2_pipelined_bodies_and_upgrades(t):
    """Six requests, bodies of every kind, in one write of 500 KB: all but
    the first are parsed from pc->pipeline (a buffer pc_feed frees as it
    moves on), and serve stops reading past its pipeline bound meanwhile.
    Each answer comes in order with its own body, exact.

    An upgrade with a Content-Length body and the pipe's first bytes in
    the same write: the body goes to the stream before the upgrade, the
    bytes after it only after the 101, exact and once. A chunked upgrade is
    a plain request (serve drops Upgrade); its body is exact and the
    request pipelined behind it is answered."""
    rec, s, a = _stack(t)
    try:
        rnd = random.Random(3)
        reqs = []
        for i, kind in enumerate(["cl", "chunked", "cl-big", "get", "chunked-big", "cl"]):
            target = "/p/%d" % i
            if kind == "get":
                reqs.append((target, b"", _head("GET", target)))
                continue
            n = {"cl": 3000 + i, "chunked": 9000, "cl-big": 300000, "chunked-big": 150000}[kind]
            body = _data(n, "p%d" % i)
            if kind.startswith("chunked"):
                sizes = [rnd.randint(1, 5000) for _ in range(200)]
                wire = _post_chunked(target, body, sizes, ext_every=3)
            else:
                wire = _post(target, body)
            reqs.append((target, body, wire))
        c = Conn(s.port, timeout=30)
        th, err = _sender(c, b"".join(w for _, _, w in reqs))
        for target, body, _ in reqs:
            _answer(c.read_response(), body, target)
        th.join(10)
        check(not err and not th.is_alive(), "pipelined write failed: %r" % err)
        for target, body, _ in reqs:
            if body:
                _exact(rec, target, body, target + " (pipelined)")
        eq(rec.order, [r[0] for r in reqs], "order of the requests at the local service")
        c.close()

        body = _data(5000, "u1")
        after = _data(3000, "u1after")
        c = Conn(s.port, timeout=20)
        c.send(_head("GET", "/up/1", [("Upgrade", "foo"), ("Connection", "Upgrade"),
                                      ("Content-Length", str(len(body)))]) + body + after)
        r = c.read_head()
        eq(r.status, 101, "upgrade status")
        got = []
        eq(c._exact(len(after), got.append), len(after), "echoed pipe bytes")
        check(b"".join(got) == after, "bytes after the upgrade came back different")
        more = _data(100000, "u1more")
        c.send(more)
        got = []
        eq(c._exact(len(more), got.append), len(more), "echoed pipe bytes (more)")
        check(b"".join(got) == more, "pipe bytes after the 101 came back different")
        _exact(rec, "/up/1", body, "upgrade request body")
        rec.wait("all pipe bytes", lambda: len(rec.piped.get("/up/1", b"")) >= len(after + more))
        check(rec.piped["/up/1"] == after + more, "the pipe's bytes at the local service")
        c.close()

        d = _data(20000, "u2")
        c = Conn(s.port, timeout=20)
        c.send(_head("POST", "/c/up2", [("Upgrade", "foo"), ("Connection", "Upgrade"),
                                        ("Transfer-Encoding", "chunked")]) +
               _chunked(d, [1, 999, 3]) + _post("/c/up2-next", b"next"))
        _answer(c.read_response(), d, "chunked upgrade as a plain request")
        _answer(c.read_response(), b"next", "request after it")
        _exact(rec, "/c/up2", d, "chunked upgrade body")
        c.close()
    finally:
        rec.close()


# -- 4. bodies of requests that waited for a tunnel -------------------------

@timed(90)
def test_h2_bodies_while_queued(t):
    """No agent yet: a POST whose head and body came in one read waits for a
    tunnel (its parser held after the head, the rest in pc->pipeline), with
    Expect: 100-continue; a chunked POST and a GET pipelined behind it; on
    other connections a chunked POST and an upgrade with a body and the
    pipe's first bytes. The agent connects; every body arrives exact, in
    order, and the pipe's bytes only after the 101."""
    rec = BodyRecorder()
    try:
        s = t.serve("--queue-timeout", "30")
        b1, b2 = _data(150000, "q1"), _data(40000, "q2")
        c = Conn(s.port, timeout=30)
        mark = s.proc.mark()
        th, err = _sender(c, _post("/q/1", b1, [("Expect", "100-continue")]) +
                          _post_chunked("/q/2", b2, [1, 100, 7, 30000]) + _head("GET", "/q/3"))
        s.proc.wait_for(r"no tunnel serves .*waiting", 10, since=mark)
        c2 = Conn(s.port, timeout=30)  # a second connection queued the same way
        b4 = _data(90000, "q4")
        c2.send(_post_chunked("/q/4", b4, [3, 65536, 5]))
        # An upgrade with a body and the pipe's first bytes, queued too.
        c3 = Conn(s.port, timeout=30)
        b5, after5 = _data(70000, "q5"), _data(2000, "q5after")
        c3.send(_head("GET", "/up/q5", [("Upgrade", "foo"), ("Connection", "Upgrade"),
                                        ("Content-Length", str(len(b5)))]) + b5 + after5)
        t.agent(s, rec.url)
        r = c3.read_head()
        eq(r.status, 101, "queued upgrade's status")
        got = []
        eq(c3._exact(len(after5), got.append), len(after5), "queued upgrade: echoed pipe bytes")
        check(b"".join(got) == after5, "queued upgrade: pipe bytes came back different")
        _exact(rec, "/up/q5", b5, "/up/q5 (a queued upgrade's body)")
        c3.close()
        r = c.read_response(interim=True)
        if r.status == 100:
            r = c.read_response()
        _answer(r, b1, "/q/1")
        _answer(c.read_response(), b2, "/q/2")
        _answer(c.read_response(), b"", "/q/3")
        _answer(c2.read_response(), b4, "/q/4")
        th.join(10)
        check(not err, "write failed: %r" % err)
        _exact(rec, "/q/1", b1, "/q/1 (queued with its body)")
        _exact(rec, "/q/2", b2, "/q/2 (pipelined behind a queued request)")
        _exact(rec, "/q/4", b4, "/q/4 (queued chunked)")
        c.close()
        c2.close()
    finally:
        rec.close()


# -- 5. many uploads at once, tiny windows: the shared read buffer ----------

@timed(120)
def test_h2_concurrent_uploads_tiny_windows(t):
    """24 connections upload at once (Content-Length and chunked, random
    write sizes) over one tunnel with 4 KiB windows both ways: every read
    overruns the stream's credit, so bodies wait in stream queues while the
    one read buffer all connections share is reused. A pointer kept past its
    read would show another connection's bytes here."""
    rec, s, a = _stack(t, ["--window", "4096"], {"WINDOW": "4096"})
    try:
        N = 24
        errors = []
        lock = threading.Lock()
        want = {}

        def one(i):
            try:
                rnd = random.Random(i)
                target = "/m/%d" % i
                body = _data(60000 + 7919 * i, "m%d" % i)
                with lock:
                    want[target] = body
                if i % 2:
                    wire = _post_chunked(target, body, [rnd.randint(1, 3000) for _ in range(50)])
                else:
                    wire = _post(target, body)
                c = Conn(s.port, timeout=60)
                _nodelay(c)
                off = 0
                while off < len(wire):
                    n = rnd.choice([1, 13, 700, 4096, 20000, 65536])
                    c.send(wire[off:off + n])
                    off += n
                r = c.read_response()
                c.close()
                if r.status != 200 or r.body != b"%d %s" % (
                        len(body), hashlib.sha256(body).hexdigest().encode()):
                    raise AssertionError("%s: %s %r" % (target, r.status, r.body[:100]))
            except BaseException as e:  # noqa: B902 - collected and reported
                with lock:
                    errors.append("upload %d: %r" % (i, e))

        ths = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(N)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(90)
        if errors or any(th.is_alive() for th in ths):
            fail("uploads failed:\n  " + "\n  ".join(errors[:10]))
        for target, body in want.items():
            _exact(rec, target, body, target)
    finally:
        rec.close()


# -- 6. TLS clients ---------------------------------------------------------

@timed(90)
def test_h2_tls_client_bodies(t):
    """Over TLS the read buffer is refilled record by record in one loop
    (tls_drain): a body split across records, many chunks per record and
    pipelined POSTs in one write all arrive exact."""
    P = pki()
    rec = BodyRecorder()
    try:
        s = t.serve("--tls-cert", P("server.pem"), "--tls-key", P("server.key"))
        t.agent(s, rec.url, env={"CA_FILE": P("ca.pem")})
        c = TlsConn(s.port, cafile=P("ca.pem"), timeout=30)
        b1 = _data(3000, "t1")
        h1 = _head("POST", "/t/1", [("Content-Length", "3000")], host="localhost")
        for p in [h1 + b1[:1], b1[1:2], b1[2:2000], b1[2000:]]:
            c.send(p)
            time.sleep(0.02)
        _answer(c.read_response(), b1, "/t/1")
        rnd = random.Random(5)
        sizes = [rnd.randint(1, 60) for _ in range(2000)]
        # One write, small enough for the socket buffers: an SSL socket is
        # not written from one thread while read from another.
        b2, b3 = _data(sum(sizes), "t2"), _data(120000, "t3")
        c.send(_post_chunked("/t/2", b2, sizes, ext_every=5, host="localhost") +
               _post("/t/3", b3, host="localhost") + _head("GET", "/t/4", host="localhost"))
        _answer(c.read_response(), b2, "/t/2")
        _answer(c.read_response(), b3, "/t/3")
        _answer(c.read_response(), b"", "/t/4")
        _exact(rec, "/t/1", b1, "/t/1 over TLS")
        _exact(rec, "/t/2", b2, "/t/2 over TLS (2000 chunks)")
        _exact(rec, "/t/3", b3, "/t/3 over TLS (pipelined)")
        c.close()
    finally:
        rec.close()


# -- 7. bodies cut short: streams that die, services that stop, errors ----

def _pump_bg(c, blocks):
    def run():
        try:
            for b in blocks:
                c.send(b)
                time.sleep(0.001)
        except OSError:
            pass
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


@timed(120)
def test_h2_bodies_cut_short(t):
    """Uploads stalled at the service when the agent is killed (their
    streams reset while their clients keep sending): each gets 502 or is
    closed. With a new agent: the local service closes after the head (the
    agent resets the stream), or answers at once and closes with the body
    unread, while the client is still sending; a client half-closes in the
    middle of its body; a chunked body ends in a trailer section with a
    bare LF right after many chunks in one read; a chunk without its CRLF
    after a good chunk in the same read (an error inside an llhttp
    callback): 400. A request answered 401 by serve (its answer deferred
    until its small body is read and dropped) with a POST pipelined behind
    it in one write: 401, then the POST exact. Then an upload exact. ASan
    checks every path (cleanup)."""
    rec = BodyRecorder()
    try:
        s = t.serve("--auth-token", TOKEN, "--auth-rule", "^/private")
        a = t.agent(s, rec.url)
        conns = []
        stop = threading.Event()
        results = {}

        def pump(i, c):
            c.send(_head("POST", "/stall/%d" % i, [("Content-Length", str(64 << 20))]))
            block = _data(65536, "d%d" % i)
            try:
                while not stop.is_set():
                    c.send(block)
            except OSError:
                pass

        ths = []
        for i in range(6):
            c = Conn(s.port, timeout=30)
            conns.append(c)
            th = threading.Thread(target=pump, args=(i, c), daemon=True)
            th.start()
            ths.append(th)
        rec.wait("six stalled uploads", lambda: len(rec.stalled) == 6)
        time.sleep(0.3)  # let the uploads fill the windows and queues
        a.kill()
        for i, c in enumerate(conns):
            r = c.read_response(allow_eof=True)
            results[i] = r.status if r else "closed"
        stop.set()
        for c in conns:
            c.reset()
        for th in ths:
            th.join(10)
        bad = {i: st for i, st in results.items() if st not in (502, "closed")}
        check(not bad, "uploads whose tunnel died: %r (want 502 or closed)" % bad)

        a = t.agent(s, rec.url, label="agent2")
        bad = []
        for target, chunked in [("/drop/1", False), ("/drop/2", True), ("/early/1", False),
                                ("/early/2", True)]:
            body = _data(4 << 20, target)
            c = Conn(s.port, timeout=20)
            _nodelay(c)
            if chunked:
                wire = _post_chunked(target, body, [1, 3000, 70000, 2])
            else:
                wire = _post(target, body)
            th = _pump_bg(c, [wire[i:i + 30000] for i in range(0, len(wire), 30000)])
            r = c.read_response(allow_eof=True)
            st = r.status if r else "closed"
            want = (502, "closed") if target.startswith("/drop") else (200, 502, "closed")
            if st not in want:
                bad.append("%s: %s (want one of %r)" % (target, st, want))
            if r and r.status == 200 and r.body != b"early":
                bad.append("%s: 200 with body %r" % (target, r.body[:40]))
            c.reset()
            th.join(10)
        check(not bad, "requests whose service stopped reading:\n  " + "\n  ".join(bad))

        # Half-close in the middle of a body.
        c = Conn(s.port, timeout=10)
        c.send(_head("POST", "/h/half", [("Content-Length", "100000")]) + _data(50000, "half"))
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response(allow_eof=True)
        check(r is None or r.status in (400, 502), "half-closed mid-body: %r" % r)
        c.close()

        # Many chunks, then a trailer with a bare LF, all in one read.
        c = Conn(s.port, timeout=10)
        c.send(_head("POST", "/h/trailer", [("Transfer-Encoding", "chunked")]) +
               _chunked(_data(3000, "tr"), [3])[:-2] + b"X-T: 1\n\r\n")
        r = c.read_response(allow_eof=True)
        eq(r.status if r else "closed", 400, "bare LF in a trailer after many chunks")
        c.close()

        # A good chunk, then one with no CRLF after its data, one read.
        c = Conn(s.port, timeout=10)
        c.send(_head("POST", "/e/1", [("Transfer-Encoding", "chunked")]) +
               b"5\r\nhello\r\n5\r\nworldXX3\r\nabc\r\n0\r\n\r\n")
        r = c.read_response()
        eq(r.status, 400, "chunk without CRLF after a good one")
        check(c.wait_closed(5), "connection kept after a broken chunked body")
        c.close()

        # 401 (deferred: its body is read and dropped) with a POST behind.
        b2 = _data(30000, "e2")
        c = Conn(s.port, timeout=10)
        c.send(_post("/private/e401", _data(3000, "e401")) + _post("/e/2", b2))
        r = c.read_response()
        eq(r.status, 401, "request to a path that needs the token")
        _answer(c.read_response(), b2, "/e/2 behind a 401")
        _exact(rec, "/e/2", b2, "/e/2 behind a 401")
        c.close()

        b3 = _data(500000, "e3")
        c = Conn(s.port, timeout=30)
        th, err = _sender(c, _post("/e/3", b3))
        _answer(c.read_response(), b3, "/e/3 after the agent came back")
        th.join(10)
        _exact(rec, "/e/3", b3, "/e/3")
        c.close()
        check("/private/e401" not in rec.bodies, "the 401's request reached the service")
        check("/h/half" not in rec.bodies, "a half-closed body reached the service whole")
    finally:
        rec.close()


# -- 8. what a stalled chunked upload makes serve hold ----------------------

@timed(120)
def test_h2_stalled_chunked_upload_bounded(t):
    """A chunked upload of 2-byte chunks (a read holds thousands of pieces,
    gathered in pc->body_acc) to a service that never reads it: serve stops
    reading the client; its RSS stays under 64 MiB while the client could
    push gigabytes, and the tunnel still carries other requests."""
    rec, s, a = _stack(t, serve_env=FLOW_ENV, agent_env=dict(FLOW_ENV))
    try:
        c = Conn(s.port, timeout=30)
        c.send(_head("POST", "/stall/chunked", [("Transfer-Encoding", "chunked")]))
        block = b"2\r\nab\r\n" * 10000
        sent = [0]
        stop = threading.Event()

        def pump():
            try:
                while not stop.is_set() and sent[0] < (1 << 30):
                    c.sock.sendall(block)
                    sent[0] += len(block)
            except OSError:
                pass

        th = threading.Thread(target=pump, daemon=True)
        th.start()
        rec.wait("the stalled upload's head", lambda: "/stall/chunked" in rec.stalled)
        got = []

        def others():
            c2 = Conn(s.port, timeout=30)
            b = _data(100000, "o")
            c2.send(_post("/o/1", b))
            r = c2.read_response()
            c2.close()
            got.append((r.status, r.body == b"%d %s" % (
                len(b), hashlib.sha256(b).hexdigest().encode())))

        peaks = sample_rss([s.proc], 4.0, during=others)
        eq(got, [(200, True)], "a request during the stalled upload")
        kib = peaks[s.proc.label]
        check(kib and kib < 64 * 1024, "serve RSS peaked at %.1f MiB with a stalled chunked "
              "upload (limit 64)" % (kib / 1024.0))
        check(sent[0] < 256 << 20, "client pushed %d MiB into a stalled upload" % (sent[0] >> 20))
        print("serve peak RSS %.1f MiB; client pushed %.1f MiB" % (kib / 1024.0,
                                                                  sent[0] / 1048576.0))
        stop.set()
        c.reset()
        th.join(10)
    finally:
        rec.close()
