"""g0 replicas: the agent keeps MAX_CONN tunnels to every address of every
REMOTE_URL (issue 13). Several serve processes listen on 127.0.0.2,
127.0.0.3 and 127.0.0.4 (same port); one name resolves to all of them
through the agent's own /etc/hosts: the agent runs in a private mount
namespace (unshare --mount) with a temporary hosts file bind-mounted over
/etc/hosts. Needs root and unshare; skipped otherwise."""

import os
import re
import shutil
import subprocess
import threading

from harness import (BIN, base_env, check, curl, curl_status, eq, fail, get, pki, timed)

NAME = "replicas.test"
ADDRS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def ns_unavailable():
    """Why the private /etc/hosts cannot be had here, or None."""
    if os.geteuid() != 0:
        return "needs root (unshare --mount and a bind mount over /etc/hosts)"
    if not shutil.which("unshare"):
        return "unshare not installed"
    r = subprocess.run(["unshare", "--mount", "true"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        return "unshare --mount is not permitted here"
    return None


def skip_unless_ns():
    why = ns_unavailable()
    if why:
        print("skip: %s" % why)
        return True
    return False


def write_hosts(path, entries):
    """Rewrite the hosts file in place (the bind mount follows the inode)."""
    with open(path, "w") as f:
        f.write("127.0.0.1 localhost\n")
        for addr, name in entries:
            f.write("%s %s\n" % (addr, name))


def agent_ns(t, hosts, remote, local, agent_id="a1", env=None, label="agent"):
    """natwrp agent seeing hosts as its /etc/hosts."""
    e = {"AGENT_ID": agent_id, "REMOTE_URL": remote, "LOCAL_URL": local.url}
    if env:
        e.update(env)
    argv = ["unshare", "--mount", "sh", "-c",
            'mount --bind "$1" /etc/hosts && exec "$2" agent', "sh", hosts, BIN]
    return t.spawn(label, argv, env=base_env(e), natwrp=True)


def replicas(t, addrs=ADDRS):
    """One serve per address, all on the port the first one got."""
    first = t.serve(listen="%s:0" % addrs[0], label="serve-" + addrs[0])
    out = [first]
    for a in addrs[1:]:
        out.append(t.serve(listen="%s:%d" % (a, first.port), label="serve-" + a))
    return out


def remote_re(port, addr):
    return re.escape("remote=ws://%s:%d (%s)" % (NAME, port, addr))


@timed(60)
def test_g0_every_replica_answered(t):
    if skip_unless_ns():
        return
    o = t.origin("A")
    ss = replicas(t)
    hosts = os.path.join(t.logdir, "hosts")
    write_hosts(hosts, [(a, NAME) for a in ADDRS])
    marks = [s.proc.mark() for s in ss]
    a = agent_ns(t, hosts, "http://%s:%d" % (NAME, ss[0].port), o,
                 env={"MAX_CONN": "2", "ADMIN_LISTEN": "127.0.0.1:0"})
    port = int(a.wait_for(r"admin listening on http://\S+:(\d+)", 15).group(1))
    for s, m in zip(ss, marks):
        s.wait_tunnel_open("a1-1", m)
        s.wait_tunnel_open("a1-2", m)
    for addr in ADDRS:
        for k in (1, 2):
            a.wait_for(r"tunnel up agent=a1-%d %s" % (k, remote_re(ss[0].port, addr)), 15)
    for s in ss:
        for i in range(4):
            r = get(s.port, "/name", host=s.host)
            eq(r.status, 200, "request %d to %s" % (i, s.host))
            eq(r.body, b"A\n", "answer from %s" % s.host)
    st = get(port, "/api/status").json()
    up = [(x["name"], x["address"]) for x in st["tunnels"] if x["state"] == "up"]
    eq(sorted(up), sorted((n, ad) for ad in ADDRS for n in ("a1-1", "a1-2")),
       "tunnels up per address in /api/status")
    for x in st["tunnels"]:
        eq(x["remote"], "ws://%s:%d" % (NAME, ss[0].port), "remote field")


@timed(60)
def test_g0_dead_replica_own_backoff(t):
    if skip_unless_ns():
        return
    o = t.origin("A")
    ss = replicas(t)
    hosts = os.path.join(t.logdir, "hosts")
    write_hosts(hosts, [(a, NAME) for a in ADDRS])
    marks = [s.proc.mark() for s in ss]
    a = agent_ns(t, hosts, "http://%s:%d" % (NAME, ss[0].port), o)
    for s, m in zip(ss, marks):
        s.wait_tunnel_open("a1", m)
    live = [ss[0], ss[2]]
    stop, errors, done = threading.Event(), [], [0]

    def loop():
        i = 0
        while not stop.is_set() and i < 5000:
            s = live[i % 2]
            i += 1
            try:
                r = get(s.port, "/name", host=s.host, timeout=5)
                if r.status != 200:
                    errors.append("%s: %d" % (s.host, r.status))
            except Exception as e:  # noqa: BLE001 (any failure counts)
                errors.append("%s: %r" % (s.host, e))
            done[0] += 1

    th = threading.Thread(target=loop)
    mark = a.mark()
    th.start()
    try:
        ss[1].proc.kill()
        dead = remote_re(ss[0].port, "127.0.0.3")
        a.wait_for(r"tunnel down agent=a1 reason=.* %s; .*attempt 1\)" % dead, 15, mark)
        a.wait_for(r"tunnel down agent=a1 reason=.* %s; .*attempt 3\)" % dead, 15, mark)
    finally:
        stop.set()
        th.join(30)
    eq(errors, [], "requests to the live replicas while one died")
    check(done[0] >= 10, "the client loop ran (%d requests)" % done[0])
    for addr in ("127.0.0.2", "127.0.0.4"):
        check(not a.find(r"tunnel down agent=a1 .*%s" % remote_re(ss[0].port, addr), mark),
              "the tunnel to %s stayed up" % addr)


@timed(60)
def test_g0_resolve_adds_and_drains(t):
    if skip_unless_ns():
        return
    o = t.origin("A")
    ss = replicas(t, ADDRS[:2])
    hosts = os.path.join(t.logdir, "hosts")
    write_hosts(hosts, [("127.0.0.2", NAME)])
    m0 = ss[0].proc.mark()
    a = agent_ns(t, hosts, "http://%s:%d" % (NAME, ss[0].port), o,
                 env={"RESOLVE_INTERVAL": "1"})
    ss[0].wait_tunnel_open("a1", m0)
    # A new address: a tunnel within RESOLVE_INTERVAL (1 s; 5 s allowed).
    m1 = ss[1].proc.mark()
    write_hosts(hosts, [("127.0.0.2", NAME), ("127.0.0.3", NAME)])
    ss[1].wait_tunnel_open("a1", m1, timeout=5)
    eq(get(ss[1].port, "/name", host="127.0.0.3").status, 200, "the new replica answers")
    # A removed address: its tunnel drains; the request in flight finishes.
    res = {}

    def slow():
        try:
            res["r"] = get(ss[1].port, "/sleep?ms=1500", host="127.0.0.3", timeout=15)
        except Exception as e:  # noqa: BLE001
            res["e"] = e

    th = threading.Thread(target=slow)
    mo = o.proc.mark()
    th.start()
    o.proc.wait_for(r"/sleep", 10, mo)
    ma, ms = a.mark(), ss[1].proc.mark()
    write_hosts(hosts, [("127.0.0.2", NAME)])
    a.wait_for(r"%s is gone from DNS: draining" % remote_re(ss[0].port, "127.0.0.3"), 5, ma)
    th.join(20)
    check("r" in res, "the in-flight request failed: %r" % res.get("e"))
    eq(res["r"].status, 200, "in-flight request on the drained tunnel")
    eq(res["r"].body, b"slept 1500\n", "its body")
    ss[1].wait_tunnel_closed("a1", ms, timeout=10)
    check(not a.find(r"tunnel down agent=a1 .*%s" % remote_re(ss[0].port, "127.0.0.3"), ma),
          "the drained tunnel is not reconnected")
    eq(get(ss[0].port, "/name", host="127.0.0.2").status, 200, "the remaining replica answers")


@timed(60)
def test_g0_one_missing_answer_keeps_tunnels(t):
    """A name server that answers a few of many records, a different few
    each time, made the agent drain and redial an address at every lookup
    that missed it. An address is now drained only when two answers in a
    row lack it: one answer without 127.0.0.3 leaves its tunnel alone (no
    drain, no new tunnel on that replica); two drain it."""
    if skip_unless_ns():
        return
    o = t.origin("A")
    ss = replicas(t, ADDRS[:2])
    hosts = os.path.join(t.logdir, "hosts")
    both = [("127.0.0.2", NAME), ("127.0.0.3", NAME)]
    write_hosts(hosts, both)
    marks = [s.proc.mark() for s in ss]
    a = agent_ns(t, hosts, "http://%s:%d" % (NAME, ss[0].port), o,
                 env={"RESOLVE_INTERVAL": "2", "LOG_LEVEL": "debug"})
    for s, m in zip(ss, marks):
        s.wait_tunnel_open("a1", m)
    resolved = re.escape(NAME) + r" resolved: %d address"
    ma, ms = a.mark(), ss[1].proc.mark()
    write_hosts(hosts, both[:1])
    a.wait_for(resolved % 1, 10, ma)
    write_hosts(hosts, both)  # back before the next lookup (2 s later)
    a.wait_for(resolved % 2, 10, a.last_at + 1)
    eq(a.count(r"is gone from DNS", ma), 0, "addresses drained after one answer without them")
    eq(ss[1].proc.count(r"tunnel (open|closed|draining) tun=\d+ agent=a1\b", ms), 0,
       "tunnels opened or closed on 127.0.0.3")
    eq(get(ss[1].port, "/name", host="127.0.0.3").status, 200, "127.0.0.3 answers")
    # Missing from two answers in a row: drained.
    ma = a.mark()
    write_hosts(hosts, both[:1])
    a.wait_for(r"%s is gone from DNS: draining" % remote_re(ss[0].port, "127.0.0.3"), 10, ma)
    check(a.count(resolved % 1, ma) >= 2, "drained after %d lookup(s) without it, not 2"
          % a.count(resolved % 1, ma))
    ss[1].wait_tunnel_closed("a1", ms, timeout=10)


@timed(60)
def test_g0_list_plain_and_tls(t):
    if skip_unless_ns():
        return
    P = pki()
    o = t.origin("A")
    plain = t.serve(listen="127.0.0.2:0", label="serve-plain")
    tls = t.serve("--tls-cert", P("server.pem"), "--tls-key", P("server.key"),
                  listen="127.0.0.4:0", label="serve-tls")
    hosts = os.path.join(t.logdir, "hosts")
    # The certificate names localhost: here it is 127.0.0.4, so the dial goes
    # to that address and verifies the name.
    with open(hosts, "w") as f:
        f.write("127.0.0.2 %s\n127.0.0.4 localhost\n" % NAME)
    mp, mt = plain.proc.mark(), tls.proc.mark()
    a = agent_ns(t, hosts, "http://%s:%d, https://localhost:%d" % (NAME, plain.port, tls.port),
                 o, env={"CA_FILE": P("ca.pem")})
    plain.wait_tunnel_open("a1", mp)
    tls.wait_tunnel_open("a1", mt)
    a.wait_for(re.escape("tunnel up agent=a1 remote=wss://localhost:%d (127.0.0.4)" % tls.port),
               10)
    eq(get(plain.port, "/name", host="127.0.0.2").status, 200, "plain replica")
    res = curl("--cacert", P("ca.pem"), "--resolve", "localhost:%d:127.0.0.4" % tls.port,
               "-w", "%{stderr}CODE=%{http_code}", "https://localhost:%d/name" % tls.port)
    eq(curl_status(res), 200, "TLS replica (%r)" % res)
    eq(res.out, b"A\n", "TLS replica body")


@timed(60)
def test_g0_max_remotes_and_settings(t):
    for env, name in (({"REMOTE_URL": "http://a.test:1,,http://b.test:2"}, "REMOTE_URL"),
                      ({"REMOTE_URL": "http://a.test:1,ftp://b.test"}, "REMOTE_URL"),
                      ({"REMOTE_URL": "http://a.test:1,http://b.test:2/x"}, "REMOTE_URL"),
                      ({"RESOLVE_INTERVAL": "-1"}, "RESOLVE_INTERVAL"),
                      ({"MAX_REMOTES": "0"}, "MAX_REMOTES"),
                      ({"MAX_REMOTES": "65"}, "MAX_REMOTES")):
        e = {"AGENT_ID": "a1", "REMOTE_URL": "http://127.0.0.1:1", "LOCAL_URL": "http://x:1"}
        e.update(env)
        rc, out = t.run_natwrp("agent-bad", ["agent"], env=e)
        eq(rc, 2, "exit status for %r" % env)
        check(name in out, "%r: the error names %s: %r" % (env, name, out))
    if skip_unless_ns():
        return
    o = t.origin("A")
    ss = replicas(t)
    hosts = os.path.join(t.logdir, "hosts")
    write_hosts(hosts, [(a, NAME) for a in ADDRS])
    marks = [s.proc.mark() for s in ss]
    a = agent_ns(t, hosts, "http://%s:%d" % (NAME, ss[0].port), o,
                 env={"MAX_REMOTES": "2", "RESOLVE_INTERVAL": "0.3", "LOG_LEVEL": "debug"})
    ss[0].wait_tunnel_open("a1", marks[0])
    ss[1].wait_tunnel_open("a1", marks[1])
    a.wait_for(r"MAX_REMOTES=2 reached: no tunnels to 127\.0\.0\.4 of %s" % re.escape(NAME), 10)
    # Three more lookups: still one warning (once per change, not per interval).
    since = a.mark()
    for _ in range(3):
        a.wait_for(r"%s resolved: 3 address" % re.escape(NAME), 10, since)
        since = a.last_at + 1
    eq(a.count(r"MAX_REMOTES=2 reached"), 1, "warnings about the addresses left out")
    for _ in range(3):
        eq(get(ss[0].port, "/name", host="127.0.0.2").status, 200, "replica answers")
    if ss[2].proc.find(r"tunnel open tun=\d+ agent=a1\b", marks[2]):
        fail("the address left out got a tunnel")


@timed(60)
def test_g0_unresolvable_at_start(t):
    """A name that does not resolve yet: one warning (not one per retry),
    retries on a backoff even with RESOLVE_INTERVAL=0, a tunnel once it
    resolves."""
    if skip_unless_ns():
        return
    o = t.origin("A")
    s = t.serve(listen="127.0.0.2:0", label="serve-127.0.0.2")
    hosts = os.path.join(t.logdir, "hosts")
    write_hosts(hosts, [])
    m = s.proc.mark()
    a = agent_ns(t, hosts, "http://%s:%d" % (NAME, s.port), o,
                 env={"RESOLVE_INTERVAL": "0", "LOG_LEVEL": "debug"})
    since = 0
    for _ in range(3):
        a.wait_for(r"resolving %s again in" % re.escape(NAME), 10, since)
        since = a.last_at + 1
    eq(a.count(r"cannot resolve %s" % re.escape(NAME)), 1, "warnings for the failed lookups")
    write_hosts(hosts, [("127.0.0.2", NAME)])
    s.wait_tunnel_open("a1", m, timeout=15)
    a.wait_for(r"%s resolves again" % re.escape(NAME), 5)
    eq(get(s.port, "/name", host="127.0.0.2").status, 200, "the replica answers")
