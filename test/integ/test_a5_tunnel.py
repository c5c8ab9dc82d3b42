"""a5 Tunnel peers that send but never read (issue 9, items 11 and 12).

A hand-made agent floods serve with pings; a hand-made server floods an
agent with pings, or with OPENs. None of them reads a byte. What the
tunnel answers (pongs, responses, RSTs) must stay bounded in memory: one
pong waits at a time, every reply counts in the tunnel's output bound, the
tunnel stops reading while that bound is full, and a peer that has read
nothing for two ping intervals while output waits is cut off."""

import base64
import os
import re
import socket
import struct
import threading
import time

from harness import Conn, TUNNEL_PATH, check, eq, fail, timed, ws_accept

# Growth in KiB that no bounded tunnel reaches (ASan builds included; the
# unbounded ones reached 100+ MB).
RSS_LIMIT_KIB = int(os.environ.get("A5_RSS_LIMIT", 40 * 1024))
STALL_LOG = r"peer has read nothing for \d+ ms"
# ASan keeps freed blocks in a quarantine (256 MB by default) that would
# count every request the flood made, bounded or not: keep it small, so
# RSS shows what is live.
ASAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=4"}


def ws_frame(op, payload, mask):
    n = len(payload)
    hdr = bytes([0x80 | op])
    m = 0x80 if mask else 0
    if n < 126:
        hdr += bytes([m | n])
    elif n < 65536:
        hdr += bytes([m | 126]) + struct.pack(">H", n)
    else:
        hdr += bytes([m | 127]) + struct.pack(">Q", n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def open_frame(sid, target=b"/flood"):
    """A natwrp OPEN (GET, no body) for stream sid, docs/protocol.md."""
    name, value = b"Accept", b"*/*"
    p = bytes([1, 1]) + struct.pack(">I", sid) + bytes([3]) + b"GET"
    p += struct.pack(">H", len(target)) + target + struct.pack(">H", 1)
    p += struct.pack(">H", len(name)) + name + struct.pack(">H", len(value)) + value
    return p


def flood(sock, blob, seconds, stop=None):
    """Send blob over and over for up to seconds (or until stop is set, or
    the peer closes). Returns (bytes sent, whether a send blocked for a
    whole second: the peer stopped reading)."""
    sock.settimeout(1.0)
    sent, end = 0, time.monotonic() + seconds
    while time.monotonic() < end and not (stop and stop.is_set()):
        try:
            n = sock.send(blob)
        except socket.timeout:
            return sent, True
        except OSError:
            return sent, False
        sent += n
    return sent, False


def record(t, line):
    """Keep a measurement in the test's log folder (rss.txt), so that
    `NATWRP_BIN=... python3 test/integ/run.py -k test_a5` re-measures any
    build (a release build gives the figures without ASan's overhead)."""
    with open(os.path.join(t.logdir, "rss.txt"), "a") as f:
        f.write(line + "\n")


def watch_rss(proc, base, until, seconds):
    """Sample proc's RSS until until() or seconds pass; fail as soon as it
    grows past RSS_LIMIT_KIB. Returns the peak growth in KiB."""
    peak, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        v = proc.rss_kib()
        if v is not None:
            peak = max(peak, v - base)
            check(peak < RSS_LIMIT_KIB, "%s RSS grew by %d KiB (%d -> %d)"
                  % (proc.label, peak, base, v))
        if until():
            break
        time.sleep(0.05)
    return peak


# ------------------------------------------------------------ against serve

def raw_agent_small_rcvbuf(port, agent_id):
    c = Conn(port, rcvbuf=4096)
    c.request("GET", TUNNEL_PATH, [
        ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "natwrp.1"), ("X-Natwrp-Agent", agent_id)])
    r = c.read_head()
    eq(r.status, 101, "raw tunnel upgrade")
    return c


