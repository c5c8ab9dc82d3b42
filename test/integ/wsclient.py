"""wsclient.py: a small WebSocket client (RFC 6455) for the natwrp tests.

Standard library only. One blocking socket, no threads of its own:

    ws = wsclient.connect(port, "/ws", protocols=("chat",), deflate=True)
    ws.send("text")                   # str -> text message, bytes -> binary
    m = ws.recv()                     # Message: .opcode .data .text .compressed
    ws.send_fragments(OP_TEXT, [b"a", b"b", b"c"])
    ws.ping(b"x"); ws.recv()          # -> Message(OP_PONG, b"x")
    code, reason = ws.close(4001, "bye")   # the peer's close frame
    ws.wait_eof()                     # the peer closed the TCP connection

The handshake checks the 101, Upgrade, Connection, Sec-WebSocket-Accept
(against the key it sent), that a selected subprotocol is one it offered and
that an extension is one it offered; a failure raises HandshakeError (with the
status, headers and body of the response). Frames it sends are masked with a
fresh random key. recv() answers server pings itself, reassembles fragmented
messages, inflates compressed ones and returns data messages, pongs and the
close frame (as Message objects) in arrival order.

permessage-deflate (RFC 7692): with deflate=True the client offers
"permessage-deflate; client_no_context_takeover; server_no_context_takeover"
(or the offer string given). It compresses each message with a fresh raw
deflate context (window 15, the 00 00 ff ff tail stripped), which is valid
whatever the server answers, and inflates with a fresh context per message
when the server agreed to server_no_context_takeover, else with one context
kept for the whole connection.

Every blocking step raises WsError on timeout or on an unexpected EOF, never
hangs: the socket has a timeout (default 10 s).
"""

