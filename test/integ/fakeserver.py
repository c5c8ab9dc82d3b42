"""fakeserver.py: a hand-made natwrp *server* for tests of the agent.

It listens on 127.0.0.1:0, accepts the agent's WebSocket upgrade on
/_natwrp/tunnel (101 with Sec-WebSocket-Accept and natwrp.1, docs/protocol.md
section 1), then lets a test write tunnel frames of its choosing (OPEN, DATA,
WINDOW, RST, GOAWAY: unmasked, as a server sends them) and read the agent's
frames (masked, unmasked here). Pings from the agent are answered, so a test
can wait as long as it needs. Everything is blocking with timeouts; nothing
sleeps."""

import base64
import hashlib
import socket
import struct
import time

from harness import check, fail

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OPEN, HEAD, DATA, WINDOW, RST, GOAWAY = 1, 2, 3, 4, 5, 6
F_END = 1
RST_NAMES = {1: "CANCEL", 2: "CONNECT", 3: "UPSTREAM", 4: "PROTOCOL", 5: "FLOW",
             6: "REFUSED", 7: "INTERNAL", 8: "TIMEOUT", 9: "TOOBIG"}


def _fields(hdrs):
    out = struct.pack(">H", len(hdrs))
    for k, v in hdrs:
        k = k.encode("latin-1") if isinstance(k, str) else k
        v = v.encode("latin-1") if isinstance(v, str) else v
        out += struct.pack(">H", len(k)) + k + struct.pack(">H", len(v)) + v
    return out


def _parse_fields(p, off):
    n = struct.unpack(">H", p[off:off + 2])[0]
    off += 2
    hdrs = []
    for _ in range(n):
        kl = struct.unpack(">H", p[off:off + 2])[0]
        k = p[off + 2:off + 2 + kl].decode("latin-1")
        off += 2 + kl
        vl = struct.unpack(">H", p[off:off + 2])[0]
        v = p[off + 2:off + 2 + vl].decode("latin-1")
        off += 2 + vl
        hdrs.append((k, v))
    return hdrs, off


class Frame:
    """One natwrp frame from the agent."""

    def __init__(self, raw):
        self.raw = raw
        self.type, self.flags = raw[0], raw[1]
        self.sid = struct.unpack(">I", raw[2:6])[0]
        self.payload = raw[6:]
        self.end = bool(self.flags & F_END)
        self.status = self.code = None
        self.headers = []
        if self.type == HEAD:
            self.status = struct.unpack(">H", self.payload[:2])[0]
            rl = self.payload[2]
            self.reason = self.payload[3:3 + rl].decode("latin-1")
            self.headers, _ = _parse_fields(self.payload, 3 + rl)
        elif self.type == RST:
            self.code = struct.unpack(">I", self.payload[:4])[0]
        elif self.type == GOAWAY:
            self.last, self.code = struct.unpack(">II", self.payload[:8])

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        name = {OPEN: "OPEN", HEAD: "HEAD", DATA: "DATA", WINDOW: "WINDOW", RST: "RST",
                GOAWAY: "GOAWAY"}.get(self.type, "type%d" % self.type)
        extra = ""
        if self.type == HEAD:
            extra = " %d" % self.status
        elif self.type == RST:
            extra = " %s" % RST_NAMES.get(self.code, self.code)
        elif self.type == DATA:
            extra = " %r" % self.payload[:60]
        return "<%s sid=%d%s%s>" % (name, self.sid, " END" if self.end else "", extra)