@timed(40)
def test_a5_serve_ping_flood_bounded_and_cut_off(t):
    s = t.serve("--ping-interval", "0.5", env=ASAN_ENV)
    c = raw_agent_small_rcvbuf(s.port, "pinger")
    s.wait_tunnel_open("pinger")
    base = s.proc.rss_kib()
    blob = ws_frame(0x9, b"p" * 125, mask=True) * 4000  # ~0.5 MB of pings
    stop = threading.Event()
    out = []
    th = threading.Thread(target=lambda: out.append(flood(c.sock, blob, 30, stop)), daemon=True)
    th.start()
    try:
        peak = watch_rss(s.proc, base, lambda: s.proc.find(STALL_LOG), 25)
    finally:
        stop.set()
    check(s.proc.find(STALL_LOG), "serve never dropped the tunnel of a peer that reads "
          "nothing (RSS growth %d KiB)" % peak)
    s.wait_tunnel_closed("pinger", timeout=10)
    th.join(10)
    record(t, "serve RSS growth under the ping flood: %d KiB (sent %s)" % (peak, out))


# ----------------------------------------------------- a hand-made server

class FakeServer:
    """Listens on 127.0.0.1:0 and answers the agent's tunnel upgrade with a
    101 (natwrp.1); the accepted socket has a small receive buffer and is
    never read after the handshake."""

    def __init__(self):
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.ls.settimeout(15)
        self.port = self.ls.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port

    def accept_tunnel(self):
        sock, _ = self.ls.accept()
        sock.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            b = sock.recv(4096)
            if not b:
                fail("agent closed during the handshake")
            head += b
        text = head.decode("latin-1")
        check(text.startswith("GET %s " % TUNNEL_PATH), "agent dialled %r" % text[:60])
        m = re.search(r"(?im)^sec-websocket-key:\s*(\S+)", text)
        check(m, "no Sec-WebSocket-Key in %r" % text)
        sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                      "Sec-WebSocket-Protocol: natwrp.1\r\n\r\n" % ws_accept(m.group(1)))
                     .encode())
        return sock

    def close(self):
        self.ls.close()


def start_agent(t, fake, env=None, wait_up=True):
    e = {"AGENT_ID": "victim", "REMOTE_URL": fake.url,
         "LOCAL_URL": "http://127.0.0.1:%d" % closed_port()}
    e.update(ASAN_ENV)
    e.update(env or {})
    a = t.natwrp("agent", ["agent"], env=e)
    sock = fake.accept_tunnel()
    if wait_up:
        a.wait_for(r"tunnel up agent=victim\b", 15)
    return a, sock


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


@timed(40)
def test_a5_agent_ping_flood_bounded_and_cut_off(t):
    fake = FakeServer()
    a, sock = start_agent(t, fake, {"PING_INTERVAL": "0.5"})
    base = a.rss_kib()
    blob = ws_frame(0x9, b"q" * 125, mask=False) * 4000
    stop = threading.Event()
    out = []
    th = threading.Thread(target=lambda: out.append(flood(sock, blob, 30, stop)), daemon=True)
    th.start()
    try:
        peak = watch_rss(a, base, lambda: a.find(STALL_LOG), 25)
    finally:
        stop.set()
    check(a.find(STALL_LOG), "the agent never dropped a server that reads nothing "
          "(RSS growth %d KiB)" % peak)
    a.wait_for(r"tunnel down agent=victim", 10)
    th.join(10)
    sock.close()
    fake.close()
    record(t, "agent RSS growth under the ping flood: %d KiB (sent %s)" % (peak, out))


