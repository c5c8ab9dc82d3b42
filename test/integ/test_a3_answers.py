"""a3 answers that must never reach the wrong client, and requests that
survive an agent restart (issue 9, items 8, 9, 16, 17 serve side).

- A hand-made agent answers 204 / 304 / HEAD with DATA after the head, or
  more DATA than its Content-Length: the bytes never reach the client, the
  stream is reset (PROTOCOL) and the connection closes after the valid part.
- A local service sends a valid head and then a bad chunk size: the client
  gets 502 with a one-line body, not zero bytes (and a reset after bytes
  reached the client still just cuts the body).
  The same when the agent sends HEAD and RST, or HEAD and a close, at once.
- With no tunnel (the agent was killed, or its only tunnel drains after
  GOAWAY), requests (and bodiless upgrades) wait up to --queue-timeout for a
  tunnel instead of an instant 503; under load across a SIGKILL or a SIGTERM
  restart only the requests in flight on a killed tunnel fail. A draining
  tunnel is not closed by its agent's replacement, but counts against
  --max-tunnels; a draining serve answers the waiters at once."""

import signal
import socket
import struct
import threading
import time

from harness import Conn, check, eq, fail, get, timed, tunnel_upgrade
from test_55_wire import c_exact, mux, read_msg, ws_frame

RST_PROTOCOL = 4
INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Injected: 1\r\n\r\ninjected"


def head_frame(sid, status, fields=(), end=False):
    p = struct.pack(">H", status) + b"\x02OK" + struct.pack(">H", len(fields))
    for k, v in fields:
        k, v = k.encode(), v.encode()
        p += struct.pack(">H", len(k)) + k + struct.pack(">H", len(v)) + v
    return mux(2, 1 if end else 0, sid, p)


def next_open(c):
    """Skip pings/windows until serve opens a stream; returns (sid, method)."""
    while True:
        kind, m = read_msg(c)
        if kind == "msg" and m[0] == 1:
            sid = struct.unpack(">I", m[2:6])[0]
            return sid, m[7:7 + m[6]].decode()
        if kind == "close":
            fail("serve closed the tunnel while we waited for an OPEN")


def wait_rst(c, sid):
    """The code of serve's RST for sid (skipping other frames)."""
    while True:
        kind, m = read_msg(c)
        if kind == "close":
            fail("serve closed the tunnel instead of resetting stream %d" % sid)
        if kind == "msg" and m[0] == 5 and struct.unpack(">I", m[2:6])[0] == sid:
            return struct.unpack(">I", m[6:10])[0]


def past_start_window(started, queue_timeout):
    """A serve that has just started holds requests for its first tunnel
    for --queue-timeout anyway: wait that out, so that what is tested is a
    tunnel going away later (a wait on time itself, not on an event)."""
    left = started + queue_timeout + 0.3 - time.time()
    if left > 0:
        time.sleep(left)


def wait_held(s, mark, out, what):
    """Until serve logs that the request waits for a tunnel; fails if the
    client was answered first (the request was not held)."""
    deadline = time.time() + 5
    while time.time() < deadline:
        if out:
            r = out[0]
            fail("%s: answered %s at once instead of waiting for a tunnel" %
                 (what, getattr(r, "status", r)))
        if s.proc.find(r"client=\S+ .*: waiting", since=mark):
            return
        time.sleep(0.02)
    fail("%s: serve never said the request waits for a tunnel" % what)


def raw_agent(t, agent_id="wire", serve_args=()):
    s = t.serve(*serve_args)
    c, r = tunnel_upgrade(s.port, agent_id=agent_id)
    eq(r.status, 101, "raw tunnel upgrade")
    s.wait_tunnel_open(agent_id)
    return s, c


def rest_of_connection(cc, timeout=5.0):
    """Whatever the client still receives until serve closes: (bytes,
    closed), closed False when serve kept it open for timeout."""
    cc.sock.settimeout(timeout)
    out = bytes(cc.buf)
    cc.buf = b""
    try:
        while True:
            b = cc.sock.recv(65536)
            if not b:
                return out, True
            out += b
    except (socket.timeout, TimeoutError):
        return out, False
    except ConnectionResetError:
        return out, True


