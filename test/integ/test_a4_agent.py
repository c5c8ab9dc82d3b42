"""a4 agent hardening (issue 9, items 4, 7, 14, 15 and 17, agent side).

A hand-made server (fakeserver.py) drives the agent with frames a hostile
server could send; raw local services record every byte they receive, so a
test can prove that an injected request never reached the service. The
WebSocket and drain tests run the real serve and the test origin."""

import socket
import threading
import time

import wsclient
from fakeserver import FakeServer
from harness import Conn, check, eq, fail, get, timed

INJECT = b"GET /injected HTTP/1.1\r\nHost: x\r\n\r\n"
PROTOCOL = 4  # RST code


# --------------------------------------------------------------------------
# A raw local service
# --------------------------------------------------------------------------

class Rec:
    """One connection to the local service: every byte it sent, and EOF."""

    def __init__(self, sock):
        self.sock = sock
        self.data = b""
        self.eof = False


class LocalService:
    """Accepts on 127.0.0.1:0; handler(svc, rec) runs per connection in a
    thread and reads through svc.read_request(rec)."""

    def __init__(self, handler):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.handler = handler
        self.conns = []
        self.cond = threading.Condition()
        self.events = {}
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            # Every send leaves at once: no Nagle wait for the peer's ACK
            # (which the agent's next write would carry).
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rec = Rec(s)
            with self.cond:
                self.conns.append(rec)
                self.cond.notify_all()
            threading.Thread(target=self._run, args=(rec,), daemon=True).start()

    def _run(self, rec):
        try:
            self.handler(self, rec)
        except (OSError, EOFError):
            pass
        self.drain(rec)

    def recv(self, rec):
        try:
            b = rec.sock.recv(65536)
        except OSError:
            b = b""
        with self.cond:
            if b:
                rec.data += b
            else:
                rec.eof = True
            self.cond.notify_all()
        return b

    def drain(self, rec):
        """Keep reading (and recording) until the peer closes."""
        while self.recv(rec):
            pass

    def read_request(self, rec, pos):
        """Parse one request from rec.data at pos (reading more as needed);
        returns (request line, headers dict, body, new pos)."""
        while b"\r\n\r\n" not in rec.data[pos:]:
            if not self.recv(rec):
                raise EOFError()
        end = rec.data.index(b"\r\n\r\n", pos) + 4
        lines = rec.data[pos:end - 4].decode("latin-1").split("\r\n")
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        while len(rec.data) < end + n:
            if not self.recv(rec):
                raise EOFError()
        return lines[0], hdrs, rec.data[end:end + n], end + n

    def set(self, name):
        with self.cond:
            self.events[name] = True
            self.cond.notify_all()

    def wait(self, pred, what, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("local service: %s: not within %.1fs" % (what, timeout))
                self.cond.wait(left)

    def all_bytes(self):
        with self.cond:
            return b"".join(r.data for r in self.conns)

    def close(self):
        self.lsock.close()


def ok_forever(svc, rec):
    """Answer every request 200 "ok" and keep reading: a service that would
    run whatever bytes it is given as further requests."""
    pos = 0
    while True:
        line, hdrs, body, pos = svc.read_request(rec, pos)
        rec.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def wait_stopped(proc, timeout=5.0):
    """SIGSTOP is asynchronous: wait until the kernel shows the process
    stopped (state T). /proc has no notification, so this polls."""
    proc.stop()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/%d/stat" % proc.pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return
        time.sleep(0.001)
    fail("%s did not stop within %.1fs" % (proc.label, timeout))


def start_agent(t, fs, svc, env=None, agent_id="h4"):
    e = {"LOG_LEVEL": "debug"}
    e.update(env or {})
    a = t.agent(fs.url, svc.url, agent_id=agent_id, env=e, wait=False)
    tun = fs.accept()
    a.wait_for(r"tunnel up agent=%s\b" % agent_id, 15)
    return a, tun


def expect_rst(tun, sid, code, what):
    f, _ = tun.expect(lambda f: f.sid == sid and f.type in (2, 3, 5) and
                      (f.type == 5 or f.end), what, timeout=5.0)
    eq((f.type, f.code), (5, code), what)


# --------------------------------------------------------------------------
# Item 4: a hostile server cannot inject a request through the agent
# --------------------------------------------------------------------------

@timed(40)
def test_a4_injected_data_never_reaches_service(t):
    svc = LocalService(ok_forever)
    fs = FakeServer()
    a, tun = start_agent(t, fs, svc)
    cl5 = [("Content-Length", "5")]

    # DATA beyond the Content-Length announced in OPEN, in one frame.
    tun.open(1, "POST", "/a", cl5, end=False)
    svc.wait(lambda: b"POST /a " in svc.all_bytes(), "the head reached the service")
    tun.data(1, b"hello" + INJECT, end=True)
    expect_rst(tun, 1, PROTOCOL, "DATA beyond Content-Length resets the stream (PROTOCOL)")
    svc.wait(lambda: svc.conns and svc.conns[0].eof,
             "the local connection of the reset stream is closed")
    a.wait_for(r"strm=1 .*(beyond|more than).*Content-Length", 5)

    # The same across frames: the first frame fits, the second overflows.
    tun.open(3, "POST", "/b", [("Content-Length", "7")], end=False)
    tun.data(3, b"hel", end=False)
    tun.data(3, b"lo" + INJECT, end=True)
    expect_rst(tun, 3, PROTOCOL, "DATA over Content-Length across frames resets the stream")

    # DATA after END, and DATA on a bodiless request (OPEN with END).
    tun.open(5, "POST", "/c", cl5, end=False)
    tun.data(5, b"hello", end=True)
    tun.data(5, INJECT, end=True)
    tun.open(7, "GET", "/d", end=True)
    tun.data(7, INJECT, end=True)

    # An honest request afterwards still works.
    tun.open(9, "GET", "/honest", end=True)
    head, body, rst = tun.response(9)
    check(rst is None and head is not None, "honest request answered (got %r)" % rst)
    eq((head.status, body), (200, b"ok"), "honest request")
    data = svc.all_bytes()
    check(b"/injected" not in data, "the injected request reached the local service:\n%r"
          % data)
    check(b"GET /honest " in data, "the honest request reached the service")


@timed(30)
def test_a4_short_body_resets(t):
    """END before Content-Length bytes: the service would wait for the rest
    (and a pooled connection would then take the next head as body)."""
    svc = LocalService(ok_forever)
    fs = FakeServer()
    a, tun = start_agent(t, fs, svc)
    tun.open(1, "POST", "/short", [("Content-Length", "10")], end=False)
    svc.wait(lambda: b"POST /short " in svc.all_bytes(), "the head reached the service")
    tun.data(1, b"12345", end=True)
    expect_rst(tun, 1, PROTOCOL, "a body shorter than Content-Length resets the stream")
    svc.wait(lambda: svc.conns and svc.conns[0].eof, "its local connection is closed")
    tun.open(3, "GET", "/next", end=True)
    head, body, rst = tun.response(3)
    eq((head.status, body), (200, b"ok"), "next request on a fresh connection")
    check(svc.conns[-1] is not svc.conns[0], "the reset connection was not reused")


def upgrade_service(svc, rec):
    """/no: refuses the upgrade with a keep-alive 200 and keeps reading.
    /yes: accepts (101), then echoes raw bytes."""
    line, hdrs, body, pos = svc.read_request(rec, 0)
    if line.startswith("GET /no"):
        rec.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nno upgrade")
        ok_more = True
        while ok_more:
            line, hdrs, body, pos = svc.read_request(rec, pos)
            rec.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return
    rec.sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\n"
                     b"Connection: Upgrade\r\n\r\n")
    while True:
        n = len(rec.data)
        if not svc.recv(rec):
            return
        rec.sock.sendall(rec.data[n:].upper())


