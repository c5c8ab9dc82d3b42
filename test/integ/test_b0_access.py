"""b0 access control (issue 4): CONN_TOKEN and --allow-agent for tunnels,
AUTH_TOKEN and AUTH_RULE for public requests. Each rule: the allowed case
passes, the refused case gets the documented status and log line."""

import re
import time

from harness import (Conn, TUNNEL_PATH, check, echo, eq, get, hdr, timed, ws_accept)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
PEER = r"[0-9.]+:\d+"  # IP:PORT in "tunnel refused from IP:PORT"


def _upgrade(port, agent_id, target=TUNNEL_PATH, extra=()):
    """A hand-made tunnel upgrade to `target` (query allowed); returns
    (Conn, Response head; body read unless 101)."""
    hdrs = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", KEY), ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Protocol", "natwrp.1"), ("X-Natwrp-Agent", agent_id)] + list(extra)
    c = Conn(port)
    c.request("GET", target, hdrs)
    r = c.read_head()
    if r.status != 101:
        c.read_body(r)
    return c, r


def _upgrade_ok(s, agent_id, extra=(), target=TUNNEL_PATH):
    mark = s.proc.mark()
    c, r = _upgrade(s.port, agent_id, target, extra)
    eq(r.status, 101, "upgrade of %s with %r: status (body %r)" % (agent_id, extra, r.body[:200]))
    eq(r.header("Sec-WebSocket-Accept"), ws_accept(KEY), "Sec-WebSocket-Accept")
    s.wait_tunnel_open(agent_id, since=mark, timeout=10)
    c.close()


def _upgrade_refused(s, agent_id, status, why, extra=(), target=TUNNEL_PATH):
    mark = s.proc.mark()
    c, r = _upgrade(s.port, agent_id, target, extra)
    c.close()
    eq(r.status, status, "upgrade of %s to %s with %r: status (body %r)" % (
        agent_id, target, extra, r.body[:200]))
    s.proc.wait_for(r"tunnel refused from %s agent=%s: %d %s" % (
        PEER, re.escape(agent_id), status, why), 10, since=mark)
    check(not s.proc.find(r"tunnel open tun=\d+ agent=%s\b" % re.escape(agent_id), since=mark),
          "serve opened a tunnel for refused %s" % agent_id)
    return r


def _absent(proc, pattern, since, until):
    """Fail if proc logs a line matching pattern (at index >= since) before
    time.monotonic() reaches `until`. Woken by every new line, so a match
    fails at once; otherwise this is the observation window itself."""
    rx = re.compile(pattern)
    i = since
    with proc.cond:
        while True:
            while i < len(proc.lines):
                if rx.search(proc.lines[i]):
                    check(False, "%s logged /%s/ within the window: %r\n%s" % (
                        proc.label, pattern, proc.lines[i], proc.tail_text()))
                i += 1
            left = until - time.monotonic()
            if left <= 0 or proc.eof:
                return
            proc.cond.wait(left)


def _slow_backoff(agent, agent_id, status):
    """The agent's first refusal: one 'tunnel down' line with the slow
    (~30 s) delay. Returns the delay it printed."""
    m = agent.wait_for(r"tunnel down agent=%s reason=server refused the tunnel: %d .*; "
                       r"reconnecting in (\d+\.\d\d)s \(attempt 1\)$"
                       % (re.escape(agent_id), status), 10)
    delay = float(m.group(1))
    check(20.0 <= delay <= 36.0, "agent %s: reconnect delay after %d is %.2fs, want the slow "
          "backoff cap (24-36 s)" % (agent_id, status, delay))
    return delay


# --------------------------------------------------------------- CONN_TOKEN


@timed(20)
def test_conn_token_matching_agent(t):
    o = t.origin("A")
    for how in ("flag", "env"):
        if how == "flag":
            s = t.serve("--conn-token", "T0ken-1", label="serve-flag")
        else:
            s = t.serve(env={"CONN_TOKEN": "T0ken-1"}, label="serve-env")
        aid = "tok-" + how
        t.agent(s, o, agent_id=aid, env={"CONN_TOKEN": "T0ken-1"}, label="agent-" + how)
        check(not s.proc.find(r"tunnel refused"), "serve (%s) refused something" % how)
        e = echo(s, "/echo/conn-token?how=" + how)
        eq(e["path"], "/echo/conn-token?how=" + how, "path through the tunnel (%s)" % how)
        # CONN_TOKEN guards tunnels only: this public request carried none.



