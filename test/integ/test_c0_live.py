"""c0 live traffic: WebSocket pass-through and streaming responses, end to end
through serve and agent (the test origin's /ws, /sse, /api/generate,
/duplex and /ack endpoints; the WebSocket client is wsclient.py).

WebSocket: a request with Upgrade goes to the local service with its
Upgrade/Connection headers; a 101 turns the stream into a raw two-way pipe
(either side's EOF half-closes, the pipe ends when both have ended). Checked:
echo of text, binary, fragmented and 16 MiB messages, ping/pong, close codes,
subprotocol selection, permessage-deflate negotiated with the origin, the
handshake headers arriving unchanged, several WebSockets at once on one
tunnel, half-close in both directions, an upgrade the origin does not accept
(answered normally, then the connection closes), and serve/agent staying
healthy afterwards.

Streaming: SSE and Ollama-style NDJSON are "gated": the origin produces
event i+1 only after it received /ack?gate=ID&i=i, which the test sends
through natwrp once event i has arrived. An event held back anywhere on the
way therefore stalls the test (and fails it on the socket timeout) instead
of passing by luck: no sleeps, no timing assumptions. /duplex echoes each
request chunk as a response chunk while the request body is still open.

The only deliberate wait is the 3 s of silence in the idle-WebSocket test:
what it checks is precisely that nothing times out during a quiet period
longer than serve's --idle-timeout and --response-timeout (1 s each), and no
event marks "nothing happened for a while". That period is used to watch an
ordinary keep-alive connection being closed by the same idle timeout, so the
test also shows the timeout really was in force."""

import hashlib
import json
import os
import re
import signal
import socket
import struct
import threading
import time

from harness import (Conn, check, echo, eq, fail, get, hdr, http_request, pattern_chunks,
                     pattern_sha256, timed)
import wsclient as W

# serve/agent log lines at level warn or error ("2026-...Z warn  text"),
# except serve's start-up notice that it runs without CONN_TOKEN.
BAD_LOG_RE = r"^\S+Z (warn|error) +(?! |no CONN_TOKEN: )"


def no_log_errors(*procs):
    for p in procs:
        bad = p.find(BAD_LOG_RE)
        check(not bad, "%s logged warnings/errors:\n%s" % (
            p.label, "\n".join("    | " + m.string for m in bad[:10])))


def serve_drains(s):
    """SIGTERM serve once every client connection (WebSockets included) has
    ended on the client side: it must find nothing left to drain and exit 0
    at once, not wait out --grace for a connection it never closed."""
    mark = s.proc.mark()
    s.proc.send(signal.SIGTERM)
    m = s.proc.wait_for(r"drained: every request finished|grace period \(\d+ ms\) over: "
                        r"closing (\d+) connection", 15, mark)
    rc = s.proc.wait_exit(10)
    check(m.group(1) is None, "serve still held %s client connection(s) after every client "
          "had closed (a finished WebSocket/stream not closed): waited out --grace" % m.group(1))
    eq(rc, 0, "serve exit status after SIGTERM")


def still_works(s, tag):
    """An ordinary request through the same serve and agent succeeds."""
    e = echo(s, "/echo?after=%s" % tag)
    eq(e["path"], "/echo?after=%s" % tag, "echo path after %s" % tag)
    n = 200000
    h = hashlib.sha256()
    r = get(s, "/bytes?n=%d&seed=%s" % (n, tag), sink=h.update)
    eq(r.status, 200, "/bytes status after %s" % tag)
    check(r.complete and h.hexdigest() == pattern_sha256(n, tag),
          "/bytes body after %s: complete=%s" % (tag, r.complete))


def ws_connect(s, path="/ws", **kw):
    try:
        return W.connect(s.port, path, **kw)
    except W.HandshakeError as e:
        fail("WebSocket handshake to %s failed: %s (status %s, headers %r, body %r)" % (
            path, e, e.status, e.headers, e.body[:200]))


def ws_recv(ws, what, timeout=None):
    try:
        return ws.recv(timeout)
    except W.WsError as e:
        fail("%s: %s" % (what, e))


