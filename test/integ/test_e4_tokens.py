"""e4 many users on one server (issue 11): serve --tokens FILE, each line
`TOKEN PATTERN...`, lets an agent presenting TOKEN (CONN_TOKEN, sent as
Authorization: Bearer in the handshake) claim only the routes its line's
patterns grant.

Covered, with real agents and origins on loopback: allowed claims (exact
host with any path, names below a wildcard pattern, `*` for anything and
the default route, two tokens sharing a route each grants); a refused claim
(403 naming the route, logged by both ends, other routes unaffected); a
mixed list with one refused route refused whole; an unknown token (401);
hijack by AGENT_ID with another token refused while the original tunnel
keeps serving; SIGHUP adding a token (a new agent is admitted) and removing
one (its tunnel drains: a request in flight finishes, then it closes and its
route no longer answers); a malformed file at start (exit 2 naming the
line, never the token) and on SIGHUP (refused with a log line naming the
line, or the file when it is gone; the old tokens keep working); a route no
longer granted after SIGHUP; one SIGHUP reloading certificate and tokens;
CONN_TOKEN beside --tokens counting as `CONN_TOKEN *`."""

import os
import re
import signal
import threading
import time

from harness import check, eq, pki, timed
from test_e1_routes import (DOMAIN, expect_404, expect_origin, past_start_window, req,
                            route_agent)

TOKENS = """# users of this server
tok-alice *.alice.example.com
tok-bob   bob.example.com   # any path on bob's host

tok-all *
"""


def tokens_file(t, text, name="tokens"):
    path = os.path.join(t.logdir, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)  # never a half-written file for a reload
    return path


def tok_agent(t, s, origin, agent_id, token, routes=None, names=None, wait=True, env=None,
              label=None):
    e = dict(env or {})
    if token is not None:
        e["CONN_TOKEN"] = token
    return route_agent(t, s, origin, agent_id, routes, names=names, env=e, wait=wait,
                       label=label)


def refused(t, s, origin, agent_id, token, routes, status, route=None, mark=None):
    """Start an agent that serve must refuse with status (403: naming route
    in the one-line body the agent logs). Waits for both ends to log it and
    checks no tunnel opened. Returns the agent Proc (it keeps running,
    retrying at the slow cap)."""
    if mark is None:
        mark = s.proc.mark()
    a, _ = tok_agent(t, s, origin, agent_id, token, routes, wait=False)
    if route is not None:
        a.wait_for(r"refused the tunnel: %d\b.*route ['\"]%s['\"]" % (status, re.escape(route)),
                   15)
    else:
        a.wait_for(r"refused the tunnel: %d\b" % status, 15)
    s.proc.wait_for(r"refused.*agent=%s\b.*%d" % (re.escape(agent_id), status), 10, mark)
    eq(s.proc.count(r"tunnel open tun=\d+ agent=%s\b" % re.escape(agent_id), mark), 0,
       "tunnel opened for refused agent %s" % agent_id)
    check(a.alive(), "refused agent %s exited (it should retry at the slow cap)" % agent_id)
    return a


def tokens_serve(t, text, *args, label="serve"):
    path = tokens_file(t, text)
    s = t.serve("--tokens", path, "--domain", DOMAIN, "--queue-timeout", "1",
                "--balance", "round-robin", *args, label=label)
    return s, path


