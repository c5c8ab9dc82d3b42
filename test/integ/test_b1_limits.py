"""b1 limits (issue 4): --max-url (414), --max-headers (431), --head-timeout
(408), --idle-timeout, --max-streams with --queue-timeout (503 / waiting),
--max-conns (503), --max-tunnels (503), --max-agent-tunnels (429), and the
agent's MAX_LOCAL_CONNS / LOCAL_QUEUE (503 from the agent)."""

import os
import re
import select
import socket
import time

from harness import (Conn, check, echo, eq, get, timed, tunnel_upgrade)


def _short_text(r, code):
    eq(r.status, code, "status (body %r)" % r.body[:200])
    check(0 < len(r.body) < 1024, "%d wants a short text body, got %r" % (code, r.body[:200]))


def _refused_and_closed(c, code, what):
    r = c.read_response()
    _short_text(r, code)
    check(c.wait_closed(10), "connection not closed after %d (%s)" % (code, what))
    c.close()
    return r


# ------------------------------------------------------------------ --max-url


@timed(20)
def test_max_url_414(t):
    o, s, a = t.stack(serve_args=["--max-url", "1024"])
    for n in (1000, 1024):
        target = "/echo?" + "u" * (n - 6)
        eq(len(target), n, "target length")
        eq(echo(s, target)["path"], target, "target of %d bytes" % n)
    for n in (1025, 2000):
        c = Conn(s.port)
        c.request("GET", "/echo/long?" + "v" * (n - 11))
        _refused_and_closed(c, 414, "target of %d bytes" % n)
    check("/echo/long" not in o.proc.text(), "origin received an over-long target")
    eq(echo(s, "/echo?after=414")["path"], "/echo?after=414", "request after the 414s")


# -------------------------------------------------------------- --max-headers


@timed(20)
def test_max_headers_431(t):
    o, s, a = t.stack(serve_args=["--max-headers", "20"])
    # 15 extra headers (+ Host), and exactly 20 fields, pass.
    for n in (15, 19):
        e = echo(s, "/echo/h%d" % n, headers=[("X-H%d" % i, str(i)) for i in range(n)])
        eq([v for k, v in e["headers"] if k.startswith("X-H")], [str(i) for i in range(n)],
           "%d extra headers at the origin" % n)
    # 21 fields and 25 extra headers: refused, connection closed.
    for n in (20, 25):
        c = Conn(s.port)
        c.request("GET", "/echo/many%d" % n, [("X-H%d" % i, str(i)) for i in range(n)])
        _refused_and_closed(c, 431, "%d extra headers" % n)
    check("/echo/many" not in o.proc.text(), "origin received a request over --max-headers")
    eq(echo(s, "/echo?after=431")["path"], "/echo?after=431", "request after the 431s")


# ------------------------------------------------------------- --head-timeout