def _beyond_framing(t, method, status, fields, data, want_body, pipelined=False):
    """One request answered by the hand-made agent with `data` after a head
    that does not allow it; checks the client and the RST. pipelined: the
    client's next request is already sent behind the first."""
    s, c = raw_agent(t)
    cc = Conn(s.port, timeout=10)
    cc.request(method, "/x")
    if pipelined:
        cc.request("GET", "/pipelined")
    sid, got_method = next_open(c)
    eq(got_method, method, "method in OPEN")
    # DATA without END: the stream stays open, so serve must reset it.
    c.send(ws_frame(2, head_frame(sid, status, fields)) + ws_frame(2, mux(3, 0, sid, data)))
    r = cc.read_response(method=method)
    eq(r.status, status, "status the client got")
    eq(r.body, want_body, "body the client got")
    # The client's next request on this connection must never be answered
    # by the injected bytes: the connection is closed instead.
    if not pipelined:
        try:
            cc.request("GET", "/next")
        except OSError:
            pass
    rest, closed = rest_of_connection(cc)
    check(b"injected" not in rest and b"X-Injected" not in rest,
          "injected bytes reached the client: %r" % rest[:200])
    check(closed, "serve kept the connection open after the agent broke the framing")
    eq(rest, b"", "bytes after the valid response")
    code = wait_rst(c, sid)
    eq(code, RST_PROTOCOL, "serve's RST code for DATA beyond the response framing")
    s.proc.wait_for(r"beyond the response framing", 5)


@timed(30)
def test_a3_data_after_204_not_written(t):
    _beyond_framing(t, "GET", 204, [], INJECTED, b"")


@timed(30)
def test_a3_data_after_204_not_written_pipelined(t):
    _beyond_framing(t, "GET", 204, [], INJECTED, b"", pipelined=True)


@timed(30)
def test_a3_data_after_304_not_written(t):
    _beyond_framing(t, "GET", 304, [("ETag", '"a"')], INJECTED, b"")


@timed(30)
def test_a3_data_after_head_response_not_written(t):
    _beyond_framing(t, "HEAD", 200, [("Content-Length", "5")], INJECTED, b"")


@timed(30)
def test_a3_data_beyond_content_length_not_written(t):
    _beyond_framing(t, "GET", 200, [("Content-Length", "5")], b"hello" + INJECTED, b"hello")


# ------------------------------------------------------- 502, not zero bytes


class RawLocal:
    """A local service on a raw socket: for every connection it reads the
    request head, then calls answer(sock)."""

    def __init__(self, answer):
        self.answer = answer
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.url = "http://127.0.0.1:%d" % self.lsock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(sock,), daemon=True).start()

    def _one(self, sock):
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                b = sock.recv(65536)
                if not b:
                    return
                buf += b
            self.answer(sock)
        except OSError:
            pass


@timed(30)
def test_a3_bad_chunk_after_head_is_502(t):
    def answer(sock):
        # A valid head and a bad chunk size in one segment: the agent sends
        # HEAD then RST, which serve sees before the head left.
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        time.sleep(2)
        sock.close()

    local = RawLocal(answer)
    s = t.serve()
    t.agent(s, local.url)
    for i in range(3):
        cc = Conn(s.port, timeout=10)
        cc.request("GET", "/bad%d" % i)
        try:
            r = cc.read_response()
        except Exception as e:  # noqa: B902
            fail("request %d: no response at all (%r): the held head was dropped" % (i, e))
        eq(r.status, 502, "status after a reset before anything reached the client")
        check(0 < len(r.body) < 200 and r.body.count(b"\n") == 1,
              "502 body is not one line: %r" % r.body)
        cc.close()
    # A reset after bytes reached the client still just cuts the body.
    go = threading.Event()

    def answer2(sock):
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        go.wait(10)
        sock.sendall(b"zz\r\n")
        time.sleep(2)
        sock.close()

    local.answer = answer2
    cc = Conn(s.port, timeout=10)
    cc.request("GET", "/cut")
    r = cc.read_head()
    eq(r.status, 200, "head before the reset")
    line = cc._line()
    eq(line.strip(), b"5", "first chunk size")
    go.set()
    rest, closed = rest_of_connection(cc)
    check(closed, "connection not closed after a reset mid-response")
    check(b"502" not in rest and b"0\r\n\r\n" not in rest,
          "a cut body must not be completed or followed by a 502: %r" % rest)