def ws_echo(ws, data, what, compress=None):
    try:
        ws.send(data, compress=compress)
    except W.WsError as e:
        fail("%s: sending: %s" % (what, e))
    m = ws_recv(ws, what)
    want = W.OP_TEXT if isinstance(data, str) else W.OP_BINARY
    eq(m.opcode, want, "%s: opcode of the echo" % what)
    got = m.text if want == W.OP_TEXT else m.data
    if got != data:
        fail("%s: echo differs (%d bytes sent, %d received)" % (what, len(data), len(got)))
    return m


# --------------------------------------------------------------------------
# Streaming body reader (chunked, Content-Length or close-delimited)
# --------------------------------------------------------------------------

class BodyReader:
    """Reads a response body from a harness Conn piece by piece, as the
    bytes arrive, without waiting for more than is there."""

    def __init__(self, conn, resp):
        self.c = conn
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if "chunked" in te:
            self.mode, self.left = "chunked", 0
        elif cl is not None:
            self.mode, self.left = "length", int(cl)
        else:
            self.mode, self.left = "close", 0
        self.started = False
        self.done = False
        self.pending = b""

    def _take(self, n):
        if not self.c.buf and not self.c._fill():
            return b""
        b = self.c.buf[:n]
        self.c.buf = self.c.buf[len(b):]
        return b

    def read_some(self):
        """The next piece of body; b"" at its end (self.done tells whether
        the framing was complete)."""
        if self.done:
            return b""
        if self.mode == "length":
            if self.left == 0:
                self.done = True
                return b""
            b = self._take(self.left)
            check(b, "EOF with %d bytes of the body missing" % self.left)
            self.left -= len(b)
            return b
        if self.mode == "close":
            b = self._take(1 << 20)
            if not b:
                self.done = True
            return b
        if self.left == 0:
            if self.started:
                crlf = self.c._line()
                check(crlf == b"", "chunk not followed by CRLF: %r" % (crlf,))
            line = self.c._line()
            check(line is not None, "EOF inside the chunked body (no last chunk)")
            size = int(line.split(b";")[0].strip(), 16)
            self.started = True
            if size == 0:
                while True:
                    t = self.c._line()
                    check(t is not None, "EOF in the trailers")
                    if t == b"":
                        break
                self.done = True
                return b""
            self.left = size
        b = self._take(self.left)
        check(b, "EOF inside a chunk")
        self.left -= len(b)
        return b

    def read_until(self, sep):
        """Bytes up to sep (sep dropped); None if the body ends first."""
        while sep not in self.pending:
            b = self.read_some()
            if not b:
                return None
            self.pending += b
        item, self.pending = self.pending.split(sep, 1)
        return item

    def read_exact(self, n):
        while len(self.pending) < n:
            b = self.read_some()
            check(b, "body ended with %d of %d bytes" % (len(self.pending), n))
            self.pending += b
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def expect_end(self, what):
        b = self.pending or self.read_some()
        check(not b, "%s: %d unexpected bytes after the last item: %r" % (what, len(b), b[:80]))
        check(self.done, "%s: body not properly terminated" % what)


def ack(ack_conn, gid, i):
    ack_conn.request("GET", "/ack?gate=%s&i=%d" % (gid, i))
    r = ack_conn.read_response()
    eq(r.status, 200, "ack %d status" % i)
    eq(r.text(), "ack %s %d\n" % (gid, i), "ack %d body" % i)


def sse_gated(s, gid, n, on_event=None):
    """GET /sse?n=N&gate=ID through serve; ack each event (over a second
    keep-alive connection) after it arrived. Checks order, ids and that each
    event was produced only after the previous ack."""
    c = Conn(s.port, timeout=15)
    acks = Conn(s.port, timeout=15)
    try:
        c.request("GET", "/sse?n=%d&gate=%s" % (n, gid), [("Accept", "text/event-stream")])
        r = c.read_head()
        eq(r.status, 200, "SSE status")
        check((r.header("Content-Type") or "").startswith("text/event-stream"),
              "SSE Content-Type %r" % r.header("Content-Type"))
        eq(r.header("Cache-Control"), "no-cache", "SSE Cache-Control")
        eq(r.header("Content-Length"), None, "SSE Content-Length")
        body = BodyReader(c, r)
        for i in range(n):
            ev = body.read_until(b"\n\n")
            check(ev is not None, "SSE ended after %d of %d events" % (i, n))
            fields = {}
            for line in ev.decode().split("\n"):
                k, _, v = line.partition(": ")
                fields[k] = v
            eq(fields.get("id"), str(i), "SSE event %d id" % i)
            data = json.loads(fields.get("data", "null"))
            eq(data["i"], i, "SSE event %d data.i" % i)
            eq(data["gate"], gid, "SSE event %d gate" % i)
            # Made after ack i-1 arrived at the origin, and before ack i.
            eq(data["acked"], i - 1, "SSE event %d: acks seen when it was produced" % i)
            if on_event:
                on_event(i)
            if i < n - 1:
                ack(acks, gid, i)
        body.expect_end("SSE")
    finally:
        c.close()
        acks.close()