@timed(30)
def test_head_timeout_408(t):
    o, s, a = t.stack(serve_args=["--head-timeout", "1"])
    # Slowloris: part of a head, then nothing.
    mark = s.proc.mark()
    c = Conn(s.port, timeout=8)
    t0 = time.monotonic()
    c.send(b"GET /echo/stalled HTTP/1.1\r\nHost: x\r\n")
    r = c.read_response()
    dt = time.monotonic() - t0
    _short_text(r, 408)
    check(c.wait_closed(5), "connection not closed after 408")
    c.close()
    check(0.8 <= dt <= 4.0, "408 came after %.2fs with --head-timeout 1" % dt)
    s.proc.wait_for(r"request head not received in time: 408", 5, since=mark)

    # Dripping one byte every 200 ms does not extend the deadline. The drip
    # is the client's behaviour under test, so it is timed on purpose; it
    # stops as soon as serve answers.
    mark = s.proc.mark()
    c = Conn(s.port, timeout=8)
    t0 = time.monotonic()
    c.send(b"GET /echo/drip HTTP/1.1\r\nHost: x\r\nX-Drip: ")
    sent = 0
    while time.monotonic() - t0 < 6.0:
        readable, _, _ = select.select([c.sock], [], [], 0.2)
        if readable:
            break
        try:
            c.send(b"d")
        except OSError:
            break
        sent += 1
    r = c.read_response()
    dt = time.monotonic() - t0
    _short_text(r, 408)
    check(c.wait_closed(5), "connection not closed after 408 (drip)")
    c.close()
    check(dt <= 4.0, "408 for a dripping client came after %.2fs (%d bytes dripped) with "
          "--head-timeout 1" % (dt, sent))
    check(sent >= 3, "only %d bytes were dripped before the 408" % sent)
    s.proc.wait_for(r"request head not received in time: 408", 5, since=mark)
    check("/echo/stalled" not in o.proc.text() and "/echo/drip" not in o.proc.text(),
          "origin received a head that timed out")

    # A head that arrives in time, even in pieces, is fine.
    c = Conn(s.port)
    c.send(b"GET /echo/pieces HTTP/1.1\r\n")
    c.send(b"Host: x\r\n\r\n")
    r = c.read_response()
    eq(r.status, 200, "head sent in two pieces")
    c.close()


# ------------------------------------------------------------- --idle-timeout


@timed(30)
def test_idle_timeout(t):
    o, s, a = t.stack(serve_args=["--idle-timeout", "1"])
    c = Conn(s.port)
    c.request("GET", "/echo/idle")
    r = c.read_response()
    eq(r.status, 200, "first request")
    t0 = time.monotonic()
    check(c.wait_closed(5), "idle keep-alive connection not closed within 5s (--idle-timeout 1)")
    dt = time.monotonic() - t0
    check(dt >= 0.7, "idle connection closed after only %.2fs (--idle-timeout 1)" % dt)
    c.close()
    # A connection that never sends anything is idle too.
    c = Conn(s.port)
    t0 = time.monotonic()
    check(c.wait_closed(5), "silent connection not closed within 5s (--idle-timeout 1)")
    dt = time.monotonic() - t0
    check(dt >= 0.7, "silent connection closed after only %.2fs" % dt)
    c.close()
    # A busy connection is not idle: a response slower than the idle
    # timeout still arrives, and the connection then stays usable.
    c = Conn(s.port)
    c.request("GET", "/sleep?ms=1500")
    eq(c.read_response().status, 200, "request slower than --idle-timeout")
    c.request("GET", "/echo/after-slow")
    r = c.read_response(allow_eof=True)
    check(r is not None, "connection closed right after a slow response")
    eq(r.status, 200, "request after the slow one")
    c.close()


# ------------------------------------------------ --max-streams, --queue-timeout


@timed(30)
def test_max_streams_queue_timeout_503(t):
    o, s, a = t.stack(serve_args=["--max-streams", "2", "--queue-timeout", "1"])
    hangs = []
    for i in (1, 2):
        mark = o.proc.mark()
        c = Conn(s.port)
        c.request("GET", "/hang/q%d" % i)
        o.proc.wait_for(r"event hang-start path=/hang/q%d$" % i, 10, since=mark)
        hangs.append(c)
    mark = s.proc.mark()
    c = Conn(s.port)
    t0 = time.monotonic()
    c.request("GET", "/echo/third")
    r = c.read_response()
    dt = time.monotonic() - t0
    _short_text(r, 503)
    check(r.header("Retry-After") is not None, "503 without Retry-After: %r" % r.headers)
    check(0.8 <= dt <= 3.0, "queued request got 503 after %.2fs with --queue-timeout 1" % dt)
    s.proc.wait_for(r"every tunnel is at --max-streams \(2\): waiting", 5, since=mark)
    s.proc.wait_for(r"every tunnel stayed at --max-streams \(2\)", 5, since=mark)
    c.close()
    check("/echo/third" not in o.proc.text(), "origin received the request that got 503")
    # Freeing the slots lets requests through again.
    mark = o.proc.mark()
    for c in hangs:
        c.close()
    for i in (1, 2):
        o.proc.wait_for(r"event aborted path=/hang/q%d$" % i, 10, since=mark)
    eq(echo(s, "/echo/after-free")["path"], "/echo/after-free", "request after the slots freed")


