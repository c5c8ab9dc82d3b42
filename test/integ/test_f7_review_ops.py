"""f7 hostile review of issue 12's admin listener (n1): what a web page in
the operator's browser can make it do. Without ADMIN_TOKEN (the README's
loopback setup) a page on a DNS name that its owner re-points at 127.0.0.1
(DNS rebinding) reads the admin API as same-origin: the listener must
answer only a Host that is an IP literal or a name without a dot
(localhost, a name from /etc/hosts; a rebinding name is a public DNS name,
which has one), or NAME.localhost. And a page of any
other origin can POST a form to Replay (the browser also attaches Basic
credentials it remembers): a POST whose Origin is not the listener's own is
refused, with or without ADMIN_TOKEN."""

import os

from harness import eq, http_request, timed
from test_f3_dashboard import admin_port, inspected_stack, wait_done


def get(port, path, host, headers=()):
    return http_request(port, "GET", path, headers=[("Host", host)] + list(headers))


@timed(60)
def test_rebinding_host_is_refused_without_token(t):
    o, s, a, ap = inspected_stack(t)
    eq(get(ap, "/api/requests", "127.0.0.1:%d" % ap).status, 200, "IP literal Host")
    r = http_request(s.port, "GET", "/secret-path")
    eq(r.status, 200, "request through the tunnel")
    wait_done(ap, "/secret-path")
    for host in ("evil.example:%d" % ap, "evil.example", "127.0.0.1.evil.example:%d" % ap,
                 "localhost.evil.example", "[::1]x"):
        for path in ("/api/requests", "/api/status", "/metrics", "/", "/readyz"):
            r = get(ap, path, host)
            eq(r.status, 403, "GET %s with Host %s (body %r)" % (path, host, r.body[:200]))
            eq(b"secret-path" in r.body, False, "capture leaked to Host %s" % host)
    r = http_request(ap, "POST", "/api/requests/1/replay", body=b"",
                     headers=[("Host", "evil.example:%d" % ap)])
    eq(r.status, 403, "Replay with a rebinding Host")
    for host in ("localhost:%d" % ap, "LOCALHOST", "app.localhost:%d" % ap, "[::1]:%d" % ap,
                 "127.0.0.1", "myvps:%d" % ap, "a"):
        eq(get(ap, "/api/status", host).status, 200, "GET with Host %s" % host)
    eq(get(ap, "/livez", "evil.example").status, 200, "/livez needs nothing")


@timed(60)
def test_rebinding_host_is_fine_with_token(t):
    tok = "t0ken-for-review-1234"
    o, s, a, ap = inspected_stack(t, {"ADMIN_TOKEN": tok})
    r = get(ap, "/api/status", "admin.example.com", [("Authorization", "Bearer " + tok)])
    eq(r.status, 200, "a DNS name with the token (a reverse proxy in front)")
    eq(get(ap, "/api/status", "admin.example.com").status, 401, "no token")


def replay(ap, headers):
    return http_request(ap, "POST", "/api/requests/1/replay", body=b"",
                        headers=[("Host", "127.0.0.1:%d" % ap)] + list(headers))


@timed(60)
def test_cross_origin_replay_is_refused(t):
    o, s, a, ap = inspected_stack(t)
    http_request(ap, "GET", "/api/requests")  # the dashboard is open: bodies captured
    r = http_request(s.port, "POST", "/echo", body=b"transfer=100",
                     headers=[("Content-Type", "application/x-www-form-urlencoded")])
    eq(r.status, 200, "request through the tunnel")
    e = wait_done(ap, "/echo")
    eq(e["id"], 1, "first capture")
    for origin in ("http://evil.example", "null", "ftp://127.0.0.1:%d" % ap,
                   "http://127.0.0.1:%d.evil.example" % ap, "http://127.0.0.1:1",
                   "http://127.0.0.1:%d/" % ap):
        r = replay(ap, [("Origin", origin), ("Content-Type", "text/plain")])
        eq(r.status, 403, "Replay POSTed from Origin %s (body %r)" % (origin, r.body[:200]))
    r = replay(ap, [("Origin", "http://127.0.0.1:%d" % ap)])
    eq(r.status, 200, "Replay from the dashboard's own origin (body %r)" % r.body[:200])
    r = replay(ap, [])
    eq(r.status, 200, "Replay without Origin (curl)")
    r = replay(ap, [("Origin", "https://127.0.0.1:%d" % ap)])
    eq(r.status, 200, "Replay through a TLS reverse proxy that passes Host on")


@timed(60)
def test_cross_origin_replay_is_refused_with_basic_token(t):
    import base64
    tok = "t0ken-for-review-1234"
    o, s, a, ap = inspected_stack(t, {"ADMIN_TOKEN": tok})
    auth = ("Authorization", "Basic " + base64.b64encode(b"admin:" + tok.encode()).decode())
    http_request(ap, "GET", "/api/requests", headers=[auth])
    eq(http_request(s.port, "GET", "/x").status, 200, "request through the tunnel")
    r = replay(ap, [auth, ("Origin", "http://evil.example")])
    eq(r.status, 403, "Replay from another origin with remembered Basic credentials")
    eq(replay(ap, [auth, ("Origin", "http://127.0.0.1:%d" % ap)]).status, 200,
       "Replay from the dashboard")


