"""e5 browser apps behind routes (issue 11): per-route Basic auth checked at
serve, and a Jupyter-style Origin check passing with PRESERVE_HOST.

An agent with AUTH_BASIC=user:password (or AUTH_BASIC_FILE) sends its
credentials to serve in the tunnel handshake; serve then answers requests
for that agent's routes without a matching Basic credential with 401 and
`WWW-Authenticate: Basic realm="<route>"`, so an unauthenticated request
never crosses the tunnel, and removes the matched Authorization field before
forwarding. Other agents' routes are not affected, and no log holds a
password. The check follows the route a request is sent to (absolute form,
a trailing dot, paths that normalise to the protected prefix, each request
on a keep-alive connection), a credential repeated in two fields is never
forwarded, a request held for a route is checked against the credentials
of the tunnel that comes back, and two agents sharing a route each get the
users of their own credentials.

The browser cases drive headless Chromium over DevTools (the Cdp client of
test_c1_browser.py), with `--host-resolver-rules` mapping *.example.com to
127.0.0.1 (no real DNS): the Basic challenge a browser sees (DevTools'
Fetch.authRequired gives the scheme and realm the browser parsed, the
navigation's status is 401), its credentials passing and not forwarded; and
a local service (a small Python server in its own process) that refuses a
POST whose Origin host differs from its Host, as Jupyter does: a page's
fetch() POST passes with PRESERVE_HOST=1 and is refused without it."""

import base64
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time

import wsclient
from harness import Conn, check, curl, eq, fail, http_request, timed
from test_c1_browser import CHROMIUM_FLAGS, Cdp, http_json
from test_e1_routes import echo_hdr, expect_origin, req, route_agent

SECRETS = ("s3cr3t:x", "hunter2", "pw-one", "pw:two", "pw-three")


def basic(user, pw):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


def challenges(r):
    return r.header_all("WWW-Authenticate")


def expect_401(s, host, target, realm, headers=()):
    r = req(s, host, target, headers=headers)
    eq(r.status, 401, "Host %s %s without valid credentials (body %r)" % (host, target,
                                                                          r.body[:200]))
    check('Basic realm="%s"' % realm in challenges(r),
          "401 challenges %r: want Basic realm=\"%s\"" % (challenges(r), realm))
    check(len(r.body) < 300, "401 body %r" % r.body[:300])
    return r


def no_secrets_logged(procs):
    words = list(SECRETS)
    for user, pw in (("alice", "s3cr3t:x"), ("root", "hunter2"), ("alice", "pw-one"),
                     ("bob", "pw:two"), ("carl", "pw-three")):
        words.append(base64.b64encode(("%s:%s" % (user, pw)).encode()).decode())
    for p in procs:
        text = p.text()
        for w in words:
            check(w not in text, "%s logged a secret (%r)" % (p.label, w))


def auth_stack(t):
    """serve (debug log) with agents: p (priv.example.com, AUTH_BASIC),
    adm (pub.example.com/admin, AUTH_BASIC), q (pub.example.com, none)."""
    dbg = {"LOG_LEVEL": "debug"}
    s = t.serve(env=dbg)
    op, oq, oa = t.origin("P"), t.origin("Q"), t.origin("ADM")
    p, _ = route_agent(t, s, op, "p", "priv.example.com",
                       env=dict(dbg, AUTH_BASIC="alice:s3cr3t:x"))
    adm, _ = route_agent(t, s, oa, "adm", "pub.example.com/admin",
                         env=dict(dbg, AUTH_BASIC="root:hunter2"))
    q, _ = route_agent(t, s, oq, "q", "pub.example.com", env=dbg)
    return s, (op, oq, oa), (p, adm, q)


