"""g2 readiness per route and per address (issue 13).

Serve: /readyz?host=NAME[&path=P] answers for the route a request for NAME
(and P) takes, so that a load balancer with a backend per public name sends
a replica no user of a route it cannot serve yet; /readyz?verbose lists
every route with its tunnels. The agent: natwrp_remote_tunnels_up{remote,
address} counts tunnels up per server address (0 while an address's slots
reconnect, gone with the address), and /readyz?verbose has a line per
address."""

import os
import re

from harness import ROOT, Conn, check, eq, timed
from test_f1_serve_metrics import admin_get, admin_serve, route_agent
from test_f2_agent_metrics import admin_port, promtool_check, scrape, series
from test_g0_replicas import NAME, agent_ns, replicas, skip_unless_ns, write_hosts
from test_g1_haproxy import free_port, haproxy

DOMAIN = "example.test"


def readyz(port, query=""):
    r = admin_get(port, "/readyz" + ("?" + query if query else ""))
    return r.status, r.text()


@timed(90)
def test_g2_serve_readyz_per_route(t):
    """Two routes from two agents: a route is ready only while a tunnel of
    its own serves it; a host no route serves is 503 'no route'; a held
    route is 503 'no tunnel' while the plain /readyz stays 200."""
    o = t.origin()
    s, ap = admin_serve(t, "--domain", DOMAIN)
    # At start the default route is held (until a first named route comes).
    eq(readyz(ap, "host=a." + DOMAIN), (503, "route *: no tunnel\n"), "no tunnel at all")
    route_agent(t, s, o, "ra", routes="a." + DOMAIN)
    eq(readyz(ap), (200, "ready\n"), "plain /readyz with a tunnel")
    eq(readyz(ap, "host=a." + DOMAIN), (200, "ready\n"), "route a with its tunnel")
    eq(readyz(ap, "host=A.%s:8443" % DOMAIN.upper()), (200, "ready\n"),
       "host as a client sends it (case, port)")
    eq(readyz(ap, "host=b." + DOMAIN), (503, "no route for b.%s\n" % DOMAIN),
       "a host no route serves")
    b = route_agent(t, s, o, "rb", routes="b.%s/api" % DOMAIN)
    eq(readyz(ap, "host=b.%s&path=/api/v1" % DOMAIN), (200, "ready\n"), "b/api for /api/v1")
    eq(readyz(ap, "host=b.%s&path=%%2Fapi" % DOMAIN), (200, "ready\n"), "path percent-encoded")
    eq(readyz(ap, "host=b.%s&path=/apix" % DOMAIN), (503, "no route for b.%s\n" % DOMAIN),
       "a path outside b's prefix")
    mark = s.proc.mark()
    b.kill()
    s.wait_tunnel_closed("rb", since=mark)
    eq(readyz(ap, "host=b.%s&path=/api" % DOMAIN),
       (503, "route b.%s/api: no tunnel\n" % DOMAIN), "a held route")
    eq(readyz(ap), (200, "ready\n"), "plain /readyz: another route still has a tunnel")
    st, body = readyz(ap, "verbose")
    eq(st, 200, "verbose status")
    lines = body.splitlines()
    check("[+]route a.%s: 1 tunnel" % DOMAIN in lines, "route a in %r" % body)
    check("[-]route b.%s/api: 0 tunnels (held)" % DOMAIN in lines, "held route b in %r" % body)
    eq(lines[-1], "ready", "verbose verdict")
    st, body = readyz(ap, "verbose&host=b.%s&path=/api" % DOMAIN)
    eq((st, body.splitlines()[-1]), (503, "not ready: route b.%s/api: no tunnel" % DOMAIN),
       "verbose verdict for the held route")
    eq(readyz(ap, "host=a%0d%0aX%3a%20y"), (503, "bad host or path\n"), "control bytes in host")
    eq(readyz(ap, "host=a.%s&path=x" % DOMAIN)[0], 503, "a path without '/'")


@timed(60)
def test_g2_serve_readyz_default_route(t):
    """With a default route, any host is ready through it; the default
    route held is 503 'route *: no tunnel'."""
    o = t.origin()
    s, ap = admin_serve(t, "--domain", DOMAIN)
    a = route_agent(t, s, o, "rd")
    eq(readyz(ap, "host=anything.example.org"), (200, "ready\n"), "default route")
    eq(readyz(ap, "path=/x"), (200, "ready\n"), "no host: the default route")
    mark = s.proc.mark()
    a.kill()
    s.wait_tunnel_closed("rd", since=mark)
    eq(readyz(ap, "host=anything.example.org"), (503, "route *: no tunnel\n"), "default held")
    eq(readyz(ap), (503, "no tunnel\n"), "plain /readyz")