@timed(30)
def test_a3_rst_right_after_head_is_502(t):
    """A hand-made agent sends HEAD and RST in one write: the head was only
    held, nothing reached the client, so it gets 502, not zero bytes."""
    s, c = raw_agent(t)
    cc = Conn(s.port, timeout=10)
    cc.request("GET", "/rst")
    sid, _ = next_open(c)
    c.send(ws_frame(2, head_frame(sid, 200, [("Content-Length", "5")])) +
           ws_frame(2, mux(5, 0, sid, struct.pack(">I", 3))))  # RST UPSTREAM
    r = cc.read_response()
    eq(r.status, 502, "status when the agent reset right after a held head")
    check(0 < len(r.body) < 200 and r.body.count(b"\n") == 1, "502 body: %r" % r.body)
    # The connection is still usable (the request was read completely).
    cc.request("GET", "/again")
    sid2, _ = next_open(c)
    c.send(ws_frame(2, head_frame(sid2, 200, [("Content-Length", "2")])) +
           ws_frame(2, mux(3, 1, sid2, b"ok")))
    r = cc.read_response()
    eq((r.status, r.body), (200, b"ok"), "next request on the same connection")


@timed(30)
def test_a3_tunnel_closed_right_after_head_is_502(t):
    """HEAD and a WebSocket close in one write: the tunnel is lost while the
    head is only held, so the client gets 502, not zero bytes."""
    s, c = raw_agent(t)
    cc = Conn(s.port, timeout=10)
    cc.request("GET", "/lost")
    sid, _ = next_open(c)
    c.send(ws_frame(2, head_frame(sid, 200, [("Content-Length", "5")])) +
           ws_frame(0x8, struct.pack(">H", 1001)))
    r = cc.read_response()
    eq(r.status, 502, "status when the tunnel closed right after a held head")
    check(0 < len(r.body) < 200 and r.body.count(b"\n") == 1, "502 body: %r" % r.body)


# --------------------------------------------- no failure on agent restart


def _load(port, nthreads, stop, results, lock):
    """Each thread sends GETs on a keep-alive connection until stop; records
    every status (reconnecting when serve closed the connection)."""

    def run(k):
        cc = None
        n = 0
        while not stop.is_set():
            try:
                if cc is None:
                    cc = Conn(port, timeout=20)
                cc.request("GET", "/echo?t=%d&n=%d" % (k, n))
                r = cc.read_response()
                st = r.status if r.complete else "cut"
                if not r.complete or (r.header("Connection") or "").lower() == "close":
                    cc.close()
                    cc = None
            except Exception as e:  # noqa: B902
                st = "error %r" % e
                if cc is not None:
                    cc.close()
                cc = None
            n += 1
            with lock:
                results.append(st)
        if cc is not None:
            cc.close()

    ths = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(nthreads)]
    for th in ths:
        th.start()
    return ths


def _restart_under_load(t, stop_agent, nthreads=16):
    """The agent goes away under load (stop_agent(t, serve, agent) makes it
    and waits until serve has noticed) and a new one starts 1 s later.
    Returns (the old agent, every status); the load runs until 200 more
    requests were answered after the restart."""
    o = t.origin()
    s = t.serve("--queue-timeout", "4")
    started = time.time()
    a = t.agent(s, o)
    stop = threading.Event()
    results, lock = [], threading.Lock()
    ths = _load(s.port, nthreads, stop, results, lock)
    deadline = time.time() + 10
    while len(results) < 200 and time.time() < deadline:
        time.sleep(0.05)
    past_start_window(started, 4)
    stop_agent(t, s, a)
    time.sleep(1)  # the restart delay of the scenario, not a synchronisation
    with lock:
        at_restart = len(results)
    t.agent(s, o, label="agent2")
    deadline = time.time() + 15
    while time.time() < deadline:
        with lock:
            if len(results) >= at_restart + 200:
                break
        time.sleep(0.05)
    stop.set()
    for th in ths:
        th.join(25)
    check(len(results) >= at_restart + 200, "load did not go on after the restart")
    return a, results


def _kill(t, s, a):
    mark = s.proc.mark()
    a.kill()
    s.wait_tunnel_closed("a1", since=mark, timeout=10)


def _drain(t, s, a):
    mark = s.proc.mark()
    a.send(signal.SIGTERM)
    s.proc.wait_for(r"tunnel draining tun=\d+ agent=a1", 10, since=mark)


@timed(60)
def test_a3_agent_sigkill_restart_no_503(t):
    nthreads = 16
    _, results = _restart_under_load(t, _kill, nthreads)
    bad = [st for st in results if st != 200]
    others = [st for st in bad if st not in (502, "cut")]
    check(not others, "requests failed across the agent restart (only the ones in flight on "
          "the killed tunnel may fail, with 502 or a cut body): %r of %d" % (others[:10],
                                                                              len(results)))
    check(len(bad) <= nthreads, "more failures (%d) than requests in flight (%d)" %
          (len(bad), nthreads))