@timed(50)
def test_a5_agent_open_flood_stops_reading(t):
    fake = FakeServer()
    a, sock = start_agent(t, fake, {"PING_INTERVAL": "2"})
    base = a.rss_kib()
    frames = [ws_frame(2, open_frame(sid), mask=False) for sid in range(1, 300001)]
    stop = threading.Event()
    res = {}

    def run():
        sock.settimeout(1.0)
        sent = 0
        for i in range(0, len(frames), 2000):
            try:
                sock.sendall(b"".join(frames[i:i + 2000]))
            except socket.timeout:
                res["blocked"] = True
                break
            except OSError:
                break
            sent = i + 2000
        res["sent"] = sent
        stop.set()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    peak = watch_rss(a, base, stop.is_set, 40)
    th.join(5)
    # Whatever was read by now is all the agent will answer: look again.
    time.sleep(0.5)
    v = a.rss_kib()
    peak = max(peak, v - base)
    record(t, "agent RSS growth under the OPEN flood: %d KiB (OPENs sent %s, blocked %s)"
          % (peak, res.get("sent"), res.get("blocked")))
    check(peak < RSS_LIMIT_KIB, "agent RSS grew by %d KiB" % peak)
    check(res.get("blocked"), "the agent read all %s OPENs of a server that reads nothing"
          % res.get("sent"))
    # And a server that never reads is dropped after two ping intervals.
    a.wait_for(STALL_LOG, 15)
    a.wait_for(r"tunnel down agent=victim", 10)
    sock.close()
    fake.close()


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        b = sock.recv(n - len(out))
        if not b:
            fail("agent closed the tunnel (%d of %d bytes)" % (len(out), n))
        out += b
    return out


@timed(60)
def test_a5_agent_resumes_reading_when_output_drains(t):
    """The pause is no dead end: once the server reads again, the agent reads
    the rest of the OPENs and answers every one of them."""
    fake = FakeServer()
    # (LOG_LEVEL error: 60000 lines of 503 warnings would only slow it down.)
    a, sock = start_agent(t, fake, {"PING_INTERVAL": "10", "LOG_LEVEL": "error"},
                          wait_up=False)
    # Enough answers (~150 bytes each) to fill the agent's output bound plus
    # the kernel's send buffer (autotuned up to 4 MiB) several times over.
    n_open = 120000
    target = b"/" + b"a" * 400
    frames = b"".join(ws_frame(2, open_frame(sid, target), mask=False)
                      for sid in range(1, n_open + 1))
    progress = [0, False]

    def send_all():
        try:
            for i in range(0, len(frames), 65536):
                sock.sendall(frames[i:i + 65536])
                progress[0] = i + 65536
        except OSError:
            pass
        progress[1] = True
    sock.settimeout(30)
    th = threading.Thread(target=send_all, daemon=True)
    th.start()
    # The agent stops reading while its answers pile up unread: the sender
    # makes no progress for a second before it is done.
    last, since = -1, time.monotonic()
    while not progress[1] and time.monotonic() - since < 1.0:
        if progress[0] != last:
            last, since = progress[0], time.monotonic()
        time.sleep(0.05)
    check(not progress[1], "the agent read all %d OPENs while its answers went unread" % n_open)
    # Now read: every OPEN gets its answer (a HEAD or a RST).
    answered = set()
    deadline = time.monotonic() + 40
    while len(answered) < n_open and time.monotonic() < deadline:
        hdr = read_exact(sock, 2)
        n = hdr[1] & 0x7f
        if n == 126:
            n = struct.unpack(">H", read_exact(sock, 2))[0]
        elif n == 127:
            n = struct.unpack(">Q", read_exact(sock, 8))[0]
        key = read_exact(sock, 4) if hdr[1] & 0x80 else b"\0\0\0\0"
        p = read_exact(sock, n)
        if hdr[0] & 0x0f != 2 or n < 6:
            continue
        head = bytes(c ^ key[i % 4] for i, c in enumerate(p[:6]))
        if head[0] in (2, 5):
            answered.add(struct.unpack(">I", head[2:6])[0])
    eq(len(answered), n_open, "OPENs answered after the server read again")
    th.join(10)
    check(progress[1], "the sender never finished")
    sock.close()
    fake.close()
