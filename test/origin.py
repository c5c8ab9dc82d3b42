#!/usr/bin/env python3
"""origin.py: the local HTTP service the natwrp integration tests proxy to.

Usage:  python3 test/origin.py [--host 127.0.0.1] [--port 0] [--name A]
                                [--tls-cert FILE --tls-key FILE]

Prints "origin listening PORT" on stdout (flushed) once it accepts
connections, then serves HTTP/1.1 with keep-alive until killed. One line per
request and per event goes to stderr. Standard library only.

With --tls-cert and --tls-key (PEM; the certificate file may hold a chain)
it serves HTTPS instead (TLS 1.2 or later, ALPN http/1.1), with the same
endpoints. Each handshake runs in the connection's own thread, so a client
that stalls in it blocks nobody; a failed handshake is logged as
"tls handshake failed from PORT: REASON".

Any method is accepted on every endpoint; HEAD answers with the headers GET
would send and no body. Request bodies may use Content-Length or chunked
transfer coding; endpoints that do not use the body still drain it, so the
connection stays usable. Routing tolerates a LOCAL_URL base path in front;
any path that matches no endpoint is answered by /echo. The first path
segment that names an endpoint picks it: "/base/status/404" and "/hang/x"
work, and so does "/echo/anything".

Endpoints:
  /echo[/anything][?q]   JSON: {"method", "path" (target exactly as received,
                         raw query included), "version", "headers" (ordered
                         list of [name, value] pairs as received), "body_len",
                         "body_sha256", "body" (latin-1 text, only when under
                         4 KiB), "name", "remote_port" (the connection's
                         client port: equal ports mean a reused connection),
                         "conn_requests" (requests seen on this connection)}.
  /name                  text/plain: the origin's --name.
  /bytes?n=N[&seed=S][&chunked=1]
                         N deterministic bytes (pattern_chunks(N, S) below;
                         the client recomputes them to hash-check). With
                         Content-Length unless chunked=1. The header
                         X-Pattern-Sha256 is NOT sent (a 1 GiB body would
                         have to be generated twice); use pattern_sha256().
  /upload                reads the whole body through sha256 without keeping
                         it; JSON {"len", "sha256", "chunked"}.
  /status/CODE           responds with that status and body "status CODE\\n"
                         (no body for 1xx, 204 and 304).
  /cookies               Set-Cookie: a=1, Set-Cookie: b=2 and
                         X-Multi: one / two / three, in that order.
  /hop                   a response carrying hop-by-hop headers (Connection
                         naming X-Private, X-Private, Keep-Alive, Proxy-Foo,
                         Trailer) next to an ordinary X-End-To-End header.
  /sleep?ms=N            waits N ms, then 200 "slept N\\n".
  /slow-body?ms=N&parts=K&size=S[&chunked=1][&seed=S]
                         sends the head at once, then K parts of S pattern
                         bytes with N ms between them (Content-Length K*S
                         unless chunked=1).
  /hang[?head=1][&max_ms=N]
                         reads the request head (never the body, so an
                         upload to /hang stalls), then sends nothing (with head=1:
                         a head with Content-Length 1000000 and 10 body bytes)
                         until the client goes away, then records an
                         "aborted" event. Gives up after max_ms (default
                         120000) and records "hang-timeout".
  /interim               a 103 Early Hints interim response, then 200.
  /malformed             answers "THIS IS NOT HTTP" and closes.
  /drop                  closes the connection without answering.
  /big-head?n=N          200 with one X-Big header of N bytes (default 100000).
  /many-headers?n=N      200 with headers X-M0: 0 ... X-M<N-1>: N-1.
  /cut?n=N&sent=M[&chunked=1][&seed=S]
                         a head promising N bytes (or chunked), M pattern
                         bytes, then close: a body cut short by the origin.
  /events[?clear=1]      JSON list of recorded events, oldest first, e.g.
                         {"event": "aborted", "path": "/hang", "t": 12.3};
                         clear=1 empties the list after answering. Events:
                         "hang-start", "aborted" (the peer went away while a
                         response was pending or being written),
                         "hang-timeout".

Every event is also logged to stderr as "event NAME path=PATH", so a test
can wait for it on the log instead of polling /events.
"""