@timed(90)
def test_e4_allowed_and_refused_claims(t):
    s, _ = tokens_serve(t, TOKENS)
    started = time.time()
    oal, obo, oall, oev = (t.origin(n) for n in ("ALICE", "BOB", "ALL", "EVIL"))
    # Allowed: names below *.alice.example.com (exact and wildcard routes),
    # bob's host with any path, and `*` for anything, the default route too.
    tok_agent(t, s, oal, "alice", "tok-alice", "app.alice.example.com, *.x.alice.example.com")
    tok_agent(t, s, obo, "bob", "tok-bob", "bob.example.com/api")
    tok_agent(t, s, oall, "all", "tok-all", "all.example.net, ollama",
              names=["all.example.net", "ollama." + DOMAIN])
    tok_agent(t, s, oall, "all-default", "tok-all")
    # Refused: another user's host; one refused route refuses the whole list.
    mark = s.proc.mark()
    ev = refused(t, s, oev, "evil", "tok-bob", "app.alice.example.com", 403,
                 "app.alice.example.com", mark)
    refused(t, s, oev, "mixed", "tok-alice", "m1.alice.example.com, bob.example.com", 403,
            "bob.example.com", mark)
    # *.alice.example.com is the names below it, not alice.example.com itself.
    refused(t, s, oev, "parent", "tok-alice", "alice.example.com", 403, "alice.example.com",
            mark)
    # Only `*` grants the default route.
    refused(t, s, oev, "nodefault", "tok-alice", None, 403, None, mark)
    # Unknown token, and none at all: 401 as today.
    refused(t, s, oev, "stranger", "tok-mallory", "m.example.org", 401, None, mark)
    refused(t, s, oev, "anon", None, "anon.example.org", 401, None, mark)
    # The refusals name the route and why, and never echo a token.
    line = ev.find(r"refused the tunnel: 403.*")[0].group(0)
    check("not granted" in line, "the refusal does not say why: %r" % line)
    for tok in ("tok-alice", "tok-bob", "tok-all", "tok-mallory"):
        check(tok not in s.proc.text(), "serve logged the token %s" % tok)

    past_start_window(started, 1)
    expect_origin(s, "app.alice.example.com", "/echo", "ALICE")
    expect_origin(s, "deep.x.alice.example.com", "/echo", "ALICE")
    expect_origin(s, "bob.example.com", "/api/x", "BOB")
    expect_origin(s, "all.example.net", "/echo", "ALL")
    expect_origin(s, "ollama." + DOMAIN, "/echo", "ALL")
    expect_origin(s, "unclaimed.example.org", "/echo", "ALL")  # default route, from `*`
    expect_origin(s, "m1.alice.example.com", "/echo", "ALL")  # mixed list: none of it served
    expect_origin(s, "alice.example.com", "/echo", "ALL")
    eq(oev.proc.count(r'"GET '), 0, "requests that reached the refused agents' origin")

    # Several tunnels on one route, each granted by its own token: both serve.
    o2 = t.origin("ALICE2")
    tok_agent(t, s, o2, "alice2", "tok-all", "app.alice.example.com")
    seen = {served_by_name(s, "app.alice.example.com") for _ in range(6)}
    eq(seen, {"ALICE", "ALICE2"}, "origins serving a route two granted tunnels share")


def served_by_name(s, host):
    r = req(s, host, "/name")
    eq(r.status, 200, "GET /name on %s" % host)
    return r.text().strip()


@timed(60)
def test_e4_hijack_by_agent_id_refused(t):
    """A tunnel with the AGENT_ID of another user's tunnel cannot replace it
    (or take its route) with another token, even one whose line grants the
    route: it is refused and the original keeps serving."""
    s, _ = tokens_serve(t, TOKENS)
    oal, oev = t.origin("ALICE"), t.origin("EVIL")
    _, tun = tok_agent(t, s, oal, "shared", "tok-alice", "app.alice.example.com")
    mark = s.proc.mark()
    # Not granted, same id.
    refused(t, s, oev, "shared", "tok-bob", "app.alice.example.com", 403, None, mark)
    # Granted by `*`, but the tunnel it would replace has another token.
    a, _ = tok_agent(t, s, oev, "shared", "tok-all", "app.alice.example.com", wait=False,
                     label="agent-shared-all")
    m = a.wait_for(r"refused the tunnel: (\d+)", 15)
    check(400 <= int(m.group(1)) < 500, "replacement with another token: %s" % m.group(0))
    # A different route, same id, another token: still a replacement.
    a, _ = tok_agent(t, s, oev, "shared", "tok-bob", "bob.example.com", wait=False,
                     label="agent-shared-bob")
    m = a.wait_for(r"refused the tunnel: (\d+)", 15)
    check(400 <= int(m.group(1)) < 500, "replacement with another token: %s" % m.group(0))
    eq(s.proc.count(r"tunnel replaced tun=%d\b" % tun, mark), 0, "the original was replaced")
    eq(s.proc.count(r"tunnel closed tun=%d\b" % tun, mark), 0, "the original was closed")
    eq(s.proc.count(r"route app\.alice\.example\.com -tun=%d\b" % tun, mark), 0,
       "the original's route was removed")
    for _ in range(4):
        expect_origin(s, "app.alice.example.com", "/echo", "ALICE")
    eq(oev.proc.count(r'"GET '), 0, "requests that reached the hijacker's origin")


def _slow_request(s, host, out):
    def run():
        try:
            out.append(req(s, host, "/slow-body?ms=300&parts=5&size=10", timeout=20))
        except Exception as e:  # noqa: B902
            out.append(e)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