@timed(30)
def test_a4_upgrade_bytes_held_until_101(t):
    """Bytes after an upgrade request's head reach the service only after it
    answered 101; when it refuses, they are discarded."""
    svc = LocalService(upgrade_service)
    fs = FakeServer()
    a, tun = start_agent(t, fs, svc)
    up = [("Connection", "Upgrade"), ("Upgrade", "raw")]
    tun.open(1, "GET", "/no", up, end=False)
    tun.data(1, INJECT, end=False)
    head, body, rst = tun.response(1)
    eq((head.status, body), (200, b"no upgrade"), "refused upgrade relayed")
    svc.wait(lambda: svc.conns and svc.conns[0].eof,
             "the refused upgrade's local connection is closed")
    check(b"/injected" not in svc.conns[0].data,
          "bytes after a refused upgrade reached the service:\n%r" % svc.conns[0].data)

    tun.open(3, "GET", "/yes", up, end=False)
    tun.data(3, b"early bytes;", end=False)
    f, _ = tun.expect(lambda f: f.sid == 3 and f.type == 2, "HEAD 101")
    eq(f.status, 101, "accepted upgrade")
    tun.data(3, b"later", end=False)
    got = b""
    while got != b"EARLY BYTES;LATER":
        f = tun.recv(5)
        check(f is not None, "tunnel ended")
        if f.sid == 3 and f.type == 3:
            got += f.payload
        check(len(got) <= 17, "unexpected pipe bytes %r" % got)