import argparse
import hashlib
import json
import select
import socket
import ssl
import sys
import threading
import time
import http.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

# http.server parses request heads with http.client, which refuses more than
# 100 fields; the proxy's own limits are what the tests are about.
http.client._MAXHEADERS = 1000

PATTERN_BLOCK = 65521  # prime, so pattern blocks never line up with frames


def pattern_block(seed, k):
    """Block k of the pattern stream for seed (PATTERN_BLOCK bytes)."""
    return hashlib.shake_256(b"%s:%d" % (str(seed).encode(), k)).digest(PATTERN_BLOCK)


def pattern_chunks(n, seed="0"):
    """Yield the first n bytes of the pattern stream for seed, in pieces."""
    k = 0
    while n > 0:
        b = pattern_block(seed, k)
        if len(b) > n:
            b = b[:n]
        yield b
        n -= len(b)
        k += 1


def pattern_sha256(n, seed="0"):
    h = hashlib.sha256()
    for b in pattern_chunks(n, seed):
        h.update(b)
    return h.hexdigest()


ENDPOINTS = {"echo", "upload", "name", "bytes", "cookies", "hop", "sleep", "slow-body", "hang",
             "events", "interim", "malformed", "drop", "big-head", "cut", "many-headers"}


class ClientGone(Exception):
    """The peer closed or reset the connection."""


class Origin(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, addr, name, ssl_ctx=None):
        self.name = name
        self.events = []
        self.events_lock = threading.Lock()
        self.t0 = time.monotonic()
        self.ssl_ctx = ssl_ctx
        super().__init__(addr, Handler)

    def finish_request(self, request, client_address):
        if self.ssl_ctx is None:
            return super().finish_request(request, client_address)
        # HTTPS: the handshake runs here, in the connection's thread (never
        # in the accept loop), bounded so a stalled client cannot pin it.
        try:
            request.settimeout(30)
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (ssl.SSLError, OSError) as e:
            log("tls handshake failed from %s: %s" % (client_address[1], e))
            return None
        try:
            return super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def record(self, event, path, **extra):
        ev = {"event": event, "path": path, "t": round(time.monotonic() - self.t0, 3)}
        ev.update(extra)
        with self.events_lock:
            self.events.append(ev)
        log("event %s path=%s" % (event, path))

    def handle_error(self, request, client_address):
        # A client that vanishes mid-response is normal here; never crash,
        # never print a traceback for it.
        exc = sys.exc_info()[1]
        log("connection from %s ended: %r" % (client_address, exc))