# --------------------------------------------------------------------------
# WebSocket
# --------------------------------------------------------------------------

def test_ws_echo_text_binary_fragmented_ping_close(t):
    o, s, a = t.stack()
    ws = ws_connect(s)
    eq(ws.subprotocol, None, "subprotocol when none offered")
    eq(ws.extensions, None, "extensions when none offered")
    ws_echo(ws, "hello, websocket", "text")
    ws_echo(ws, "", "empty text")
    ws_echo(ws, "d\u00e9j\u00e0 vu \u2603 \U0001F600", "UTF-8 text")
    ws_echo(ws, bytes(range(256)) * 4, "binary")
    ws_echo(ws, b"", "empty binary")
    ws_echo(ws, os.urandom(70000), "binary, 64-bit length")
    # Fragmented: 6 frames (opcode + 5 continuations), pings in between.
    parts = ["frag-%d " % i * (i + 1) for i in range(6)]
    ws.send_fragments(W.OP_TEXT, parts, between=lambda i: ws.ping(b"mid-%d" % i))
    for i in range(5):
        m = ws_recv(ws, "pong %d between fragments" % i)
        eq((m.opcode, m.data), (W.OP_PONG, b"mid-%d" % i), "pong between fragments")
    m = ws_recv(ws, "fragmented text")
    eq((m.opcode, m.text), (W.OP_TEXT, "".join(parts)), "reassembled fragmented text")
    bparts = [os.urandom(1000 * (i + 1)) for i in range(8)]
    ws.send_fragments(W.OP_BINARY, bparts)
    m = ws_recv(ws, "fragmented binary")
    eq(m.opcode, W.OP_BINARY, "fragmented binary opcode")
    check(m.data == b"".join(bparts), "fragmented binary differs")
    # Ping / pong.
    ws.ping(b"are you there")
    m = ws_recv(ws, "pong")
    eq((m.opcode, m.data), (W.OP_PONG, b"are you there"), "pong")
    ws.ping(b"")
    eq(ws_recv(ws, "empty pong").opcode, W.OP_PONG, "empty pong")
    # Close with 4001: echoed, then the connection ends.
    mark = o.proc.mark()
    ws.send_close(4001, "bye now")
    m = ws_recv(ws, "close echo")
    eq((m.opcode, m.code, m.reason), (W.OP_CLOSE, 4001, "bye now"), "close echo")
    eq(ws.wait_eof(), b"", "bytes after the close frame")
    ws.close_socket()
    o.proc.wait_for(r"ws close code=4001$", 10, mark)
    still_works(s, "ws-echo")
    no_log_errors(s.proc, a)
    serve_drains(s)


@timed(120)
def test_ws_16mib_binary_exact(t):
    o, s, a = t.stack()
    ws = ws_connect(s, timeout=60)
    n = 16 << 20
    data = b"".join(pattern_chunks(n, "ws16"))
    ws.send(data)
    m = ws_recv(ws, "16 MiB echo")
    eq(m.opcode, W.OP_BINARY, "16 MiB echo opcode")
    eq(len(m.data), n, "16 MiB echo length")
    eq(hashlib.sha256(m.data).hexdigest(), pattern_sha256(n, "ws16"), "16 MiB echo sha256")
    # And the same message in 16 frames of 1 MiB.
    ws.send_fragments(W.OP_BINARY, [data[i << 20:(i + 1) << 20] for i in range(16)])
    m = ws_recv(ws, "16 MiB fragmented echo")
    check(m.data == data, "16 MiB fragmented echo differs")
    ws_echo(ws, "small after big", "text after 16 MiB")
    eq(ws.close(1000, "done"), (1000, "done"), "close")
    eq(ws.wait_eof(), b"", "after close")
    ws.close_socket()
    still_works(s, "ws-16mib")
    no_log_errors(s.proc, a)
    serve_drains(s)