@timed(60)
def test_a3_agent_sigterm_restart_no_failure(t):
    """The agent drains on SIGTERM (GOAWAY) and a new one starts 1 s later,
    under load: serve holds new requests meanwhile, so none fails."""
    a, results = _restart_under_load(t, _drain)
    eq(a.wait_exit(10), 0, "exit status of the drained agent")
    bad = [st for st in results if st != 200]
    check(not bad, "requests failed across a drained agent's restart: %r of %d" %
          (bad[:10], len(results)))


def _agent_gone(t):
    """Origin, serve (--queue-timeout 4) and an agent that has come and gone
    again after serve's start-up window: returns (origin, serve)."""
    o = t.origin()
    s = t.serve("--queue-timeout", "4")
    started = time.time()
    a = t.agent(s, o)
    past_start_window(started, 4)
    mark = s.proc.mark()
    a.terminate()
    s.wait_tunnel_closed("a1", since=mark, timeout=10)
    return o, s


@timed(30)
def test_a3_request_waits_for_returning_agent(t):
    o, s = _agent_gone(t)
    out = []

    def client():
        try:
            out.append(get(s, "/echo?waited=1", timeout=20))
        except Exception as e:  # noqa: B902
            out.append(e)

    th = threading.Thread(target=client, daemon=True)
    mark = s.proc.mark()
    th.start()
    wait_held(s, mark, out, "request after the agent went away")
    t.agent(s, o, label="agent2")
    th.join(20)
    check(out and not isinstance(out[0], BaseException), "client: %r" % out)
    eq(out[0].status, 200, "a request that waited for the agent to come back")


@timed(30)
def test_a3_websocket_waits_for_returning_agent(t):
    """A WebSocket upgrade (no body) made while the agent is away waits for
    it like any request and is then switched, not refused with 503."""
    import wsclient
    o, s = _agent_gone(t)
    out = []

    def client():
        try:
            ws = wsclient.connect(s.port, "/ws", timeout=20)
            ws.send("hello")
            out.append(ws.recv(timeout=10).data)
            ws.close()
        except Exception as e:  # noqa: B902
            out.append(e)

    th = threading.Thread(target=client, daemon=True)
    mark = s.proc.mark()
    th.start()
    wait_held(s, mark, out, "WebSocket upgrade after the agent went away")
    t.agent(s, o, label="agent2")
    th.join(20)
    check(out and not isinstance(out[0], BaseException), "client: %r" % out)
    eq(out[0], b"hello", "echo over a WebSocket that waited for the agent")


@timed(30)
def test_a3_websocket_with_early_frame_waits(t):
    """As above, with a WebSocket frame sent right behind the upgrade head:
    it reaches the service after the switch, once the agent is back."""
    o, s = _agent_gone(t)
    mark = s.proc.mark()
    cc = Conn(s.port, timeout=15)
    cc.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" +
            ws_frame(1, b"early"))
    s.proc.wait_for(r"client=\S+ .*: waiting", 5, since=mark)
    t.agent(s, o, label="agent2")
    r = cc.read_head()
    eq(r.status, 101, "upgrade that waited for the agent")
    hdr = c_exact(cc, 2)
    eq((hdr[0] & 0x0f, c_exact(cc, hdr[1] & 0x7f)), (1, b"early"), "echo of the early frame")


@timed(30)
def test_a3_no_agent_503_after_queue_timeout(t):
    o = t.origin()
    s = t.serve("--queue-timeout", "1")
    started = time.time()
    a = t.agent(s, o)
    past_start_window(started, 1)
    mark = s.proc.mark()
    a.terminate()
    s.wait_tunnel_closed("a1", since=mark, timeout=10)
    t0 = time.time()
    r = get(s, "/echo", timeout=10)
    dt = time.time() - t0
    eq(r.status, 503, "no agent within --queue-timeout")
    check(0 < len(r.body) < 200, "503 body %r" % r.body)
    check(dt >= 0.5, "503 after %.2fs: the request did not wait for a tunnel" % dt)