@timed(30)
def test_max_streams_queue_waits(t):
    o, s, a = t.stack(serve_args=["--max-streams", "1", "--queue-timeout", "10"])
    # The first request holds the only slot for ~800 ms (hang-start is its
    # event), the second waits for it and is then served.
    mark = o.proc.mark()
    c1 = Conn(s.port)
    c1.request("GET", "/hang/first?max_ms=800")
    o.proc.wait_for(r"event hang-start path=/hang/first$", 10, since=mark)
    smark = s.proc.mark()
    c2 = Conn(s.port)
    c2.request("GET", "/echo/second")
    s.proc.wait_for(r"every tunnel is at --max-streams \(1\): waiting", 5, since=smark)
    r1 = c1.read_response()
    eq(r1.status, 200, "first request")
    # The slot is free now: the queued request must reach the origin.
    o.proc.wait_for(r'"GET /echo/second HTTP/1.1" 200', 5, since=mark)
    r2 = c2.read_response()
    eq(r2.status, 200, "queued request (body %r)" % r2.body[:200])
    eq(r2.json()["path"], "/echo/second", "queued request's path")
    lines = o.proc.text().splitlines()
    first_done = next(i for i, x in enumerate(lines) if "event hang-timeout path=/hang/first" in x)
    second = next(i for i, x in enumerate(lines) if "/echo/second" in x)
    check(first_done < second, "origin answered the queued request before the first finished")
    c1.close()
    c2.close()


# ---------------------------------------------------------------- --max-conns


@timed(30)
def test_max_conns_503(t):
    o, s, a = t.stack(serve_args=["--max-conns", "3"])
    conns = []
    for i in range(3):
        c = Conn(s.port)
        c.request("GET", "/echo/c%d" % i)
        eq(c.read_response().status, 200, "request on connection %d" % i)
        conns.append(c)
    mark = s.proc.mark()
    c4 = Conn(s.port)
    r = c4.read_response()  # serve answers at once, without a request
    _short_text(r, 503)
    eq(r.version, "HTTP/1.1", "version of the 503")
    check(c4.wait_closed(10), "4th connection not closed after 503")
    c4.close()
    s.proc.wait_for(r"refused: --max-conns \(3\) reached", 5, since=mark)
    # The three are untouched.
    for i, c in enumerate(conns):
        c.request("GET", "/echo/again%d" % i)
        r = c.read_response(allow_eof=True)
        check(r is not None, "connection %d was closed by the refusal of a 4th" % i)
        eq(r.status, 200, "second request on connection %d" % i)
    # Closing one frees its place: half-close, and once serve has closed its
    # side (EOF here) the count is down.
    c = conns.pop(0)
    c.sock.shutdown(socket.SHUT_WR)
    check(c.wait_closed(10), "serve did not close a connection the client half-closed")
    c.close()
    mark = s.proc.mark()
    c5 = Conn(s.port)
    c5.request("GET", "/echo/c5")
    r = c5.read_response(allow_eof=True)
    check(r is not None, "new connection after one closed: closed without a response")
    eq(r.status, 200, "new connection after one of the three closed")
    check(not s.proc.find(r"refused: --max-conns", since=mark),
          "new connection was refused after one closed")
    c5.close()
    for c in conns:
        c.close()


# ------------------------------------------------ --max-tunnels, --max-agent-tunnels


