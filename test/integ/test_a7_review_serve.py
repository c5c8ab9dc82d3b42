"""a7: a hostile review of serve after issue 9 (smuggling, auth rule, base
path, hostile agents, refusals).

- A request target with a fragment ('#') gets 400: serve's path checks end
  the path at '#', but a service may not (Go's net/http takes
  "/public#/../private" as a path and cleans it to "/private"), so
  AUTH_RULE and the LOCAL_URL base-path check were bypassed. The agent
  refuses such a target from a hostile server too (path.c).
- A client that takes none of its response held its stream slot forever:
  such a response is cut after --body-timeout; a slow reader is not.
- A hostile agent's 1-byte DATA frames to a client that does not read cost
  some 350 bytes of serve memory per byte of window (a write request and a
  chunk header each); bytes that arrive while a write is queued are now held
  raw and leave as one chunk.
- A client's 1-byte request chunks each became a DATA frame (and a queue
  entry while the tunnel was congested); one read's body bytes now go as one.
- HTTP/0.9 and HTTP/2.0 request lines (which llhttp takes) get 505 instead
  of being forwarded as HTTP/1.1; "*" is a target only for OPTIONS.
- A bare LF or obs-fold in a chunked request's trailer section (llhttp takes
  them even in strict mode) gets 400 like in a head.
- An upgrade to HTTP (h2c) is not forwarded: a service that switched would
  take requests for any path on the pipe, past AUTH_RULE.
- AUTH_RULE matches in any case (Express and ASP.NET route /PRIVATE as
  /private by default).
- X-Original-URL and X-Rewrite-URL (a path AUTH_RULE never saw, for services
  made for IIS) are dropped unless --trust-proxy.
- A 204 from the agent never carries Content-Length to the client.
- At the end of --grace, requests still waiting (for a slot or a head) get
  503 with a one-line body, not zero bytes.
- Refusals on the tunnel path are logged and close the connection.
- Each refused request is one log line with its reason (no second generic
  "bad request: 400" line for the same refusal)."""

import re
import socket
import struct
import time

from harness import Conn, TestFailure, check, eq, fail, timed
from test_a1_paths import Recorder, _stack, _req, _refused, TOKEN


def _lines(proc, pattern, since):
    """The log lines from since that match pattern, once at least one has
    arrived (the log is read asynchronously) and a moment has passed for a
    second one."""
    try:
        proc.wait_for(pattern, 5, since=since)
    except TestFailure:
        return []
    time.sleep(0.2)
    return [m.string for m in proc.find(pattern, since=since)]


# -- fragments ---------------------------------------------------------------

def test_fragment_in_target_gets_400(t):
    rec, s = _stack(t, ["--auth-token", TOKEN, "--auth-rule", r"^/private"], base="/app")
    try:
        shapes = ["/public#/../private", "/x#/../../secret", "/x?a#b", "/x#",
                  "http://h/public#/../private", "http://h#/../private"]
        _refused(t, rec, s, [("fragment", "GET", p, [], None) for p in shapes], 400,
                 "fragment-targets")
        check(s.proc.find(r"bad request: 400 \(a fragment \('#'\) in the request target\)"),
              "serve logged no reason for the fragments")
        # An encoded '#' is an ordinary path byte: the rule still sees it.
        r, _ = _req(s, "GET", "/public%23/../private")
        eq(r.status, 401, "/public%23/../private without the token")
    finally:
        rec.close()



def test_agent_refuses_fragment_from_server(t):
    """A hostile server sends the agent OPEN /x#/../../secret: the agent's
    base-path check ended the path at '#' too, so the target reached a
    LOCAL_URL with a base path as /app/x#/../../secret. nw_path_normalize
    now refuses any target with a fragment, so the agent resets it."""
    from fakeserver import HEAD, RST
    from test_a1_paths import agent_answers
    rec = Recorder()
    try:
        bad = ["/x#/../../secret", "/x?q#/../../../secret"]
        got = agent_answers(t, rec, bad + ["/fine"])
        for target in bad:
            eq(got[target].type, RST, "agent's answer to OPEN %s (RST)" % target)
        eq(got["/fine"].type, HEAD, "agent's answer to OPEN /fine (a HEAD)")
        rec.wait_target("/app/fine")
        eq(rec.targets(), ["/app/fine"], "targets at the local service")
    finally:
        rec.close()