_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        sys.stderr.write("%.3f origin %s\n" % (time.time(), msg))
        sys.stderr.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "natwrp-test-origin/1"

    # -- plumbing ----------------------------------------------------------

    def setup(self):
        super().setup()
        self.conn_requests = 0

    def __getattr__(self, attr):
        # BaseHTTPRequestHandler looks up do_<METHOD>; accept every method.
        if attr.startswith("do_"):
            return self.dispatch
        raise AttributeError(attr)

    def log_message(self, fmt, *args):
        log("%s %s: %s" % (self.server.name, self.client_address[1], fmt % args))

    def write(self, data):
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError) as e:
            self.close_connection = True
            raise ClientGone(str(e))

    def query(self):
        path, _, q = self.path.partition("?")
        return path, {k: v[-1] for k, v in parse_qs(q, keep_blank_values=True).items()}

    def body_chunks(self):
        """Yield the request body in pieces (Content-Length or chunked)."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if te:
            if te.split(",")[-1].strip() != "chunked":
                raise ValueError("unsupported transfer-encoding %r" % te)
            self.body_was_chunked = True
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ClientGone("eof in chunk size")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers up to the empty line
                        t = self.rfile.readline(65537)
                        if not t:
                            raise ClientGone("eof in trailers")
                        if t in (b"\r\n", b"\n"):
                            return
                while size > 0:
                    b = self.rfile.read(min(size, 1 << 16))
                    if not b:
                        raise ClientGone("eof in chunk")
                    size -= len(b)
                    yield b
                if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise ValueError("missing CRLF after chunk")
        else:
            self.body_was_chunked = False
            n = int(self.headers.get("Content-Length") or 0)
            while n > 0:
                b = self.rfile.read(min(n, 1 << 16))
                if not b:
                    raise ClientGone("eof in body")
                n -= len(b)
                yield b

    def read_body(self, keep=4096):
        """Drain the body; return (length, sha256 hex, first `keep` bytes)."""
        h = hashlib.sha256()
        n = 0
        head = bytearray()
        for b in self.body_chunks():
            h.update(b)
            n += len(b)
            if len(head) < keep:
                head += b[: keep - len(head)]
        return n, h.hexdigest(), bytes(head)

    def respond(self, code, body=b"", ctype="text/plain", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        no_body = code < 200 or code in (204, 304)
        if not no_body:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and not no_body:
            self.write(body)

    def respond_json(self, obj, code=200):
        self.respond(code, json.dumps(obj, indent=1) + "\n", "application/json")

    def peer_gone(self, timeout):
        """Wait up to timeout seconds for the peer to close. True if it did.
        POLLRDHUP sees the peer's FIN even when unread body bytes are queued
        ahead of it (an upload to /hang is never read)."""
        p = select.poll()
        p.register(self.connection, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        return bool(p.poll(timeout * 1000.0))

    # -- dispatch ----------------------------------------------------------

    def dispatch(self):
        self.conn_requests += 1
        path, q = self.query()
        segs = [s for s in path.split("/") if s]
        # The first segment naming an endpoint wins, so a LOCAL_URL base path
        # in front ("/base/status/404") or a suffix behind ("/hang/h2") is
        # allowed. No endpoint named: echo.
        ep, code = "echo", 0
        for i, seg in enumerate(segs):
            if seg == "status" and i + 1 < len(segs) and segs[i + 1].isdigit():
                ep, code = "status", int(segs[i + 1])
                break
            if seg in ENDPOINTS:
                ep = seg
                break
        try:
            if ep == "echo":
                return self.ep_echo()
            if ep == "upload":
                return self.ep_upload()
            if ep == "hang":
                # Never reads the body, so an upload to /hang stalls (flow-control test).
                return self.ep_hang(path, q)
            # Every other endpoint ignores the request body: drain it first.
            self.read_body(0)
            if ep == "name":
                return self.respond(200, self.server.name + "\n")
            if ep == "bytes":
                return self.ep_bytes(q)
            if ep == "status":
                return self.ep_status(code)
            if ep == "cookies":
                return self.respond(200, "cookies\n", headers=[
                    ("Set-Cookie", "a=1; Path=/"), ("X-Multi", "one"),
                    ("Set-Cookie", "b=2; Path=/; HttpOnly"), ("X-Multi", "two"),
                    ("X-Multi", "three")])
            if ep == "hop":
                return self.respond(200, "hop\n", headers=[
                    ("Connection", "keep-alive, X-Private"), ("X-Private", "secret"),
                    ("Keep-Alive", "timeout=5, max=100"), ("Proxy-Foo", "bar"),
                    ("Trailer", "X-Checksum"), ("X-End-To-End", "kept")])
            if ep == "sleep":
                ms = int(q.get("ms", "1000"))
                time.sleep(ms / 1000.0)
                return self.respond(200, "slept %d\n" % ms)
            if ep == "slow-body":
                return self.ep_slow_body(q)
            if ep == "interim":
                self.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
                return self.respond(200, "after interim\n")
            if ep == "malformed":
                self.close_connection = True
                return self.write(b"THIS IS NOT HTTP\r\n\r\n")
            if ep == "drop":
                self.close_connection = True
                return None
            if ep == "big-head":
                big = "b" * int(q.get("n", "100000"))
                return self.respond(200, "big head\n", headers=[("X-Big", big)])
            if ep == "many-headers":
                n = int(q.get("n", "100"))
                return self.respond(200, "many headers\n",
                                    headers=[("X-M%d" % i, str(i)) for i in range(n)])
            if ep == "cut":
                n, sent = int(q.get("n", "100000")), int(q.get("sent", "5000"))
                chunked = q.get("chunked") == "1"
                self.start_stream(200, n, chunked)
                self.send_piece(b"".join(pattern_chunks(sent, q.get("seed", "0"))), chunked)
                self.close_connection = True
                return None
            if ep == "events":
                with self.server.events_lock:
                    evs = list(self.server.events)
                    if q.get("clear") == "1":
                        self.server.events.clear()
                return self.respond_json(evs)
        except ClientGone as e:
            self.server.record("aborted", path, why=str(e))
            self.close_connection = True
        except ValueError as e:
            self.close_connection = True
            try:
                self.respond(400, "bad request: %s\n" % e)
            except ClientGone:
                pass

    # -- endpoints ---------------------------------------------------------

    def ep_echo(self):
        n, sha, head = self.read_body()
        obj = {
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.raw_items()],
            "body_len": n,
            "body_sha256": sha,
            "name": self.server.name,
            "remote_port": self.client_address[1],
            "conn_requests": self.conn_requests,
        }
        if n < 4096:
            obj["body"] = head.decode("latin-1")
        self.respond_json(obj)

    def ep_upload(self):
        n, sha, _ = self.read_body(0)
        self.respond_json({"len": n, "sha256": sha, "chunked": self.body_was_chunked})

    def ep_status(self, code):
        if code < 200:
            code = 200 if code < 100 else code
        self.respond(code, "status %d\n" % code)

    def start_stream(self, code, length, chunked, ctype="application/octet-stream"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.flush()

    def send_piece(self, b, chunked):
        if chunked:
            self.write(b"%x\r\n" % len(b) + b + b"\r\n")
        else:
            self.write(b)

    def ep_bytes(self, q):
        n = int(q.get("n", "0"))
        seed = q.get("seed", "0")
        chunked = q.get("chunked") == "1"
        self.start_stream(200, n, chunked)
        if self.command == "HEAD":
            return
        for b in pattern_chunks(n, seed):
            self.send_piece(b, chunked)
        if chunked:
            self.write(b"0\r\n\r\n")

    def ep_slow_body(self, q):
        ms = int(q.get("ms", "100"))
        parts = int(q.get("parts", "10"))
        size = int(q.get("size", "1000"))
        chunked = q.get("chunked") == "1"
        data = b"".join(pattern_chunks(parts * size, q.get("seed", "0")))
        self.start_stream(200, parts * size, chunked)
        if self.command == "HEAD":
            return
        for i in range(parts):
            if i:
                time.sleep(ms / 1000.0)
            self.send_piece(data[i * size:(i + 1) * size], chunked)
        if chunked:
            self.write(b"0\r\n\r\n")

    def ep_hang(self, path, q):
        max_ms = int(q.get("max_ms", "120000"))
        if q.get("head") == "1":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.write(b"0123456789")
        self.server.record("hang-start", path)
        if self.peer_gone(max_ms / 1000.0):
            raise ClientGone("peer closed during hang")
        self.server.record("hang-timeout", path)
        self.close_connection = True
        if q.get("head") != "1":
            self.respond(200, "hang timeout\n")


def main():
    ap = argparse.ArgumentParser(description="natwrp test origin")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--name", default="A")
    ap.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (chain)")
    ap.add_argument("--tls-key", help="PEM private key for --tls-cert")
    a = ap.parse_args()
    ctx = None
    if a.tls_cert or a.tls_key:
        if not (a.tls_cert and a.tls_key):
            ap.error("--tls-cert and --tls-key go together")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
    srv = Origin((a.host, a.port), a.name, ctx)
    sys.stdout.write("origin listening %d\n" % srv.server_address[1])
    sys.stdout.flush()
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