@timed(30)
def test_max_tunnels_503(t):
    o = t.origin("A")
    s = t.serve("--max-tunnels", "1")
    a1 = t.agent(s, o, agent_id="a1", label="agent-a1")
    mark = s.proc.mark()
    a2 = t.agent(s, o, agent_id="a2", wait=False, label="agent-a2")
    s.proc.wait_for(r"tunnel refused from [0-9.]+:\d+ agent=a2: 503 too many tunnels on this "
                    r"server", 10, since=mark)
    a2.wait_for(r"tunnel down agent=a2 reason=server refused the tunnel: 503", 10)
    check(not s.proc.find(r"tunnel open tun=\d+ agent=a2\b"), "a2 got a tunnel")
    # By hand too (no agent retry timing involved).
    c, r = tunnel_upgrade(s.port, agent_id="raw2")
    c.close()
    eq(r.status, 503, "hand-made upgrade of raw2 at --max-tunnels 1")

    # a1 comes back while its old tunnel is still registered (the old agent
    # is frozen, as after a silent network loss): same id, so it replaces
    # itself and is allowed.
    a1.stop()
    mark = s.proc.mark()
    t.agent(s, o, agent_id="a1", label="agent-a1-new")
    s.proc.wait_for(r"tunnel replaced tun=\d+ agent=a1 by tun=\d+", 5, since=mark)
    a1.kill()
    eq(echo(s, "/echo/after-replace")["path"], "/echo/after-replace", "request via the new a1")
    check(not s.proc.find(r"tunnel open tun=\d+ agent=a2\b"), "a2 got a tunnel")
    check(a2.alive(), "a2 exited")


@timed(30)
def test_max_agent_tunnels_429(t):
    o = t.origin("A")
    s = t.serve("--max-agent-tunnels", "2")
    a = t.agent(s, o, agent_id="m", env={"MAX_CONN": "3"}, wait=False, label="agent-m")
    opened = set()
    since = 0
    while len(opened) < 2:
        m = s.proc.wait_for(r"tunnel open tun=\d+ agent=(m-[123])\b", 10, since)
        opened.add(m.group(1))
        since = s.proc.last_at + 1
    m = s.proc.wait_for(r"tunnel refused from [0-9.]+:\d+ agent=(m-[123]): 429 too many "
                        r"tunnels for this AGENT_ID", 10)
    refused = m.group(1)
    eq(sorted(opened | {refused}), ["m-1", "m-2", "m-3"], "tunnels opened %s, refused %s"
       % (sorted(opened), refused))
    a.wait_for(r"tunnel down agent=%s reason=server refused the tunnel: 429" % refused, 10)
    check(not s.proc.find(r"tunnel open tun=\d+ agent=%s\b" % refused),
          "the third tunnel %s was opened" % refused)
    eq(echo(s, "/echo/via-m")["path"], "/echo/via-m", "request via the m tunnels")
    # The limit is per AGENT_ID: another agent still gets in.
    t.agent(s, o, agent_id="other", label="agent-other")
    check(not s.proc.find(r"tunnel open tun=\d+ agent=%s\b" % refused),
          "the third tunnel %s was opened" % refused)


# ------------------------------------------------- MAX_LOCAL_CONNS, LOCAL_QUEUE