# --------------------------------------------------------------------------
# Item 7: a pooled connection with stray bytes is never reused
# --------------------------------------------------------------------------

def stray_service(svc, rec):
    pos = 0
    while True:
        line, hdrs, body, pos = svc.read_request(rec, pos)
        target = line.split(" ")[1]
        if target.startswith("/first"):
            rec.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            svc.wait(lambda: svc.events.get("go " + target), "go " + target, 20)
            rec.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
            svc.set("sent " + target)
        elif target == "/glued":
            # Stray bytes in the same segment as the response.
            rec.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nglued"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
        else:
            rec.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")


@timed(40)
def test_a4_pool_stray_bytes_never_answer_next_request(t):
    svc = LocalService(stray_service)
    fs = FakeServer()
    a, tun = start_agent(t, fs, svc)
    sid = 1
    for i in range(6):
        first = "/first?%d" % i
        tun.open(sid, "GET", first, end=True)
        head, body, rst = tun.response(sid)
        eq((head.status, body), (200, b"first"), "round %d: first response" % i)
        # The connection is in the pool now. Freeze the agent, let the next
        # OPEN arrive and the stray bytes right after it: both are readable
        # when the agent wakes up (which it reads first varies).
        wait_stopped(a)
        try:
            tun.open(sid + 2, "GET", "/second", end=True)
            svc.set("go " + first)
            svc.wait(lambda: svc.events.get("sent " + first), "stray bytes sent")
        finally:
            a.cont()
        head, body, rst = tun.response(sid + 2)
        check(rst is None, "round %d: second request reset: %r" % (i, rst))
        eq((head.status, body), (200, b"second"),
           "round %d: the next request got its own response, not stray bytes" % i)
        sid += 4
    svc.wait(lambda: all(r.eof for r in svc.conns[:-1]),
             "every connection that sent stray bytes is closed")

    # Stray bytes while idle in the pool (agent running): closed at once.
    first = "/first?idle"
    tun.open(sid, "GET", first, end=True)
    head, body, rst = tun.response(sid)
    eq(body, b"first", "idle round response")
    rec = svc.conns[-1]
    svc.set("go " + first)
    svc.wait(lambda: rec.eof, "a pooled connection that became readable is closed", 5)
    tun.open(sid + 2, "GET", "/third", end=True)
    head, body, rst = tun.response(sid + 2)
    eq(body, b"second", "request after the idle stray bytes")

    # Bytes glued to the response: that connection is closed, never pooled.
    tun.open(sid + 4, "GET", "/glued", end=True)
    head, body, rst = tun.response(sid + 4)
    eq(body, b"glued", "glued response")
    rec = [r for r in svc.conns if b"/glued" in r.data][0]
    svc.wait(lambda: rec.eof, "a connection with bytes after its response is closed", 5)
    tun.open(sid + 6, "GET", "/fourth", end=True)
    head, body, rst = tun.response(sid + 6)
    eq(body, b"second", "request after the glued bytes")
    check(b"/fourth" not in rec.data, "the request after glued bytes reused that connection")


# --------------------------------------------------------------------------
# Item 14: WebSockets do not take request slots; the local queue times out
# --------------------------------------------------------------------------

@timed(40)
def test_a4_pipes_do_not_starve_requests(t):
    o = t.origin("A")
    s = t.serve()
    t.agent(s, o, env={"MAX_LOCAL_CONNS": "2", "MAX_LOCAL_PIPES": "4"})
    wss = []
    for i in range(4):
        try:
            ws = wsclient.connect(s.port, "/ws", timeout=4)
        except wsclient.WsError as e:
            fail("WebSocket %d (MAX_LOCAL_CONNS=2) not opened: %s" % (i + 1, e))
        eq(ws.status, 101, "WebSocket %d" % (i + 1))
        wss.append(ws)
    r = get(s, "/sleep?ms=1", timeout=4)
    eq(r.status, 200, "plain GET with 4 idle WebSockets and MAX_LOCAL_CONNS=2")
    for i, ws in enumerate(wss):
        ws.send(b"ping %d" % i)
        eq(ws.recv(5).data, b"ping %d" % i, "WebSocket %d still echoes" % (i + 1))
    try:
        ws = wsclient.connect(s.port, "/ws", timeout=4)
        fail("a 5th WebSocket over MAX_LOCAL_PIPES=4 was accepted (%s)" % ws.status)
    except wsclient.HandshakeError as e:
        check("503" in str(e), "5th WebSocket refused with 503: %s" % e)


