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
