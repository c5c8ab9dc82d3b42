"""e0 routes on the wire, from hand-made agents: the X-Natwrp-Routes and
X-Natwrp-Auth-Basic fields of the tunnel upgrade as docs/protocol.md gives
them (granted routes answered as public URLs, a refused route refusing the
whole upgrade with 403, malformed fields 400, replacement by AGENT_ID only
with the same token), and which tunnel serve opens a stream on: by host
(absolute-form authority first) and path, 404 for an unclaimed host, a held
route answered 503 with Retry-After after --queue-timeout."""

import base64
import os
import re
import threading

from harness import Conn, check, eq, timed, tunnel_upgrade
from test_55_wire import read_msg

PEER = r"127\.0\.0\.1:\d+"


def _tokens(t, text):
    path = os.path.join(t.logdir, "tokens")
    with open(path, "w") as f:
        f.write(text)
    return path


def _up(s, agent, routes=None, token=None, extra=()):
    hdrs = list(extra)
    if routes is not None:
        hdrs.append(("X-Natwrp-Routes", routes))
    if token is not None:
        hdrs.append(("Authorization", "Bearer " + token))
    return tunnel_upgrade(s.port, agent_id=agent, extra=hdrs)


def _open_on(c):
    """The next OPEN serve sends on raw tunnel c (its message bytes)."""
    while True:
        kind, m = read_msg(c)
        if kind == "msg" and m[0] == 1:
            return m


def _get_async(port, target, host, out):
    def run():
        try:
            cc = Conn(port, timeout=15)
            cc.request("GET", target, [("Host", host)])
            out.append(cc.read_response())
            cc.close()
        except BaseException as e:  # noqa: B902 - reported by the test
            out.append(e)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def _get(port, target, host):
    c = Conn(port, timeout=15)
    c.request("GET", target, [("Host", host)])
    r = c.read_response()
    c.close()
    return r


@timed(30)
def test_routes_granted_as_public_urls(t):
    s = t.serve("--domain", "Tunnel.Test.")
    c, r = _up(s, "multi", routes=" a.example.com/api/ ,ollama, *.Wild.Test")
    eq(r.status, 101, "upgrade with routes (body %r)" % r.body[:200])
    eq(r.header("X-Natwrp-Routes"),
       "http://a.example.com/api, http://ollama.tunnel.test, http://*.wild.test",
       "granted routes, full names, as URLs")
    for name in ("a.example.com/api", "ollama.tunnel.test", r"\*.wild.test"):
        s.proc.wait_for(r"route %s \+tun=\d+ agent=multi" % name, 10)
    # An agent without the field serves the default route and hears no list.
    c2, r2 = _up(s, "plain")
    eq(r2.status, 101, "upgrade without routes")
    eq(r2.header("X-Natwrp-Routes"), None, "no routes field for a version-1 agent")
    s.proc.wait_for(r"route \* \+tun=\d+ agent=plain", 10)
    c.close()
    s.proc.wait_for(r"route a.example.com/api -tun=\d+ agent=multi \(tunnel closed; held\)", 10)
    c2.close()


@timed(30)
def test_public_scheme_behind_trusted_proxy(t):
    s = t.serve("--trust-proxy")
    c, r = _up(s, "behind", routes="a.example.com",
               extra=[("X-Forwarded-Proto", "https")])
    eq(r.status, 101, "upgrade")
    eq(r.header("X-Natwrp-Routes"), "https://a.example.com", "scheme from the trusted proxy")
    c.close()
    s2 = t.serve()
    c, r = _up(s2, "direct", routes="a.example.com",
               extra=[("X-Forwarded-Proto", "https")])
    eq(r.header("X-Natwrp-Routes"), "http://a.example.com", "an untrusted proto is ignored")
    c.close()


@timed(30)
def test_refused_routes(t):
    s = t.serve()
    # A dot-less name without --domain, a bad name: 403 naming the route.
    for agent, routes, why in [
            ("nodomain", "a.example.com, ollama", r'route "ollama".*--domain'),
            ("badname", "a_b.example.com", r'route "a_b.example.com"'),
            ("badpath", "a.example.com/x%41", r'route "a.example.com/x%41"')]:
        c, r = _up(s, agent, routes=routes)
        c.close()
        eq(r.status, 403, "%s: status (body %r)" % (agent, r.body[:200]))
        check(re.search(why, r.body.decode()), "%s: body %r names the route" % (agent, r.body))
        check(r.body.count(b"\n") == 1, "one-line body")
        s.proc.wait_for(r"tunnel refused from %s agent=%s: 403 refused: %s" % (PEER, agent, why), 10)
    check(not s.proc.find(r"tunnel open tun=\d+ agent=(nodomain|badname|badpath)\b"),
          "a refused agent got a tunnel")
    # Two fields: 400.
    c, r = _up(s, "twice", routes="a.example.com",
               extra=[("X-Natwrp-Routes", "b.example.com")])
    c.close()
    eq(r.status, 400, "two X-Natwrp-Routes fields")


