"""g1 replicas behind HAProxy: the deployment docs/deploy.md describes.

Three `natwrp serve` replicas on 127.0.0.2, 127.0.0.3 and 127.0.0.4 (one
port), each with its admin listener; HAProxy on loopback in front of them,
round-robin, health-checking each replica's /readyz. The HAProxy
configuration is the one docs/deploy.md documents (only its `bind` and
`server` lines are replaced). A client loop through HAProxy sees no 503 and
no failure while one replica restarts (SIGTERM, then a new process on its
address). One agent reaches all three through one name that resolves to
each of them (a private /etc/hosts in a mount namespace, as test_g0_replicas
does; without root or unshare, one agent per replica stands in, and the
test says so). The Kubernetes
manifests of docs/k8s/ are checked to be valid YAML with the kinds and the
/readyz probe the docs promise. haproxy comes from scripts/deps.sh --haproxy
(make test runs it)."""

import os
import re
import shutil
import signal
import socket
import threading
import time

from harness import ROOT, Conn, check, eq, fail, timed
from test_g0_replicas import NAME, agent_ns, ns_unavailable, write_hosts

DEPLOY = os.path.join(ROOT, "docs", "deploy.md")
K8S = os.path.join(ROOT, "docs", "k8s")
README = os.path.join(ROOT, "README.md")
REPLICAS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def deploy_block(lang):
    """The first ```lang code block of docs/deploy.md."""
    if not os.path.exists(DEPLOY):
        fail("docs/deploy.md is missing")
    with open(DEPLOY) as f:
        text = f.read()
    m = re.search(r"^```%s\n(.*?)^```" % re.escape(lang), text, re.S | re.M)
    if not m:
        fail("docs/deploy.md has no ```%s block" % lang)
    return m.group(1)


def haproxy_conf(front, servers):
    """docs/deploy.md's configuration with this test's bind and servers:
    servers is [(name, addr, port, check_port)]."""
    out = []
    done = False
    for line in deploy_block("haproxy").splitlines():
        word = line.strip().split(" ", 1)[0]
        indent = line[:len(line) - len(line.lstrip())]
        if word == "bind":
            out.append("%sbind 127.0.0.1:%d" % (indent, front))
        elif word == "server":
            if not done:
                out += ["%sserver %s %s:%d check port %d" % ((indent,) + s) for s in servers]
                done = True
        else:
            out.append(line)
    check(done, "the documented configuration has no server line")
    return "\n".join(out) + "\n"