def test_ws_subprotocol_selected(t):
    o, s, a = t.stack()
    ws = ws_connect(s, "/ws?hello=1", protocols=("chat", "superchat"))
    eq(ws.subprotocol, "chat", "selected subprotocol")
    hello = json.loads(ws_recv(ws, "hello").text)
    eq([v for k, v in hello["headers"] if k.lower() == "sec-websocket-protocol"],
       ["chat, superchat"], "Sec-WebSocket-Protocol at the origin")
    ws_echo(ws, "in chat", "text with a subprotocol")
    eq(ws.close(1000), (1000, ""), "close")
    ws.close_socket()
    # Offering one that is listed second elsewhere: still the first offered.
    ws = ws_connect(s, protocols=("superchat", "chat"))
    eq(ws.subprotocol, "superchat", "selected subprotocol (other order)")
    eq(ws.close(1000), (1000, ""), "close")
    ws.close_socket()
    no_log_errors(s.proc, a)
    serve_drains(s)


def test_ws_permessage_deflate(t):
    o, s, a = t.stack()
    ws = ws_connect(s, "/ws?hello=1", deflate=True)
    check(ws.extensions, "no Sec-WebSocket-Extensions in the 101")
    exts = W.parse_extensions(ws.extensions)
    eq([name for name, _ in exts], ["permessage-deflate"], "negotiated extensions")
    check(exts[0][1].get("server_no_context_takeover") and
          exts[0][1].get("client_no_context_takeover"),
          "deflate parameters %r" % ws.extensions)
    hello = ws_recv(ws, "hello")
    eq(hello.compressed, False, "hello compressed")
    offer = [v for k, v in json.loads(hello.text)["headers"]
             if k.lower() == "sec-websocket-extensions"]
    eq(offer, [W.DEFAULT_OFFER], "extension offer at the origin")
    text = "the quick brown fox jumps over the lazy dog. " * 2000
    for i in range(3):  # no context takeover: every message on its own
        m = ws_echo(ws, text + str(i), "compressed text %d" % i)
        check(m.compressed, "echo of compressed text %d not compressed" % i)
    m = ws_echo(ws, bytes(100000), "compressed zero bytes")
    check(m.compressed, "echo of compressed binary not compressed")
    blob = os.urandom(50000)
    m = ws_echo(ws, blob, "compressed random bytes")
    check(m.compressed, "echo of compressed random binary not compressed")
    m = ws_echo(ws, "sent plain", "uncompressed text", compress=False)
    check(not m.compressed, "echo of an uncompressed message compressed")
    parts = ["fragment %d of a compressed message; " % i * 50 for i in range(5)]
    ws.send_fragments(W.OP_TEXT, parts)
    m = ws_recv(ws, "compressed fragmented text")
    check(m.compressed and m.text == "".join(parts), "compressed fragmented text: %r" % m)
    big = b"".join(pattern_chunks(1 << 20, "defl")) * 4  # 4 MiB, repeats: compresses
    m = ws_echo(ws, big, "4 MiB compressed binary")
    check(m.compressed, "4 MiB echo not compressed")
    eq(ws.close(4000, "deflate done"), (4000, "deflate done"), "close")
    ws.close_socket()
    no_log_errors(s.proc, a)
    serve_drains(s)


