"""d2 AUTH_TOKEN for browsers (issue 11): a visitor's 401 offers Basic
before Bearer (RFC 9110 11.6.1), Basic credentials whose password is the
token pass whatever the user-id (RFC 7617), the Authorization field that
carried the token never reaches the local service, and malformed Basic is
a 401, never a crash."""

import base64

from harness import Conn, check, curl, curl_status, echo, eq, get, hdr, http_request, timed

TOKEN = "S3cret"
CHALLENGES = ['Basic realm="natwrp"', 'Bearer realm="natwrp"']


def basic(user_pass):
    if isinstance(user_pass, str):
        user_pass = user_pass.encode()
    return "Basic " + base64.b64encode(user_pass).decode()


def _challenged(r, what):
    eq(r.status, 401, "%s: status (body %r)" % (what, r.body[:200]))
    eq(r.header_all("WWW-Authenticate"), CHALLENGES, "%s: WWW-Authenticate fields" % what)


def _curl_head(url, *args):
    """curl -D - with args: (status, [WWW-Authenticate values], body)."""
    res = curl("-D", "/dev/stderr", "-o", "/dev/stdout", "-w", "%{stderr}CODE=%{http_code}\n",
               *args, url, timeout=10)
    eq(res.rc, 0, "curl %r exit (%r)" % (args, res))
    www = [ln.split(":", 1)[1].strip() for ln in res.err.splitlines()
           if ln.lower().startswith("www-authenticate:")]
    return curl_status(res), www, res.out


@timed(30)
def test_basic_curl(t):
    o, s, a = t.stack(serve_args=["--auth-token", TOKEN])
    # curl -u: any user name, the token as password.
    for user in ("anyuser", "admin", ""):
        st, www, body = _curl_head(s.url + "/echo/curl-basic", "-u", "%s:%s" % (user, TOKEN))
        eq(st, 200, "curl -u %s:TOKEN status (body %r)" % (user, body[:200]))
        e = __import__("json").loads(body.decode())
        eq(hdr(e, "Authorization"), [], "Authorization reaching the origin (user %r)" % user)
        eq(www, [], "WWW-Authenticate on a 200")
    # A wrong password, a token in the user-id, no password: 401 with both
    # challenges, Basic first; the origin never sees the request.
    for cred in ("user:wrong", "%s:x" % TOKEN, "user:%s " % TOKEN, "user:" + TOKEN[:-1], "user"):
        mark = s.proc.mark()
        st, www, body = _curl_head(s.url + "/echo/curl-wrong", "-u", cred)
        eq(st, 401, "curl -u %r status" % cred)
        eq(www, CHALLENGES, "curl -u %r: WWW-Authenticate fields in order" % cred)
        s.proc.wait_for(r"unauthorized: wrong token: 401", 10, since=mark)
    check("curl-wrong" not in o.proc.text(), "origin received a request with wrong credentials")
    # curl --basic on a fresh handshake: no credentials, then a challenge.
    st, www, _ = _curl_head(s.url + "/echo/none")
    eq((st, www), (401, CHALLENGES), "no credentials: status and challenges")


@timed(30)
def test_basic_challenge_raw(t):
    o, s, a = t.stack(serve_args=["--auth-token", TOKEN])
    c = Conn(s.port)
    c.request("GET", "/echo/raw-none")
    r = c.read_response()
    _challenged(r, "no credentials")
    # The connection stays usable: the browser's retry with the credential.
    c.request("GET", "/echo/raw-retry", [("Authorization", basic("me:" + TOKEN))])
    r = c.read_response()
    eq(r.status, 200, "retry with Basic on the same connection")
    eq(r.json()["path"], "/echo/raw-retry", "retried path")
    eq(hdr(r.json(), "Authorization"), [], "Authorization reaching the origin")
    c.close()
    # The scheme name is case-insensitive (RFC 9110 11.1).
    for v in ("basic " + basic("u:" + TOKEN)[6:], "BASIC   " + basic("u:" + TOKEN)[6:]):
        e = echo(s, "/echo/case", headers=[("Authorization", v)])
        eq(hdr(e, "Authorization"), [], "Authorization %r reaching the origin" % v)
    # A password with ':' in it: only the first ':' ends the user-id.
    o2, s2 = t.origin("B"), t.serve("--auth-token", "a:b", label="serve-colon")
    t.agent(s2, o2, agent_id="a2", label="agent2")
    eq(echo(s2, "/echo/colon", headers=[("Authorization", basic("u:a:b"))])["path"],
       "/echo/colon", "password 'a:b'")
    _challenged(get(s2, "/echo/colon", headers=[("Authorization", basic("u:a:b:"))]),
                "password 'a:b:'")