@timed(120)
def test_e4_sighup_adds_and_removes_tokens(t):
    """SIGHUP re-reads the tokens file: a token added works at once (a new
    agent is admitted); a token removed gets GOAWAY: its request in flight
    finishes, then its tunnel closes, its route is gone, and its agent's
    reconnection is refused (401). Other users are not touched."""
    v1 = "tok-alice *.alice.example.com\ntok-bob bob.example.com\n"
    s, path = tokens_serve(t, v1, "--grace", "10")
    oal, obo, oca = t.origin("ALICE"), t.origin("BOB"), t.origin("CAROL")
    _, tal = tok_agent(t, s, oal, "alice", "tok-alice", "app.alice.example.com")
    bob, tbo = tok_agent(t, s, obo, "bob", "tok-bob", "bob.example.com")
    carol = refused(t, s, oca, "carol", "tok-carol", "carol.example.com", 401)
    _, problem = carol.terminate()
    check(problem is None, problem)

    # A request in flight on bob's tunnel when the reload removes bob.
    out = []
    mo = obo.proc.mark()
    th = _slow_request(s, "bob.example.com", out)
    obo.proc.wait_for(r'"GET /slow-body', 10, mo)
    tokens_file(t, "tok-alice *.alice.example.com\n# bob left\ntok-carol carol.example.com\n")
    mark = s.proc.mark()
    s.proc.send(signal.SIGHUP)
    s.proc.wait_for(r"route bob\.example\.com -tun=%d agent=bob\b" % tbo, 10, mark)
    th.join(20)
    check(out and not isinstance(out[0], BaseException), "request in flight: %r" % out)
    eq((out[0].status, len(out[0].body), out[0].complete), (200, 50, True),
       "request in flight on the removed token's tunnel")
    s.proc.wait_for(r"tunnel closed tun=%d agent=bob\b" % tbo, 15, mark)
    # bob reconnects at once after GOAWAY and is refused: its token is gone.
    bob.wait_for(r"refused the tunnel: 401", 15)
    r = req(s, "bob.example.com", "/echo", timeout=10)
    check(r.status in (404, 503), "bob's route after its token was removed: %d %r" %
          (r.status, r.body[:200]))
    # carol's new token works at once.
    tok_agent(t, s, oca, "carol", "tok-carol", "carol.example.com", label="agent-carol2")
    expect_origin(s, "carol.example.com", "/echo", "CAROL")
    # alice is untouched.
    eq(s.proc.count(r"tunnel (closed|draining) tun=%d\b" % tal, mark), 0, "alice's tunnel")
    expect_origin(s, "app.alice.example.com", "/echo", "ALICE")
    check(s.proc.alive(), "serve is still running")


@timed(90)
def test_e4_sighup_route_no_longer_granted(t):
    """A token kept but whose line no longer grants a tunnel's route: that
    tunnel gets GOAWAY and closes; its reconnection is refused with 403."""
    s, path = tokens_serve(t, "tok-alice *.alice.example.com\n")
    oal = t.origin("ALICE")
    a, tun = tok_agent(t, s, oal, "alice", "tok-alice", "app.alice.example.com")
    tokens_file(t, "tok-alice other.alice.example.com\n")
    mark = s.proc.mark()
    s.proc.send(signal.SIGHUP)
    s.proc.wait_for(r"tunnel closed tun=%d agent=alice\b" % tun, 15, mark)
    a.wait_for(r"refused the tunnel: 403\b.*route ['\"]app\.alice\.example\.com['\"]", 15)
    r = req(s, "app.alice.example.com", "/echo")
    check(r.status in (404, 503), "route no longer granted: %d" % r.status)


@timed(90)
def test_e4_malformed_file(t):
    """A malformed file stops serve at start with exit 2 naming the line
    (never the token); on SIGHUP it is refused with a log line naming the
    line, and the old tokens keep working (the new ones do not)."""
    bad = tokens_file(t, "tok-ok a.example.com\ntok-secret-xyz\n", name="bad")
    rc, text = t.run_natwrp("serve-bad", ["serve", "--listen", "127.0.0.1:0", "--tokens", bad])
    eq(rc, 2, "exit status with a malformed tokens file (output %r)" % text[-300:])
    check(re.search(r"line 2\b", text), "the error names the line: %r" % text[-300:])
    check("tok-secret-xyz" not in text, "the error shows the token: %r" % text[-300:])
    rc, text = t.run_natwrp("serve-missing", ["serve", "--listen", "127.0.0.1:0", "--tokens",
                                              os.path.join(t.logdir, "no-such-file")])
    eq(rc, 2, "exit status with a missing tokens file (output %r)" % text[-300:])
    check("no-such-file" in text, "the error names the file: %r" % text[-300:])

    s, path = tokens_serve(t, TOKENS)
    oal, onew = t.origin("ALICE"), t.origin("NEW")
    _, tun = tok_agent(t, s, oal, "alice", "tok-alice", "app.alice.example.com")
    tokens_file(t, "tok-alice *.alice.example.com\ntok-new new.example.com\n"
                "tok-broken-line\ntok-bob bob.example.com\n")
    mark = s.proc.mark()
    s.proc.send(signal.SIGHUP)
    m = s.proc.wait_for(r"line 3\b", 10, mark)
    check("tok-broken-line" not in s.proc.text(), "serve logged the bad line's token")
    check(s.proc.alive(), "serve exited on a bad tokens file at SIGHUP")
    eq(s.proc.count(r"tunnel (closed|draining) tun=%d\b" % tun, mark), 0,
       "alice's tunnel after a refused reload: %r" % m.string)
    # The old file stays: tok-new is unknown, tok-bob and tok-alice still work.
    refused(t, s, onew, "new", "tok-new", "new.example.com", 401)
    tok_agent(t, s, onew, "bob", "tok-bob", "bob.example.com")
    tok_agent(t, s, oal, "alice2", "tok-alice", "b.alice.example.com")
    expect_origin(s, "app.alice.example.com", "/echo", "ALICE")
    expect_origin(s, "bob.example.com", "/echo", "NEW")
    expect_origin(s, "b.alice.example.com", "/echo", "ALICE")
    # A file gone at SIGHUP: refused, naming the file; the old tokens stay.
    os.unlink(path)
    mark = s.proc.mark()
    s.proc.send(signal.SIGHUP)
    s.proc.wait_for(re.escape(path), 10, mark)
    check(s.proc.alive(), "serve exited on a missing tokens file at SIGHUP")
    tok_agent(t, s, oal, "alice3", "tok-alice", "c.alice.example.com")
    expect_origin(s, "c.alice.example.com", "/echo", "ALICE")