@timed(90)
def test_e5_basic_per_route_at_serve(t):
    s, (op, oq, oa), agents = auth_stack(t)
    mp = op.proc.mark()
    # No credential, wrong ones, malformed ones: 401 at serve.
    expect_401(s, "priv.example.com", "/echo?probe=none", "priv.example.com")
    expect_401(s, "PRIV.example.com:8080", "/echo?probe=port", "priv.example.com")
    for i, auth in enumerate([basic("alice", "wrong"), basic("bob", "s3cr3t:x"),
                              basic("alice", "s3cr3t"), basic("root", "hunter2"),
                              "Basic !!!notbase64", "Bearer s3cr3t:x", "s3cr3t:x"]):
        expect_401(s, "priv.example.com", "/echo?probe=bad%d" % i, "priv.example.com",
                   [("Authorization", auth)])
    # The right one passes, and the field is not forwarded.
    r = curl("-u", "alice:s3cr3t:x", "--resolve", "priv.example.com:%d:127.0.0.1" % s.port,
             "http://priv.example.com:%d/echo?probe=ok" % s.port)
    eq(r.rc, 0, "curl -u %r" % r)
    j = json.loads(r.out.decode())
    eq(j["name"], "P", "origin behind priv.example.com")
    eq(echo_hdr(j, "Authorization"), [], "Authorization forwarded to the local service")
    op.proc.wait_for(r"probe=ok", 10, mp)
    eq(op.proc.count(r"probe=(none|port|bad)", mp), 0,
       "unauthenticated requests that reached the local service")
    # A path route with its own credentials (realm names the route); the
    # same host's other paths belong to an agent without AUTH_BASIC.
    ma = oa.proc.mark()
    expect_401(s, "pub.example.com", "/admin/x?probe=none", "pub.example.com/admin")
    expect_401(s, "pub.example.com", "/admin?probe=alice", "pub.example.com/admin",
               [("Authorization", basic("alice", "s3cr3t:x"))])
    j = expect_origin(s, "pub.example.com", "/admin/x?probe=ok", "ADM",
                      [("Authorization", basic("root", "hunter2"))])
    eq(echo_hdr(j, "Authorization"), [], "Authorization forwarded to the admin service")
    eq(oa.proc.count(r"probe=(none|alice)", ma), 0,
       "unauthenticated requests that reached the admin service")
    # Not protected: pub.example.com outside /admin; the service's own
    # Authorization goes through unchanged there.
    j = expect_origin(s, "pub.example.com", "/adminx", "Q")
    j = expect_origin(s, "pub.example.com", "/echo", "Q",
                      [("Authorization", basic("someone", "their-own"))])
    eq(echo_hdr(j, "Authorization"), [basic("someone", "their-own")],
       "the service's own Authorization on an unprotected route")
    r = req(s, "pub.example.com", "/echo")
    eq(r.header("WWW-Authenticate"), None, "challenge on an unprotected route")
    # WebSocket upgrades are protected too.
    try:
        ws = wsclient.connect(s.port, "/ws?probe=ws-none", host_header="priv.example.com")
        ws.close_socket()
        fail("WebSocket upgrade without credentials was switched")
    except wsclient.HandshakeError as e:
        eq(e.status, 401, "WebSocket upgrade without credentials")
    ws = wsclient.connect(s.port, "/ws?hello=1", host_header="priv.example.com",
                          headers=[("Authorization", basic("alice", "s3cr3t:x"))])
    try:
        hello = json.loads(ws.recv().data.decode())
        eq([v for k, v in hello["headers"] if k.lower() == "authorization"], [],
           "Authorization forwarded with the upgrade")
        ws.send("x")
        eq(ws.recv().data, b"x", "echo on the protected WebSocket")
        ws.close()
    finally:
        ws.close_socket()
    eq(op.proc.count(r"probe=ws-none", mp), 0, "the unauthenticated upgrade reached the service")
    no_secrets_logged([s.proc] + list(agents))


@timed(60)
def test_e5_basic_file_two_users(t):
    """AUTH_BASIC_FILE: one user:password a line (comments and blank lines
    skipped; a password may hold ':'), in union with AUTH_BASIC; a bad line
    stops the agent with exit 2 naming the file and line, never the secret."""
    path = os.path.join(t.logdir, "users")
    with open(path, "w") as f:
        f.write("# the team\nalice:pw-one\n\nbob:pw:two\n")
    s = t.serve(env={"LOG_LEVEL": "debug"})
    o = t.origin("P")
    a, _ = route_agent(t, s, o, "p", "team.example.com",
                       env={"AUTH_BASIC_FILE": path, "AUTH_BASIC": "carl:pw-three",
                            "LOG_LEVEL": "debug"})
    for user, pw in (("alice", "pw-one"), ("bob", "pw:two"), ("carl", "pw-three")):
        j = expect_origin(s, "team.example.com", "/echo", "P",
                          [("Authorization", basic(user, pw))])
        eq(echo_hdr(j, "Authorization"), [], "Authorization forwarded for %s" % user)
        r = curl("-u", "%s:%s" % (user, pw), "-H", "Host: team.example.com",
                 "http://127.0.0.1:%d/name" % s.port)
        eq((r.rc, r.out), (0, b"P\n"), "curl -u %s %r" % (user, r))
    for user, pw in (("alice", "pw:two"), ("bob", "pw-one"), ("dave", "pw-one"),
                     ("# the team", ""), ("", "pw-one")):
        expect_401(s, "team.example.com", "/echo", "team.example.com",
                   [("Authorization", basic(user, pw))])
    no_secrets_logged([s.proc, a])

    bad = os.path.join(t.logdir, "users-bad")
    with open(bad, "w") as f:
        f.write("alice:pw-one\nnocolon-secretword\n")
    rc, text = t.run_natwrp("agent-bad", ["agent"], env={
        "AGENT_ID": "x", "REMOTE_URL": s.url, "LOCAL_URL": o.url, "ROUTES": "team.example.com",
        "AUTH_BASIC_FILE": bad})
    eq(rc, 2, "agent with a bad AUTH_BASIC_FILE (output %r)" % text[-300:])
    check("users-bad" in text and re.search(r"\b2\b", text), "error names file and line: %r" %
          text[-300:])
    check("nocolon-secretword" not in text, "error shows the secret: %r" % text[-300:])


