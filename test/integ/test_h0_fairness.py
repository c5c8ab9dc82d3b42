"""h0 Fairness on the tunnel: a small stream's frames do not wait behind
another stream's backlog. serve's output toward a hand-made agent is
backed up by an upload (the agent grants a huge window, then stops reading
its socket); a small request arrives meanwhile; when the agent reads again,
its OPEN must come before the bulk of the queued upload DATA. Measured in
bytes of the bulk stream's DATA that arrive ahead of the OPEN (no clock):
serve used to hold about 1 MiB of framed DATA in its own buffers and let the
kernel take up to its whole send buffer on top, all of it ahead of any new
frame; now at most one batch and what TCP_NOTSENT_LOWAT lets the kernel
keep unsent are ahead of it."""

import socket
import struct
import threading
import time

from harness import Conn, TUNNEL_PATH, check, eq, fail, timed

# Everything the peer can have in flight ahead of a new frame once the
# scheduler works: the agent's receive buffer (set to 64 KiB, doubled by
# Linux), serve's unsent kernel bytes (TCP_NOTSENT_LOWAT 64 KiB, plus a
# segment), one batch being written (128 KiB) and one more being built.
AHEAD_MAX = 768 * 1024
UPLOAD = 64 * 1024 * 1024


def raw_agent(port, agent_id, window):
    c = Conn(port, rcvbuf=64 * 1024, timeout=20)
    c.request("GET", TUNNEL_PATH, [
        ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "natwrp.1"), ("X-Natwrp-Agent", agent_id),
        ("X-Natwrp-Window", str(window))])
    r = c.read_head()
    eq(r.status, 101, "raw tunnel upgrade")
    return c


def c_exact(c, n):
    out = bytearray()
    while len(out) < n:
        if c.buf:
            take = c.buf[: n - len(out)]
            c.buf = c.buf[len(take):]
            out += take
        elif not c._fill():
            fail("tunnel closed while reading a frame (%d of %d bytes)" % (len(out), n))
    return bytes(out)


def read_msg(c):
    """Next WebSocket frame from serve: (opcode, payload). serve never masks
    and sends each natwrp message as one frame."""
    hdr = c_exact(c, 2)
    op, n = hdr[0] & 0x0f, hdr[1] & 0x7f
    check(not hdr[1] & 0x80, "serve sent a masked frame")
    if n == 126:
        n = struct.unpack(">H", c_exact(c, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", c_exact(c, 8))[0]
    return op, c_exact(c, n)


def next_mux(c):
    """Next natwrp message (type, sid, payload), skipping pings."""
    while True:
        op, p = read_msg(c)
        if op == 0x2:
            return p[0], struct.unpack(">I", p[2:6])[0], p[6:]
        check(op in (0x9, 0xA), "unexpected frame opcode %d" % op)


class Uploader:
    """POSTs UPLOAD bytes through serve, counting what the socket took."""

    def __init__(self, port):
        self.sent = 0
        self.err = None
        self.stop = False
        self.c = Conn(port, timeout=60)
        self.c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        try:
            self.c.request("POST", "/bulk", [("Content-Length", str(UPLOAD))])
            chunk = b"u" * 65536
            while self.sent < UPLOAD and not self.stop:
                self.sent += self.c.sock.send(chunk[: UPLOAD - self.sent])
        except OSError as e:
            self.err = e

    def wait_stalled(self, quiet=0.5, limit=20.0):
        """Wait until serve stopped taking the upload: no progress for
        quiet seconds (the pause is what we wait for; the deadline bounds it)."""
        end = time.time() + limit
        last, since = -1, time.time()
        while time.time() < end:
            if self.err:
                fail("upload failed: %r" % (self.err,))
            if self.sent != last:
                last, since = self.sent, time.time()
            elif time.time() - since >= quiet:
                return self.sent
            time.sleep(0.05)
        fail("serve kept taking the upload (%d bytes) with the agent not reading" % self.sent)


@timed(60)
def test_h0_open_not_behind_bulk_backlog(t):
    """serve side: the OPEN of a new request overtakes a queued upload."""
    t.origin()
    s = t.serve(env={"LOG_LEVEL": "debug"})  # the line that says a stream was opened
    c = raw_agent(s.port, "fair", 256 * 1024 * 1024)
    s.wait_tunnel_open("fair")
    up = Uploader(s.port)
    typ, sid1, _ = next_mux(c)
    eq(typ, 1, "serve opened the upload's stream (OPEN)")
    sent = up.wait_stalled()

    small = Conn(s.port, timeout=30)
    small.request("GET", "/small")
    # serve logs the stream once its OPEN is queued; the agent is not
    # reading yet, so it is queued behind the upload's backlog.
    s.proc.wait_for(r"strm=\d+ GET /small\b", 15)

    ahead = 0
    while True:
        typ, sid, p = next_mux(c)
        if typ == 3 and sid == sid1:
            ahead += len(p)
            continue
        if typ == 1 and sid != sid1:
            break
        fail("unexpected frame type %d for stream %d" % (typ, sid))
    up.stop = True
    print("bulk DATA bytes ahead of the new OPEN: %d (limit %d; upload taken %d)"
          % (ahead, AHEAD_MAX, sent))
    check(ahead <= AHEAD_MAX,
          "%d bytes of the bulk stream's DATA came before the new stream's OPEN "
          "(at most %d expected)" % (ahead, AHEAD_MAX))
    small.close()
    up.c.close()
    c.close()