@timed(30)
def test_a3_goaway_holds_requests_for_new_tunnel(t):
    """The only tunnel drains (GOAWAY from its agent): a new request waits
    for the agent's replacement tunnel (same id), and the draining tunnel is
    not closed by the replacement: its stream in flight still completes."""
    o = t.origin()
    s, c = raw_agent(t, agent_id="a1", serve_args=("--queue-timeout", "4"))
    past_start_window(time.time(), 4)
    first = []

    def client(target, out):
        try:
            out.append(get(s, target, timeout=20))
        except Exception as e:  # noqa: B902
            out.append(e)

    th1 = threading.Thread(target=client, args=("/inflight", first), daemon=True)
    th1.start()
    sid, _ = next_open(c)
    c.send(ws_frame(2, mux(6, 0, 0, struct.pack(">II", sid, 0))))  # GOAWAY last=sid
    s.proc.wait_for(r"tunnel draining tun=\d+ agent=a1", 5)
    second = []
    mark = s.proc.mark()
    th2 = threading.Thread(target=client, args=("/echo?second=1", second), daemon=True)
    th2.start()
    wait_held(s, mark, second, "request while the only tunnel drains")
    t.agent(s, o, agent_id="a1", label="agent2")
    th2.join(15)
    check(second and not isinstance(second[0], BaseException), "client: %r" % second)
    eq(second[0].status, 200, "request held while the only tunnel drained")
    # The draining tunnel still finishes its stream.
    c.send(ws_frame(2, head_frame(sid, 200, [("Content-Length", "4")])) +
           ws_frame(2, mux(3, 1, sid, b"done")))
    th1.join(10)
    check(first and not isinstance(first[0], BaseException), "in-flight client: %r" % first)
    eq((first[0].status, first[0].body), (200, b"done"), "stream on the draining tunnel")


@timed(30)
def test_a3_drain_answers_requests_waiting_for_a_tunnel(t):
    """A draining serve takes no new tunnel, so a request waiting for one
    is answered 503 at once (not cut when the grace ends), and serve exits."""
    s = t.serve("--queue-timeout", "20")
    out = []

    def client():
        try:
            out.append(get(s, "/echo?drain=1", timeout=20))
        except Exception as e:  # noqa: B902
            out.append(e)

    mark = s.proc.mark()
    th = threading.Thread(target=client, daemon=True)
    th.start()
    wait_held(s, mark, out, "request with no agent")
    s.proc.send(signal.SIGTERM)
    th.join(10)
    check(out and not isinstance(out[0], BaseException), "client: %r" % out)
    eq(out[0].status, 503, "request waiting for a tunnel when serve drains")
    eq(s.proc.wait_exit(10), 0, "serve's exit status after the drain")


@timed(30)
def test_a3_draining_tunnels_count_against_max_tunnels(t):
    """A draining tunnel is not replaced by its agent's next one, so it
    counts against --max-tunnels: an agent that sends GOAWAY and reconnects
    over and over cannot pile up tunnels past the limit."""
    s = t.serve("--max-tunnels", "2")
    held = []
    for i in range(2):
        c, r = tunnel_upgrade(s.port, agent_id="a1")
        eq(r.status, 101, "tunnel %d of a1" % (i + 1))
        held.append(c)
        mark = s.proc.mark()
        c.send(ws_frame(2, mux(6, 0, 0, struct.pack(">II", 0, 0))))  # GOAWAY
        s.proc.wait_for(r"tunnel draining tun=\d+ agent=a1", 5, since=mark)
    c, r = tunnel_upgrade(s.port, agent_id="a1")
    eq(r.status, 503, "a third tunnel while two drain at --max-tunnels 2")
    c.close()
    # Once a draining tunnel ends, there is room again.
    mark = s.proc.mark()
    held[0].close()
    s.wait_tunnel_closed("a1", since=mark, timeout=10)
    c, r = tunnel_upgrade(s.port, agent_id="a1")
    eq(r.status, 101, "a tunnel after a draining one closed")


@timed(30)
def test_a3_upgrade_with_body_waits_for_returning_agent(t):
    """An upgrade that carries a Content-Length body (h2c-style POST) also
    waits for a tunnel: its body is parsed and sent as DATA once a tunnel is
    there, and the bytes after it are held until the service's 101."""
    o, s = _agent_gone(t)
    mark = s.proc.mark()
    cc = Conn(s.port, timeout=15)
    cc.send(b"POST /raw-upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: made-up\r\n"
            b"Connection: Upgrade\r\nContent-Length: 4\r\n\r\nbody" + b"early")
    s.proc.wait_for(r"client=\S+ .*: waiting", 5, since=mark)
    t.agent(s, o, label="agent2")
    r = cc.read_head()
    eq(r.status, 101, "upgrade with a body that waited for the agent")
    cc.sock.shutdown(socket.SHUT_WR)
    got = b""
    while not got.endswith(b"bye"):
        got += c_exact(cc, 1)
    # The service reads the request's body, answers 101, then echoes the
    # bytes that follow it (held by serve until then), upper-cased.
    eq(got, b"EARLYbye", "bytes through the pipe")