# ----------------------------------------------------------------- browser

BROWSER_FLAGS = ["--host-resolver-rules=MAP *.example.com 127.0.0.1", "--no-proxy-server",
                 "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable"]


class Browser:
    """Headless Chromium on one page, driven over DevTools. With fetch, every
    request pauses in the Fetch domain (continued at once) so that auth
    challenges come to us: Fetch.authRequired is answered with self.creds
    ((user, password)) or cancelled when None, and recorded."""

    def __init__(self, t, fetch=False):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            fail("chromium is not installed (scripts/deps.sh --browser installs it)")
        profile = tempfile.mkdtemp(prefix="natwrp-chromium-", dir=t.logdir)
        self.proc = t.spawn("chromium", [exe] + CHROMIUM_FLAGS + BROWSER_FLAGS +
                            ["--user-data-dir=" + profile, "about:blank"])
        m = self.proc.wait_for(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)", 30)
        pages = [x for x in http_json(int(m.group(2)), "/json/list") if x.get("type") == "page"]
        check(pages, "no page target in %r" % pages)
        self.cdp = Cdp(pages[0]["webSocketDebuggerUrl"])
        self.creds = None
        self.challenges = []
        self.seen = []
        self.call("Page.enable")
        self.call("Runtime.enable")
        if fetch:
            self.call("Fetch.enable", patterns=[{"urlPattern": "*"}], handleAuthRequests=True)

    def _handle(self, msg):
        method = msg.get("method")
        p = msg.get("params", {})
        if method == "Fetch.requestPaused":
            self.cdp.send("Fetch.continueRequest", requestId=p["requestId"])
        elif method == "Fetch.authRequired":
            self.challenges.append(p["authChallenge"])
            if self.creds:
                resp = {"response": "ProvideCredentials", "username": self.creds[0],
                        "password": self.creds[1]}
            else:
                resp = {"response": "CancelAuth"}
            self.cdp.send("Fetch.continueWithAuth", requestId=p["requestId"],
                          authChallengeResponse=resp)
        elif method:
            self.seen.append(msg)

    def pump(self, pred, timeout=30.0):
        """Handle messages until pred(msg); returns it (bounded by timeout
        and by the DevTools socket's own timeout)."""
        for m in self.seen:
            if pred(m):
                self.seen.remove(m)
                return m
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.cdp._recv_message()
            if pred(msg):
                return msg
            self._handle(msg)
        fail("DevTools: no awaited message within %.0fs" % timeout)

    def call(self, method, **params):
        want = self.cdp.send(method, **params)
        msg = self.pump(lambda m: m.get("id") == want)
        check("error" not in msg, "%s failed: %r" % (method, msg.get("error")))
        return msg.get("result", {})

    def navigate(self, url):
        """Load url; returns the navigation's HTTP status."""
        self.seen = [m for m in self.seen if m.get("method") != "Page.loadEventFired"]
        res = self.call("Page.navigate", url=url)
        check("errorText" not in res, "navigation to %s: %r" % (url, res))
        self.pump(lambda m: m.get("method") == "Page.loadEventFired")
        return self.eval("performance.getEntriesByType('navigation')[0].responseStatus")

    def eval(self, expr):
        res = self.call("Runtime.evaluate", expression=expr, awaitPromise=True,
                        returnByValue=True)
        check("exceptionDetails" not in res, "page script failed: %r" % res)
        return res["result"].get("value")

    def close(self):
        self.cdp.close()


