"""55 WebSocket framing on the tunnel, from a hand-made agent: serve parses
the agent's frames itself (data) and hands control frames to wslay, so this
checks RFC 6455 on the wire: fragmented messages with pings between the
fragments, masking rules, reserved bits, text and oversized messages, and
that serve's own frames are unmasked and well formed."""

import os
import struct
import threading

from harness import Conn, check, eq, fail, timed, tunnel_upgrade

MAX_FRAME = 256 * 1024


def ws_frame(op, payload, fin=True, mask=True, rsv=0):
    b0 = (0x80 if fin else 0) | rsv | op
    n = len(payload)
    if n < 126:
        hdr = bytes([b0, (0x80 if mask else 0) | n])
    elif n < 65536:
        hdr = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, (0x80 if mask else 0) | 127]) + struct.pack(">Q", n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def read_ws(c):
    """One frame from serve: (fin, opcode, payload). Serve never masks."""
    hdr = c_exact(c, 2)
    fin, op, masked, n = hdr[0] & 0x80, hdr[0] & 0x0f, hdr[1] & 0x80, hdr[1] & 0x7f
    check(not masked, "serve sent a masked frame")
    check(hdr[0] & 0x70 == 0, "serve set reserved bits")
    if n == 126:
        n = struct.unpack(">H", c_exact(c, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", c_exact(c, 8))[0]
    return bool(fin), op, c_exact(c, n)


def c_exact(c, n):
    out = b""
    while len(out) < n:
        if c.buf:
            take = c.buf[: n - len(out)]
            c.buf = c.buf[len(take):]
            out += take
        elif not c._fill():
            fail("tunnel closed while reading a frame (%d of %d bytes)" % (len(out), n))
    return out


def read_msg(c):
    """Next natwrp message (binary), answering nothing; pings are returned as
    ('ping', payload), close as ('close', code)."""
    fin, op, p = read_ws(c)
    if op == 0x9:
        return "ping", p
    if op == 0xA:
        return "pong", p
    if op == 0x8:
        return "close", struct.unpack(">H", p[:2])[0] if len(p) >= 2 else None
    eq((fin, op), (True, 2), "serve sends one unfragmented binary frame per message")
    return "msg", p


def mux(ftype, flags, sid, payload=b""):
    return bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def head_200(sid, body_len):
    name, value = b"Content-Length", str(body_len).encode()
    return mux(2, 0, sid, struct.pack(">H", 200) + b"\x02OK" + struct.pack(">H", 1) +
               struct.pack(">H", len(name)) + name + struct.pack(">H", len(value)) + value)


def raw_agent(t, agent_id="wire"):
    o = t.origin()
    s = t.serve()
    c, r = tunnel_upgrade(s.port, agent_id=agent_id)
    eq(r.status, 101, "raw tunnel upgrade")
    s.wait_tunnel_open(agent_id)
    return s, c


def client_get(port, target, out):
    def run():
        try:
            cc = Conn(port, timeout=15)
            cc.request("GET", target)
            out.append(cc.read_response())
            cc.close()
        except BaseException as e:  # noqa: B902 - reported by the test
            out.append(e)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


@timed(30)
def test_fragmented_messages_with_pings_between(t):
    s, c = raw_agent(t)
    out = []
    th = client_get(s.port, "/frag", out)
    kind, m = read_msg(c)
    eq((kind, m[0]), ("msg", 1), "serve opened a stream (OPEN)")
    sid = struct.unpack(">I", m[2:6])[0]
    body = b"fragmented body " * 1000
    # HEAD split in three fragments with a ping between them; DATA in 1-byte
    # and odd-sized fragments; a ping inside the DATA message too.
    h = head_200(sid, len(body))
    c.send(ws_frame(2, h[:3], fin=False) + ws_frame(0x9, b"p1") + ws_frame(0, h[3:10], fin=False))
    c.send(ws_frame(0, h[10:], fin=True))
    d = mux(3, 1, sid, body)
    parts = [d[:1], d[1:2], d[2:7777], d[7777:]]
    frames = [ws_frame(2, parts[0], fin=False)]
    frames += [ws_frame(0, p, fin=False) for p in parts[1:-1]]
    frames.insert(2, ws_frame(0x9, b"p2"))
    frames.append(ws_frame(0, parts[-1], fin=True))
    wire = b"".join(frames)
    for i in range(0, len(wire), 1000):  # and in odd TCP pieces
        c.send(wire[i:i + 1000])
    pongs = []
    while not pongs or pongs[-1] != b"p2":
        kind, p = read_msg(c)
        if kind == "pong":
            pongs.append(p)
    # A ping that arrives while the previous pong has not left yet replaces
    # its payload (RFC 6455 5.5.3 allows answering only the latest one).
    check(pongs in ([b"p1", b"p2"], [b"p2"]), "pongs echo the pings, in order: %r" % pongs)
    th.join(15)
    r = out[0]
    check(not isinstance(r, BaseException), "client: %r" % r)
    eq((r.status, r.body), (200, body), "response reassembled from fragments")
    check(s.proc.count(r"websocket error|protocol violation") == 0, "serve complained")


def _refused(t, frame, code, why):
    s, c = raw_agent(t)
    c.send(frame)
    while True:
        kind, p = read_msg(c)
        if kind == "close":
            eq(p, code, "close code for %s" % why)
            break
    s.proc.wait_for(why, 10)
    s.proc.wait_for(r"tunnel closed tun=\d+ agent=wire", 10)


def test_unmasked_frame_from_agent_refused(t):
    _refused(t, ws_frame(2, mux(4, 0, 1, b"\x00\x00\x00\x01"), mask=False), 1002,
             "unmasked frame from the agent")


def test_reserved_bits_refused(t):
    _refused(t, ws_frame(2, mux(4, 0, 1, b"\x00\x00\x00\x01"), rsv=0x40), 1002,
             "reserved bits set")


def test_text_message_refused(t):
    _refused(t, ws_frame(1, b"hello"), 1003, "text message on the tunnel")


def test_continuation_without_message_refused(t):
    _refused(t, ws_frame(0, b"abc"), 1002, "continuation without a message")


def test_oversized_message_refused(t):
    big = b"x" * (MAX_FRAME - 10)
    _refused(t, ws_frame(2, big, fin=False) + ws_frame(0, b"y" * 100), 1009, "message too big")


def test_fragmented_control_frame_refused(t):
    _refused(t, ws_frame(0x9, b"ping", fin=False), 1002, "invalid control frame")


def test_close_from_agent_answered(t):
    s, c = raw_agent(t)
    c.send(ws_frame(0x8, struct.pack(">H", 1000) + b"bye"))
    kind, p = read_msg(c)
    eq((kind, p), ("close", 1000), "serve answers a close with a close")
    check(c.wait_closed(10), "serve did not close the connection after the close handshake")
    s.proc.wait_for(r"tunnel closed tun=\d+ agent=wire", 10)
