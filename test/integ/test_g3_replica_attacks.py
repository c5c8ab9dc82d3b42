"""g3 replica attacks: the multi-address agent (issue 13) under hostile or
awkward address sets: two of its addresses reaching one server, address
churn, retiring tunnels that carry long streams, shutdown mid-change."""

import os
import socket
import threading
import time

from fakeserver import FakeServer
from harness import (BIN, Conn, base_env, check, eq, get, timed)
from test_g0_replicas import NAME, agent_ns, replicas, skip_unless_ns, write_hosts


def v6_unavailable():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return True
    return False


@timed(60)
def test_g3_two_addresses_one_server_no_flap(t):
    """127.0.0.1 and ::1 of one dual-stack serve (the default
    REMOTE_URL=http://localhost:... on a host whose localhost has both): the
    agent keeps one tunnel through each, serve keeps both. Before, each
    tunnel replaced the other (same name), forever, failing in-flight
    streams at every swap."""
    if v6_unavailable():
        print("skip: ::1 unavailable here")
        return
    o = t.origin("A")
    s = t.serve(listen="[::]:0")
    m = s.proc.mark()
    a = t.agent("http://127.0.0.1:%d,http://[::1]:%d" % (s.port, s.port), o, wait=False)
    a.wait_for(r"tunnel up agent=a1 remote=ws://127\.0\.0\.1:%d" % s.port, 15)
    a.wait_for(r"tunnel up agent=a1 remote=ws://\[::1\]:%d" % s.port, 15)
    for i in range(30):
        r = get(s.port, "/name", host="127.0.0.1")
        eq(r.status, 200, "request %d" % i)
    eq(s.proc.count(r"tunnel replaced", m), 0, "tunnels replaced on serve")
    eq(a.count(r"tunnel down"), 0, "tunnels down on the agent")
    eq(s.proc.count(r"tunnel open tun=\d+ agent=a1 ", m), 2, "tunnels opened on serve")


def goaway_replica(fs, stop, accepted):
    """A hostile replica: every tunnel gets its 101, then GOAWAY at once,
    and stays open (its sockets are kept until the test ends)."""
    while not stop.is_set():
        try:
            tun = fs.accept(timeout=0.5)
        except Exception:  # noqa: BLE001 (no agent within the timeout)
            continue
        accepted.append(time.monotonic())
        try:
            tun.goaway(0)
        except OSError:
            pass


@timed(60)
def test_g3_goaway_at_once_backs_off(t):
    """A replica that answers every tunnel with GOAWAY at once: the slot
    reconnects at once the first time (a rolling restart), then on its own
    backoff, not in a tight loop; the healthy replica keeps its tunnel and
    answers. Before, every GOAWAY reconnected at once: hundreds of tunnels
    (and log lines) a second."""
    o = t.origin("A")
    s = t.serve()
    fs = FakeServer()
    stop, accepted = threading.Event(), []
    th = threading.Thread(target=goaway_replica, args=(fs, stop, accepted))
    th.start()
    try:
        a = t.agent("%s,%s" % (fs.url, s.url), o, wait=False)
        a.wait_for(r"tunnel up agent=a1 remote=ws://127\.0\.0\.1:%d" % s.port, 15)
        deadline = time.monotonic() + 15
        while not accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        check(accepted, "the hostile replica got a tunnel")
        window_end = accepted[0] + 3.0
        while time.monotonic() < window_end:
            r = get(s.port, "/name")
            eq(r.status, 200, "the healthy replica answers")
        n = sum(1 for x in accepted if x < window_end)
        check(n <= 6, "tunnels to the GOAWAY replica in 3 s: %d (want backoff, <= 6)" % n)
        eq(a.count(r"tunnel down agent=a1 reason=.* remote=ws://127\.0\.0\.1:%d" % s.port), 0,
           "the healthy replica's tunnel stayed up")
    finally:
        stop.set()
        th.join()
        fs.close()


def status_tunnels(port):
    return get(port, "/api/status").json()["tunnels"]