@timed(30)
def test_conn_token_refused_agents_back_off(t):
    o = t.origin("A")
    s = t.serve("--conn-token", "T0ken-1")
    good = t.agent(s, o, agent_id="good", env={"CONN_TOKEN": "T0ken-1"}, label="agent-good")
    bad = t.agent(s, o, agent_id="badtok", env={"CONN_TOKEN": "wrong"}, wait=False,
                  label="agent-wrong")
    none = t.agent(s, o, agent_id="notok", wait=False, label="agent-none")

    s.proc.wait_for(r"tunnel refused from %s agent=badtok: 401 unauthorized: wrong CONN_TOKEN"
                    % PEER, 10)
    s.proc.wait_for(r"tunnel refused from %s agent=notok: 401 unauthorized: "
                    r"no CONN_TOKEN presented" % PEER, 10)
    t0 = time.monotonic()
    for a, aid in ((bad, "badtok"), (none, "notok")):
        a.wait_for(r"agent=%s unauthorized: check CONN_TOKEN" % aid, 10)
        _slow_backoff(a, aid, 401)
    check(not s.proc.find(r"tunnel open tun=\d+ agent=(badtok|notok)\b"),
          "serve opened a tunnel for an agent without the right CONN_TOKEN")

    # The good agent is unaffected.
    eq(echo(s, "/echo/while-refused")["path"], "/echo/while-refused", "request via the good agent")
    check(good.alive(), "good agent exited")

    # No tight loop: a few seconds after the refusal there was exactly one
    # attempt from each refused agent (a fast backoff would retry in ~0.5 s).
    until = t0 + 3.0
    _absent(bad, r"attempt 2\b", 0, until)
    _absent(none, r"attempt 2\b", 0, until)
    eq(s.proc.count(r"tunnel refused from .* agent=badtok:"), 1, "upgrades from badtok")
    eq(s.proc.count(r"tunnel refused from .* agent=notok:"), 1, "upgrades from notok")
    eq(bad.count(r"tunnel down agent=badtok\b"), 1, "badtok 'tunnel down' lines")
    eq(none.count(r"tunnel down agent=notok\b"), 1, "notok 'tunnel down' lines")


@timed(20)
def test_conn_token_raw_upgrades(t):
    o = t.origin("A")
    s = t.serve("--conn-token", "T0ken-1")
    # A token in the URL is ignored: no CONN_TOKEN presented.
    r = _upgrade_refused(s, "url-tok", 401, r"unauthorized: no CONN_TOKEN presented",
                         target=TUNNEL_PATH + "?token=T0ken-1")
    # Wrong value, another scheme, and no scheme at all are all refused.
    _upgrade_refused(s, "wrong-bearer", 401, "unauthorized: wrong CONN_TOKEN",
                     extra=[("Authorization", "Bearer T0ken-2")])
    _upgrade_refused(s, "basic", 401, "unauthorized: wrong CONN_TOKEN",
                     extra=[("Authorization", "Basic dXNlcjpUMGtlbi0x")])  # user:T0ken-1
    _upgrade_refused(s, "url-and-none", 401, "unauthorized: no CONN_TOKEN presented",
                     target=TUNNEL_PATH + "?access_token=T0ken-1&token=T0ken-1")
    # Bearer, in any case of the scheme, is accepted.
    _upgrade_ok(s, "bearer", extra=[("Authorization", "Bearer T0ken-1")])
    _upgrade_ok(s, "lower-bearer", extra=[("Authorization", "bearer T0ken-1")])
    _upgrade_ok(s, "upper-bearer", extra=[("Authorization", "BEARER T0ken-1")])
    # A refused upgrade is a short text answer and the connection closes.
    check(0 < len(r.body) < 1024, "401 body %r" % r.body[:200])
    c, r = _upgrade(s.port, "closes")
    eq(r.status, 401, "status without a token")
    check(c.wait_closed(10), "connection not closed after a refused upgrade")
    c.close()


# -------------------------------------------------------------- --allow-agent


@timed(30)
def test_allow_agent(t):
    o = t.origin("A")
    s = t.serve("--allow-agent", "^good-")
    t.agent(s, o, agent_id="good-1", label="agent-good")
    eq(echo(s, "/echo/allowed")["path"], "/echo/allowed", "request via good-1")

    bad = t.agent(s, o, agent_id="bad-1", wait=False, label="agent-bad")
    s.proc.wait_for(r"tunnel refused from %s agent=bad-1: 403 forbidden: AGENT_ID not allowed "
                    r"by --allow-agent" % PEER, 10)
    bad.wait_for(r"agent=bad-1 forbidden", 10)
    _slow_backoff(bad, "bad-1", 403)
    check(not s.proc.find(r"tunnel open tun=\d+ agent=bad-1\b"), "bad-1 got a tunnel")

    # Searched like grep -E: '^good-' anchors the start only.
    _upgrade_ok(s, "good-x.y@z")
    _upgrade_refused(s, "not-good-1", 403, "forbidden: AGENT_ID not allowed by --allow-agent")
    _upgrade_refused(s, "GOOD-1", 403, "forbidden")  # case matters