@timed(60)
def test_held_connections_do_not_lock_out_livez(t):
    """A client that holds the admin listener's 64 connections open (idle,
    or sending a head byte by byte) must not keep a health probe from
    /livez: a new connection takes the place of the oldest idle one."""
    import socket
    s = t.serve("--admin", "127.0.0.1:0")
    ap = admin_port(s.proc)
    held = []
    try:
        for i in range(70):
            c = socket.create_connection(("127.0.0.1", ap), timeout=5)
            if i % 2:
                c.sendall(b"GET /livez HTTP/1.1\r\nHo")  # slowloris: a head under way
            held.append(c)
        for i in range(3):
            r = http_request(ap, "GET", "/livez")
            eq((r.status, r.body), (200, b"ok\n"), "/livez %d with 70 connections held" % i)
        held[0].settimeout(5)
        eq(held[0].recv(100), b"", "the oldest held connection was closed")
    finally:
        for c in held:
            c.close()


@timed(60)
def test_dashboard_cannot_be_framed(t):
    """A page of another site that frames the dashboard could trick a click
    on Replay (clickjacking): every admin answer forbids framing and allows
    only scripts and styles from the listener itself."""
    o, s, a, ap = inspected_stack(t)
    for path in ("/", "/ui/app.js", "/api/requests", "/api/status"):
        r = http_request(ap, "GET", path)
        eq(r.status, 200, "GET " + path)
        csp = r.header("content-security-policy") or ""
        eq("frame-ancestors 'none'" in csp and "default-src 'self'" in csp, True,
           "CSP of %s: %r" % (path, csp))
        eq(r.header("x-frame-options"), "DENY", "X-Frame-Options of " + path)


@timed(60)
def test_stuck_notify_socket_does_not_block_the_loop(t):
    """NOTIFY_SOCKET whose reader never reads (a hung or hostile manager):
    once its queue is full, a blocking sendto would freeze the event loop
    at the next WATCHDOG=1. The process must go on answering."""
    import socket
    name = "natwrp-f7-notify-%d" % os.getpid()
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    rx.bind("\0" + name)
    try:
        s = t.serve("--admin", "127.0.0.1:0",
                    env={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000"})  # every 1 ms
        ap = admin_port(s.proc)
        s.proc.wait_for(r"systemd watchdog: WATCHDOG=1 every 1 ms", 10)
        for i in range(20):  # a second or more of ticks: far past the queue's room
            r = http_request(ap, "GET", "/livez", timeout=5)
            eq(r.status, 200, "/livez %d while the notify socket is full" % i)
            http_request(ap, "GET", "/metrics", timeout=5)
    finally:
        rx.close()


@timed(60)
def test_replay_refuses_a_body_still_arriving(t):
    """An upload still in progress is listed (pending) with the part of its
    body that came: Replay must not send that part under a Content-Length
    that says it is whole (the service would act on a truncated body)."""
    from harness import Conn
    from test_f3_dashboard import find, listed
    o, s, a, ap = inspected_stack(t)
    listed(ap)  # the dashboard is open: bodies are captured
    c = Conn(s.port)
    try:
        c.send(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n" +
               b"a" * 500)
        for _ in range(100):  # bounded: one admin request per try
            got = [e for e in listed(ap)["requests"] if e["target"] == "/echo"]
            if got and got[-1]["request_bytes"] == 500:
                break
        e = find(listed(ap)["requests"], "/echo")
        eq((e["state"], e["request_bytes"], e["replayable"]), ("pending", 500, False),
           "capture of an upload half sent")
        r = http_request(ap, "POST", "/api/requests/%d/replay" % e["id"], body=b"")
        eq(r.status, 409, "Replay of an upload half sent (body %r)" % r.body[:300])
        c.send(b"b" * 500)
        eq(c.read_response().status, 200, "the upload's answer")
    finally:
        c.close()
    e = wait_done(ap, "/echo")
    eq((e["request_bytes"], e["replayable"]), (1000, True), "capture once whole")
    r = http_request(ap, "POST", "/api/requests/%d/replay" % e["id"], body=b"")
    eq(r.status, 200, "Replay once whole")
    eq(r.json()["new"]["status"], 200, "replayed answer")


@timed(60)
def test_replays_at_once_are_capped(t):
    """Each Replay holds an admin connection until the service answers (up
    to 30 s): 64 of them to a service that hangs took every admin
    connection, /livez included. At most 8 run at once; more get 429."""
    import threading
    from harness import Conn
    from test_f3_dashboard import find, listed
    o, s, a, ap = inspected_stack(t)
    listed(ap)
    c = Conn(s.port, timeout=2)
    c.request("GET", "/hang?max_ms=60000")  # never answered: a capture to replay
    e = None
    for _ in range(100):
        got = [x for x in listed(ap)["requests"] if x["target"].startswith("/hang")]
        if got and got[-1]["replayable"]:
            e = got[-1]
            break
    eq(e is not None, True, "the /hang capture is replayable")
    out, since = [], a.proc.mark() if hasattr(a, "proc") else a.mark()
    logp = a.proc if hasattr(a, "proc") else a
    for _ in range(8):
        rc = Conn(ap, timeout=40)
        rc.request("POST", "/api/requests/%d/replay" % e["id"], body=b"")
        out.append(rc)
    for _ in range(8):  # each Replay logs one line as it starts
        logp.wait_for(r"replaying request %d " % e["id"], 10, since=since)
        since = logp.last_at + 1
    r = http_request(ap, "POST", "/api/requests/%d/replay" % e["id"], body=b"")
    eq(r.status, 429, "a ninth Replay at once")
    eq(http_request(ap, "GET", "/livez").status, 200, "/livez meanwhile")
    for rc in out:
        rc.close()
    c.close()