@timed(120)
def test_e5_browser_basic_challenge(t):
    """A browser loading a protected route gets a 401 with a Basic challenge
    for the route's realm (cancelled: the page shows the 401 and the local
    service saw nothing); with credentials the page loads, and the
    Authorization the browser sends is not forwarded."""
    s, (op, oq, oa), agents = auth_stack(t)
    mp = op.proc.mark()
    b = Browser(t, fetch=True)
    try:
        base = "http://priv.example.com:%d" % s.port
        st = b.navigate(base + "/echo?probe=browser-cancel")
        eq(st, 401, "navigation status without credentials")
        check(b.challenges, "the browser saw no auth challenge")
        c = b.challenges[0]
        eq((c.get("scheme", "").lower(), c.get("realm")), ("basic", "priv.example.com"),
           "challenge the browser parsed: %r" % c)
        eq(op.proc.count(r"probe=browser-cancel", mp), 0,
           "the unauthenticated page load reached the local service")
        b.creds = ("alice", "s3cr3t:x")
        st = b.navigate(base + "/echo?probe=browser-ok")
        eq(st, 200, "navigation status with credentials")
        text = b.eval("fetch('/echo?probe=browser-fetch').then(async r => "
                      "JSON.stringify({status: r.status, body: await r.text()}))")
        res = json.loads(text)
        eq(res["status"], 200, "fetch() from the page")
        j = json.loads(res["body"])
        eq(j["name"], "P", "origin behind the protected route")
        eq(echo_hdr(j, "Authorization"), [], "the browser's Authorization was forwarded")
        eq([v.lower() for v in echo_hdr(j, "X-Forwarded-Host")],
           ["priv.example.com:%d" % s.port], "X-Forwarded-Host")
        # The other host of the same serve asks for nothing.
        n = len(b.challenges)
        st = b.navigate("http://pub.example.com:%d/echo" % s.port)
        eq((st, len(b.challenges)), (200, n), "unprotected route: status, new challenges")
    finally:
        b.close()
    no_secrets_logged([s.proc] + list(agents))


JUPYTER_LIKE = r'''
import json, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = b"<!doctype html><title>notebook</title><p>a Jupyter-style service</p>"

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("jupyter-like " + (fmt % args) + "\n")
        sys.stderr.flush()

    def answer(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(200, PAGE, "text/html; charset=utf-8")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        origin, host = self.headers.get("Origin"), self.headers.get("Host")
        seen = json.dumps({"origin": origin, "host": host}).encode()
        # Jupyter's check: a request with an Origin whose host is not Host
        # is cross-origin, refused.
        if origin and urllib.parse.urlsplit(origin).netloc != host:
            self.answer(403, b"Blocking Cross Origin API request " + seen, "text/plain")
        else:
            self.answer(200, seen, "application/json")

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
print("jupyter-like listening %d" % srv.server_address[1], flush=True)
srv.serve_forever()
'''