@timed(30)
def test_agent_local_limits(t):
    o, s, a = t.stack(agent_env={"MAX_LOCAL_CONNS": "1", "LOCAL_QUEUE": "1"})
    # One request runs at the local service (hang-start is its event) ...
    mark = o.proc.mark()
    c1 = Conn(s.port, timeout=15)
    c1.request("GET", "/hang/run?max_ms=1500")
    o.proc.wait_for(r"event hang-start path=/hang/run$", 10, since=mark)
    # ... then two more: one waits (LOCAL_QUEUE=1), one is refused.
    amark = a.mark()
    c2 = Conn(s.port, timeout=15)
    c3 = Conn(s.port, timeout=15)
    c2.request("GET", "/sleep?ms=300&c=2")
    c3.request("GET", "/sleep?ms=300&c=3")
    a.wait_for(r"local connections busy", 10, since=amark)
    # Whichever of the two reached the agent second got the 503, at once.
    conns = {c2: "c=2", c3: "c=3"}
    ready, _, _ = select.select([c2.sock, c3.sock], [], [], 10)
    check(ready, "neither queued request was answered")
    refused = c2 if c2.sock in ready else c3
    queued = c3 if refused is c2 else c2
    r = refused.read_response()
    eq(r.status, 503, "status of the request over MAX_LOCAL_CONNS + LOCAL_QUEUE")
    check(b"too many requests for the local service" in r.body,
          "503 body %r" % r.body[:200])
    check(r.header("Retry-After") is not None, "agent's 503 without Retry-After: %r" % r.headers)
    r1 = c1.read_response()
    eq(r1.status, 200, "the running request")
    r2 = queued.read_response()
    eq(r2.status, 200, "the waiting request (%s)" % conns[queued])
    check(o.proc.find(r"GET /sleep\?ms=300&%s " % re.escape(conns[queued])),
          "origin never logged the waiting request")
    check(not o.proc.find(r"GET /sleep\?ms=300&%s " % re.escape(conns[refused])),
          "origin received the refused request (%s)" % conns[refused])
    for c in (c1, c2, c3):
        c.close()
    eq(echo(s, "/echo/after-local-limit")["path"], "/echo/after-local-limit", "request afterwards")


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@timed(30)
def test_queued_request_keeps_alive_and_does_not_spin(t):
    """A request that waited for a slot is answered like any other (keep-
    alive kept), and while it waits serve sleeps instead of spinning."""
    o, s, a = t.stack(serve_args=["--max-streams", "1", "--queue-timeout", "10"])
    mark = o.proc.mark()
    c1 = Conn(s.port)
    c1.request("GET", "/hang/first?max_ms=2500")
    o.proc.wait_for(r"event hang-start path=/hang/first$", 10, since=mark)
    smark = s.proc.mark()
    c2 = Conn(s.port)
    c2.request("GET", "/echo/queued")
    s.proc.wait_for(r"every tunnel is at --max-streams \(1\): waiting", 5, since=smark)
    # A resource check, not a timing one: CPU serve burns while it waits.
    before = _cpu_seconds(s.proc.pid)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        time.sleep(0.1)  # the measurement window itself
    used = _cpu_seconds(s.proc.pid) - before
    check(used < 0.6, "serve used %.2f s of CPU in 1.5 s with one request queued" % used)
    eq(c1.read_response().status, 200, "first request")
    r = c2.read_response()
    eq(r.status, 200, "queued request")
    check((r.header("Connection") or "").lower() != "close",
          "the queued request lost keep-alive: %r" % r.headers)
    c2.request("GET", "/echo/again")
    eq(c2.read_response().status, 200, "a second request on the same connection")
    c1.close()
    c2.close()


@timed(30)
def test_refused_upgrade_answered_at_once(t):
    """An Upgrade request refused by serve itself (401 without the token,
    503 without an agent) gets its status at once, not a 408 later."""
    o = t.origin()
    s = t.serve("--auth-token", "sekrit", "--head-timeout", "30", "--queue-timeout", "0.2")
    a = t.agent(s, o)
    ws = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
          ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
    c = Conn(s.port, timeout=10)
    c.request("GET", "/ws", ws)
    r = c.read_response()
    eq(r.status, 401, "upgrade without the token")
    check(r.header("WWW-Authenticate"), "401 without WWW-Authenticate")
    c.close()
    a.terminate()
    s.wait_tunnel_closed("a1")
    c = Conn(s.port, timeout=10)
    c.request("GET", "/ws", ws + [("X-Auth-Token", "sekrit")])
    eq(c.read_response().status, 503, "upgrade with no agent connected")
    c.close()