def test_ws_handshake_headers_unchanged(t):
    o, s, a = t.stack()
    key = "x3JJHMbDL1EzLkh9GBhXDw=="
    sent = [("Origin", "http://app.example:8080"),
            ("Cookie", "session=abc123; theme=dark"),
            ("User-Agent", "natwrp-test-ws/1.0"),
            ("X-Request-Tag", "live, ws; q=1"),
            ("Authorization", "Bearer t0ken")]
    ws = ws_connect(s, "/ws?hello=1&x=y%20z", key=key, protocols=("chat", "superchat"),
                    deflate=True, headers=sent[1:], origin=sent[0][1])
    eq(ws.header("Sec-WebSocket-Accept"), W.accept_for(key), "Sec-WebSocket-Accept")
    hello = json.loads(ws_recv(ws, "hello").text)
    eq(hello["path"], "/ws?hello=1&x=y%20z", "path at the origin")
    got = {}
    for k, v in hello["headers"]:
        got.setdefault(k.lower(), []).append(v)
    want = dict((k.lower(), [v]) for k, v in sent)
    want["sec-websocket-key"] = [key]
    want["sec-websocket-version"] = ["13"]
    want["sec-websocket-protocol"] = ["chat, superchat"]
    want["sec-websocket-extensions"] = [W.DEFAULT_OFFER]
    want["upgrade"] = ["websocket"]
    for name, vals in sorted(want.items()):
        eq(got.get(name), vals, "%s at the origin" % name)
    conn = [x.strip().lower() for v in got.get("connection", []) for x in v.split(",")]
    check("upgrade" in conn, "Connection at the origin: %r" % got.get("connection"))
    ws_echo(ws, "after hello", "echo after hello")
    eq(ws.close(1000), (1000, ""), "close")
    ws.close_socket()
    no_log_errors(s.proc, a)
    serve_drains(s)


def test_ws_many_at_once_one_tunnel(t):
    o, s, a = t.stack()
    n = 8
    socks = [ws_connect(s, "/ws?k=%d" % k) for k in range(n)]
    # All open at once: interleave, answer in reverse order.
    for k in range(n):
        socks[k].send("socket %d says hi" % k)
    for k in reversed(range(n)):
        m = ws_recv(socks[k], "socket %d" % k)
        eq(m.text, "socket %d says hi" % k, "echo on socket %d" % k)
    # An ordinary request while they are open.
    still_works(s, "ws-many-open")
    # Then every socket busy at the same time, from its own thread.
    errors = []
    barrier = threading.Barrier(n)

    def worker(k):
        try:
            ws = socks[k]
            barrier.wait(15)
            for i in range(25):
                size = (k * 7919 + i * 104729) % 200000
                data = hashlib.shake_256(b"%d/%d" % (k, i)).digest(size)
                ws.send(data)
                m = ws.recv()
                if m.opcode != W.OP_BINARY or m.data != data:
                    raise AssertionError("socket %d message %d: got %r" % (k, i, m))
                if i % 5 == 0:
                    ws.ping(b"%d" % i)
                    m = ws.recv()
                    if (m.opcode, m.data) != (W.OP_PONG, b"%d" % i):
                        raise AssertionError("socket %d ping %d: got %r" % (k, i, m))
            code = ws.close(3000 + k, "w%d" % k)
            if code != (3000 + k, "w%d" % k):
                raise AssertionError("socket %d close echo %r" % (k, code))
            ws.wait_eof()
        except Exception as e:  # noqa: B902 - reported below
            errors.append("worker %d: %r" % (k, e))

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    check(not any(th.is_alive() for th in threads), "WebSocket workers did not finish")
    check(not errors, "; ".join(errors))
    for ws in socks:
        ws.close_socket()
    # Only one tunnel carried all of it.
    eq(len(s.proc.find(r"tunnel open tun=")), 1, "tunnels opened")
    still_works(s, "ws-many-after")
    no_log_errors(s.proc, a)
    serve_drains(s)


def test_upgrade_not_accepted_answered_normally(t):
    o, s, a = t.stack()
    cases = [
        ("foo/1", [("Upgrade", "foo/1"), ("Connection", "Upgrade")]),
        ("h2c", [("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings"),
                 ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]),
    ]
    for what, hdrs in cases:
        c = Conn(s.port)
        c.request("GET", "/echo/upgrade-%s" % what.replace("/", "-"), hdrs)
        r = c.read_response()
        eq(r.status, 200, "%s upgrade to /echo: status" % what)
        check(r.complete, "%s upgrade: body complete" % what)
        e = r.json()
        if what == "h2c":
            # An upgrade to HTTP itself is ignored (h2c smuggling): a plain
            # request without Upgrade, and the connection goes on.
            eq(hdr(e, "Upgrade"), [], "%s: Upgrade at the origin" % what)
            c.request("GET", "/echo/after-h2c")
            eq(c.read_response().status, 200, "h2c: the next request on the connection")
        else:
            eq(hdr(e, "Upgrade"), [hdrs[0][1]], "%s: Upgrade at the origin" % what)
            check(c.wait_closed(10), "%s: connection not closed after the refused upgrade" % what)
        c.close()
    # A WebSocket handshake to an endpoint that is not a WebSocket.
    try:
        W.connect(s.port, "/echo/not-a-ws").close_socket()
        fail("a WebSocket handshake to /echo succeeded")
    except W.HandshakeError as e:
        eq(e.status, 200, "WebSocket handshake to /echo: status")
    # The origin's own refusal (426 for a wrong version) passes through.
    c = Conn(s.port)
    c.request("GET", "/ws", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                             ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                             ("Sec-WebSocket-Version", "8")])
    r = c.read_response()
    eq(r.status, 426, "WebSocket version 8 status")
    eq(r.header("Sec-WebSocket-Version"), "13", "Sec-WebSocket-Version in the 426")
    check(c.wait_closed(10), "connection not closed after the 426")
    c.close()
    still_works(s, "refused-upgrade")
    no_log_errors(s.proc, a)
    serve_drains(s)