@timed(30)
def test_basic_malformed(t):
    o, s, a = t.stack(serve_args=["--auth-token", TOKEN])
    good = base64.b64encode(("u:" + TOKEN).encode()).decode()
    bad = [
        "Basic",                                        # no credentials at all
        "Basic ",
        "Basic " + base64.b64encode(TOKEN.encode()).decode(),  # no ':' at all
        "Basic " + good[:-2] + "*=",                    # not base64
        "Basic " + good[:4] + " " + good[4:],           # a space inside
        "Basic " + good + "==",                         # padding past the quantum
        "Basic =" + good,                               # padding first
        "Basic " + good.rstrip("=") + "AA",             # 4n+1 characters
        "Basic " + base64.b64encode(b"u:" + TOKEN.encode() + b"\x00").decode(),  # NUL
        "Basic " + base64.b64encode(b"u:S3c\x00ret").decode(),
        "Basic " + base64.b64encode(b"\x00:" + TOKEN.encode()).decode(),
        "Basic " + base64.b64encode(b"u:" + TOKEN.encode() + b"\r\n").decode(),
        "Basic " + base64.b64encode(b"u:" + b"x" * 30000).decode(),  # huge (40 KB)
        "Basic " + "A" * 40000,                         # huge, no ':'
        "Basic " + good + "A",                          # trailing garbage
        "Bearer " + good,
        "Digest username=\"u\"",
    ]
    for v in bad:
        mark = s.proc.mark()
        c = Conn(s.port)
        c.request("GET", "/echo/malformed", [("Authorization", v)])
        r = c.read_response()
        _challenged(r, "Authorization %r" % v[:40])
        s.proc.wait_for(r"unauthorized: wrong token: 401", 10, since=mark)
        c.close()
    # Raw NUL and CR bytes in the field itself are not a header value: 400.
    for raw in (b"Basic dTpT\x00M2NyZXQ=", b"Basic \x00"):
        c = Conn(s.port)
        c.send(b"GET /echo/nul HTTP/1.1\r\nHost: x\r\nAuthorization: " + raw + b"\r\n\r\n")
        r = c.read_response(allow_eof=True)
        check(r is None or r.status in (400, 401), "raw %r: status %r" % (raw, r and r.status))
        c.close()
    # A value past --max-head: 431, serve still up.
    r = get(s, "/echo/huge", headers=[("Authorization", "Basic " + "A" * 70000)])
    check(r.status in (400, 431), "value past --max-head: status %d" % r.status)
    check("malformed" not in o.proc.text() and "/echo/nul" not in o.proc.text() and
          "/echo/huge" not in o.proc.text(), "origin received a request without valid credentials")
    eq(echo(s, "/echo/after", headers=[("Authorization", "Basic " + good)])["path"],
       "/echo/after", "serve answers after the malformed values")


@timed(30)
def test_basic_not_forwarded(t):
    o, s, a = t.stack(serve_args=["--auth-token", TOKEN])
    # Bearer passes as before; its field is serve's too and stays here.
    e = echo(s, "/echo/bearer", headers=[("Authorization", "Bearer " + TOKEN)])
    eq(hdr(e, "Authorization"), [], "Bearer Authorization reaching the origin")
    e = echo(s, "/echo/bare", headers=[("Authorization", TOKEN)])
    eq(hdr(e, "Authorization"), [], "bare-token Authorization reaching the origin")
    # Authenticated by X-Auth-Token: an Authorization field is the service's.
    e = echo(s, "/echo/svc", headers=[("X-Auth-Token", TOKEN),
                                      ("Authorization", "Bearer svc-token")])
    eq(hdr(e, "Authorization"), ["Bearer svc-token"], "the service's own Authorization")
    eq(hdr(e, "X-Auth-Token"), [], "X-Auth-Token reaching the origin")
    # Both ways at once: the Authorization field with the token stays here too.
    e = echo(s, "/echo/both", headers=[("X-Auth-Token", TOKEN),
                                       ("Authorization", basic("me:" + TOKEN))])
    eq(hdr(e, "Authorization"), [], "Authorization with the token beside X-Auth-Token")
    # Two Authorization fields: 400. It is a singleton (RFC 9110 11.6.2), and
    # a second copy of the credential serve removes would reach the service.
    for two in ([("Authorization", "Bearer svc-token"), ("Authorization", basic("me:" + TOKEN))],
                [("Authorization", basic("me:" + TOKEN))] * 2):
        r = http_request(s.port, "GET", "/echo/two", headers=two)
        eq(r.status, 400, "two Authorization fields")
    check(TOKEN not in o.proc.text(), "the token reached the origin")


@timed(30)
def test_basic_auth_rule(t):
    o, s, a = t.stack(serve_args=["--auth-token", TOKEN, "--auth-rule", "^/private"])
    # A path the rule does not name needs nothing, and its Authorization is
    # the service's (even when it happens to hold the token).
    e = echo(s, "/public/x", headers=[("Authorization", basic("svc:pw"))])
    eq(hdr(e, "Authorization"), [basic("svc:pw")], "Authorization on a public path")
    _challenged(get(s, "/private/x"), "/private/x without credentials")
    _challenged(get(s, "/private/x", headers=[("Authorization", basic("u:nope"))]),
                "/private/x with a wrong password")
    st, www, body = _curl_head(s.url + "/private/y", "-u", "someone:" + TOKEN)
    eq(st, 200, "curl -u on /private/y (body %r)" % body[:200])
    e = __import__("json").loads(body.decode())
    eq(e["path"], "/private/y", "path")
    eq(hdr(e, "Authorization"), [], "Authorization reaching the origin on /private/y")
    eq(echo(s, "/private/z", headers=[("Authorization", "Bearer " + TOKEN)])["path"],
       "/private/z", "Bearer on /private/z")


@timed(30)
def test_basic_tunnel_challenge_bearer_only(t):
    """The tunnel handshake takes CONN_TOKEN as Bearer only: its 401 does not
    offer Basic, and Basic credentials there are refused."""
    from test_b0_access import _upgrade  # noqa: E402
    o, s = t.origin("A"), t.serve("--conn-token", "Ct0k", "--auth-token", TOKEN)
    c, r = _upgrade(s.port, "tb", extra=[("Authorization", basic("u:Ct0k"))])
    c.close()
    eq(r.status, 401, "tunnel upgrade with Basic CONN_TOKEN")
    eq(r.header_all("WWW-Authenticate"), ['Bearer realm="natwrp"'], "tunnel 401 challenge")
    # A visitor's 401 on the same serve offers both.
    _challenged(get(s, "/echo/x"), "visitor on a serve with CONN_TOKEN")