@timed(90)
def test_g3_flapping_address_keeps_streams(t):
    """RESOLVE_INTERVAL=0.2 and a hosts file whose second address comes and
    goes every few lookups, while a long request runs on it and a client
    loop uses the stable replica: the long request finishes, the loop sees
    no error, serve replaces no tunnel, and once the churn stops the agent
    holds exactly MAX_CONN tunnels per address (no retiring tunnel left),
    then exits 0 on SIGTERM."""
    if skip_unless_ns():
        return
    o = t.origin("A")
    ss = replicas(t, ("127.0.0.2", "127.0.0.3"))
    hosts = os.path.join(t.logdir, "hosts")
    both = [("127.0.0.2", NAME), ("127.0.0.3", NAME)]
    write_hosts(hosts, both)
    marks = [s.proc.mark() for s in ss]
    a = agent_ns(t, hosts, "http://%s:%d" % (NAME, ss[0].port), o,
                 env={"RESOLVE_INTERVAL": "0.2", "MAX_CONN": "2",
                      "ADMIN_LISTEN": "127.0.0.1:0"})
    port = int(a.wait_for(r"admin listening on http://\S+:(\d+)", 15).group(1))
    for s, m in zip(ss, marks):
        s.wait_tunnel_open("a1-1", m)
        s.wait_tunnel_open("a1-2", m)
    res, errors, stop = {}, [], threading.Event()

    def slow():
        try:
            res["r"] = get(ss[1].port, "/sleep?ms=4000", host="127.0.0.3", timeout=20)
        except Exception as e:  # noqa: BLE001
            res["e"] = e

    def loop():
        i = 0
        while not stop.is_set() and i < 3000:
            i += 1
            try:
                r = get(ss[0].port, "/name", host="127.0.0.2", timeout=5)
                if r.status != 200:
                    errors.append(r.status)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

    mo = o.proc.mark()
    th_slow, th_loop = threading.Thread(target=slow), threading.Thread(target=loop)
    th_slow.start()
    th_loop.start()
    try:
        o.proc.wait_for(r"/sleep", 10, mo)
        since = a.mark()
        for i in range(6):  # gone, back, gone, back...: each seen by a lookup
            write_hosts(hosts, both[:1] if i % 2 == 0 else both)
            want = "is gone from DNS" if i % 2 == 0 else "is new: connecting"
            a.wait_for(r"\(127\.0\.0\.3\) %s" % want, 10, since)
            since = a.last_at + 1
        th_slow.join(20)
    finally:
        stop.set()
        th_loop.join(30)
    check("r" in res, "the long request failed: %r" % res.get("e"))
    eq(res["r"].status, 200, "the long request through the flapping address")
    eq(errors, [], "requests to the stable replica")
    for s, m in zip(ss, marks):
        eq(s.proc.count(r"tunnel replaced", m), 0, "tunnels replaced on %s" % s.host)
    deadline = time.monotonic() + 15
    while True:
        tl = status_tunnels(port)
        retiring = [x for x in tl if x["state"] == "retiring"]
        up = sorted((x["name"], x["address"]) for x in tl if x["state"] == "up")
        want = sorted((n, ad) for ad in ("127.0.0.2", "127.0.0.3") for n in ("a1-1", "a1-2"))
        if not retiring and up == want:
            break
        check(time.monotonic() < deadline,
              "after the churn: %d retiring, up %r (want %r)" % (len(retiring), up, want))
        time.sleep(0.1)
    rc, problem = a.terminate(10)
    check(problem is None, problem or "")


DNS_HOLE = "127.53.53.53"


class DnsHole:
    """A name server on DNS_HOLE:53 that never answers (UDP read and
    dropped, TCP accepted and left): every lookup of a name not in the
    hosts file waits for the resolver's whole timeout."""

    def __init__(self):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((DNS_HOLE, 53))
        self.udp.settimeout(0.2)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((DNS_HOLE, 53))
        self.tcp.listen(16)
        self.stop = threading.Event()
        self.queries = 0
        self.th = threading.Thread(target=self._run)
        self.th.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                self.udp.recvfrom(4096)
                self.queries += 1
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.th.join(5)
        self.udp.close()
        self.tcp.close()


def agent_dns(t, hosts, resolv, env):
    """natwrp agent with its own /etc/hosts and /etc/resolv.conf."""
    argv = ["unshare", "--mount", "sh", "-c",
            'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && '
            'exec "$3" agent', "sh", hosts, resolv, BIN]
    return t.spawn("agent", argv, env=base_env(env), natwrp=True)