import base64
import hashlib
import os
import socket
import struct
import zlib

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OP_NAMES = {0: "cont", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
DEFLATE_TAIL = b"\x00\x00\xff\xff"
DEFAULT_OFFER = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
MAX_MESSAGE = 64 << 20


class WsError(Exception):
    pass


class ConnectionClosed(WsError):
    """The peer closed the TCP connection where more bytes were expected."""


class HandshakeError(WsError):
    def __init__(self, msg, status=None, headers=(), body=b""):
        super().__init__(msg)
        self.status, self.headers, self.body = status, list(headers), body


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def mask(data, key):
    """XOR with a 4-byte key: one big-integer XOR, fast for 16 MiB."""
    n = len(data)
    if not n:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def parse_extensions(value):
    """'a; x; y=1, b' -> [("a", {"x": True, "y": "1"}), ("b", {})]."""
    out = []
    for offer in value.split(","):
        parts = [p.strip() for p in offer.split(";")]
        if not parts[0]:
            continue
        params = {}
        for p in parts[1:]:
            name, eqs, val = p.partition("=")
            params[name.strip().lower()] = val.strip().strip('"') if eqs else True
        out.append((parts[0].lower(), params))
    return out


def deflate_message(data, wbits=15):
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(DEFLATE_TAIL) else out


class Message:
    def __init__(self, opcode, data, compressed=False, frames=1):
        self.opcode, self.data, self.compressed, self.frames = opcode, data, compressed, frames

    @property
    def text(self):
        return self.data.decode("utf-8")

    @property
    def code(self):
        """Close code of a close message (None without one)."""
        return struct.unpack(">H", self.data[:2])[0] if len(self.data) >= 2 else None

    @property
    def reason(self):
        return self.data[2:].decode("utf-8", "replace")

    def __repr__(self):
        return "<Message %s %d bytes%s%s>" % (
            OP_NAMES.get(self.opcode, self.opcode), len(self.data),
            " compressed" if self.compressed else "",
            " in %d frames" % self.frames if self.frames > 1 else "")


class WebSocket:
    def __init__(self, sock, buf, status, headers, offered_protocols=(), deflate=None):
        self.sock = sock
        self.buf = bytearray(buf)
        self.status = status
        self.headers = headers
        self.subprotocol = self.header("Sec-WebSocket-Protocol")
        self.extensions = self.header("Sec-WebSocket-Extensions")
        self.deflate = deflate  # None, or the params the server answered
        self._inflater = None
        self.close_received = None  # the peer's close Message
        self.close_sent = False

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    # -- sending -------------------------------------------------------------

    def send_frame(self, opcode, payload, fin=True, rsv1=False, masked=True):
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        n = len(payload)
        mbit = 0x80 if masked else 0
        if n < 126:
            head = struct.pack(">BB", b0, mbit | n)
        elif n < 65536:
            head = struct.pack(">BBH", b0, mbit | 126, n)
        else:
            head = struct.pack(">BBQ", b0, mbit | 127, n)
        if masked:
            key = os.urandom(4)
            head += key
            payload = mask(payload, key)
        try:
            if n > 65536:
                self.sock.sendall(head)
                self.sock.sendall(payload)
            else:
                self.sock.sendall(head + payload)
        except socket.timeout:
            raise WsError("timed out sending a %d-byte %s frame" % (n, OP_NAMES.get(opcode)))
        except OSError as e:
            raise ConnectionClosed("sending a %s frame: %s" % (OP_NAMES.get(opcode), e))

    def _compress_default(self, compress):
        if compress is None:
            return self.deflate is not None
        if compress and self.deflate is None:
            raise WsError("permessage-deflate was not negotiated")
        return compress

    def send(self, data, compress=None):
        """str: a text message; bytes: a binary one. compress: None means
        'when permessage-deflate was negotiated'."""
        if isinstance(data, str):
            opcode, data = OP_TEXT, data.encode("utf-8")
        else:
            opcode = OP_BINARY
        self.send_message(opcode, data, compress)

    def send_message(self, opcode, data, compress=None):
        if self._compress_default(compress):
            self.send_frame(opcode, deflate_message(data), rsv1=True)
        else:
            self.send_frame(opcode, data)

    def send_fragments(self, opcode, parts, compress=None, between=None):
        """One message in len(parts) frames: opcode then continuations.
        Compressed: the whole message is deflated and the result cut into as
        many frames (RSV1 on the first only). between(i), if given, runs after
        frame i is sent but before frame i+1 (e.g. to interleave a ping)."""
        parts = [p.encode("utf-8") if isinstance(p, str) else p for p in parts]
        comp = self._compress_default(compress)
        if comp:
            z = deflate_message(b"".join(parts))
            k = len(parts)
            step = max(1, -(-len(z) // k))
            parts = [z[i * step:(i + 1) * step] for i in range(k)]
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            self.send_frame(opcode if i == 0 else OP_CONT, p, fin=last, rsv1=comp and i == 0)
            if between and not last:
                between(i)

    def ping(self, payload=b""):
        self.send_frame(OP_PING, payload)

    def pong(self, payload=b""):
        self.send_frame(OP_PONG, payload)

    def send_close(self, code=1000, reason=""):
        payload = b"" if code is None else struct.pack(">H", code) + reason.encode("utf-8")
        self.send_frame(OP_CLOSE, payload)
        self.close_sent = True

    def close(self, code=1000, reason="", timeout=None):
        """Close handshake: send a close, read until the peer's close.
        Data messages that arrive meanwhile are dropped. Returns (code, reason)."""
        self.send_close(code, reason)
        while True:
            m = self.recv(timeout)
            if m.opcode == OP_CLOSE:
                return m.code, m.reason

    def shutdown_write(self):
        """Half-close: the peer reads EOF, we can still read."""
        self.sock.shutdown(socket.SHUT_WR)

    def close_socket(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- receiving -----------------------------------------------------------

    def _fill(self, want):
        try:
            b = self.sock.recv(max(1 << 16, min(want, 4 << 20)))
        except socket.timeout:
            raise WsError("timed out after %ss waiting for frame bytes" % self.sock.gettimeout())
        except ConnectionResetError:
            b = b""
        if not b:
            raise ConnectionClosed("connection closed by the peer (%d bytes buffered)" %
                                   len(self.buf))
        self.buf += b

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill(n - len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def recv_frame(self, timeout=None):
        """One raw frame: (fin, rsv1, opcode, payload). Server frames must be
        unmasked and use no RSV bits but RSV1 (with deflate)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        b0, b1 = self._exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._exact(8))[0]
        if b1 & 0x80:
            raise WsError("server frame is masked")
        if b0 & 0x30 or (b0 & 0x40 and self.deflate is None):
            raise WsError("server frame with RSV bits 0x%02x" % (b0 & 0x70))
        if n > MAX_MESSAGE:
            raise WsError("server frame of %d bytes" % n)
        return bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, self._exact(n)

    def _inflate(self, data):
        if self.deflate.get("server_no_context_takeover") or self._inflater is None:
            self._inflater = zlib.decompressobj(-15)
        out = self._inflater.decompress(data + DEFLATE_TAIL, MAX_MESSAGE + 1)
        if len(out) > MAX_MESSAGE or self._inflater.unconsumed_tail:
            raise WsError("inflated message over %d bytes" % MAX_MESSAGE)
        return out

    def recv(self, timeout=None):
        """The next message: text/binary (reassembled, inflated), pong or
        close. Server pings are answered and not returned."""
        op0, comp, parts, frames = None, False, [], 0
        while True:
            fin, rsv1, op, payload = self.recv_frame(timeout)
            if op >= 8:
                if not fin or len(payload) > 125 or rsv1:
                    raise WsError("bad control frame from the server")
                if op == OP_PING:
                    if not self.close_sent:
                        self.pong(payload)
                    continue
                if op == OP_CLOSE:
                    m = Message(op, payload)
                    self.close_received = m
                    return m
                if op == OP_PONG:
                    return Message(op, payload)
                raise WsError("unknown control opcode %d" % op)
            if op == OP_CONT:
                if op0 is None:
                    raise WsError("continuation frame without a message")
                if rsv1:
                    raise WsError("RSV1 on a continuation frame")
            elif op in (OP_TEXT, OP_BINARY):
                if op0 is not None:
                    raise WsError("new message inside a fragmented one")
                op0, comp = op, rsv1
            else:
                raise WsError("unknown opcode %d" % op)
            parts.append(payload)
            frames += 1
            if fin:
                data = b"".join(parts)
                if comp:
                    data = self._inflate(data)
                if op0 == OP_TEXT:
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError:
                        raise WsError("text message is not UTF-8")
                return Message(op0, data, comp, frames)

    def wait_eof(self, timeout=10.0):
        """Read until the peer closes the TCP connection. Returns the bytes
        that arrived meanwhile (b"" after a clean close handshake)."""
        self.sock.settimeout(timeout)
        extra = bytes(self.buf)
        self.buf = bytearray()
        while True:
            try:
                b = self.sock.recv(1 << 16)
            except socket.timeout:
                raise WsError("no EOF from the peer within %ss" % timeout)
            except ConnectionResetError:
                raise WsError("connection reset (not a clean EOF)")
            if not b:
                return extra
            extra += b


def connect(port, path="/ws", host="127.0.0.1", protocols=(), deflate=False, headers=(),
            origin=None, timeout=10.0, key=None, host_header=None, tls=None,
            server_name="localhost"):
    """Open a WebSocket to host:port at path. protocols: subprotocols to
    offer; deflate: True (the default offer) or an offer string; headers:
    extra (name, value) pairs; tls: an ssl.SSLContext for wss:// (verified
    against server_name). Returns a WebSocket; raises HandshakeError."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(timeout)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=server_name)
    hp = "[%s]" % host if ":" in host else host
    hdrs = [("Host", host_header or "%s:%d" % (hp, port)), ("Upgrade", "websocket"),
            ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13")]
    if protocols:
        hdrs.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
    offer = None
    if deflate:
        offer = DEFAULT_OFFER if deflate is True else deflate
        hdrs.append(("Sec-WebSocket-Extensions", offer))
    if origin:
        hdrs.append(("Origin", origin))
    hdrs += list(headers)
    req = "GET %s HTTP/1.1\r\n" % path + "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n"
    try:
        sock.sendall(req.encode("latin-1"))
        buf = b""
        while b"\r\n\r\n" not in buf:
            if len(buf) > 65536:
                raise HandshakeError("response head over 64 KiB")
            b = sock.recv(65536)
            if not b:
                raise HandshakeError("connection closed before the handshake response "
                                     "(got %r)" % buf[:200])
            buf += b
    except socket.timeout:
        sock.close()
        raise HandshakeError("timed out waiting for the handshake response")
    except HandshakeError:
        sock.close()
        raise
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    rheaders = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        rheaders.append((k.strip(), v.strip()))

    def get(name):
        vals = [v for k, v in rheaders if k.lower() == name.lower()]
        return ", ".join(vals) if vals else None

    def bad(msg):
        sock.close()
        raise HandshakeError(msg, status, rheaders, rest)

    if status != 101:
        bad("handshake answered %r, not 101" % lines[0])
    if (get("Upgrade") or "").lower() != "websocket":
        bad("101 with Upgrade %r" % get("Upgrade"))
    if "upgrade" not in [t.strip().lower() for t in (get("Connection") or "").split(",")]:
        bad("101 with Connection %r" % get("Connection"))
    if get("Sec-WebSocket-Accept") != accept_for(key):
        bad("Sec-WebSocket-Accept %r, want %r" % (get("Sec-WebSocket-Accept"), accept_for(key)))
    sel = get("Sec-WebSocket-Protocol")
    if sel is not None and sel not in protocols:
        bad("server selected subprotocol %r, not offered (%r)" % (sel, protocols))
    dparams = None
    ext = get("Sec-WebSocket-Extensions")
    if ext:
        exts = parse_extensions(ext)
        if not offer or len(exts) != 1 or exts[0][0] != "permessage-deflate":
            bad("server answered extensions %r to the offer %r" % (ext, offer))
        dparams = exts[0][1]
    return WebSocket(sock, rest, status, rheaders, protocols, dparams)