def test_ws_close_then_natwrp_keeps_working(t):
    o, s, a = t.stack()
    # 1. Clean close handshake, origin first to end: the client sees the
    #    close echo then EOF while its own side is open (half-close), and its
    #    EOF then reaches the origin through the pipe.
    ws = ws_connect(s)
    ws_echo(ws, "one", "before close")
    mark = o.proc.mark()
    ws.send_close(1000, "normal")
    m = ws_recv(ws, "close echo")
    eq((m.opcode, m.code, m.reason), (W.OP_CLOSE, 1000, "normal"), "close echo")
    eq(ws.wait_eof(), b"", "after the close echo")
    ws.shutdown_write()
    o.proc.wait_for(r"ws done: peer eof$", 10, mark)
    ws.close_socket()
    still_works(s, "after-close")
    # 2. The client half-closes first without a close frame: the message it
    #    sent before its EOF is still echoed; the origin then ends too.
    ws = ws_connect(s, "/ws?half=1")
    mark = o.proc.mark()
    ws.send("last words")
    ws.shutdown_write()
    m = ws_recv(ws, "echo after the client's EOF")
    eq(m.text, "last words", "echo after the client's EOF")
    eq(ws.wait_eof(), b"", "after the origin saw the EOF")
    ws.close_socket()
    o.wait_event("aborted", "/ws", since=mark)
    still_works(s, "after-half-close")
    # 3. The client vanishes (RST) mid-connection: the origin's side ends.
    ws = ws_connect(s, "/ws?rst=1")
    ws_echo(ws, "then gone", "before reset")
    mark = o.proc.mark()
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.close_socket()
    o.proc.wait_for(r"event aborted path=/ws$", 15, mark)
    still_works(s, "after-reset")
    # 4. The origin ends it with a protocol error (an unmasked frame).
    ws = ws_connect(s, "/ws?bad=1")
    ws.send_frame(W.OP_TEXT, b"unmasked", masked=False)
    m = ws_recv(ws, "close after an unmasked frame")
    eq((m.opcode, m.code), (W.OP_CLOSE, 1002), "close code for an unmasked frame")
    ws.send_close(1002)
    eq(ws.wait_eof(), b"", "after the protocol-error close")
    ws.close_socket()
    still_works(s, "after-protocol-error")
    check(a.alive() and s.proc.alive(), "serve or agent exited")
    no_log_errors(s.proc, a)
    serve_drains(s)


@timed(60)
def test_ws_long_idle(t):
    o, s, a = t.stack(serve_args=("--idle-timeout", "1", "--response-timeout", "1"))
    ws = ws_connect(s, "/ws?idle=1")
    ws_echo(ws, "before the silence", "before idle")
    t0 = time.monotonic()
    # Meanwhile an ordinary keep-alive connection is closed by the same
    # 1 s idle timeout: the timeout is in force, the WebSocket is exempt.
    c = Conn(s.port)
    c.request("GET", "/echo?idle-probe")
    eq(c.read_response().status, 200, "probe status")
    check(c.wait_closed(5), "idle keep-alive connection not closed by --idle-timeout 1")
    c.close()
    # The rest of the 3 s quiet period (see the module docstring).
    left = 3.0 - (time.monotonic() - t0)
    if left > 0:
        time.sleep(left)
    ws_echo(ws, "after 3 s of silence", "after idle")
    ws.ping(b"still here")
    eq(ws_recv(ws, "pong after idle").data, b"still here", "pong after idle")
    eq(ws.close(1000, "idle done"), (1000, "idle done"), "close after idle")
    ws.close_socket()
    no_log_errors(s.proc, a)
    serve_drains(s)