@timed(20)
def test_allow_agent_env_ere(t):
    # ALLOW_AGENT from the environment; extended syntax (alternation, +) and
    # an unanchored search.
    s = t.serve(env={"ALLOW_AGENT": "(east|west)[0-9]+"})
    _upgrade_ok(s, "east1")
    _upgrade_ok(s, "box-west22-b")  # found anywhere in the id
    _upgrade_refused(s, "north1", 403, "forbidden: AGENT_ID not allowed by --allow-agent")
    _upgrade_refused(s, "east", 403, "forbidden")
    # Anchored at both ends: exact ids only.
    s2 = t.serve("--allow-agent", "^(a1|a2)$", label="serve-exact")
    _upgrade_ok(s2, "a2")
    _upgrade_refused(s2, "a12", 403, "forbidden")
    _upgrade_refused(s2, "xa1", 403, "forbidden")


@timed(20)
def test_allow_agent_invalid_regex(t):
    rc, out = t.run_natwrp("serve-bad-re", ["serve", "--listen", "127.0.0.1:0",
                                            "--allow-agent", "("])
    eq(rc, 2, "exit status for --allow-agent '(' (output %r)" % out[-300:])
    check("--allow-agent" in out, "error does not name --allow-agent: %r" % out[-300:])


# ---------------------------------------------------------------- AUTH_TOKEN


@timed(20)
def test_auth_token(t):
    o, s, a = t.stack(serve_args=["--auth-token", "S3cret"])

    # No token: 401 with the challenge; the origin never sees it; the
    # connection stays open for the next (bodiless) request.
    mark = s.proc.mark()
    c = Conn(s.port)
    c.request("GET", "/echo/no-token-1")
    r = c.read_response()
    eq(r.status, 401, "status without a token (body %r)" % r.body[:200])
    eq(r.header_all("WWW-Authenticate"), ['Basic realm="natwrp"', 'Bearer realm="natwrp"'],
       "WWW-Authenticate (Basic first, issue 11)")
    check(0 < len(r.body) < 1024, "401 body %r" % r.body[:200])
    check("close" not in (r.header("Connection") or "").lower(),
          "401 for a bodiless request closed the connection (Connection: %s)"
          % r.header("Connection"))
    s.proc.wait_for(r"unauthorized: no token: 401", 10, since=mark)
    c.request("GET", "/echo/after-401", [("X-Auth-Token", "S3cret")])
    r = c.read_response(allow_eof=True)
    check(r is not None, "connection closed after the 401 (keep-alive lost)")
    eq(r.status, 200, "second request on the connection, with the token")
    eq(r.json()["path"], "/echo/after-401", "second request's path")
    c.close()

    # Wrong tokens, both ways of sending them.
    for h in (("X-Auth-Token", "S3cret-not"), ("Authorization", "Bearer nope"),
              ("Authorization", "S3cre"), ("X-Auth-Token", "")):
        mark = s.proc.mark()
        r = get(s, "/echo/wrong-token", headers=[h])
        eq(r.status, 401, "status with %r" % (h,))
        eq(r.header_all("WWW-Authenticate"), ['Basic realm="natwrp"', 'Bearer realm="natwrp"'],
           "WWW-Authenticate with %r" % (h,))
        s.proc.wait_for(r"unauthorized: wrong token: 401", 10, since=mark)

    # Every path needs it without --auth-rule.
    for target in ("/", "/public/x", "/status/204", "/echo?x=1"):
        eq(get(s, target).status, 401, "status of %s without a token" % target)
    check("no-token" not in o.proc.text() and "wrong-token" not in o.proc.text(),
          "origin received a request that had no valid token")

    # X-Auth-Token passes and is stripped.
    e = echo(s, "/echo/x-auth", headers=[("X-Auth-Token", "S3cret")])
    eq(hdr(e, "X-Auth-Token"), [], "X-Auth-Token reaching the origin")
    # Authorization: Bearer passes; the field that carried the token is
    # serve's and stays here (issue 11), like X-Auth-Token.
    e = echo(s, "/echo/bearer", headers=[("Authorization", "Bearer S3cret")])
    eq(hdr(e, "Authorization"), [], "Authorization reaching the origin")
    e = echo(s, "/echo/bearer-lc", headers=[("Authorization", "bearer S3cret")])
    eq(hdr(e, "Authorization"), [], "Authorization (lowercase scheme)")
    # Authorization without a scheme passes too.
    e = echo(s, "/echo/bare", headers=[("Authorization", "S3cret")])
    eq(hdr(e, "Authorization"), [], "bare Authorization reaching the origin")
    # Header name case does not matter.
    e = echo(s, "/echo/lc-name", headers=[("x-auth-token", "S3cret")])
    eq(hdr(e, "X-Auth-Token"), [], "x-auth-token reaching the origin")