@timed(120)
def test_e5_browser_jupyter_origin_check(t):
    """A page's fetch() POST carries Origin http://HOST:PORT; the local
    service refuses it unless its Host is the same. With PRESERVE_HOST=1 the
    service gets the public Host and the POST passes; without it the service
    sees LOCAL_URL's host and refuses (so the check is real)."""
    path = os.path.join(t.logdir, "jupyter_like.py")
    with open(path, "w") as f:
        f.write(JUPYTER_LIKE)
    svc = t.spawn("jupyter-like", [sys.executable, path])
    port = int(svc.wait_for(r"jupyter-like listening (\d+)", 10).group(1))
    local = "http://127.0.0.1:%d" % port
    s = t.serve()
    route_agent(t, s, local, "jp", "jup.example.com", env={"PRESERVE_HOST": "1"})
    route_agent(t, s, local, "jn", "nojup.example.com")
    post = ("fetch('/api/kernels/run', {method: 'POST', headers: {'Content-Type': "
            "'application/json'}, body: '{\"code\": \"1+1\"}'}).then(async r => "
            "JSON.stringify({status: r.status, body: await r.text()}))")
    b = Browser(t)
    try:
        pub = "jup.example.com:%d" % s.port
        eq(b.navigate("http://%s/tree" % pub), 200, "notebook page with PRESERVE_HOST")
        for _ in range(3):
            res = json.loads(b.eval(post))
            eq(res["status"], 200, "fetch() POST with PRESERVE_HOST (body %r)" % res["body"])
            seen = json.loads(res["body"])
            eq(seen, {"origin": "http://" + pub, "host": pub}, "Origin and Host at the service")
        pub = "nojup.example.com:%d" % s.port
        eq(b.navigate("http://%s/tree" % pub), 200, "notebook page without PRESERVE_HOST")
        for _ in range(3):
            res = json.loads(b.eval(post))
            eq(res["status"], 403, "fetch() POST without PRESERVE_HOST (body %r)" % res["body"])
            check(("http://" + pub) in res["body"] and local[7:] in res["body"],
                  "the service compared the page's Origin with LOCAL_URL's host: %r" %
                  res["body"])
    finally:
        b.close()
    # The same check by raw request: the Host the service sees.
    for _ in range(3):
        r = http_request(s.port, "POST", "/api/x", [("Host", "jup.example.com"),
                                                    ("Origin", "http://jup.example.com")], b"{}")
        eq(r.status, 200, "raw POST with PRESERVE_HOST (body %r)" % r.body[:200])
        r = http_request(s.port, "POST", "/api/x", [("Host", "nojup.example.com"),
                                                    ("Origin", "http://nojup.example.com")], b"{}")
        eq(r.status, 403, "raw POST without PRESERVE_HOST (body %r)" % r.body[:200])


@timed(60)
def test_e5_auth_follows_the_route_not_the_host_field(t):
    """The credential check uses the route the request is sent to: an
    absolute-form target naming the protected host needs the credential
    whatever Host says; a path that normalises to the protected prefix
    (/%61dmin, //admin, /x/../admin) needs it even when one local service
    sits behind both the protected and the open route; and each request on
    a keep-alive connection is checked on its own."""
    s = t.serve()
    o = t.origin("APP")
    route_agent(t, s, o, "adm", "app.example.com/admin", env={"AUTH_BASIC": "root:hunter2"})
    route_agent(t, s, o, "open", "app.example.com")
    route_agent(t, s, o, "priv", "priv.example.com", env={"AUTH_BASIC": "alice:s3cr3t:x"})
    m = o.proc.mark()
    expect_401(s, "app.example.com", "http://priv.example.com/echo?probe=abs", "priv.example.com")
    expect_401(s, "priv.example.com.", "/echo?probe=dot", "priv.example.com")
    for i, target in enumerate(["/%61dmin/x", "//admin/x",
                                "/admin/", "/admin?x=1", "/%61%64%6d%69%6e",
                                "http://app.example.com/%61dmin/x"]):
        sep = "&" if "?" in target else "?"
        expect_401(s, "app.example.com", target + sep + "probe=p%d" % i, "app.example.com/admin")
    # Dot segments whose readings (resolved, kept) fall on different routes:
    # 400, whichever way the service would read them.
    for target in ("/x/../admin/x?probe=d1", "/admin/../x?probe=d2", "/./admin?probe=d3"):
        eq(req(s, "app.example.com", target).status, 400, "%s: two routes' path" % target)
    eq(o.proc.count(r"probe=", m), 0, "unauthenticated requests that reached the service")
    expect_origin(s, "app.example.com", "/adminx?probe=open", "APP")
    # Absolute form naming the open route, Host naming the protected one.
    r = req(s, "priv.example.com", "http://app.example.com/name")
    eq((r.status, r.body), (200, b"APP\n"), "absolute form to the open route")
    # One connection: authorised, then not, then authorised again.
    c = Conn(s.port)
    try:
        for auth, want in ((basic("alice", "s3cr3t:x"), 200), (None, 401),
                           (basic("root", "hunter2"), 401), (basic("alice", "s3cr3t:x"), 200)):
            hdrs = [("Host", "priv.example.com")] + ([("Authorization", auth)] if auth else [])
            c.request("GET", "/echo", hdrs)
            r = c.read_response()
            eq(r.status, want, "keep-alive request with %r" % auth)
            if r.header("Connection") and r.header("Connection").lower() == "close":
                c.close()
                c = Conn(s.port)
    finally:
        c.close()