@timed(30)
def test_a4_local_queue_timeout(t):
    o = t.origin("A")
    s = t.serve()
    a = t.agent(s, o, env={"MAX_LOCAL_CONNS": "1", "LOCAL_QUEUE_TIMEOUT": "1"})
    out = []

    def hang():
        try:
            out.append(get(s, "/hang?max_ms=5000", timeout=15))
        except BaseException as e:  # noqa: B902 - only a filler
            out.append(e)
    th = threading.Thread(target=hang, daemon=True)
    th.start()
    o.proc.wait_for(r"event hang-start", 5)
    t0 = time.monotonic()
    r = get(s, "/sleep?ms=1", timeout=10)
    took = time.monotonic() - t0
    eq(r.status, 503, "a request queued in the agent past LOCAL_QUEUE_TIMEOUT")
    check(0.8 <= took < 3.0, "503 after about LOCAL_QUEUE_TIMEOUT (took %.2fs)" % took)
    a.wait_for(r"waited .*LOCAL_QUEUE_TIMEOUT", 2)


def test_a4_new_settings_validated(t):
    for env in ({"LOCAL_QUEUE_TIMEOUT": "soon"}, {"LOCAL_QUEUE_TIMEOUT": "0"},
                {"MAX_LOCAL_PIPES": "0"}, {"MAX_LOCAL_PIPES": "x"}):
        e = {"AGENT_ID": "v", "REMOTE_URL": "http://127.0.0.1:1", "LOCAL_URL": "http://127.0.0.1:2"}
        e.update(env)
        rc, out = t.run_natwrp("agent", ["agent"], env=e, timeout=5)
        eq(rc, 2, "agent with %r" % env)
        name = list(env)[0]
        check(name in out, "the message names %s: %r" % (name, out))


# --------------------------------------------------------------------------
# Item 17: SIGTERM closes upgraded pipes once plain requests are done
# --------------------------------------------------------------------------

@timed(40)
def test_a4_sigterm_closes_pipes_after_requests(t):
    o = t.origin("A")
    s = t.serve()
    a = t.agent(s, o, env={"GRACE": "30"})
    ws = wsclient.connect(s.port, "/ws", timeout=5)
    ws.send(b"hi")
    eq(ws.recv(5).data, b"hi", "echo through the pipe")
    c = Conn(s.port, timeout=10)
    c.request("GET", "/slow-body?ms=700&parts=3&size=10")
    r = c.read_head()
    eq(r.status, 200, "slow response head")
    t0 = time.monotonic()
    a.send(15)  # SIGTERM
    rc = a.wait_exit(10)
    took = time.monotonic() - t0
    eq(rc, 0, "agent exit status")
    check(took < 6, "agent exited promptly, not after its 30 s grace (took %.1fs)" % took)
    c.read_body(r)
    eq(len(r.body), 30, "the plain request in flight finished first")
    try:
        ws.wait_eof(5)
    except wsclient.WsError as e:
        if "reset" not in str(e):
            raise
    check(a.find(r"closing 1 upgraded pipe"), "the agent says it closed the pipe")


# --------------------------------------------------------------------------
# Item 15: a token over plain ws:// to a non-loopback host is warned
# --------------------------------------------------------------------------

def test_a4_token_in_clear_warning(t):
    cases = [("http://192.0.2.1:9", "s3cret", True),
             ("http://127.0.0.1:9", "s3cret", False),
             ("http://127.9.9.9:9", "s3cret", False),
             ("http://localhost:9", "s3cret", False),
             ("http://[::1]:9", "s3cret", False),
             ("http://192.0.2.1:9", None, False)]
    for remote, token, warn in cases:
        e = {"AGENT_ID": "w", "REMOTE_URL": remote, "LOCAL_URL": "http://127.0.0.1:2",
             "CONNECT_TIMEOUT": "1"}
        if token:
            e["CONN_TOKEN"] = token
        p = t.natwrp("agent", ["agent"], env=e)
        p.wait_for(r"connecting to", 5)
        n = p.count(r"CONN_TOKEN .*in clear")
        eq(n, 1 if warn else 0, "warnings about a clear-text token for %s token=%s"
           % (remote, token))
        check(token is None or token not in p.text(), "the token itself is never logged")
        p.terminate()