@timed(60)
def test_e4_conn_token_counts_as_star(t):
    """CONN_TOKEN beside --tokens is one more line `CONN_TOKEN *`: its agents
    may claim any route and the default route; the file's tokens still only
    get their patterns."""
    s, _ = tokens_serve(t, "tok-alice *.alice.example.com\n", "--conn-token", "master-token")
    started = time.time()
    om, od, oal = t.origin("M"), t.origin("D"), t.origin("ALICE")
    tok_agent(t, s, om, "m", "master-token", "anything.example.net, x.alice.example.com")
    tok_agent(t, s, od, "d", "master-token")
    tok_agent(t, s, oal, "alice", "tok-alice", "app.alice.example.com")
    refused(t, s, oal, "alice-default", "tok-alice", None, 403)
    refused(t, s, oal, "alice-net", "tok-alice", "y.example.net", 403, "y.example.net")
    past_start_window(started, 1)
    expect_origin(s, "anything.example.net", "/echo", "M")
    expect_origin(s, "x.alice.example.com", "/echo", "M")
    expect_origin(s, "app.alice.example.com", "/echo", "ALICE")
    expect_origin(s, "y.example.net", "/echo", "D")
    check("master-token" not in s.proc.text(), "serve logged CONN_TOKEN")


@timed(60)
def test_e4_refused_claims_reach_nothing(t):
    """With no default agent: a route one user holds is not served to an
    agent whose token does not grant it, so a host nobody was granted stays
    404 and the refused agent's origin never sees a request."""
    s, _ = tokens_serve(t, TOKENS)
    started = time.time()
    obo, oev = t.origin("BOB"), t.origin("EVIL")
    tok_agent(t, s, obo, "bob", "tok-bob", "bob.example.com")
    refused(t, s, oev, "evil", "tok-alice", "bob.example.com/admin", 403,
            "bob.example.com/admin")
    refused(t, s, oev, "evil2", "tok-alice", "evil.example.org", 403, "evil.example.org")
    past_start_window(started, 1)
    expect_origin(s, "bob.example.com", "/admin/x", "BOB")
    expect_404(s, "evil.example.org")
    eq(oev.proc.count(r'"GET '), 0, "requests that reached the refused agent's origin")


@timed(60)
def test_e4_sighup_reloads_tokens_and_certificate(t):
    """On a TLS serve one SIGHUP re-reads both the certificate and the
    tokens file: a token added is admitted over wss."""
    P = pki()
    path = tokens_file(t, "tok-alice *.alice.example.com\n")
    s = t.serve("--tls-cert", P("server.pem"), "--tls-key", P("server.key"), "--tokens", path,
                "--domain", DOMAIN)
    o = t.origin("CAROL")
    tokens_file(t, "tok-alice *.alice.example.com\ntok-carol carol.example.com\n")
    mark = s.proc.mark()
    s.proc.send(signal.SIGHUP)
    s.proc.wait_for(r"tls: reloaded", 10, mark)
    s.proc.wait_for(r"(?i)\btokens\b.*\breloaded\b", 10, mark)
    tok_agent(t, s, o, "carol", "tok-carol", "carol.example.com", env={"CA_FILE": P("ca.pem")})