@timed(60)
def test_g2_agent_tunnels_per_remote(t):
    """REMOTE_URL with two servers, MAX_CONN=2: a series per address with
    2; one server gone: its series goes to 0 (kept, so an alert can fire)
    and /readyz?verbose says which; promtool accepts it."""
    o = t.origin()
    s1 = t.serve(label="serve-1")
    s2 = t.serve(label="serve-2")
    m1, m2 = s1.proc.mark(), s2.proc.mark()
    remote = "%s,%s" % (s1.url, s2.url)
    a = t.agent(remote, o, env={"MAX_CONN": "2", "ADMIN_LISTEN": "127.0.0.1:0"}, wait=False)
    ap = admin_port(a)
    for s, m in ((s1, m1), (s2, m2)):
        s.wait_tunnel_open("a1-1", m)
        s.wait_tunnel_open("a1-2", m)
    r1 = "ws://127.0.0.1:%d" % s1.port
    r2 = "ws://127.0.0.1:%d" % s2.port
    ms = scrape(ap)
    got = {dict(k)["remote"]: v for k, v in series(ms, "natwrp_remote_tunnels_up").items()}
    eq(got, {r1: 2.0, r2: 2.0}, "tunnels up per remote")
    check(all(dict(k)["address"] == "127.0.0.1" for k in series(ms, "natwrp_remote_tunnels_up")),
          "address label")
    eq(ms[("natwrp_tunnels_up", ())], 4.0, "natwrp_tunnels_up is the total")
    mark = a.mark()
    s2.proc.kill()
    for k in (1, 2):
        a.wait_for(r"tunnel down agent=a1-%d .*remote=%s" % (k, re.escape(r2)), 10, mark)
    ms = scrape(ap)
    got = {dict(k)["remote"]: v for k, v in series(ms, "natwrp_remote_tunnels_up").items()}
    eq(got, {r1: 2.0, r2: 0.0}, "the dead server's series is kept at 0")
    st, body = readyz(ap, "verbose")
    lines = body.splitlines()
    eq(st, 200, "the agent is ready with one server up")
    check("[+]remote=%s (127.0.0.1): 2/2 tunnels up" % r1 in lines, "remote 1 in %r" % body)
    check(any(x.startswith("[-]remote=%s (127.0.0.1): 0/2 tunnels up; last error: " % r2)
              for x in lines), "remote 2 in %r" % body)
    eq(lines[-1], "ready", "verdict")
    eq(readyz(ap), (200, "ready\n"), "plain /readyz")
    promtool_check(admin_get(ap, "/metrics").body)


@timed(60)
def test_g2_agent_series_follow_dns(t):
    """An address that leaves DNS takes its series with it; a new one gets
    its own."""
    if skip_unless_ns():
        return
    o = t.origin()
    ss = replicas(t, ("127.0.0.2", "127.0.0.3"))
    hosts = os.path.join(t.logdir, "hosts")
    write_hosts(hosts, [("127.0.0.2", NAME), ("127.0.0.3", NAME)])
    marks = [s.proc.mark() for s in ss]
    a = agent_ns(t, hosts, "http://%s:%d" % (NAME, ss[0].port), o,
                 env={"RESOLVE_INTERVAL": "1", "ADMIN_LISTEN": "127.0.0.1:0"})
    ap = admin_port(a)
    for s, m in zip(ss, marks):
        s.wait_tunnel_open("a1", m)
    remote = "ws://%s:%d" % (NAME, ss[0].port)

    def addrs():
        return {dict(k)["address"]: v
                for k, v in series(scrape(ap), "natwrp_remote_tunnels_up").items()
                if dict(k)["remote"] == remote}

    eq(addrs(), {"127.0.0.2": 1.0, "127.0.0.3": 1.0}, "a series per address")
    mark, ms = a.mark(), ss[1].proc.mark()
    write_hosts(hosts, [("127.0.0.2", NAME)])
    a.wait_for(r"is gone from DNS", 5, mark)
    ss[1].wait_tunnel_closed("a1", ms, timeout=10)
    eq(addrs(), {"127.0.0.2": 1.0}, "the gone address's series is dropped")


def haproxy_blocks():
    """docs/deploy.md's first ```haproxy block up to its frontend (global,
    defaults) and its second block (a backend per public name)."""
    with open(os.path.join(ROOT, "docs", "deploy.md")) as f:
        blocks = re.findall(r"^```haproxy\n(.*?)^```", f.read(), re.S | re.M)
    check(len(blocks) >= 2, "docs/deploy.md has a second ```haproxy block (per name)")
    return blocks[0].split("frontend", 1)[0], blocks[1]


@timed(90)
def test_g2_haproxy_backend_per_name(t):
    """docs/deploy.md's per-name HAProxy configuration: two replicas, agent
    'app' reaches both, agent 'api' only the first. HAProxy's check of
    /readyz?host=api.example.com takes the second replica out of the 'api'
    backend, so every api request is answered (none gets the second
    replica's 404); app requests go to both."""
    head, per_name = haproxy_blocks()
    o = t.origin()
    r1, a1 = admin_serve(t, "--domain", "example.com", label="serve-r1")
    r2, a2 = admin_serve(t, "--domain", "example.com", label="serve-r2")
    m1, m2 = r1.proc.mark(), r2.proc.mark()
    t.agent("%s,%s" % (r1.url, r2.url), o, agent_id="app",
            env={"ROUTES": "app.example.com"}, wait=False, label="agent-app")
    t.agent(r1.url, o, agent_id="api", env={"ROUTES": "api.example.com"}, label="agent-api")
    r1.wait_tunnel_open("app", m1)
    r2.wait_tunnel_open("app", m2)
    front = free_port()
    servers = "    server r1 127.0.0.1:%d check port %d\n    server r2 127.0.0.1:%d check port %d" % (
        r1.port, a1, r2.port, a2)
    conf = []
    for line in per_name.splitlines():
        word = line.strip().split(" ", 1)[0]
        if word == "bind":
            conf.append("    bind 127.0.0.1:%d" % front)
        elif word == "server":
            if "r1" in line.split():
                conf.append(servers)
        else:
            conf.append(line)
    hp = haproxy(t, head + "\n".join(conf) + "\n", front)
    # HAProxy says when a check takes a server out (an event, not a delay).
    hp.wait_for(r"Server api/r2 is DOWN", 15)
    check(not hp.find(r"Server app/r\d is DOWN"), "app's replicas stay up")
    for host in ("api.example.com", "app.example.com"):
        for i in range(10):
            c = Conn(front, timeout=15)
            try:
                c.request("GET", "/name", host=host)
                r = c.read_response()
            finally:
                c.close()
            eq(r.status, 200, "%s request %d through HAProxy" % (host, i))