# --------------------------------------------------------------------------
# Streaming responses
# --------------------------------------------------------------------------

def test_sse_gated(t):
    o, s, a = t.stack()
    sse_gated(s, "sse1", 20)
    eq(o.proc.count(r"ack gate=sse1 i="), 19, "acks received by the origin")
    still_works(s, "sse")
    no_log_errors(s.proc, a)
    serve_drains(s)


def test_ndjson_generate_gated(t):
    o, s, a = t.stack()
    prompt = "why is the sky blue on a clear summer day at noon"
    words = prompt.split()
    req = json.dumps({"model": "llama3.2", "prompt": prompt, "stream": True}).encode()
    c = Conn(s.port, timeout=15)
    acks = Conn(s.port, timeout=15)
    c.request("POST", "/api/generate?gate=gen1", [("Content-Type", "application/json")], req)
    r = c.read_head()
    eq(r.status, 200, "generate status")
    eq(r.header("Content-Type"), "application/x-ndjson", "generate Content-Type")
    eq(r.header("Content-Length"), None, "generate Content-Length")
    body = BodyReader(c, r)
    tokens = []
    for i in range(len(words) + 1):
        line = body.read_until(b"\n")
        check(line is not None, "NDJSON ended after %d lines" % i)
        try:
            obj = json.loads(line.decode())
        except ValueError:
            fail("NDJSON line %d is not JSON: %r" % (i, line[:200]))
        eq(obj["model"], "llama3.2", "line %d model" % i)
        check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", obj["created_at"]),
              "line %d created_at %r" % (i, obj["created_at"]))
        if i < len(words):
            eq(obj["done"], False, "line %d done" % i)
            tokens.append(obj["response"])
            ack(acks, "gen1", i)
        else:
            eq(obj["done"], True, "final line done")
            eq(obj["eval_count"], len(words), "final eval_count")
            check(isinstance(obj["total_duration"], int) and obj["total_duration"] > 0,
                  "total_duration %r" % obj.get("total_duration"))
    body.expect_end("NDJSON")
    eq("".join(tokens), " ".join(words), "tokens joined")
    c.close()
    acks.close()
    # Non-streaming form, for contrast: one JSON object.
    r = http_request(s.port, "POST", "/api/generate", [("Content-Type", "application/json")],
                     json.dumps({"model": "m", "prompt": "a b c", "stream": False}).encode())
    eq(r.status, 200, "non-streaming generate status")
    obj = r.json()
    eq((obj["response"], obj["done"]), ("a b c", True), "non-streaming generate")
    no_log_errors(s.proc, a)
    serve_drains(s)


@timed(180)
def test_sse_not_blocked_by_bulk_download(t):
    o, s, a = t.stack()
    total = 100 * 1000 * 1000
    progress = [0]
    first_mib = threading.Event()
    result = {}

    def bulk():
        h = hashlib.sha256()

        def sink(b):
            h.update(b)
            progress[0] += len(b)
            if progress[0] >= 1 << 20:
                first_mib.set()
        try:
            r = get(s, "/bytes?n=%d&seed=bulk" % total, timeout=60, sink=sink)
            result["r"] = (r.status, r.complete, h.hexdigest())
        except BaseException as e:  # noqa: B902 - reported below
            result["err"] = e
        first_mib.set()

    th = threading.Thread(target=bulk, daemon=True)
    th.start()
    check(first_mib.wait(60), "bulk download did not start")
    check("err" not in result and "r" not in result, "bulk download ended early: %r" % result)
    at = []
    t0 = time.monotonic()
    sse_gated(s, "bulk1", 20, on_event=lambda i: at.append(progress[0]))
    dt = time.monotonic() - t0
    th.join(120)
    check(not th.is_alive(), "bulk download did not finish")
    if "err" in result:
        raise result["err"]
    status, complete, sha = result["r"]
    eq((status, complete), (200, True), "bulk download status/complete")
    eq(sha, pattern_sha256(total, "bulk"), "bulk download sha256")
    during = sum(1 for x in at if x < total)
    print("SSE: 20 events in %.2fs; %d arrived while the bulk download was running "
          "(bulk at %.1f MB for event 0, %.1f MB for event 19)"
          % (dt, during, at[0] / 1e6, at[-1] / 1e6))
    # Head-of-line blocking would hold event 0 behind the remaining ~99 MB.
    check(at[0] < total, "SSE event 0 arrived only after the 100 MB download had finished")
    no_log_errors(s.proc, a)
    serve_drains(s)