@timed(40)
def test_e5_credential_never_forwarded(t):
    """Authorization is a singleton field (RFC 9110 11.6.2): a request that
    repeats the right credential in two fields is refused or has both
    removed; the password never reaches the local service."""
    s = t.serve()
    o = t.origin("P")
    route_agent(t, s, o, "p", "priv.example.com", env={"AUTH_BASIC": "alice:s3cr3t:x"})
    good, other = basic("alice", "s3cr3t:x"), basic("someone", "else")
    for fields in ([good, good], [good, other], [other, good]):
        r = req(s, "priv.example.com", "/echo",
                headers=[("Authorization", v) for v in fields])
        check(r.status in (200, 400, 401), "two Authorization fields %r: %d" % (fields, r.status))
        if r.status == 200:
            j = r.json()
            check(good not in echo_hdr(j, "Authorization"),
                  "the route's credential reached the local service: %r" %
                  echo_hdr(j, "Authorization"))


@timed(60)
def test_e5_held_route_still_checks_credentials(t):
    """A request for a protected route that waits while the route is held
    (its agent restarting) is checked against the credentials of the tunnel
    that comes back before it is forwarded: without them it gets 401 and
    the local service never sees it; with them it is served."""
    s = t.serve("--queue-timeout", "8")
    started = time.time()
    o = t.origin("P")
    env = {"AUTH_BASIC": "alice:s3cr3t:x"}
    a, tun = route_agent(t, s, o, "p", "priv.example.com", env=env)
    left = started + 8 + 0.3 - time.time()
    if left > 0:
        time.sleep(left)  # past serve's start-up window (a wait on time itself)
    mark = s.proc.mark()
    a.terminate()
    s.proc.wait_for(r"route priv\.example\.com -tun=%d agent=p\b" % tun, 10, mark)
    out = {}

    def client(key, headers):
        try:
            out[key] = req(s, "priv.example.com", "/echo?probe=" + key, headers=headers,
                           timeout=20)
        except Exception as e:  # noqa: B902
            out[key] = e

    ths = [threading.Thread(target=client, args=("held-none", []), daemon=True),
           threading.Thread(target=client, args=("held-ok", [
               ("Authorization", basic("alice", "s3cr3t:x"))]), daemon=True)]
    m = o.proc.mark()
    for th in ths:
        th.start()
    deadline = time.time() + 5
    while s.proc.count(r": waiting", mark) < 2 and time.time() < deadline and not out:
        time.sleep(0.02)
    check(not out, "answered at once instead of waiting for the held route: %r" % out)
    eq(s.proc.count(r": waiting", mark), 2, "requests serve holds for the route")
    route_agent(t, s, o, "p", "priv.example.com", env=env, label="agent-p2")
    for th in ths:
        th.join(20)
    r = out.get("held-none")
    check(r is not None and not isinstance(r, BaseException), "held-none: %r" % r)
    eq(r.status, 401, "held request without credentials after the agent came back")
    r = out.get("held-ok")
    check(r is not None and not isinstance(r, BaseException), "held-ok: %r" % r)
    eq(r.status, 200, "held request with credentials after the agent came back")
    eq(o.proc.count(r"probe=held-none", m), 0, "the unauthenticated held request reached "
       "the service")


@timed(60)
def test_e5_shared_route_each_tunnel_its_credentials(t):
    """Two agents share one route, each with its own AUTH_BASIC: a request
    goes only to a tunnel whose credential it carries (docs/protocol.md 5),
    so each user always reaches their own agent and never gets a 401 from
    the balancer's choice; a credential of neither gets 401."""
    s = t.serve("--balance", "round-robin")
    o1, o2 = t.origin("ONE"), t.origin("TWO")
    route_agent(t, s, o1, "one", "team.example.com", env={"AUTH_BASIC": "alice:pw-one"})
    route_agent(t, s, o2, "two", "team.example.com", env={"AUTH_BASIC": "bob:pw:two"})
    for _ in range(4):
        j = expect_origin(s, "team.example.com", "/echo", "ONE",
                          [("Authorization", basic("alice", "pw-one"))])
        eq(echo_hdr(j, "Authorization"), [], "Authorization forwarded to ONE")
        j = expect_origin(s, "team.example.com", "/echo", "TWO",
                          [("Authorization", basic("bob", "pw:two"))])
        eq(echo_hdr(j, "Authorization"), [], "Authorization forwarded to TWO")
    r = expect_401(s, "team.example.com", "/echo", "team.example.com",
                   [("Authorization", basic("alice", "pw:two"))])
    eq(r.header_all("WWW-Authenticate").count('Basic realm="team.example.com"'), 1,
       "one challenge for the route, not one per tunnel")