def free_port(host="127.0.0.1"):
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def haproxy(t, conf_text, port):
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(exe, os.X_OK):
        fail("haproxy is not installed (scripts/deps.sh --haproxy installs it)")
    d = os.path.join(t.logdir, "haproxy")
    os.makedirs(d)
    conf = os.path.join(d, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(conf_text)
    # -db: foreground, no daemon; -W not needed (no reloads here).
    p = t.spawn("haproxy", [exe, "-db", "-f", conf])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p
        except OSError:
            if not p.alive() or time.monotonic() > deadline:
                fail("haproxy did not start:\n%s" % p.tail_text())
            time.sleep(0.05)


def status_and_body(port, target, timeout=15.0):
    c = Conn(port, timeout=timeout)
    try:
        c.request("GET", target)
        r = c.read_response()
        return r.status, r.body
    finally:
        c.close()


def readyz(addr, port):
    try:
        return status_and_body_at(addr, port, "/readyz")[0]
    except OSError:
        return None


def status_and_body_at(addr, port, target):
    c = Conn(port, host=addr, timeout=5)
    try:
        c.request("GET", target)
        r = c.read_response()
        return r.status, r.body
    finally:
        c.close()


def wait_ready(addr, port, timeout=20.0):
    deadline = time.monotonic() + timeout
    while readyz(addr, port) != 200:
        if time.monotonic() > deadline:
            fail("%s:%d /readyz never answered 200" % (addr, port))
        time.sleep(0.05)


def served(addr, admin_port):
    """Requests a replica answered with 200 (its /metrics)."""
    st, body = status_and_body_at(addr, admin_port, "/metrics")
    eq(st, 200, "%s /metrics" % addr)
    n = 0
    for line in body.decode().splitlines():
        if line.startswith("natwrp_requests_total{") and 'code="200"' in line:
            n += int(float(line.rsplit(" ", 1)[1]))
    return n


def start_replica(t, addr, port, admin, label):
    s = t.serve("--admin", "%s:%d" % (addr, admin), "--trust-proxy", "--grace", "10",
                listen="%s:%d" % (addr, port), label=label)
    eq((s.host, s.port), (addr, port), "%s listener" % label)
    return s


@timed(120)
def test_haproxy_round_robin_replica_restart_no_503(t):
    o = t.origin()
    port = free_port(REPLICAS[0])
    admin = free_port(REPLICAS[0])
    replicas = [start_replica(t, addr, port, admin, "serve%d" % (i + 1))
                for i, addr in enumerate(REPLICAS)]
    why = ns_unavailable()
    if why is None:
        # One agent, one name resolving to the three replicas.
        hosts = os.path.join(t.logdir, "hosts")
        write_hosts(hosts, [(a, NAME) for a in REPLICAS])
        agent_ns(t, hosts, "http://%s:%d" % (NAME, port), o)
    else:
        print("note: %s: one agent per replica instead of one for all" % why)
        for i, s in enumerate(replicas):
            t.agent(s, o, label="agent%d" % (i + 1))
    for addr in REPLICAS:
        wait_ready(addr, admin)
    front = free_port()
    servers = [("r%d" % (i + 1), addr, port, admin) for i, addr in enumerate(REPLICAS)]
    hp = haproxy(t, haproxy_conf(front, servers), front)
    # All three are up in HAProxy's eyes (checks every 500 ms, rise 1):
    # round-robin then gives each of them requests.
    deadline = time.monotonic() + 15
    while True:
        for _ in range(6):
            st, body = status_and_body(front, "/name")
            eq((st, body), (200, b"A\n"), "through haproxy")
        if all(served(a, admin) > 0 for a in REPLICAS):
            break
        if time.monotonic() > deadline:
            fail("round-robin never reached every replica: %r" %
                 [served(a, admin) for a in REPLICAS])

    stop = threading.Event()
    lock = threading.Lock()
    progress = threading.Condition(lock)
    stats = {"ok": 0, "bad": []}

    def loop():
        i = 0
        while not stop.is_set() and i < 5000:
            i += 1
            try:
                st, body = status_and_body(front, "/name?i=%d" % i)
                good = (st, body) == (200, b"A\n")
                why = "%d: %s %r" % (i, st, body[:80])
            except (OSError, AssertionError) as e:
                good, why = False, "%d: %s" % (i, e)
            with lock:
                if good:
                    stats["ok"] += 1
                else:
                    stats["bad"].append(why)
                progress.notify_all()

    def wait_ok(n, timeout=30):
        with lock:
            target = stats["ok"] + n
            if not progress.wait_for(lambda: stats["ok"] >= target, timeout):
                fail("the client loop stalled at %d successes" % stats["ok"])

    ths = [threading.Thread(target=loop, daemon=True) for _ in range(3)]
    for th in ths:
        th.start()
    wait_ok(30)
    # Restart replica 2: SIGTERM (its /readyz turns 503 and its listener
    # closes at once), then a new process on the same address and ports.
    old = replicas[1]
    old.proc.send(signal.SIGTERM)
    eq(old.proc.wait_exit(20), 0, "old replica 2 exit status")
    wait_ok(30)
    new = start_replica(t, REPLICAS[1], port, admin, "serve2b")
    # The agent reconnects to that address on its own backoff; the new
    # process is ready once it holds the tunnel, and HAProxy sends it users
    # again.
    new.wait_tunnel_open("a1", timeout=30)
    wait_ready(REPLICAS[1], admin)
    deadline = time.monotonic() + 20
    while served(REPLICAS[1], admin) < 5:
        if time.monotonic() > deadline:
            fail("the restarted replica got no traffic through haproxy")
        wait_ok(10)
    stop.set()
    for th in ths:
        th.join(30)
    eq(stats["bad"], [], "failed or non-200 requests through haproxy during the restart")
    check(stats["ok"] >= 70, "only %d requests" % stats["ok"])
    check(hp.alive(), "haproxy died")


def test_k8s_manifests_are_valid_yaml(t):
    path = os.path.join(K8S, "natwrp.yaml")
    check(os.path.exists(path), "docs/k8s/natwrp.yaml is missing")
    with open(path) as f:
        text = f.read()
    check("UNTESTED" in text, "the manifests must say they are untested here")
    try:
        import yaml
    except ImportError:
        # Without python3-yaml (scripts/deps.sh installs it): a structural
        # check only, tabs (invalid in YAML indentation) and the kinds.
        check("\t" not in text, "a tab in docs/k8s/natwrp.yaml")
        eq(re.findall(r"^kind: (\w+)$", text, re.M), ["Deployment", "Service", "Service"],
           "kinds")
        check(re.search(r"^\s+path: /readyz$", text, re.M), "no /readyz probe")
        return
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    kinds = {}
    for d in docs:
        check(isinstance(d, dict) and "apiVersion" in d and "kind" in d and "metadata" in d,
              "a manifest without apiVersion/kind/metadata: %r" % d)
        kinds.setdefault(d["kind"], []).append(d)
    eq(sorted(kinds), ["Deployment", "Service"], "kinds")
    dep = kinds["Deployment"][0]
    eq(dep["apiVersion"], "apps/v1", "Deployment apiVersion")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    eq(dep["spec"]["selector"]["matchLabels"], labels, "selector matches the pod labels")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    check(args[0] == "serve" and "--admin" in args, "serve with --admin: %r" % args)
    probe = c["readinessProbe"]["httpGet"]
    eq(probe["path"], "/readyz", "readiness probe path")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    admin_port = int(args[args.index("--admin") + 1].rsplit(":", 1)[1])
    eq(ports.get(probe["port"]), admin_port, "the probe's port is the --admin listener")
    svcs = kinds["Service"]
    eq(len(svcs), 2, "a Service for users and a headless one for agents")
    headless = [s for s in svcs if s["spec"].get("clusterIP") == "None"]
    eq(len(headless), 1, "one headless Service (clusterIP: None)")
    check(headless[0]["spec"].get("publishNotReadyAddresses") is True,
          "the agents' Service lists pods that are not ready yet")
    for s in svcs:
        eq(s["spec"]["selector"], labels, "%s selects the pods" % s["metadata"]["name"])
        for p in s["spec"]["ports"]:
            check(p["targetPort"] in ports, "targetPort %r names a container port" %
                  p["targetPort"])


def test_readme_links_deploy_doc(t):
    with open(README) as f:
        check("docs/deploy.md" in f.read(), "README.md does not link docs/deploy.md")
    block = deploy_block("haproxy")
    check("option httpchk GET /readyz" in block, "the HAProxy block checks /readyz")