def test_duplex_chunks_echoed_one_by_one(t):
    o, s, a = t.stack()
    c = Conn(s.port, timeout=15)
    c.request("POST", "/duplex", [("Transfer-Encoding", "chunked"),
                                  ("Content-Type", "application/octet-stream")])
    # The origin answers before it reads any body: the head arrives while
    # the request body has not even started.
    r = c.read_head()
    eq(r.status, 200, "duplex status")
    body = BodyReader(c, r)
    seen = 0
    for i in range(50):
        size = 1 + (i * 7919) % 30000
        chunk = hashlib.shake_256(b"duplex %d" % i).digest(size)
        c.send(b"%x\r\n" % size + chunk + b"\r\n")
        got = body.read_exact(size)
        check(got == chunk, "duplex chunk %d (%d bytes) echoed wrong" % (i, size))
        seen += size
    c.send(b"0\r\n\r\n")
    body.expect_end("duplex")
    print("duplex: 50 chunks, %d bytes, each echoed before the next was sent" % seen)
    c.close()
    still_works(s, "duplex")
    no_log_errors(s.proc, a)
    serve_drains(s)


def test_other_upgrade_accepted_is_piped(t):
    """An upgrade the local service accepts (here a made-up protocol; h2c is
    never forwarded) is piped like a WebSocket: raw bytes both ways, half-close
    passed on, then the end of the service's side."""
    o, s, a = t.stack()
    c = Conn(s.port)
    c.request("GET", "/raw-upgrade", [("Upgrade", "foo/1"), ("Connection", "Upgrade")])
    r = c.read_head()
    eq(r.status, 101, "status of an accepted upgrade")
    eq((r.header("Upgrade"), (r.header("Connection") or "").lower()), ("foo/1", "upgrade"),
       "Upgrade and Connection in the 101")
    for word in (b"hello", b"raw", b"bytes" * 1000):
        c.send(word)
        got = b""
        while len(got) < len(word):
            got += c_read(c)
        eq(got, word.upper(), "echo of %d raw bytes" % len(word))
    c.sock.shutdown(socket.SHUT_WR)  # our half-close reaches the service...
    rest = b""
    while True:
        b = c_read(c)
        if not b:
            break
        rest += b
    eq(rest, b"bye", "the service's last bytes after our half-close")  # ...which then ends
    c.close()
    check(not s.proc.find(BAD_LOG_RE), "serve logged a problem:\n%s" % s.proc.tail_text())


def c_read(c):
    if c.buf:
        b, c.buf = c.buf, b""
        return b
    try:
        return c.sock.recv(65536)
    except ConnectionResetError:
        return b""


def test_upgrade_client_ends_before_local_connection_is_up(t):
    """The client sends bytes and half-closes right behind its upgrade
    request, so OPEN and DATA(END) reach the agent before its connection to
    the service is up: the half-close must still reach the service, and the
    service's answer and its end come back."""
    o, s, a = t.stack()
    c = Conn(s.port, timeout=10)
    c.send(b"GET /raw-upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: foo/1\r\n"
           b"Connection: Upgrade\r\n\r\nhello")
    c.sock.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        b = c_read(c)
        if not b:
            break
        got += b
    check(got.startswith(b"HTTP/1.1 101"), "no 101: %r" % got[:80])
    eq(got.split(b"\r\n\r\n", 1)[1], b"HELLObye", "bytes after the 101")
    c.close()
    # Nothing is left in flight at the agent: a drain on SIGTERM is immediate.
    m = a.mark()
    a.send(signal.SIGTERM)
    a.wait_for(r"received SIGTERM: shutting down \(0 request", 10, since=m)
    eq(a.wait_exit(10), 0, "agent exit status")