@timed(30)
def test_tokens_grant_routes_and_guard_agent_ids(t):
    path = _tokens(t, "# users\nalice-T0k *.alice.test alice.test\nops-T0k *\n")
    s = t.serve("--tokens", path)
    c, r = _up(s, "alice", routes="alice.test/app, x.alice.test", token="alice-T0k")
    eq(r.status, 101, "alice claims her names (body %r)" % r.body[:200])
    # One route outside her line refuses the whole list.
    c2, r2 = _up(s, "alice2", routes="y.alice.test, bob.test", token="alice-T0k")
    c2.close()
    eq(r2.status, 403, "a mixed list")
    check(b'route "bob.test": not granted to this token' in r2.body, "body %r" % r2.body)
    check(not s.proc.find(r"route y.alice.test \+tun"), "the granted half of a refused list")
    # The default route needs '*'.
    c3, r3 = _up(s, "alice3", token="alice-T0k")
    c3.close()
    eq(r3.status, 403, "the default route is not alice's")
    # Her AGENT_ID cannot be taken with another token, even one that grants more.
    c4, r4 = _up(s, "alice", routes="alice.test/app", token="ops-T0k")
    c4.close()
    eq(r4.status, 403, "hijack by AGENT_ID")
    s.proc.wait_for(r"tunnel refused from %s agent=alice: 403 forbidden: this AGENT_ID is "
                    r"connected with another token" % PEER, 10)
    check(not s.proc.find(r"tunnel replaced tun=\d+ agent=alice"), "alice's tunnel was replaced")
    # With her own token it is a replacement, as before.
    c5, r5 = _up(s, "alice", routes="alice.test/app", token="alice-T0k")
    eq(r5.status, 101, "same token replaces")
    s.proc.wait_for(r"tunnel replaced tun=\d+ agent=alice by", 10)
    # A token that is no line at all: 401.
    c6, r6 = _up(s, "mallory", routes="alice.test", token="alice-T0")
    c6.close()
    eq(r6.status, 401, "a prefix of a token")
    c.close()
    c5.close()


@timed(30)
def test_auth_basic_fields(t):
    s = t.serve()
    good = base64.b64encode(b"ann:pa:ss").decode()
    c, r = _up(s, "creds", routes="a.example.com",
               extra=[("X-Natwrp-Auth-Basic", good)])
    eq(r.status, 101, "a well-formed credential")
    for agent, val in [("nocolon", base64.b64encode(b"annpass").decode()),
                       ("notb64", "***"),
                       ("toolong", base64.b64encode(b"u:" + b"x" * 600).decode())]:
        c2, r2 = _up(s, agent, routes="a.example.com", extra=[("X-Natwrp-Auth-Basic", val)])
        c2.close()
        eq(r2.status, 400, "%s: malformed credential" % agent)
    many = [("X-Natwrp-Auth-Basic", good)] * 65
    c3, r3 = _up(s, "many", routes="a.example.com", extra=many)
    c3.close()
    eq(r3.status, 400, "65 credentials")
    check(not s.proc.find(r"pa:ss|" + re.escape(good)), "serve logged a credential")
    c.close()


@timed(40)
def test_requests_go_to_their_route(t):
    s = t.serve("--queue-timeout", "1")
    api, r = _up(s, "api", routes="a.example.com/api")
    eq(r.status, 101, "api tunnel")
    web, r = _up(s, "web", routes="a.example.com, *.example.com")
    eq(r.status, 101, "web tunnel")
    # No default route: an unclaimed host gets 404 at once, naming it.
    r = _get(s.port, "/", "Other.Test:8080")
    eq(r.status, 404, "unclaimed host")
    eq(r.body, b"natwrp: no service for other.test\n", "404 body")
    # Longest path at a segment boundary; case and port of Host do not matter.
    for target, host, tun in [("/api/x", "A.Example.com:80", api), ("/api?q=1", "a.example.com", api),
                              ("/apix", "a.example.com", web), ("/", "b.example.com", web),
                              ("/%61pi/y", "a.example.com", api)]:
        out = []
        th = _get_async(s.port, target, host, out)
        m = _open_on(tun)
        check(target.encode() in m, "%s %s: OPEN carries the target: %r" % (host, target, m[:80]))
        th.join(0.1)  # never answered: the client thread ends with the test
    # Absolute form: routed by its authority, forwarded with Host = authority.
    c = Conn(s.port, timeout=15)
    c.request("GET", "http://a.example.com/api/abs", [("Host", "b.example.com")])
    m = _open_on(api)
    check(b"a.example.com" in m and b"b.example.com" not in m,
          "the agent sees the host it was routed by: %r" % m)
    c.close()
    # The api tunnel goes: its route is held, its requests wait, then 503.
    api.close()
    s.proc.wait_for(r"route a.example.com/api -tun=\d+ agent=api \(tunnel closed; held\)", 10)
    r = _get(s.port, "/api/x", "a.example.com")
    eq(r.status, 503, "held route after --queue-timeout")
    check(r.header("Retry-After") is not None, "503 with Retry-After")
    web.close()


@timed(30)
def test_a_route_one_tunnel_protects_is_protected(t):
    """Two tunnels share a route, one with AUTH_BASIC and one without (a
    replica set up without the logins): a request without credentials must
    not take the open one. It gets 401; with credentials it goes to the
    tunnel that holds them."""
    s = t.serve()
    cred = base64.b64encode(b"ann:pw").decode()
    locked, r = _up(s, "locked", routes="a.example.com", extra=[("X-Natwrp-Auth-Basic", cred)])
    eq((r.status, r.header("X-Natwrp-Auth-Basic")), (101, "1"), "protected tunnel, confirmed")
    open_, r = _up(s, "open", routes="a.example.com")
    eq((r.status, r.header("X-Natwrp-Auth-Basic")), (101, None), "open tunnel")
    for _ in range(4):  # every --balance turn
        r = _get(s.port, "/x", "a.example.com")
        eq(r.status, 401, "no credentials")
        eq(r.header("WWW-Authenticate"), 'Basic realm="a.example.com"', "challenge")
    c = Conn(s.port, timeout=15)
    c.request("GET", "/with", [("Host", "a.example.com"), ("Authorization", "Basic " + cred)])
    m = _open_on(locked)
    check(b"/with" in m and cred.encode() not in m, "to the protected tunnel, credential kept "
          "at serve: %r" % m)
    c.close()
    locked.close()
    open_.close()
