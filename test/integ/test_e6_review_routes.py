"""e6 a hostile review of routes (issue 11): requests whose readings
disagree about their route, authorities serve must not route or forward,
and what a tenant can do to the route table. Each test here failed on the
binary of main at the start of the review (natwrp-i11wired)."""

import json

from harness import Conn, check, eq, timed


def _get(port, target, host, headers=()):
    c = Conn(port, timeout=15)
    c.request("GET", target, [("Host", host)] + list(headers))
    r = c.read_response()
    c.close()
    return r


@timed(60)
def test_dot_segments_never_leave_a_protected_route(t):
    """One service, two routes: h.test/admin behind AUTH_BASIC, the rest of
    h.test open (the way to protect an app's /admin). Routing read
    "/admin/../x" as "/x" and sent it, unauthenticated, to the open route,
    whose service got "/admin/../x": a service that does not resolve dot
    segments (Express's app.use('/admin'), many routers) runs its /admin
    handler. A path whose readings (dots resolved or kept) fall on different
    routes is refused; one whose readings agree goes on as before."""
    o = t.origin("A")
    s = t.serve("--queue-timeout", "2")
    t.agent(s, o, agent_id="admin", label="agent-admin",
            env={"ROUTES": "h.test/admin", "AUTH_BASIC": "root:Adm1n-pw"})
    t.agent(s, o, agent_id="site", label="agent-site", env={"ROUTES": "h.test"})
    r = _get(s.port, "/admin/x", "h.test")
    eq(r.status, 401, "the protected route without a credential")
    for target in ("/admin/../x", "/admin/%2e%2e/x", "/admin%2F..%2Fx", "/admin/..\\x",
                   "/admin;p/../x"):
        r = _get(s.port, target, "h.test")
        check(r.status in (400, 401),
              "%s: reached a service without the route's credential: %d %r"
              % (target, r.status, r.body[:200]))
    # Readings that agree: the open route, the protected one with its credential.
    r = _get(s.port, "/x/../y", "h.test")
    eq(r.status, 200, "dots inside the open route")
    eq(json.loads(r.body)["path"], "/x/../y", "forwarded as sent")
    r = _get(s.port, "/admin/a/../b", "h.test",
             [("Authorization", "Basic cm9vdDpBZG0xbi1wdw==")])
    eq(r.status, 200, "dots inside the protected route, with its credential")


@timed(40)
def test_absolute_form_authority_is_a_valid_host(t):
    """The authority of an absolute-form target routes the request and
    becomes its Host, but was never checked as a Host is: userinfo
    ("http://a.test@b.test/", which RFC 9110 4.2.4 says to treat as an
    error) routed by its last part and reached the service as
    Host: a.test@b.test, and a bad port went through as well."""
    o = t.origin("A")
    s = t.serve()
    t.agent(s, o, agent_id="b", env={"ROUTES": "b.test", "PRESERVE_HOST": "1"})
    r = _get(s.port, "http://b.test/ok", "b.test")
    eq(r.status, 200, "a plain absolute-form target")
    for target in ("http://a.test@b.test/x", "http://b.test:x@b.test/x", "http://b.test:8o/x",
                   "http://b.test\"/x", "http://b.test:/x"):
        r = _get(s.port, target, "b.test")
        eq(r.status, 400, "%s: %r" % (target, r.body[:200]))


@timed(120)
def test_held_routes_are_bounded(t):
    """A tenant whose token grants a wildcard ("*.alice.test": infinitely
    many names) churned tunnels of 64 fresh routes each: every route was
    held for --route-hold (300 s) after its tunnel left, so the table (and
    serve's memory, and the O(n) lookup every request pays) grew with each
    handshake. Held routes beyond what the live tunnels could ever hold are
    dropped oldest first."""
    import os
    from harness import tunnel_upgrade
    path = os.path.join(t.logdir, "tokens")
    with open(path, "w") as f:
        f.write("alice-T0k *.alice.test\n")
    s = t.serve("--tokens", path, "--max-tunnels", "4", "--queue-timeout", "1")

    def churn(first, n):
        for i in range(first, first + n):
            names = ", ".join("r%d-%d.alice.test" % (i, k) for k in range(64))
            c, r = tunnel_upgrade(s.port, agent_id="churn",
                                  extra=[("X-Natwrp-Routes", names),
                                         ("Authorization", "Bearer alice-T0k")])
            eq(r.status, 101, "churn %d" % i)
            c.close()
    churn(0, 100)
    s.proc.wait_for(r"tunnel closed tun=100 ", 10)
    r = _get(s.port, "/", "r99-0.alice.test")
    eq(r.status, 503, "a route held after its tunnel left")
    churn(100, 400)
    s.proc.wait_for(r"tunnel closed tun=500 ", 10)
    r = _get(s.port, "/", "r99-0.alice.test")
    eq(r.status, 404, "the oldest held routes are dropped")
    r = _get(s.port, "/", "r499-0.alice.test")
    eq(r.status, 503, "the newest held route is still held")
    s.proc.wait_for(r"warn  \d+ held route\(s\) dropped, the oldest r\d+-\d+\.alice\.test: "
                    r"more held routes than --max-tunnels tunnels could serve", 5)


