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
  /interim?n=N           N (1) 103 Early Hints interim responses, then 200.
  /malformed             answers "THIS IS NOT HTTP" and closes.
  /drop                  closes the connection without answering.
  /big-head?n=N          200 with one X-Big header of N bytes (default 100000).
  /many-headers?n=N      200 with headers X-M0: 0 ... X-M<N-1>: N-1.
  /cut?n=N&sent=M[&chunked=1][&seed=S]
                         a head promising N bytes (or chunked), M pattern
                         bytes, then close: a body cut short by the origin.
  /raw-upgrade           any Upgrade answered 101; then raw bytes are echoed
                         upper-cased until the client half-closes, then
                         "bye" and close (a non-WebSocket upgrade).
  /static/NAME           a file of test/static/ (the browser test's page), 404
                         for anything else.
  /events[?clear=1]      JSON list of recorded events, oldest first, e.g.
                         {"event": "aborted", "path": "/hang", "t": 12.3};
                         clear=1 empties the list after answering. Events:
                         "hang-start", "aborted" (the peer went away while a
                         response was pending or being written),
                         "hang-timeout".

Every event is also logged to stderr as "event NAME path=PATH", so a test
can wait for it on the log instead of polling /events.

Live endpoints (WebSocket, streaming):
  /ws[?hello=1]          a WebSocket (RFC 6455) echo server. The request must
                         be a GET with Upgrade: websocket, Connection: Upgrade,
                         Sec-WebSocket-Key and Sec-WebSocket-Version: 13 (else
                         426, or 400 without a key). After the 101 it owns the
                         connection: every message is echoed as one frame with
                         the same opcode (text stays text, binary stays
                         binary); fragmented messages are reassembled first;
                         a ping is answered by a pong with the same payload;
                         pongs are ignored; a close is answered with a close
                         carrying the same payload (code and reason), then the
                         origin shuts down its write side and waits (at most
                         10 s) for the peer's EOF before closing. Protocol
                         errors end it with close 1002 (unmasked client frame,
                         bad opcode, RSV bits, control frame fragmented or over
                         125 bytes, continuation without a start), 1007 (text
                         that is not UTF-8), 1009 (message over 32 MiB).
                         Subprotocols: if Sec-WebSocket-Protocol is offered the
                         first one listed is selected. Extensions: the first
                         permessage-deflate offer (RFC 7692) is accepted with
                         "server_no_context_takeover; client_no_context_takeover"
                         (and server_max_window_bits=N when the client asked for
                         it); a compressed message (RSV1) is inflated (raw
                         deflate, the 00 00 ff ff tail appended, a fresh context
                         per message) and its echo is compressed too; an
                         uncompressed message is echoed uncompressed. With
                         ?hello=1 the first message, before any echo, is a text
                         message (never compressed) with the JSON
                         {"hello": true, "path", "headers": [[name, value], ...]}
                         of the handshake request as received. A peer that
                         ends (EOF or reset) without a close frame records an
                         "aborted" event, as for any other endpoint. Log
                         lines: "ws open path=P proto=X ext=Y",
                         "ws close code=N", "ws done: REASON".
  /sse?n=N[&gate=ID][&ms=M]
                         text/event-stream, chunked (no Content-Length),
                         Cache-Control: no-cache. Emits N events (default 10),
                         i = 0 .. N-1, each in its own chunk:
                         "id: i\ndata: {"i": i, "gate": ID, "acked": A}\n\n",
                         then ends the body. Without gate, one event every M ms
                         (default 50). With gate=ID, event i+1 is only produced
                         once the origin has received GET /ack?gate=ID&i=i (A is
                         the highest i acked for ID when the event was made, -1
                         at first), so a client that acks each event after it
                         received it proves every event arrived before the next
                         existed. A gate waits at most gate_ms (default 30000),
                         then records "gate-timeout" and drops the connection.
  /api/generate[?k=K][&gate=ID][&ms=M]
                         Ollama-shaped generation. Body: JSON {"model",
                         "prompt", "stream"} (stream defaults to true). With
                         stream: 200 application/x-ndjson, chunked, one JSON
                         object per line and per chunk: K lines {"model",
                         "created_at", "response": TOKEN, "done": false}, then
                         {"model", "created_at", "response": "", "done": true,
                         "done_reason": "stop", "total_duration",
                         "load_duration", "prompt_eval_count", "eval_count",
                         "eval_duration"} (durations in ns). K is ?k= or else
                         the number of words in the prompt (at least 1); TOKEN
                         i is word i of the prompt (cycling; " word" after the
                         first), or "tokI" for an empty prompt, so with K equal
                         to the word count the tokens join back into the
                         prompt's words joined by single spaces. gate=ID works
                         as for /sse, per line (line i+1, the final one
                         included, waits for /ack?gate=ID&i=i); without gate
                         lines are M ms apart (default 10). With "stream":
                         false: one application/json object with the whole
                         response and Content-Length. A body that is not a
                         JSON object: 400 {"error": ...}.
  /ack?gate=ID&i=I       records that event/line I of gate ID was received
                         (acks only ever raise the mark) and answers 200
                         "ack ID I\n". Logged as "ack gate=ID i=I".
  /duplex                full duplex echo: sends a 200 head (application/
                         octet-stream, chunked) at once, before reading the
                         body, then echoes each piece of the request body as
                         soon as it is read, as one response chunk (a chunked
                         request chunk of up to 64 KiB is one piece; a
                         Content-Length body is echoed as it arrives), and ends
                         the response when the request body ends.
"""

import argparse
import base64
import hashlib
import json
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
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
             "events", "interim", "malformed", "drop", "big-head", "cut", "many-headers",
             "ws", "sse", "generate", "ack", "duplex", "static", "raw-upgrade"}

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript",
                ".css": "text/css", ".png": "image/png"}

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_MAX_MESSAGE = 32 << 20
DEFLATE_TAIL = b"\x00\x00\xff\xff"


def ws_mask(data, key):
    """XOR data with the 4-byte masking key (RFC 6455 5.3); fast for large
    payloads (one big-integer XOR instead of a per-byte loop)."""
    n = len(data)
    if not n:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


class WsClose(Exception):
    """End the WebSocket with this close code (a protocol error)."""

    def __init__(self, code, reason):
        super().__init__("%d %s" % (code, reason))
        self.code, self.reason = code, reason


class Gates:
    """Acknowledgements for gated streams: gate id -> highest index acked."""

    def __init__(self):
        self.cond = threading.Condition()
        self.acked = {}

    def ack(self, gid, i):
        with self.cond:
            if i > self.acked.get(gid, -1):
                self.acked[gid] = i
            self.cond.notify_all()

    def get(self, gid):
        with self.cond:
            return self.acked.get(gid, -1)

    def wait(self, gid, i, timeout):
        """Wait until index i of gate gid is acked; False on timeout."""
        with self.cond:
            return self.cond.wait_for(lambda: self.acked.get(gid, -1) >= i, timeout)


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
        self.gates = Gates()
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
            if ep == "duplex":
                return self.ep_duplex()
            if ep == "generate":
                return self.ep_generate(path, q)
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
                for _ in range(int(q.get("n", "1"))):
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
            if ep == "static":
                # Files of test/static/ by name only (no directories), for
                # the browser test's page.
                name = segs[-1] if segs and segs[-1] != "static" else ""
                fpath = os.path.join(STATIC_DIR, name)
                if not name or name.startswith(".") or not os.path.isfile(fpath):
                    return self.respond(404, "no such file\n")
                with open(fpath, "rb") as f:
                    data = f.read()
                return self.respond(200, data, ctype=STATIC_TYPES.get(
                    os.path.splitext(name)[1], "application/octet-stream"))
            if ep == "ws":
                return self.ep_ws(path, q)
            if ep == "raw-upgrade":
                return self.ep_raw_upgrade()
            if ep == "sse":
                return self.ep_sse(path, q)
            if ep == "ack":
                gid, i = q.get("gate", ""), int(q.get("i", "0"))
                self.server.gates.ack(gid, i)
                log("ack gate=%s i=%d" % (gid, i))
                return self.respond(200, "ack %s %d\n" % (gid, i))
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

    # -- live endpoints: WebSocket, SSE, NDJSON, duplex -----------------------

    def send_chunk(self, b):
        if b:
            self.write(b"%x\r\n" % len(b) + b + b"\r\n")

    def gate_wait(self, path, q, gid, i):
        """Block until index i of gate gid is acked. On timeout record
        "gate-timeout" and raise ClientGone (the connection is dropped)."""
        if self.server.gates.wait(gid, i, int(q.get("gate_ms", "30000")) / 1000.0):
            return
        self.server.record("gate-timeout", path, gate=gid, i=i)
        self.close_connection = True
        raise ClientGone("gate %s: no ack for %d" % (gid, i))

    def ep_sse(self, path, q):
        n = int(q.get("n", "10"))
        ms = int(q.get("ms", "50"))
        gid = q.get("gate")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        for i in range(n):
            if i:
                if gid is not None:
                    self.gate_wait(path, q, gid, i - 1)
                else:
                    time.sleep(ms / 1000.0)
            acked = self.server.gates.get(gid) if gid is not None else None
            data = json.dumps({"i": i, "gate": gid, "acked": acked})
            self.send_chunk(("id: %d\ndata: %s\n\n" % (i, data)).encode())
        self.write(b"0\r\n\r\n")

    def ep_generate(self, path, q):
        _, _, raw = self.read_body(1 << 20)
        try:
            req = json.loads(raw.decode("utf-8") or "null")
        except ValueError as e:
            req = e
        if not isinstance(req, dict):
            return self.respond_json({"error": "body is not a JSON object: %s" % req}, 400)
        t0 = time.monotonic_ns()
        model = str(req.get("model", "test"))
        prompt = str(req.get("prompt", ""))
        words = prompt.split()
        k = int(q.get("k", str(max(1, len(words)))))
        ms = int(q.get("ms", "10"))
        gid = q.get("gate")

        def token(i):
            w = words[i % len(words)] if words else "tok%d" % i
            return w if i == 0 else " " + w

        def created():
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"

        def final(response):
            dt = time.monotonic_ns() - t0
            return {"model": model, "created_at": created(), "response": response, "done": True,
                    "done_reason": "stop", "total_duration": dt, "load_duration": 0,
                    "prompt_eval_count": len(words), "eval_count": k, "eval_duration": dt}

        if req.get("stream", True) is False:
            return self.respond(200, json.dumps(final("".join(token(i) for i in range(k)))),
                                "application/json")
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        for i in range(k + 1):
            if i:
                if gid is not None:
                    self.gate_wait(path, q, gid, i - 1)
                elif ms:
                    time.sleep(ms / 1000.0)
            if i < k:
                obj = {"model": model, "created_at": created(), "response": token(i),
                       "done": False}
            else:
                obj = final("")
            self.send_chunk(json.dumps(obj).encode() + b"\n")
        self.write(b"0\r\n\r\n")

    def ep_duplex(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()  # the head goes out now, before the body is read
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if te:
            for b in self.body_chunks():
                self.send_chunk(b)
        else:
            n = int(self.headers.get("Content-Length") or 0)
            while n > 0:
                b = self.rfile.read1(min(n, 1 << 16))
                if not b:
                    raise ClientGone("eof in body")
                n -= len(b)
                self.send_chunk(b)
        self.write(b"0\r\n\r\n")

    # WebSocket ---------------------------------------------------------------

    def ep_raw_upgrade(self):
        """Accept any Upgrade (not WebSocket: a made-up protocol) with 101,
        then echo raw bytes, upper-cased, until the client half-closes;
        then send 'bye' and close."""
        up = self.headers.get("Upgrade")
        if not up:
            return self.respond(400, "no Upgrade\n")
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", up)
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        sock = self.connection
        while True:
            # rfile, not the socket: bytes that came with the head are
            # already in its buffer.
            b = self.rfile.read1(65536)
            if not b:
                break
            sock.sendall(b.upper())
        sock.sendall(b"bye")
        self.close_connection = True
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return None

    def ep_ws(self, path, q):
        h = self.headers
        upgrade = (h.get("Upgrade") or "").lower()
        conn_tokens = {t.strip().lower() for v in h.get_all("Connection", []) for t in v.split(",")}
        if self.command != "GET" or upgrade != "websocket" or "upgrade" not in conn_tokens:
            return self.respond(426, "websocket only\n",
                                headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
        if (h.get("Sec-WebSocket-Version") or "").strip() != "13":
            return self.respond(426, "websocket version 13 only\n",
                                headers=[("Sec-WebSocket-Version", "13")])
        key = (h.get("Sec-WebSocket-Key") or "").strip()
        try:
            ok = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            ok = False
        if not ok:
            return self.respond(400, "bad Sec-WebSocket-Key\n")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        protos = [p.strip() for v in h.get_all("Sec-WebSocket-Protocol", [])
                  for p in v.split(",") if p.strip()]
        proto = protos[0] if protos else None
        deflate, ext = self.ws_negotiate(h.get_all("Sec-WebSocket-Extensions", []))
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        if proto:
            self.send_header("Sec-WebSocket-Protocol", proto)
        if ext:
            self.send_header("Sec-WebSocket-Extensions", ext)
        self.end_headers()
        self.close_connection = True  # whatever happens, HTTP is over here
        log("ws open path=%s proto=%s ext=%s" % (self.path, proto or "-", ext or "-"))
        self.ws_deflate = deflate
        if q.get("hello") == "1":
            hello = {"hello": True, "path": self.path,
                     "headers": [[k, v] for k, v in h.raw_items()]}
            self.ws_send(0x1, json.dumps(hello).encode())
        try:
            self.ws_loop()
        except WsClose as e:
            log("ws close code=%d (protocol error: %s)" % (e.code, e.reason))
            self.ws_send(0x8, struct.pack(">H", e.code) + e.reason.encode()[:120])
            self.ws_finish()

    @staticmethod
    def ws_negotiate(values):
        """The first acceptable permessage-deflate offer -> (settings, response
        header value); (None, None) when none is offered."""
        for v in values:
            for offer in v.split(","):
                parts = [p.strip() for p in offer.split(";")]
                if parts[0].lower() != "permessage-deflate":
                    continue
                params = {}
                for p in parts[1:]:
                    name, _, val = p.partition("=")
                    params[name.strip().lower()] = val.strip().strip('"')
                known = {"server_no_context_takeover", "client_no_context_takeover",
                         "server_max_window_bits", "client_max_window_bits"}
                if set(params) - known:
                    continue
                bits = 15
                if params.get("server_max_window_bits"):
                    if not params["server_max_window_bits"].isdigit():
                        continue
                    bits = int(params["server_max_window_bits"])
                    if not 8 <= bits <= 15:
                        continue
                resp = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
                if "server_max_window_bits" in params:
                    resp += "; server_max_window_bits=%d" % bits
                # zlib cannot make raw deflate with an 8-bit window: use 9
                # (smaller windows are always fine for the peer to inflate).
                return {"bits": max(9, bits)}, resp
        return None, None

    def ws_read(self, n):
        try:
            b = self.rfile.read(n) if n else b""
        except OSError as e:  # reset, or the socket shut down under us
            raise ClientGone("websocket read: %s" % e)
        if len(b) < n:
            raise ClientGone("eof in websocket frame")
        return b

    def ws_send(self, op, payload, compress=False):
        rsv1 = 0
        if compress:
            c = zlib.compressobj(6, zlib.DEFLATED, -self.ws_deflate["bits"])
            payload = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
            if payload.endswith(DEFLATE_TAIL):
                payload = payload[:-4]
            rsv1 = 0x40
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | rsv1 | op, n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | rsv1 | op, 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | rsv1 | op, 127, n)
        if n > 65536:
            self.write(head)
            self.write(payload)
        else:
            self.write(head + payload)

    def ws_finish(self):
        """After our close frame: half-close, then wait (bounded) for the
        peer's EOF so that it sees a clean end, not a reset."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(10)
            while self.rfile.read1(1 << 16):
                pass
            log("ws done: peer eof")
        except (OSError, ValueError) as e:
            log("ws done: %r" % e)

    def ws_loop(self):
        frag_op = None
        frag_rsv1 = False
        parts = []
        size = 0
        while True:
            b0, b1 = self.ws_read(2)
            fin, rsv, op = b0 & 0x80, b0 & 0x70, b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self.ws_read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self.ws_read(8))[0]
            if not b1 & 0x80:
                raise WsClose(1002, "unmasked client frame")
            if rsv & 0x30 or (rsv & 0x40 and (not self.ws_deflate or op in (0, 8, 9, 10))):
                raise WsClose(1002, "bad RSV bits")
            if op >= 8 and (not fin or n > 125):
                raise WsClose(1002, "bad control frame")
            if op not in (0, 1, 2, 8, 9, 10):
                raise WsClose(1002, "unknown opcode %d" % op)
            if size + n > WS_MAX_MESSAGE:
                raise WsClose(1009, "message too big")
            key = self.ws_read(4)
            payload = ws_mask(self.ws_read(n), key)
            if op == 0x9:
                self.ws_send(0xA, payload)
                continue
            if op == 0xA:
                continue
            if op == 0x8:
                if len(payload) == 1:
                    raise WsClose(1002, "close payload of 1 byte")
                code = struct.unpack(">H", payload[:2])[0] if payload else None
                log("ws close code=%s" % code)
                self.ws_send(0x8, payload)
                return self.ws_finish()
            if op == 0:
                if frag_op is None:
                    raise WsClose(1002, "continuation without a message")
            else:
                if frag_op is not None:
                    raise WsClose(1002, "new message inside a fragmented one")
                frag_op, frag_rsv1, parts, size = op, bool(rsv & 0x40), [], 0
            parts.append(payload)
            size += n
            if not fin:
                continue
            data = b"".join(parts)
            op, compressed = frag_op, frag_rsv1
            frag_op, parts, size = None, [], 0
            if compressed:
                d = zlib.decompressobj(-15)
                try:
                    data = d.decompress(data + DEFLATE_TAIL, WS_MAX_MESSAGE + 1)
                except zlib.error as e:
                    raise WsClose(1007, "bad deflate data: %s" % e)
                if len(data) > WS_MAX_MESSAGE or d.unconsumed_tail:
                    raise WsClose(1009, "message too big")
            if op == 1:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    raise WsClose(1007, "text is not UTF-8")
            self.ws_send(op, data, compress=compressed)


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