class Tunnel:
    """The server's end of one agent tunnel."""

    def __init__(self, sock, buf, request):
        self.sock = sock
        self.buf = bytearray(buf)
        self.request = request  # the upgrade request head, text
        self.fields = []        # its fields, (name, value) in order
        self.closed = None      # the agent's close code once it sent one
        self.eof = False

    # -- sending (server frames are never masked) --------------------------

    def send_ws(self, op, payload):
        n = len(payload)
        if n < 126:
            hdr = bytes([0x80 | op, n])
        elif n < 65536:
            hdr = bytes([0x80 | op, 126]) + struct.pack(">H", n)
        else:
            hdr = bytes([0x80 | op, 127]) + struct.pack(">Q", n)
        self.sock.sendall(hdr + payload)

    def send_frame(self, ftype, flags, sid, payload=b""):
        self.send_ws(2, bytes([ftype, flags]) + struct.pack(">I", sid) + payload)

    def open(self, sid, method, target, headers=(), end=True):
        m, t = method.encode(), target.encode("latin-1")
        p = bytes([len(m)]) + m + struct.pack(">H", len(t)) + t + _fields(list(headers))
        self.send_frame(OPEN, F_END if end else 0, sid, p)

    def data(self, sid, payload, end=False):
        self.send_frame(DATA, F_END if end else 0, sid, payload)

    def window(self, sid, inc):
        self.send_frame(WINDOW, 0, sid, struct.pack(">I", inc))

    def rst(self, sid, code):
        self.send_frame(RST, 0, sid, struct.pack(">I", code))

    def goaway(self, last, code=0):
        self.send_frame(GOAWAY, 0, 0, struct.pack(">II", last, code))

    # -- receiving ---------------------------------------------------------

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(left)
        try:
            b = self.sock.recv(65536)
        except ConnectionResetError:
            b = b""
        if not b:
            self.eof = True
            return False
        self.buf += b
        return True

    def _exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                return None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _ws_frame(self, deadline):
        hdr = self._exact(2, deadline)
        if hdr is None:
            return None
        fin, op, masked, n = hdr[0] & 0x80, hdr[0] & 0x0F, hdr[1] & 0x80, hdr[1] & 0x7F
        check(masked, "the agent sent an unmasked frame")
        if n == 126:
            n = struct.unpack(">H", self._exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._exact(8, deadline))[0]
        key = self._exact(4, deadline)
        p = self._exact(n, deadline)
        if key is None or p is None:
            return None
        p = bytes(c ^ key[i % 4] for i, c in enumerate(p))
        return bool(fin), op, p

    def recv(self, timeout=10.0):
        """Next natwrp frame from the agent (a Frame), or None at EOF or
        after its close frame. Pings are answered on the way."""
        deadline = time.monotonic() + timeout
        parts = []
        while True:
            try:
                f = self._ws_frame(deadline)
            except socket.timeout:
                fail("fakeserver: no frame from the agent within %.1fs" % timeout)
            if f is None:
                return None
            fin, op, p = f
            if op == 0x9:
                self.send_ws(0xA, p)
                continue
            if op == 0xA:
                continue
            if op == 0x8:
                self.closed = struct.unpack(">H", p[:2])[0] if len(p) >= 2 else 1005
                return None
            parts.append(p)
            if fin:
                return Frame(b"".join(parts))

    def expect(self, pred, what, timeout=10.0):
        """Read frames until pred(frame) holds; returns it and the frames
        read before it."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("fakeserver: %s: not seen within %.1fs (got %r)" % (what, timeout, seen))
            f = self.recv(left)
            if f is None:
                fail("fakeserver: %s: tunnel ended first (got %r)" % (what, seen))
            if pred(f):
                return f, seen
            seen.append(f)

    def response(self, sid, timeout=10.0):
        """Collect the agent's answer on stream sid: (HEAD frame, body bytes,
        RST frame or None). Grants credit as DATA arrives."""
        deadline = time.monotonic() + timeout
        head, body, rst = None, b"", None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("fakeserver: stream %d: no complete answer within %.1fs (head %r, body %r)"
                     % (sid, timeout, head, body[:200]))
            f = self.recv(left)
            if f is None:
                fail("fakeserver: tunnel ended before stream %d was answered" % sid)
            if f.sid != sid:
                continue
            if f.type == HEAD:
                head = f
                if f.end:
                    return head, body, None
            elif f.type == DATA:
                body += f.payload
                if f.payload:
                    self.window(sid, len(f.payload))
                if f.end:
                    return head, body, None
            elif f.type == RST:
                return head, body, f

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class FakeServer:
    """Listens on 127.0.0.1:0; accept() returns a Tunnel once an agent has
    upgraded."""

    def __init__(self, window=262144):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.window = window
        self.tunnels = []

    def _upgrade_request(self, timeout):
        """Accept one connection and read the agent's upgrade request:
        (socket, head text, bytes after it, fields as a list of (name, value))."""
        deadline = time.monotonic() + timeout
        self.lsock.settimeout(timeout)
        try:
            sock, _ = self.lsock.accept()
        except socket.timeout:
            fail("fakeserver: no agent connected within %.1fs" % timeout)
        # Each frame leaves at once (no Nagle wait behind an unacked one).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while b"\r\n\r\n" not in buf:
            left = deadline - time.monotonic()
            check(left > 0, "fakeserver: upgrade request not complete in time")
            sock.settimeout(left)
            b = sock.recv(65536)
            check(b, "fakeserver: agent closed during its upgrade request")
            buf += b
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        check(lines[0].startswith("GET ") and lines[0].split(" ")[1].endswith("/_natwrp/tunnel"),
              "fakeserver: unexpected upgrade request line %r" % lines[0])
        fields = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            fields.append((k.strip(), v.strip()))
        return sock, head.decode("latin-1"), rest, fields

    def accept(self, timeout=15.0, extra=()):
        """extra: more (name, value) fields for the 101."""
        sock, head, rest, fields = self._upgrade_request(timeout)
        hdrs = {k.lower(): v for k, v in fields}
        key = hdrs.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        more = "".join("%s: %s\r\n" % (k, v) for k, v in extra)
        sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                      "Sec-WebSocket-Protocol: natwrp.1\r\nX-Natwrp-Window: %d\r\n%s\r\n"
                      % (accept, self.window, more)).encode("latin-1"))
        t = Tunnel(sock, rest, head)
        t.fields = fields
        self.tunnels.append(t)
        return t

    def refuse(self, status, reason, body, timeout=15.0):
        """Answer the next upgrade with status and a text/plain body, then
        close. Returns the request's fields as a list of (name, value)."""
        sock, _, _, fields = self._upgrade_request(timeout)
        body = body.encode("latin-1") if isinstance(body, str) else body
        sock.sendall(("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n" % (status, reason, len(body))).encode()
                     + body)
        sock.close()
        return fields

    def no_connection(self, seconds):
        """Fail if an agent connects within seconds."""
        self.lsock.settimeout(seconds)
        try:
            sock, _ = self.lsock.accept()
        except socket.timeout:
            return
        sock.close()
        fail("fakeserver: an agent connected again within %.1fs" % seconds)

    def close(self):
        for t in self.tunnels:
            t.close()
        self.lsock.close()
