"""a1 paths and identities (issue 9, items 2, 3, 5, 6).

A small raw local service (Recorder) records every request head it reads
and answers 200 with the target as body, so each test can assert what
reached the service and what never did.

- AUTH_RULE is checked on the raw and the normalised path, whole length:
  every bypass shape of the issue gets 401 without the token.
- A target whose dot segments (encoded or not) climb above the root gets 400
  and never reaches LOCAL_URL's base path.
- Forwarded and X-Real-IP are dropped unless --trust-proxy; a field name with
  '_' that CGI reads as a framing or forwarding field gets 400; CONNECT in
  any form gets 501.
- A tunnel handshake (natwrp.* subprotocol, X-Natwrp-* fields, the tunnel
  path in another spelling) is never proxied; an agent refuses a REMOTE_URL
  with a path at start."""

import re
import socket
import threading
import time

from harness import Conn, check, eq, fail

TOKEN = "s3cret-token"


class Recorder:
    """A local HTTP/1.1 service that records (method, target, headers) of
    every request it reads and answers 200 with the target as body."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.heads = []
        self.base = ""
        self.cond = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    b = c.recv(65536)
                    if not b:
                        return
                    buf += b
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                hdrs = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:]]
                n = 0
                for k, v in hdrs:
                    if k.lower() == "content-length":
                        n = int(v)
                while len(buf) < n:
                    b = c.recv(65536)
                    if not b:
                        return
                    buf += b
                buf = buf[n:]
                with self.cond:
                    self.heads.append((method, target, hdrs))
                    self.cond.notify_all()
                body = target.encode("latin-1")
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            return
        finally:
            c.close()

    def targets(self):
        with self.cond:
            return [h[1] for h in self.heads]

    def wait_target(self, target, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for h in self.heads:
                    if h[1] == target:
                        return h
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("the local service never received %s (got %r)" %
                         (target, [h[1] for h in self.heads]))
                self.cond.wait(left)

    def close(self):
        self.ls.close()


def _stack(t, serve_args=(), base=""):
    rec = Recorder()
    rec.base = base
    s = t.serve(*serve_args)
    t.agent(s, rec.url + base)
    return rec, s


def _req(s, method, target, headers=(), raw=None):
    """One request on a fresh connection; returns (Response, whether serve
    closed the connection with it)."""
    c = Conn(s.port, timeout=5)
    try:
        if raw is not None:
            c.send(raw)
        else:
            c.request(method, target, headers)
        r = c.read_response(method)
        return r, r.framing == "close"
    finally:
        c.close()


def _control(rec, s, name):
    """A request that must pass: once it has reached the service, every
    refused request before it would have too (each got its answer first)."""
    r, _ = _req(s, "GET", "/ok/" + name)
    eq(r.status, 200, "control request %s" % name)
    return rec.wait_target(rec.base + "/ok/" + name)


def _refused(t, rec, s, cases, status, what):
    """Each (label, method, target, headers, raw) case gets status and never
    reaches the local service; every failure is reported, not just the first."""
    bad = []
    for label, method, target, headers, raw in cases:
        r, closed = _req(s, method, target, headers, raw)
        if r.status != status:
            bad.append("%s %r: status %s (body %r)" % (label, target, r.status, r.body[:120]))
    got = _control(rec, s, what)
    leaked = [h[1] for h in rec.heads if h is not got and
              not h[1].startswith(rec.base + "/ok/")]
    if leaked:
        bad.append("reached the local service: %r" % leaked)
    if bad:
        fail("%s:\n  %s" % (what, "\n  ".join(bad)))


# -- item 2: AUTH_RULE on the normalised path ---------------------------------

BYPASS = ["//private", "///private", "/%70rivate", "/./private", "/%2e/private",
          "/public/../private", "/public/%2e%2e/private", "/%2fprivate", "/x/..%2fprivate",
          "/public%2f..%2fprivate", "http://x//private", "/private;a=b", "/public/..;/private",
          "/PUBLIC/../%2E/private/x?y=1", "/%70rivate/../x", "//private/%2e%2e/x"]


def test_auth_rule_sees_normalised_path(t):
    rec, s = _stack(t, ["--auth-token", TOKEN, "--auth-rule", r"^/private|\.secret$",
                        "--max-url", "32768"])
    try:
        long_path = "/" + "a" * 9000 + ".secret"
        cases = [("shape", "GET", p, [], None) for p in BYPASS + [long_path]]
        bad = []
        for label, method, target, headers, raw in cases:
            r, _ = _req(s, method, target, headers, raw)
            if r.status != 401:
                bad.append("%r: status %s (body %r)" % (target[:60], r.status, r.body[:80]))
        if bad:
            fail("AUTH_RULE bypassed without the token:\n  " + "\n  ".join(bad))
        eq(rec.targets(), [], "requests that reached the local service without the token")
        # With the token each passes, forwarded as the client sent it.
        for p in ["/%70rivate", "/public/../private", long_path]:
            r, _ = _req(s, "GET", p, [("X-Auth-Token", TOKEN)])
            eq(r.status, 200, "%r with the token" % p[:60])
            eq(r.body.decode(), p, "target at the service for %r" % p[:60])
        # Paths the rule does not match need no token.
        for p in ["/public", "/public/x/../y", "/privat", "/a/private"]:
            r, _ = _req(s, "GET", p)
            eq(r.status, 200, "%r without a token" % p)
    finally:
        rec.close()


def test_auth_rule_behind_nginx(t):
    """The same shapes through nginx as README configures it (nginx passes
    the raw request URI on): none reaches /private without the token."""
    from harness import TlsConn
    from test_95_proxy import P, nginx
    rec = Recorder()
    s = t.serve("--trust-proxy", "--auth-token", TOKEN, "--auth-rule", "^/private")
    port = nginx(t, s.port)
    t.agent("https://localhost:%d" % port, rec.url, env={"CA_FILE": P("ca.pem")})
    s.wait_tunnel_open("a1")
    try:
        bad = []
        for p in BYPASS:
            c = TlsConn(port, cafile=P("ca.pem"), timeout=5)
            c.request("GET", p, host="localhost")
            r = c.read_response()
            c.close()
            if r.status == 200:
                bad.append("%r: 200 (body %r)" % (p, r.body[:80]))
        if bad:
            fail("AUTH_RULE bypassed behind nginx:\n  " + "\n  ".join(bad))
        eq(rec.targets(), [], "requests that reached the local service without the token")
        c = TlsConn(port, cafile=P("ca.pem"), timeout=5)
        c.request("GET", "/%70rivate", [("X-Auth-Token", TOKEN)], host="localhost")
        eq(c.read_response().status, 200, "/%70rivate with the token behind nginx")
        c.close()
    finally:
        rec.close()


# -- item 3: no escape from LOCAL_URL's base path -----------------------------

def test_climbing_target_gets_400(t):
    rec, s = _stack(t, base="/app")
    try:
        climbs = ["/../secret", "/%2e%2e/secret", "/..%2fsecret", "/x/../../secret",
                  "/.%2E/secret", "//../secret", "/..", "/x/%2E%2e/%2e%2E/secret?q=1",
                  "/..\\secret", "/..;/secret", "http://h/../secret"]
        _refused(t, rec, s, [("climb", "GET", p, [], None) for p in climbs], 400,
                 "climbing-targets")
        check(s.proc.find(r"bad request: 400 \(the path climbs above the root\)"),
              "serve logged no reason for the refused climbs")
        # Dot segments that stay under the root pass, as sent.
        r, _ = _req(s, "GET", "/x/../y")
        eq(r.status, 200, "/x/../y status")
        eq(r.body, b"/app/x/../y", "/x/../y at the service")
    finally:
        rec.close()


# -- item 5: identity headers, CGI aliases, CONNECT ---------------------------

def test_forwarded_and_x_real_ip_dropped(t):
    rec, s = _stack(t)
    rec2, s2 = _stack(t, ["--trust-proxy"])
    try:
        spoof = [("Forwarded", "for=6.6.6.6;proto=https"), ("X-Real-IP", "6.6.6.6"),
                 ("X-Keep", "1")]
        for srv, r_, trusted in ((s, rec, False), (s2, rec2, True)):
            r, _ = _req(srv, "GET", "/who", spoof)
            eq(r.status, 200, "status (trust-proxy=%s)" % trusted)
            _, _, hdrs = r_.wait_target("/who")
            names = {k.lower(): v for k, v in hdrs}
            eq(names.get("x-keep"), "1", "an ordinary field passes")
            eq(names.get("x-forwarded-for"), "127.0.0.1", "X-Forwarded-For")
            for k, v in spoof[:2]:
                eq(names.get(k.lower()), v if trusted else None,
                   "%s at the service (trust-proxy=%s)" % (k, trusted))
    finally:
        rec.close()
        rec2.close()


def test_cgi_alias_field_names_get_400(t):
    rec, s = _stack(t)
    try:
        names = ["Transfer_Encoding", "Content_Length", "content_length", "X_Forwarded_For",
                 "X-Forwarded_For", "X_Real_IP", "Keep_Alive"]
        cases = []
        for n in names:
            v = "chunked" if "ransfer" in n else "5" if "ength" in n else "6.6.6.6"
            cases.append((n, "GET", "/alias-" + n, [(n, v)], None))
        _refused(t, rec, s, cases, 400, "CGI-aliases")
        # A '_' name that aliases nothing of ours passes.
        r, _ = _req(s, "GET", "/alias-ok", [("X_Custom_Field", "1")])
        eq(r.status, 200, "X_Custom_Field status")
    finally:
        rec.close()


def test_connect_gets_501(t):
    rec, s = _stack(t)
    try:
        cases = [
            ("authority", "CONNECT", "127.0.0.1:%d" % rec.port, [], None),
            ("origin", "CONNECT", "/connect", [], None),
            ("absolute", "CONNECT", "http://127.0.0.1:%d/connect" % rec.port, [], None),
            ("origin-body", "CONNECT", "/connect", [], b"CONNECT /connect HTTP/1.1\r\nHost: a\r\n"
             b"Content-Length: 3\r\n\r\nabc"),
        ]
        _refused(t, rec, s, cases, 501, "CONNECT")
    finally:
        rec.close()


# -- item 6: the tunnel handshake is never proxied ----------------------------

HANDSHAKE = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
             ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]


def test_tunnel_handshake_never_proxied(t):
    rec, s = _stack(t)
    try:
        full = HANDSHAKE + [("Sec-WebSocket-Protocol", "natwrp.1"), ("X-Natwrp-Agent", "x"),
                            ("X-Natwrp-Window", "262144"), ("Authorization", "Bearer tok")]
        cases = [
            ("prefixed path", "GET", "/natwrp/_natwrp/tunnel", full, None),
            ("subprotocol only", "GET", "/ws",
             HANDSHAKE + [("Sec-WebSocket-Protocol", "chat, NATWRP.2")], None),
            ("subprotocol, second field", "GET", "/ws",
             HANDSHAKE + [("Sec-WebSocket-Protocol", "chat"),
                          ("Sec-WebSocket-Protocol", " natwrp.1")], None),
            ("X-Natwrp-Agent only", "GET", "/plain", [("X-Natwrp-Agent", "x")], None),
            ("X-Natwrp-Group on a POST", "POST", "/plain", [("X-Natwrp-Group", "g"),
                                                          ("Content-Length", "0")], None),
            ("X_Natwrp_Agent", "GET", "/plain", [("X_Natwrp_Agent", "x")], None),
            ("//tunnel", "GET", "//_natwrp/tunnel", [], None),
            ("/./tunnel", "GET", "/_natwrp/./tunnel", [], None),
            ("%74unnel", "GET", "/_natwrp/%74unnel", [], None),
        ]
        _refused(t, rec, s, cases, 400, "tunnel-handshakes")
        check(s.proc.find(r"bad request: 400 \(a natwrp\.\* subprotocol outside the tunnel path\)"),
              "serve logged no reason for the refused handshake")
        # A WebSocket upgrade with other subprotocols still goes through.
        r, _ = _req(s, "GET", "/ws-ok", HANDSHAKE + [("Sec-WebSocket-Protocol", "chat")])
        eq(r.status, 200, "an ordinary upgrade reaches the service (it answers 200)")
    finally:
        rec.close()


def test_agent_refuses_remote_url_with_path(t):
    rec = Recorder()
    s = t.serve()
    try:
        for path in ["/natwrp", "/natwrp/", "/a/b"]:
            rc, out = t.run_natwrp("agent-path", ["agent"], env={
                "AGENT_ID": "p1", "REMOTE_URL": s.url + path, "LOCAL_URL": rec.url})
            eq(rc, 2, "exit status with REMOTE_URL path %s (output %r)" % (path, out))
            check(re.search(r"natwrp agent: REMOTE_URL: .*must not have a path", out),
                  "no clear reason for REMOTE_URL path %s: %r" % (path, out))
        rc, out = t.run_natwrp("agent-path", ["agent", "--remote", s.url + "/x"], env={
            "AGENT_ID": "p1", "REMOTE_URL": s.url, "LOCAL_URL": rec.url})
        eq(rc, 2, "exit status with --remote path")
        check("--remote" in out, "the message names --remote: %r" % out)
        # A bare URL and a lone trailing '/' keep working.
        for i, u in enumerate([s.url, s.url + "/"]):
            t.agent(s, rec.url, agent_id="ok%d" % i, env={"REMOTE_URL": u})
        r, _ = _req(s, "GET", "/through")
        eq(r.status, 200, "a request through the agents")
    finally:
        rec.close()


# -- item 3, agent side: a hostile server's climbing target --------------------

def agent_answers(t, rec, targets):
    """A hand-made server (fakeserver.py) opens one GET per target on an
    agent whose LOCAL_URL is rec's /app; returns {target: Frame}, the
    agent's first answer on each stream (a HEAD, or a RST)."""
    from fakeserver import HEAD, RST, FakeServer
    fake = FakeServer()
    try:
        t.agent(fake.url, rec.url + "/app", wait=False)
        tun = fake.accept()
        sids = {2 * i + 1: target for i, target in enumerate(targets)}
        for sid, target in sids.items():
            tun.open(sid, "GET", target)
        got = {}
        while len(got) < len(sids):
            f, _ = tun.expect(lambda f: f.type in (HEAD, RST) and f.sid in sids and
                              sids[f.sid] not in got, "the agent's answers")
            got[sids[f.sid]] = f
        return got
    finally:
        fake.close()


def test_agent_refuses_climbing_target_from_server(t):
    from fakeserver import HEAD, RST
    rec = Recorder()
    try:
        climbs = ["/../secret", "/%2e%2e/secret", "/..%2fsecret", "/x/../../secret"]
        got = agent_answers(t, rec, climbs + ["/fine"])
        for target in climbs:
            eq((got[target].type, got[target].code), (RST, 4),
               "agent's answer to OPEN %s (RST PROTOCOL)" % target)
        eq(got["/fine"].type, HEAD, "agent's answer to OPEN /fine (a HEAD)")
        rec.wait_target("/app/fine")
        eq(rec.targets(), ["/app/fine"], "targets at the local service")
    finally:
        rec.close()