@timed(40)
def test_another_token_cannot_use_up_a_group(t):
    """--max-agent-tunnels counts a group's tunnels by name, and anyone
    with any token may send X-Natwrp-Group: alice. Mallory's two tunnels
    named into Alice's group left Alice's own agent 429 (too many tunnels
    for this AGENT_ID) for as long as Mallory liked. A group is counted
    per token."""
    import os
    from harness import tunnel_upgrade
    path = os.path.join(t.logdir, "tokens")
    with open(path, "w") as f:
        f.write("alice-T0k *.alice.test\nmal-T0k *.mal.test\n")
    s = t.serve("--tokens", path, "--max-agent-tunnels", "2")
    held = []
    for i in range(2):
        c, r = tunnel_upgrade(s.port, agent_id="alice-%d" % (i + 5),
                              extra=[("X-Natwrp-Group", "alice"),
                                     ("X-Natwrp-Routes", "x.mal.test"),
                                     ("Authorization", "Bearer mal-T0k")])
        eq(r.status, 101, "mallory's tunnel %d" % i)
        held.append(c)
    c, r = tunnel_upgrade(s.port, agent_id="alice",
                          extra=[("X-Natwrp-Routes", "www.alice.test"),
                                 ("Authorization", "Bearer alice-T0k")])
    eq(r.status, 101, "alice's own agent (body %r)" % r.body[:200])
    held.append(c)
    # Her own group still has its limit.
    for i in range(2):
        c, r = tunnel_upgrade(s.port, agent_id="alice-%d" % (i + 1),
                              extra=[("X-Natwrp-Group", "alice"),
                                     ("X-Natwrp-Routes", "www.alice.test"),
                                     ("Authorization", "Bearer alice-T0k")])
        held.append(c)
    eq(r.status, 429, "alice's third tunnel in her group")
    for c in held:
        c.close()


@timed(40)
def test_revoked_tunnel_closes_within_grace(t):
    """SIGHUP took a token's grant away: serve sends GOAWAY and, once the
    tunnel's streams are done, its close frame, then waited for the agent
    to answer it, for ever: an agent that never does kept its connection
    (and its slot under --max-tunnels), and serve logged "revoked: its
    streams are done, closing" once a second. --grace bounds that too."""
    import os
    import signal
    from harness import tunnel_upgrade
    path = os.path.join(t.logdir, "tokens")
    with open(path, "w") as f:
        f.write("alice-T0k *.alice.test\nbob-T0k *.bob.test\n")
    s = t.serve("--tokens", path, "--queue-timeout", "1", "--grace", "2")
    a, r = tunnel_upgrade(s.port, agent_id="alice",
                          extra=[("X-Natwrp-Routes", "a.alice.test"),
                                 ("Authorization", "Bearer alice-T0k")])
    eq(r.status, 101, "alice")
    with open(path, "w") as f:
        f.write("bob-T0k *.bob.test\n")
    s.proc.send(signal.SIGHUP)
    s.proc.wait_for(r"tunnel tun=1 agent=alice revoked: its token was removed", 5)
    r = _get(s.port, "/", "a.alice.test")
    eq(r.status, 503, "a revoked route is held, not served by the revoked tunnel")
    # alice's raw tunnel reads nothing and answers nothing.
    s.proc.wait_for(r"tunnel closed tun=1 agent=alice", 6)
    eq(s.proc.count(r"revoked: its streams are done, closing"), 1, "logged once")
    a.close()


@timed(40)
def test_agent_fails_closed_when_basic_is_not_enforced(t):
    """AUTH_BASIC is enforced by serve, not by the agent. A serve that
    predates routes ignores X-Natwrp-Auth-Basic and answers 101 without
    X-Natwrp-Routes: the agent warned that its routes were ignored and
    then served the local app to anyone, without the password its
    operator set. With ROUTES and AUTH_BASIC it now refuses that tunnel
    and retries at the slow cap. Without ROUTES too: a current serve
    confirms the logins in its 101 (X-Natwrp-Auth-Basic: N)."""
    from fakeserver import FakeServer
    for i, env in enumerate(({"ROUTES": "p.test", "AUTH_BASIC": "u:Secr3t-pw"},
                             {"AUTH_BASIC": "u:Secr3t-pw"})):
        fs = FakeServer()
        a = t.agent(fs.url, "http://127.0.0.1:9", agent_id="pw%d" % i, env=env, wait=False,
                    label="agent-pw%d" % i)
        fs.accept()
        a.wait_for(r"agent=pw%d the server did not confirm AUTH_BASIC .*: it would not enforce "
                   r"it" % i, 10)
        check(not a.find(r"tunnel up agent=pw"), "the agent served through it")
        fs.no_connection(3)
        check("Secr3t" not in a.text(), "the agent logged the password")
        fs.close()


@timed(30)
def test_held_route_503_says_no_agent(t):
    """A request for a held route (its agent gone) that waited out
    --queue-timeout was told "every tunnel is busy" and serve logged
    "every tunnel stayed at --max-streams" whenever some other route had a
    tunnel: the operator was sent to raise --max-streams for an agent that
    was down. The answer now follows the request's own route."""
    from harness import tunnel_upgrade
    s = t.serve("--queue-timeout", "1")
    b, r = tunnel_upgrade(s.port, agent_id="bob", extra=[("X-Natwrp-Routes", "b.test")])
    eq(r.status, 101, "bob")
    a, r = tunnel_upgrade(s.port, agent_id="alice", extra=[("X-Natwrp-Routes", "a.test")])
    eq(r.status, 101, "alice")
    a.close()
    s.proc.wait_for(r"route a.test -tun=\d+ agent=alice \(tunnel closed; held\)", 10)
    r = _get(s.port, "/", "a.test")
    eq(r.status, 503, "held route after --queue-timeout")
    eq(r.body, b"natwrp: no agent is connected to this server\n", "503 body")
    check(not s.proc.find(r"stayed at --max-streams"), "serve blamed --max-streams")
    b.close()