@timed(90)
def test_g3_hung_dns_name_delays_nothing_else(t):
    """One REMOTE_URL name whose DNS never answers (each lookup waits 2 x
    2 s): the other name still gets its tunnel at once, and requests to a
    LOCAL_URL given by name (localhost) are not held up behind those
    lookups. Before, libuv let getaddrinfo use one of the agent's two pool
    threads: the other name waited for the hung lookup, and every local
    connection's lookup of localhost waited too (4.5 s, then 503)."""
    if skip_unless_ns():
        return
    try:
        hole = DnsHole()
    except OSError as e:
        print("skip: cannot listen on %s:53 (%s)" % (DNS_HOLE, e))
        return
    try:
        o = t.origin("A")
        s = t.serve(listen="127.0.0.2:0")
        hosts = os.path.join(t.logdir, "hosts")
        write_hosts(hosts, [("127.0.0.2", NAME)])
        resolv = os.path.join(t.logdir, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("nameserver %s\noptions timeout:2 attempts:2\n" % DNS_HOLE)
        m = s.proc.mark()
        t0 = time.monotonic()
        a = agent_dns(t, hosts, resolv, {
            "AGENT_ID": "a1", "RESOLVE_INTERVAL": "1",
            "REMOTE_URL": "http://hung.test:%d,http://%s:%d" % (s.port, NAME, s.port),
            "LOCAL_URL": "http://localhost:%d" % o.port})
        s.wait_tunnel_open("a1", m, timeout=15)
        took = time.monotonic() - t0
        check(took < 2.5, "the tunnel to %s took %.1fs (behind hung.test's lookup)" % (NAME, took))
        for i in range(8):
            t1 = time.monotonic()
            r = get(s.port, "/name", host="127.0.0.2", timeout=15)
            took = time.monotonic() - t1
            eq(r.status, 200, "request %d through a LOCAL_URL by name" % i)
            check(took < 1.5, "request %d took %.1fs (its lookup of localhost waited)" % (i, took))
        a.wait_for(r"cannot resolve hung\.test", 15)
        check(hole.queries > 0, "the hung name was asked of the silent server")
    finally:
        hole.close()


def proc_cpu(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


@timed(150)
def test_g3_retiring_tunnels_cost_no_cpu(t):
    """MAX_REMOTES=64 x MAX_CONN=64 (4096 slots), two replicas with 64
    tunnels each; long requests from 120 client addresses run through the
    second, which then leaves DNS: its tunnels retire while they carry
    them. Requests to the first replica must not cost the agent more CPU
    than before the drop. Before, the reaper looked for every retiring
    tunnel through all 4096 slots on every loop turn: 150 requests cost
    about 0.6 s of agent CPU instead of 0.05 s."""
    if skip_unless_ns():
        return
    o = t.origin("A")
    s0 = t.serve("--max-agent-tunnels", "64", listen="127.0.0.2:0", label="serve-127.0.0.2")
    s1 = t.serve("--max-agent-tunnels", "64", listen="127.0.0.3:%d" % s0.port,
                 label="serve-127.0.0.3")
    hosts = os.path.join(t.logdir, "hosts")
    write_hosts(hosts, [("127.0.0.2", NAME), ("127.0.0.3", NAME)])
    a = agent_ns(t, hosts, "http://%s:%d" % (NAME, s0.port), o,
                 env={"MAX_CONN": "64", "MAX_REMOTES": "64", "RESOLVE_INTERVAL": "0.5",
                      "LOG_LEVEL": "warn"})
    deadline = time.monotonic() + 60
    while s0.proc.count(r"tunnel open") < 64 or s1.proc.count(r"tunnel open") < 64:
        check(time.monotonic() < deadline, "128 tunnels up")
        time.sleep(0.2)
    pid = a.popen.pid

    def load(n):
        c0 = proc_cpu(pid)
        for i in range(n):
            eq(get(s0.port, "/name", host="127.0.0.2").status, 200, "request %d" % i)
        return proc_cpu(pid) - c0

    base = load(150)
    held = []
    try:
        mo = o.proc.mark()
        for i in range(120):
            c = socket.create_connection(("127.0.0.3", s1.port), timeout=10,
                                         source_address=("127.0.9.%d" % (i + 1), 0))
            c.sendall(b"GET /hang?max_ms=60000 HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(c)
        deadline = time.monotonic() + 20
        while o.proc.count(r"event hang-start", mo) < 120:
            check(time.monotonic() < deadline, "120 long requests reached the origin")
            time.sleep(0.1)
        ms = s1.proc.mark()
        write_hosts(hosts, [("127.0.0.2", NAME)])
        deadline = time.monotonic() + 10
        while s1.proc.count(r"tunnel draining tun=\d+ agent=a1-\d+", ms) < 64:
            check(time.monotonic() < deadline, "the agent retired the 64 tunnels to 127.0.0.3")
            time.sleep(0.1)
        busy = load(150)
    finally:
        for c in held:
            c.close()
    check(busy < max(0.3, 4 * base),
          "agent CPU for 150 requests: %.2fs with tunnels retiring, %.2fs before" % (busy, base))


@timed(60)
def test_g3_sigterm_while_retiring_and_backing_off(t):
    """SIGTERM while one address's tunnel retires with a request in flight,
    another address is dead (its slot backing off) and lookups run every
    0.2 s: the request finishes, the agent exits 0 with no sanitizer
    report."""
    if skip_unless_ns():
        return
    o = t.origin("A")
    ss = replicas(t, ("127.0.0.2", "127.0.0.3"))
    hosts = os.path.join(t.logdir, "hosts")
    write_hosts(hosts, [("127.0.0.2", NAME), ("127.0.0.3", NAME), ("127.0.0.4", NAME)])
    marks = [s.proc.mark() for s in ss]
    a = agent_ns(t, hosts, "http://%s:%d" % (NAME, ss[0].port), o,
                 env={"RESOLVE_INTERVAL": "0.2"})
    for s, m in zip(ss, marks):
        s.wait_tunnel_open("a1", m)
    a.wait_for(r"tunnel down agent=a1 .*\(127\.0\.0\.4\); .*attempt 1\)", 10)
    # The head arrives at once, the body over 1.5 s: in flight for sure.
    c = Conn(ss[1].port, host="127.0.0.3", timeout=15)
    c.request("GET", "/slow-body?ms=300&parts=5&size=10")
    r = c.read_head()
    eq(r.status, 200, "the long request's head")
    ma = a.mark()
    write_hosts(hosts, [("127.0.0.2", NAME), ("127.0.0.4", NAME)])
    a.wait_for(r"\(127\.0\.0\.3\) is gone from DNS", 5, ma)
    a.send(15)
    a.wait_for(r"received SIGTERM: shutting down \(1 request\(s\) in flight", 5, ma)
    c.read_body(r)
    eq(len(r.body), 50, "the long request's body, whole")
    c.close()
    rc, problem = a.terminate(10)
    check(problem is None, problem or "")


@timed(60)
def test_g3_sigterm_while_lookup_hangs(t):
    """SIGTERM while a lookup waits on a name server that never answers
    (timeout:5 attempts:2): the agent exits 0 at once. Before, the loop
    (and libuv's exit, which joins its pool) waited for getaddrinfo: 9 s."""
    if skip_unless_ns():
        return
    try:
        hole = DnsHole()
    except OSError as e:
        print("skip: cannot listen on %s:53 (%s)" % (DNS_HOLE, e))
        return
    try:
        o = t.origin("A")
        s = t.serve(listen="127.0.0.2:0")
        hosts = os.path.join(t.logdir, "hosts")
        write_hosts(hosts, [("127.0.0.2", NAME)])
        resolv = os.path.join(t.logdir, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("nameserver %s\noptions timeout:5 attempts:2\n" % DNS_HOLE)
        m = s.proc.mark()
        a = agent_dns(t, hosts, resolv, {
            "AGENT_ID": "a1",
            "REMOTE_URL": "http://%s:%d,http://hung.test:%d" % (NAME, s.port, s.port),
            "LOCAL_URL": o.url})
        s.wait_tunnel_open("a1", m, timeout=15)
        deadline = time.monotonic() + 10
        while not hole.queries:
            check(time.monotonic() < deadline, "the hung name was asked of the silent server")
            time.sleep(0.05)
        t0 = time.monotonic()
        rc, problem = a.terminate(15)
        took = time.monotonic() - t0
        check(problem is None, problem or "")
        check(took < 2.0, "exit %.1fs after SIGTERM (waited for the hung lookup)" % took)
    finally:
        hole.close()


@timed(60)
def test_g3_rotating_answer_warns_once(t):
    """MAX_REMOTES=2 and a name with 6 addresses whose answer rotates at
    every lookup (DNS round-robin): the two addresses in use stay in use
    (they are in every answer), and the warning about those left out is
    logged once, not at every lookup because their order changed."""
    if skip_unless_ns():
        return
    o = t.origin("A")
    ss = replicas(t, ("127.0.0.2", "127.0.0.3"))
    others = ["127.0.0.%d" % i for i in range(4, 8)]
    hosts = os.path.join(t.logdir, "hosts")
    order = ["127.0.0.2", "127.0.0.3"] + others
    write_hosts(hosts, [(x, NAME) for x in order])
    marks = [s.proc.mark() for s in ss]
    a = agent_ns(t, hosts, "http://%s:%d" % (NAME, ss[0].port), o,
                 env={"MAX_REMOTES": "2", "RESOLVE_INTERVAL": "0.2", "LOG_LEVEL": "debug"})
    for s, m in zip(ss, marks):
        s.wait_tunnel_open("a1", m)
    since = a.mark()
    for i in range(6):
        rot = others[i % 4:] + others[:i % 4]
        write_hosts(hosts, [(x, NAME) for x in ([rot[0]] + ["127.0.0.2"] + rot[1:] +
                                                ["127.0.0.3"])])
        a.wait_for(r"%s resolved: 6 address" % NAME.replace(".", "\\."), 10, since)
        a.wait_for(r"%s resolved: 6 address" % NAME.replace(".", "\\."), 10, a.last_at + 1)
        since = a.last_at + 1
    eq(a.count(r"MAX_REMOTES=2 reached"), 1, "warnings about the addresses left out")
    eq(a.count(r"is gone from DNS"), 0, "addresses dropped")
    for s, m in zip(ss, marks):
        eq(s.proc.count(r"tunnel open tun=\d+ agent=a1\b", m), 1, "tunnels opened on " + s.host)