# -- one log line per refusal -------------------------------------------------

def test_refusal_logged_once(t):
    """Every refusal before the request leaves serve is one line naming the
    connection, the status and why; never a reason line plus a generic one."""
    rec, s = _stack(t, ["--auth-token", TOKEN, "--auth-rule", r"^/private"])
    try:
        cases = [
            (400, b"GET /x HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\n\r\n",
             r"CGI reads"),
            (400, b"GET /../x HTTP/1.1\r\nHost: h\r\n\r\n", r"climbs above the root"),
            (400, b"GET /x HTTP/1.1\r\nX-Natwrp-Agent: a\r\nHost: h\r\n\r\n", r"X-Natwrp"),
            (400, b"GET /x HTTP/1.1\r\n\r\n", r"without Host"),
            (400, b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", r"more than one Host"),
            (400, b"GET /x#y HTTP/1.1\r\nHost: h\r\n\r\n", r"fragment"),
            (401, b"POST /private HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n", r"unauthorized"),
            (401, b"GET /private HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\n", r"unauthorized"),
        ]
        bad = []
        for status, raw, why in cases:
            mark = s.proc.mark()
            r, _ = _req(s, None, None, raw=raw)
            if r.status != status:
                bad.append("%r: status %s, want %s" % (raw[:40], r.status, status))
                continue
            lines = _lines(s.proc, r"conn=\d+ client=\S+ .*: %d\b" % status, mark)
            if len(lines) != 1 or not re.search(why, lines[0]):
                bad.append("%r: %d line(s) for one refusal: %r" % (raw[:40], len(lines), lines))
        if bad:
            fail("refusals not logged as one clear line:\n  " + "\n  ".join(bad))
        eq(rec.targets(), [], "refused requests that reached the local service")
    finally:
        rec.close()



def test_tunnel_path_refusals_logged_and_closed(t):
    """Refusals on the tunnel path before the agent is known (not an
    upgrade, a bad Sec-WebSocket-Key or -Version, a bad X-Natwrp-Window)
    were answered with no log line at all, and the 426 kept the connection
    open on a parser stopped at an upgrade."""
    s = t.serve()
    base = (b"GET /_natwrp/tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Protocol: natwrp.1\r\n"
            b"X-Natwrp-Agent: a1\r\n")
    key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    cases = [
        (426, b"GET /_natwrp/tunnel HTTP/1.1\r\nHost: h\r\n\r\n", "reserved for agent"),
        (426, base + key + b"Sec-WebSocket-Version: 8\r\n\r\n", "Version"),
        (400, base + b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: x\r\n\r\n",
         "Sec-WebSocket-Key"),
        (400, base + key + b"Sec-WebSocket-Version: 13\r\nX-Natwrp-Window: 5\r\n\r\n",
         "X-Natwrp-Window"),
        (400, base.replace(b"X-Natwrp-Agent: a1", b"X-Natwrp-Agent: a b") + key +
         b"Sec-WebSocket-Version: 13\r\n\r\n", "X-Natwrp-Agent"),
    ]
    bad = []
    for status, raw, why in cases:
        mark = s.proc.mark()
        c = Conn(s.port, timeout=5)
        c.send(raw)
        r = c.read_response("GET")
        if r.status != status:
            bad.append("%r: status %s, want %s" % (why, r.status, status))
        if not c.wait_closed(5):
            bad.append("%r: connection kept open after the refusal" % why)
        c.close()
        lines = _lines(s.proc, r"tunnel refused from \S+ .*%d" % status, mark)
        if len(lines) != 1 or why not in lines[0]:
            bad.append("%r: log lines %r" % (why, lines))
    if bad:
        fail("tunnel-path refusals:\n  " + "\n  ".join(bad))


def test_head_too_large_for_a_frame_logged_once(t):
    """A head within --max-head but too large for one OPEN frame gets 431:
    logged once, saying why (it was logged only as a generic 'bad request:
    431 (Request Header Fields Too Large)')."""
    rec, s = _stack(t, ["--max-head", "1m"])
    try:
        raw = b"GET /big HTTP/1.1\r\nHost: h\r\n" + b"".join(
            b"X-F%d: %s\r\n" % (i, b"v" * 3000) for i in range(100)) + b"\r\n"
        mark = s.proc.mark()
        r, _ = _req(s, None, None, raw=raw)
        eq(r.status, 431, "status for a head too large for a frame")
        lines = _lines(s.proc, r"conn=\d+ client=\S+ .*\b431\b", mark)
        check(len(lines) == 1 and "too large for a frame" in lines[0],
              "one clear line for the 431: %r" % lines)
        eq(rec.targets(), [], "requests that reached the local service")
    finally:
        rec.close()



# -- a client that stops reading a response -----------------------------------

def _stalled_reader(port, n):
    """A client that asks for a large body and never reads it."""
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(("127.0.0.1", port))
    c.sendall(b"GET /bytes?n=%d HTTP/1.1\r\nHost: h\r\n\r\n" % n)
    return c


@timed(40)
def test_stalled_reader_frees_its_slot(t):
    """Clients that take none of their responses held their stream slots
    forever (no timer while a response is under way), so every other client
    got 503. A response the client takes nothing of for --body-timeout
    closes its connection and frees the slot; one that the client reads
    slowly, and a service that is slow, are not cut."""
    o, s, a = t.stack(["--max-streams", "2", "--queue-timeout", "1", "--body-timeout", "2"])
    stalled = [_stalled_reader(s.port, 200000000) for _ in range(2)]
    try:
        deadline = time.time() + 10
        while time.time() < deadline and s.proc.count(r"the client took none") < 2:
            time.sleep(0.1)
        c = Conn(s.port, timeout=10)
        c.request("GET", "/name")
        r = c.read_response("GET")
        eq(r.status, 200, "a request after two stalled readers")
        c.close()
        eq(s.proc.count(r"the client took none of the response for 2000 ms: closing"), 2,
           "stalled readers cut")
        # A slow reader that keeps taking bytes is not cut.
        slow = _stalled_reader(s.port, 1000000)
        got, deadline = 0, time.time() + 20
        while time.time() < deadline:
            b = slow.recv(65536)
            if not b:
                break
            got += len(b)
            if got >= 1000000:
                break
            time.sleep(0.02)
        check(got >= 1000000, "a slow reader was cut after %d bytes" % got)
        slow.close()
    finally:
        for c in stalled:
            c.close()



def _tunnel_msgs(c, quiet):
    """Every complete message serve sends on the raw tunnel c until it has
    been quiet for `quiet` seconds (pings included as they are)."""
    out = []
    c.sock.settimeout(quiet)
    while True:
        try:
            b = c.sock.recv(1 << 20)
        except (socket.timeout, TimeoutError):
            break
        if not b:
            break
        c.buf += b
    buf = bytes(c.buf)
    while len(buf) >= 2:
        n, off = buf[1] & 0x7f, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, off = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, off = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < off + n:
            break
        if buf[0] & 0x0f == 2:
            out.append(buf[off:off + n])
        buf = buf[off + n:]
    c.buf = buf
    return out



def _read_chunked(sock, timeout=30):
    """Read one chunked response from sock; returns its body."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = sock.recv(65536)
        check(b, "the client connection closed before the response head")
        buf += b
    head, _, buf = buf.partition(b"\r\n\r\n")
    check(b"transfer-encoding: chunked" in head.lower(), "response not chunked: %r" % head)
    body = b""
    while True:
        while b"\r\n" not in buf:
            b = sock.recv(65536)
            check(b, "the client connection closed mid-body (%d bytes)" % len(body))
            buf += b
        line, _, buf = buf.partition(b"\r\n")
        n = int(line, 16)
        while len(buf) < n + 2:
            b = sock.recv(1 << 20)
            check(b, "the client connection closed mid-chunk (%d bytes)" % len(body))
            buf += b
        eq(buf[n:n + 2], b"\r\n", "CRLF after chunk data")
        body += buf[:n]
        buf = buf[n + 2:]
        if n == 0:
            return body


@timed(60)
def test_tiny_data_frames_to_a_client_that_does_not_read(t):
    """A hostile agent answers with 1-byte DATA frames while the client
    reads nothing: serve held each as its own write (request, chunk header),
    some 350 bytes of memory per byte of window (2 streams: +90 MB). Bytes
    that arrive while a write is queued are held raw and leave as one chunk:
    memory stays near the window, and the client still gets every byte."""
    from test_a3_answers import raw_agent, next_open, head_frame
    from test_55_wire import ws_frame, mux
    s, c = raw_agent(t)
    clients, credit, sent = [], {}, {}
    for i in range(2):
        cc = socket.socket()
        cc.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        cc.connect(("127.0.0.1", s.port))
        cc.sendall(b"GET /x%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
        sid, _ = next_open(c)
        c.send(ws_frame(2, head_frame(sid, 200)))
        clients.append((sid, cc))
        credit[sid], sent[sid] = 262144, b""
    # Fill the client's socket buffers with large frames, keeping half the
    # window, until serve stops granting credit (nothing more is taken).
    big = b"y" * 16384
    while True:
        for sid in credit:
            while credit[sid] >= 131072 + 16384:
                c.send(ws_frame(2, mux(3, 0, sid, big)))
                credit[sid] -= 16384
                sent[sid] += big
        granted = 0
        for m in _tunnel_msgs(c, 0.3):
            if m[0] == 4:
                sid = struct.unpack(">I", m[2:6])[0]
                credit[sid] += struct.unpack(">I", m[6:10])[0]
                granted += 1
        if not granted:
            break
    before = s.proc.rss_kib()
    for sid in credit:
        c.send(ws_frame(2, mux(3, 0, sid, b"x")) * credit[sid])
        sent[sid] += b"x" * credit[sid]
    time.sleep(2)
    grown = s.proc.rss_kib() - before
    check(grown < 24 * 1024, "serve grew by %d KiB for 2 x %d one-byte DATA frames" %
          (grown, credit[sid]))
    for sid, _ in clients:
        c.send(ws_frame(2, mux(3, 1, sid, b"")))
    for sid, cc in clients:
        body = _read_chunked(cc)
        eq(len(body), len(sent[sid]), "body length of stream %d" % sid)
        check(body == sent[sid], "body of stream %d differs from what the agent sent" % sid)
        cc.close()


# -- flag messages --------------------------------------------------------------

def test_count_flag_range_message(t):
    """A count that must be at least 1 said "(use 0-1024)" when out of range."""
    for flag, val, want in (("--max-tunnels", "2000", "use 1-1024"),
                            ("--max-headers", "100000", "use 1-200"),
                            ("--max-streams", "0", "must be at least 1")):
        rc, out = t.run_natwrp("serve", ["serve", "--listen", "127.0.0.1:0", flag, val])
        eq(rc, 2, "%s %s exit status" % (flag, val))
        check(want in out, "%s %s: %r lacks %r" % (flag, val, out.strip(), want))




def test_tiny_request_chunks_coalesced(t):
    """A client's 1-byte chunks each became a DATA frame on the tunnel (and,
    while the tunnel was congested, a queue entry: 32 such uploads to an
    agent that did not read took serve from 10 to 50 MB). The body bytes of
    one read now go as one DATA frame."""
    from test_a3_answers import raw_agent, next_open
    s, c = raw_agent(t)
    cc = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    body = b"".join(bytes([97 + i % 26]) for i in range(2000))
    cc.sendall(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" +
               b"".join(b"1\r\n" + body[i:i + 1] + b"\r\n" for i in range(len(body))) +
               b"0\r\n\r\n")
    sid, _ = next_open(c)
    got, frames, deadline = b"", 0, time.time() + 10
    while time.time() < deadline:
        done = False
        for m in _tunnel_msgs(c, 0.2):
            if m[0] == 3 and struct.unpack(">I", m[2:6])[0] == sid:
                frames += 1
                got += m[6:]
                done = done or bool(m[1] & 1)
        if done:
            break
    eq(got, body, "the body at the agent")
    check(frames <= 10, "%d DATA frames for a 2000-byte body sent in one write" % frames)
    cc.close()


# -- versions and asterisk-form ---------------------------------------------------

def test_http_versions_and_asterisk_form(t):
    """llhttp takes HTTP/0.9 and HTTP/2.0 in an HTTP/1 request line: they
    were forwarded as HTTP/1.1 (0.9 without Host). They get 505 now, and
    "*" as a target is only for OPTIONS (a GET * reached the service as the
    base path's root, a path the access rule never saw)."""
    rec, s = _stack(t, ["--auth-token", TOKEN, "--auth-rule", r"^/$"])
    try:
        _refused(t, rec, s, [
            ("0.9", None, "/v09", [], b"GET /v09 HTTP/0.9\r\n\r\n"),
            ("2.0", None, "/v20", [], b"GET /v20 HTTP/2.0\r\nHost: h\r\n\r\n"),
        ], 505, "versions")
        _refused(t, rec, s, [
            ("GET *", None, "*", [], b"GET * HTTP/1.1\r\nHost: h\r\n\r\n"),
            ("POST *", None, "*", [], b"POST * HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"),
        ], 400, "asterisk-form")
        r, _ = _req(s, None, None, raw=b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
        eq(r.status, 200, "OPTIONS *")
        r, _ = _req(s, None, None, raw=b"GET /v10 HTTP/1.0\r\n\r\n")
        eq(r.status, 200, "HTTP/1.0 without Host")
    finally:
        rec.close()







def test_busy_tunnels_not_logged_as_no_agent(t):
    """An upgrade with a body, with every tunnel at --max-streams, gets 503
    once --queue-timeout has passed, which serve logged as 'no agent
    connected' although one was. (--queue-timeout 1: the default 5 s raced
    the client's own 5 s timeout on a loaded machine.)"""
    o, s, a = t.stack(["--max-streams", "1", "--queue-timeout", "1"])
    h = Conn(s.port, timeout=10)
    h.request("GET", "/hang")
    time.sleep(0.5)
    mark = s.proc.mark()
    r, _ = _req(s, None, None, raw=b"POST /ws HTTP/1.1\r\nHost: h\r\nUpgrade: x\r\n"
                b"Connection: Upgrade\r\nContent-Length: 3\r\n\r\nabc")
    eq(r.status, 503, "upgrade with a body while the only tunnel is full")
    lines = _lines(s.proc, r": 503$", mark)
    check(len(lines) == 1 and "max-streams" in lines[0] and "no agent" not in lines[0],
          "the 503 line: %r" % lines)
    h.close()



# -- upgrades to HTTP itself --------------------------------------------------------

def test_h2c_upgrade_not_forwarded(t):
    """GET /public with Upgrade: h2c reached the service as an upgrade: a
    service that switches (Go's h2c handler, among others) then takes
    HTTP/2 requests for any path on that pipe, past AUTH_RULE and
    X-Forwarded-For (h2c smuggling). An upgrade to HTTP is ignored (RFC
    9110 7.8): a plain request, Upgrade and HTTP2-Settings not forwarded."""
    rec, s = _stack(t, ["--auth-token", TOKEN, "--auth-rule", r"^/private"])
    try:
        for n, up in enumerate(("h2c", "websocket, H2C", "HTTP/2.0")):
            c = Conn(s.port, timeout=5)
            c.send(b"GET /public%d HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                   b"Upgrade: %s\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n" %
                   (n, up.encode()))
            r = c.read_response("GET")
            eq(r.status, 200, "GET with Upgrade: %s" % up)
            _, _, hdrs = rec.wait_target("/public%d" % n)
            names = {k.lower() for k, v in hdrs}
            check("upgrade" not in names and "http2-settings" not in names,
                  "Upgrade: %s forwarded: %r" % (up, hdrs))
            c.request("GET", "/next%d" % n)
            eq(c.read_response("GET").status, 200, "the connection goes on as HTTP/1.1")
            c.close()
        # A WebSocket upgrade is still one.
        c = Conn(s.port, timeout=5)
        c.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        c.read_response("GET")
        c.close()
        _, _, hdrs = rec.wait_target("/ws")
        check("upgrade" in {k.lower() for k, v in hdrs}, "a WebSocket upgrade lost its Upgrade")
    finally:
        rec.close()



# -- the end of the grace period ------------------------------------------------------

@timed(30)
def test_grace_end_answers_waiting_requests(t):
    """When --grace ends with requests still waiting (for a slot, or for a
    response head), each gets 503 with a one-line body, not zero bytes."""
    import signal
    from test_a3_answers import raw_agent, next_open
    s, c = raw_agent(t, serve_args=("--grace", "1", "--max-streams", "1"))
    a = Conn(s.port, timeout=10)
    a.request("GET", "/held")          # opened on the tunnel, never answered
    next_open(c)
    b = Conn(s.port, timeout=10)
    b.request("GET", "/queued")        # waits for the only slot
    s.proc.wait_for(r"every tunnel is at --max-streams", 5)
    s.proc.send(signal.SIGTERM)
    bad = []
    for name, conn in (("waiting for its head", a), ("waiting for a slot", b)):
        try:
            r = conn.read_response("GET")
            if r.status not in (502, 503) or r.body.count(b"\n") != 1:
                bad.append("%s: %s %r" % (name, r.status, r.body))
        except BaseException as e:  # noqa: B902 - reported
            bad.append("%s: %s" % (name, e))
        conn.close()
    if bad:
        fail("at the end of --grace:\n  " + "\n  ".join(bad))
    eq(s.proc.wait_exit(10), 0, "serve's exit status after the grace period")


# -- AUTH_RULE in any case ----------------------------------------------------------

def test_auth_rule_any_case(t):
    """Express and ASP.NET route /PRIVATE like /private by default: a
    case-sensitive AUTH_RULE let /PRIVATE, /Private and /%50rivate through.
    The rule matches in any case now."""
    rec, s = _stack(t, ["--auth-token", TOKEN, "--auth-rule", r"^/private"])
    try:
        _refused(t, rec, s, [("case", "GET", p, [], None)
                             for p in ("/PRIVATE", "/Private/x", "/%50rivate", "//PrIvAtE")],
                 401, "auth-rule-case")
        r, _ = _req(s, "GET", "/PRIVATE", [("X-Auth-Token", TOKEN)])
        eq(r.status, 200, "/PRIVATE with the token")
    finally:
        rec.close()


# -- path-override fields -----------------------------------------------------------

def test_path_override_fields_dropped(t):
    """X-Original-URL and X-Rewrite-URL replace the request path in services
    made for IIS (Symfony, Laminas): GET /public with X-Original-URL:
    /private passed AUTH_RULE and reached them. They are dropped unless
    --trust-proxy, and their '_' spellings get 400 (CGI reads them as one)."""
    rec, s = _stack(t, ["--auth-token", TOKEN, "--auth-rule", r"^/private"])
    rec2, s2 = _stack(t, ["--trust-proxy"])
    try:
        _refused(t, rec, s, [("cgi", "GET", "/public2", [(n, "/private")], None)
                             for n in ("X_Original_URL", "x_rewrite_url")], 400, "cgi-override")
        spoof = [("X-Original-URL", "/private"), ("X-Rewrite-URL", "/private")]
        r, _ = _req(s, "GET", "/public", spoof)
        eq(r.status, 200, "/public with path-override fields")
        _, _, hdrs = rec.wait_target("/public")
        names = {k.lower() for k, v in hdrs}
        for k, _ in spoof:
            check(k.lower() not in names, "%s reached the service without --trust-proxy" % k)
        r, _ = _req(s2, "GET", "/public", spoof)
        eq(r.status, 200, "/public with path-override fields (trust-proxy)")
        _, _, hdrs = rec2.wait_target("/public")
        names = {k.lower(): v for k, v in hdrs}
        for k, v in spoof:
            eq(names.get(k.lower()), v, "%s with --trust-proxy" % k)
    finally:
        rec.close()
        rec2.close()


# -- hostile agent: framing fields ------------------------------------------------

def test_204_never_carries_content_length(t):
    """A hand-made agent answers 204 with Content-Length: 8: serve wrote the
    field on (RFC 9110 8.6 forbids it), so a proxy in front of serve that
    trusts it takes the next response's first 8 bytes as this one's body.
    The field is dropped; the connection stays usable."""
    from test_a3_answers import raw_agent, next_open, head_frame
    from test_55_wire import ws_frame
    s, c = raw_agent(t)
    cc = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    cc.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    sid, _ = next_open(c)
    c.send(ws_frame(2, head_frame(sid, 204, [("Content-Length", "8"), ("X-A", "1")], end=True)))
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = cc.recv(65536)
        check(b, "serve closed before the 204 head")
        buf += b
    head = buf.split(b"\r\n\r\n")[0].lower()
    check(head.startswith(b"http/1.1 204"), "status line: %r" % head[:40])
    check(b"x-a: 1" in head, "end-to-end field kept: %r" % head)
    check(b"content-length" not in head, "a 204 carried Content-Length: %r" % head)
    cc.sendall(b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n")
    sid, _ = next_open(c)
    c.send(ws_frame(2, head_frame(sid, 200, [("Content-Length", "0")], end=True)))
    buf = buf.split(b"\r\n\r\n", 1)[1]
    while b"\r\n\r\n" not in buf:
        b = cc.recv(65536)
        check(b, "serve closed before the second response")
        buf += b
    check(buf.startswith(b"HTTP/1.1 200"), "second response: %r" % buf[:40])
    cc.close()


# -- the trailer section --------------------------------------------------------

CHUNKED = b"POST /echo/%s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"


def test_trailer_section_scanned_like_a_head(t):
    """llhttp takes a bare LF and obs-fold in the trailer section, which
    decides where a chunked message ends, even in strict mode: serve
    forwarded those requests (and parsed what followed as the next one).
    The trailer section now gets the head's checks: 400, nothing further."""
    o, s, a = t.stack()
    bad = []
    for name, tail in (("barelf-end", b"0\r\nX: 1\r\n\n"),
                       ("barelf-field", b"0\r\nX: 1\nY: 2\r\n\r\n"),
                       ("obs-fold", b"0\r\nX: 1\r\n y\r\n\r\n"),
                       ("bare-cr", b"0\r\nX: 1\r\r\n\r\n")):
        for split in (False, True):
            label = "%s%s" % (name, "-split" if split else "")
            c = Conn(s.port, timeout=5)
            req = CHUNKED % label.encode()
            if split:
                c.send(req + tail[:3])
                time.sleep(0.2)
                c.send(tail[3:] + b"GET /echo/SMUGGLED-%s HTTP/1.1\r\nHost: a\r\n\r\n" %
                       label.encode())
            else:
                c.send(req + tail + b"GET /echo/SMUGGLED-%s HTTP/1.1\r\nHost: a\r\n\r\n" %
                       label.encode())
            r = c.read_response("POST")
            if r.status != 400:
                bad.append("%s: %s" % (label, r.status))
            c.close()
    time.sleep(0.3)
    paths = [m.group(0) for m in o.proc.find(r"/echo/SMUGGLED-\S+")]
    if paths:
        bad.append("requests after a bad trailer section reached the service: %r" % paths)
    if bad:
        fail("trailer sections not checked:\n  " + "\n  ".join(bad))
    # Valid trailer sections pass, whole or split, and keep the connection.
    for split in (False, True):
        c = Conn(s.port, timeout=5)
        req = CHUNKED % b"good" + b"0\r\nX-T: 1\r\n\r\n"
        if split:
            c.send(req[:-4])
            time.sleep(0.2)
            c.send(req[-4:])
        else:
            c.send(req)
        r = c.read_response("POST")
        eq(r.status, 200, "valid trailer section (split=%s)" % split)
        eq(r.json()["body"], "hello", "body with a trailer section")
        c.request("GET", "/echo/next")
        eq(c.read_response("GET").status, 200, "next request after a trailer section")
        c.close()


@timed(60)
def test_hostile_agent_and_clients_no_crash(t):
    """A seeded random mix for the sanitizers: clients pipelining every
    request shape (HEAD, 1.0, bodies, trailers, upgrades with early bytes,
    stalled bodies), closing early or not reading; a hand-made agent
    answering with any head (101 and 1xx included), DATA with or without
    END, RST and WINDOW, to streams in any state. serve must stay up."""
    import random, threading
    from test_a3_answers import raw_agent, head_frame
    from test_55_wire import ws_frame, mux
    s, c = raw_agent(t, serve_args=("--body-timeout", "1", "--response-timeout", "2"))
    rnd = random.Random(int(__import__("os").environ.get("A7_SEED", "1")))
    stop = time.time() + 10
    reqs = [b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
            b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a HTTP/1.0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: 1\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nEARLY",
            b"POST /ws HTTP/1.1\r\nHost: h\r\nUpgrade: x\r\nConnection: Upgrade\r\nContent-Length: 3\r\n\r\nabcEARLY",
            b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 50\r\n\r\nhel"]
    clients = []

    def client_loop():
        while time.time() < stop:
            try:
                cc = socket.create_connection(("127.0.0.1", s.port), timeout=2)
                if rnd.random() < 0.3:
                    cc.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
                n = rnd.randint(1, 4)
                cc.sendall(b"".join(rnd.choice(reqs) for _ in range(n)))
                mode = rnd.random()
                if mode < 0.3:
                    time.sleep(rnd.random())
                    cc.close()
                elif mode < 0.6:
                    try:
                        while cc.recv(65536):
                            pass
                    except OSError:
                        pass
                    cc.close()
                else:
                    clients.append(cc)
                    if len(clients) > 50:
                        clients.pop(0).close()
            except OSError:
                pass
            time.sleep(0.005)

    ths = [threading.Thread(target=client_loop, daemon=True) for _ in range(3)]
    for th in ths:
        th.start()
    c.sock.settimeout(0.05)
    sids = []
    buf = b""
    while time.time() < stop:
        try:
            b = c.sock.recv(1 << 20)
            if not b:
                fail("serve closed the tunnel")
            buf += b
        except (socket.timeout, TimeoutError):
            pass
        while len(buf) >= 2:
            n, off = buf[1] & 0x7f, 2
            if n == 126:
                if len(buf) < 4: break
                n, off = struct.unpack(">H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10: break
                n, off = struct.unpack(">Q", buf[2:10])[0], 10
            if len(buf) < off + n: break
            m = buf[off:off + n]
            op = buf[0] & 0x0f
            buf = buf[off + n:]
            if op == 9:
                c.send(ws_frame(0xA, m))
            elif op == 2 and m[0] == 1:
                sids.append(struct.unpack(">I", m[2:6])[0])
        out = b""
        for _ in range(rnd.randint(0, 8)):
            if not sids:
                break
            sid = rnd.choice(sids)
            k = rnd.random()
            if k < 0.25:
                st = rnd.choice([200, 204, 304, 101, 101, 404, 100, 500])
                fields = rnd.choice([[], [("Content-Length", str(rnd.randint(0, 20)))],
                                     [("Upgrade", "websocket"), ("Connection", "Upgrade")]])
                out += ws_frame(2, head_frame(sid, st, fields, end=rnd.random() < 0.2))
            elif k < 0.75:
                out += ws_frame(2, mux(3, 1 if rnd.random() < 0.2 else 0, sid,
                                       b"d" * rnd.choice([0, 1, 5, 100, 3000])))
            elif k < 0.85:
                out += ws_frame(2, mux(5, 0, sid, struct.pack(">I", rnd.randint(0, 9))))
                sids.remove(sid)
            else:
                out += ws_frame(2, mux(4, 0, sid, struct.pack(">I", rnd.randint(1, 100000))))
        if out:
            c.send(out)
    for th in ths:
        th.join(5)
    for cc in clients:
        cc.close()
    time.sleep(2)
    check(s.proc.alive(), "serve died")
    r = Conn(s.port, timeout=5)
    r.request("GET", "/after")  # serve still accepts and parses
    r.close()