@timed(20)
def test_auth_token_env(t):
    o, s = t.origin("A"), t.serve(env={"AUTH_TOKEN": "EnvS3cret"})
    t.agent(s, o)
    eq(get(s, "/echo/env").status, 401, "status without the token")
    e = echo(s, "/echo/env", headers=[("X-Auth-Token", "EnvS3cret")])
    eq(e["path"], "/echo/env", "path with the token")


# ----------------------------------------------------------------- AUTH_RULE


@timed(20)
def test_auth_rule(t):
    o, s, a = t.stack(serve_args=["--auth-token", "S3cret", "--auth-rule", "^/private"])
    ok = [("X-Auth-Token", "S3cret")]
    eq(echo(s, "/public/x")["path"], "/public/x", "public path without a token")
    eq(echo(s, "/")["path"], "/", "root without a token")
    eq(echo(s, "/x/private")["path"], "/x/private", "'^/private' is anchored")
    mark = s.proc.mark()
    r = get(s, "/private/x")
    eq(r.status, 401, "/private/x without a token")
    eq(r.header_all("WWW-Authenticate"), ['Basic realm="natwrp"', 'Bearer realm="natwrp"'],
       "WWW-Authenticate (Basic first, issue 11)")
    s.proc.wait_for(r"unauthorized: no token: 401", 10, since=mark)
    eq(get(s, "/private").status, 401, "/private without a token")
    eq(get(s, "/private?x=1").status, 401, "/private?x=1 without a token")
    eq(get(s, "/private/x", headers=[("X-Auth-Token", "nope")]).status, 401,
       "/private/x with a wrong token")
    e = echo(s, "/private/x", headers=ok)
    eq(e["path"], "/private/x", "/private/x with the token")
    eq(hdr(e, "X-Auth-Token"), [], "X-Auth-Token reaching the origin")
    eq(echo(s, "/private/y", headers=[("Authorization", "Bearer S3cret")])["path"],
       "/private/y", "/private/y with Authorization")
    # The query is not part of the matched path.
    eq(echo(s, "/public?x=/private")["path"], "/public?x=/private", "query naming /private")
    # An unanchored rule is a search (like grep -E).
    s2 = t.serve(env={"AUTH_TOKEN": "S3cret", "AUTH_RULE": "secret|admin"}, label="serve-search")
    t.agent(s2, o, agent_id="a2", label="agent2")
    eq(get(s2, "/a/secret/b").status, 401, "/a/secret/b (AUTH_RULE=secret|admin)")
    eq(get(s2, "/xadminx").status, 401, "/xadminx (AUTH_RULE=secret|admin)")
    eq(echo(s2, "/a/public?q=secret")["path"], "/a/public?q=secret", "query only")
    eq(echo(s2, "/a/secret/b", headers=ok)["path"], "/a/secret/b", "with the token")


@timed(20)
def test_auth_rule_invalid_regex(t):
    rc, out = t.run_natwrp("serve-bad-rule", ["serve", "--listen", "127.0.0.1:0",
                                              "--auth-token", "S", "--auth-rule", "("])
    eq(rc, 2, "exit status for --auth-rule '(' (output %r)" % out[-300:])
    check("--auth-rule" in out, "error does not name --auth-rule: %r" % out[-300:])


@timed(20)
def test_auth_rule_without_token(t):
    o, s, a = t.stack(serve_args=["--auth-rule", "^/private"])
    for target in ("/private/x", "/public/x", "/private?x=1"):
        eq(echo(s, target)["path"], target, "%s with AUTH_RULE but no AUTH_TOKEN" % target)
    check(not s.proc.find(r"unauthorized"), "serve logged an unauthorized request")
