"""j1 WebDAV: a real WebDAV server (Debian's apache2 with mod_dav and
mod_dav_fs, its own configuration in the test's log directory, in the
foreground on a loopback port) behind natwrp, driven by the litmus WebDAV
compliance suite (basic, copymove, props, locks, http) and by curl through
serve's public URL.

litmus runs straight at apache2 first: every test that passes there must
pass through natwrp, with no warning litmus did not give there, with the
agent's defaults, with PRESERVE_HOST=1, and with the client on https (serve
with the test PKI's certificate) while the agent talks plain http to
apache2. The public URL is http(s)://localhost:PORT, another origin than
LOCAL_URL's http://127.0.0.1:PORT, as a real deployment's is.

COPY and MOVE name their target by an absolute Destination URL (RFC 4918
10.3), and lock conditions name resources in the If header's tagged lists
(10.4), both with the public origin the client used; the agent must make
them name the service as it is addressed (Apache refuses a Destination on
another scheme with 502). apache2's access log records the Host,
Destination and If each request arrived with, and the curl tests check
them exactly.

apache2 and litmus come from scripts/deps.sh --webdav (make test runs it)."""

import os
import re
import shutil
import socket
import subprocess

from harness import check, curl, curl_status, eq, fail, pki

APACHE_CONF = """\
ServerRoot "{dir}"
ServerName 127.0.0.1
{user}Listen 127.0.0.1:{port}
Listen 127.0.0.1:{direct}
PidFile "{dir}/httpd.pid"
DefaultRuntimeDir "{dir}"
ErrorLog /dev/stderr
LogLevel notice
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule alias_module {mods}/mod_alias.so
LoadModule dav_module {mods}/mod_dav.so
LoadModule dav_fs_module {mods}/mod_dav_fs.so
LogFormat "DAVLOG %{{local}}p %m %U %>s|%{{Host}}i|%{{Destination}}i|%{{If}}i|%{{X-J1}}i" dav
CustomLog /dev/stdout dav
DavLockDB "{dir}/lock/DavLock"
DocumentRoot "{dir}/root"
Alias /base "{dir}/root"
<Directory "{dir}/root">
    Dav On
    Require all granted
</Directory>
"""

LITMUS_SUITES = ("basic", "copymove", "props", "locks", "http")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def parse_log(line):
    """(method, path, status, host, dest, if) of one DAVLOG line."""
    # apache2 writes a '"' in a logged field as \"
    head, host, dest, rest = line.replace('\\"', '"').split("|", 3)
    cond = rest.rsplit("|", 1)[0]
    _, _, method, rest = head.split(" ", 3)
    path, status = rest.rsplit(" ", 1)  # %U is decoded: may hold spaces
    return (method, path, int(status), host, dest, cond)


class Apache:
    """apache2 on two ports: port for natwrp's agent (LOCAL_URL), direct for
    litmus straight at it; its access log lines (DAVLOG, on its stdout)
    name the port each request came in on."""

    def __init__(self, proc, port, direct, d):
        self.proc, self.port, self.dir = proc, port, d
        self.url = "http://127.0.0.1:%d" % port
        self.direct_url = "http://127.0.0.1:%d" % direct

    def log(self):
        """The requests logged so far that came through natwrp (a request is
        logged after its response: the last few may be missing)."""
        pre = "DAVLOG %d " % self.port
        with self.proc.cond:
            return [parse_log(x) for x in self.proc.lines if x.startswith(pre)]

    def wait(self, tag):
        """The log entry of the request that carried X-J1: tag."""
        m = self.proc.wait_for(r"^DAVLOG %d .*\|%s$" % (self.port, tag), 10)
        return parse_log(m.group(0))


def apache(t):
    exe = shutil.which("apache2") or "/usr/sbin/apache2"
    mods = "/usr/lib/apache2/modules"
    if not os.access(exe, os.X_OK) or not os.path.exists(os.path.join(mods, "mod_dav_fs.so")):
        fail("apache2 with mod_dav_fs is not installed (scripts/deps.sh --webdav installs it)")
    d = os.path.join(t.logdir, "apache")
    for sub in ("root", "lock"):
        os.makedirs(os.path.join(d, sub))
    user = ""
    if os.getuid() == 0:
        # apache2 will not serve as root: its children run as nobody, who
        # must write the collection and the lock database.
        user = "User nobody\nGroup nogroup\n"
        import pwd
        import grp
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        for sub in ("root", "lock"):
            os.chown(os.path.join(d, sub), uid, gid)
    port, direct = free_port(), free_port()
    conf = os.path.join(d, "httpd.conf")
    with open(conf, "w") as f:
        f.write(APACHE_CONF.format(dir=d, port=port, direct=direct, mods=mods, user=user))
    p = t.spawn("apache2", [exe, "-DFOREGROUND", "-f", conf])
    p.wait_for(r"resuming normal operations", 15)
    return Apache(p, port, direct, d)


def litmus(t, url, label):
    """Run the litmus suites at url; returns {(suite, test): (result, text)}
    and the set of warnings. result is pass, FAIL or SKIPPED."""
    exe = shutil.which("litmus")
    if not exe:
        fail("litmus is not installed (scripts/deps.sh --webdav installs it)")
    d = os.path.join(t.logdir, "litmus-" + label)
    os.makedirs(d)
    env = dict(os.environ, TESTS=" ".join(LITMUS_SUITES))
    try:
        r = subprocess.run([exe, "-k", url], cwd=d, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=40)
    except subprocess.TimeoutExpired:
        fail("litmus %s did not finish in 40 s (see %s)" % (url, d))
    text = r.stdout.decode("utf-8", "replace")
    with open(os.path.join(d, "output.txt"), "w") as f:
        f.write(text)
    results, warnings, suite = {}, set(), None
    for line in text.splitlines():
        m = re.match(r"-> running `(\w+)'", line)
        if m:
            suite = m.group(1)
            continue
        for w in re.findall(r"WARNING: (.*)", line):
            warnings.add((suite, w.strip()))
        # progress is written, then overwritten after a CR: keep the last
        m = re.search(r"(\d+)\. (\w+)\.* (pass|FAIL|SKIPPED)(.*)$", line.split("\r")[-1])
        if m and suite:
            results[(suite, m.group(2))] = (m.group(3), m.group(4).strip())
    ran = {s for s, _ in results}
    check(ran == set(LITMUS_SUITES), "litmus %s ran only %s:\n%s" % (url, sorted(ran),
                                                                     text[-2000:]))
    return results, warnings


def same_as_direct(direct, through, what, tls=False):
    """Every litmus test that passed straight at apache2 passes through
    natwrp (over TLS litmus itself skips expect100), with no new warning."""
    (dres, dwarn), (nres, nwarn) = direct, through
    bad = []
    for key, (res, _) in sorted(dres.items()):
        if res != "pass":
            continue
        got = nres.get(key, ("missing", ""))
        if got[0] == "pass" or (tls and got == ("SKIPPED", "(skipping for SSL server)")):
            continue
        bad.append("%s/%s: %s %s" % (key[0], key[1], got[0], got[1]))
    for w in sorted(nwarn - dwarn):
        bad.append("new warning in %s: %s" % w)
    check(not bad, "%s: litmus differs from the direct run:\n  %s" % (what, "\n  ".join(bad)))


def check_destinations(ap, want_origin, what):
    """Every COPY/MOVE litmus made through natwrp reached apache2 with a
    Destination on want_origin (each names a resource of litmus' own
    collection)."""
    ms = [e[:5] for e in ap.log() if e[0] in ("COPY", "MOVE")]
    check(len(ms) >= 10, "%s: litmus made only %d COPY/MOVE" % (what, len(ms)))
    wrong = [m for m in ms if not m[4].startswith(want_origin + "/litmus/")]
    check(not wrong, "%s: Destination not on %s: %s" % (what, want_origin, wrong[:3]))


def stack(t, agent_env=None, tls=False):
    ap = apache(t)
    if tls:
        P = pki()
        s = t.serve("--tls-cert", P("server.pem"), "--tls-key", P("server.key"))
        a = t.agent(s, ap.url, env=dict(agent_env or {}, CA_FILE=P("ca.pem")))
    else:
        s = t.serve()
        a = t.agent(s, ap.url, env=agent_env)
    pub = "%s://localhost:%d" % (s.scheme, s.port)
    return ap, s, a, pub


# ----------------------------------------------------------------- litmus


def test_litmus_defaults(t):
    ap, s, a, pub = stack(t)
    direct = litmus(t, ap.direct_url + "/", "direct")
    same_as_direct(direct, litmus(t, pub + "/", "natwrp"), "defaults")
    # The service is addressed as LOCAL_URL: Host and Destination say so.
    check(all(e[3] == "127.0.0.1:%d" % ap.port for e in ap.log()), "Host sent")
    check_destinations(ap, ap.url, "defaults")


def test_litmus_preserve_host(t):
    ap, s, a, pub = stack(t, {"PRESERVE_HOST": "1"})
    direct = litmus(t, ap.direct_url + "/", "direct")
    same_as_direct(direct, litmus(t, pub + "/", "natwrp"), "PRESERVE_HOST=1")
    check(all(e[3] == "localhost:%d" % s.port for e in ap.log()), "Host sent")
    check_destinations(ap, pub, "PRESERVE_HOST=1")


def test_litmus_https_client(t):
    ap, s, a, pub = stack(t, tls=True)
    direct = litmus(t, ap.direct_url + "/", "direct")
    eq(pub[:8], "https://", "public scheme")
    same_as_direct(direct, litmus(t, pub + "/", "natwrp"), "https client", tls=True)
    check_destinations(ap, ap.url, "https client")


def test_litmus_https_client_preserve_host(t):
    # The public Host, under LOCAL_URL's scheme (http): what the service
    # is addressed with.
    ap, s, a, pub = stack(t, {"PRESERVE_HOST": "1"}, tls=True)
    direct = litmus(t, ap.direct_url + "/", "direct")
    same_as_direct(direct, litmus(t, pub + "/", "natwrp"), "https + PRESERVE_HOST", tls=True)
    check_destinations(ap, "http://localhost:%d" % s.port, "https + PRESERVE_HOST")


# ------------------------------------------------------------------- curl


def dav(method, url, *args, body=None):
    """curl METHOD url ARGS; returns (status, body bytes, response headers)."""
    extra = ["--data-binary", "@-"] if body is not None else []
    res = curl("-X", method, "-D", "/dev/stderr", "-w", "%{stderr}CODE=%{http_code}",
               *(list(args) + extra + ["--cacert", pki()("ca.pem"), url]), stdin=body)
    check(res.rc == 0, "curl %s %s: %r" % (method, url, res))
    return curl_status(res), res.out, res.err


SENT = [0]


def sent(ap, method, *args, body=None):
    """dav() through natwrp, and the request as apache2 logged it."""
    SENT[0] += 1
    tag = "j1-%d" % SENT[0]
    st = dav(method, *args, "-H", "X-J1: " + tag, body=body)[0]
    return st, ap.wait(tag)


LOCKINFO = (b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
            b'<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>'
            b'<D:owner>j1</D:owner></D:lockinfo>')


def test_curl_destination_and_if(t):
    ap, s, a, pub = stack(t, tls=True)
    eq(dav("PUT", pub + "/a.txt", body=b"hello")[0], 201, "PUT")
    # COPY and MOVE to the public origin: the service gets its own.
    st, e = sent(ap, "COPY", pub + "/a.txt", "-H", "Destination: %s/b.txt" % pub)
    eq((st, e[4]), (201, ap.url + "/b.txt"), "COPY: status, the Destination apache2 got")
    st, e = sent(ap, "MOVE", pub + "/b.txt", "-H", "Destination: %s/c%%20d.txt" % pub.upper())
    eq((st, e[4]), (201, ap.url + "/c%20d.txt"), "MOVE (scheme and host in capitals)")
    eq(dav("GET", pub + "/c%20d.txt")[:2], (200, b"hello"), "GET the moved copy")
    eq(dav("GET", pub + "/b.txt")[0], 404, "GET the moved-away copy")
    # Any other origin, or a path, goes as it is: the service judges it.
    for other in ("http://localhost:%d/e.txt" % s.port, "https://other.example/e.txt",
                  "https://localhost:%d@evil.example/e.txt" % s.port, "/e.txt"):
        eq(sent(ap, "COPY", pub + "/a.txt", "-H", "Destination: " + other)[1][4], other,
           "foreign Destination")
    # A lock; the If header's resource tag is made local, its lock token
    # (a URI too, inside the list) and entity tags are not.
    st, body, head = dav("LOCK", pub + "/a.txt", "-H", "Timeout: Second-60",
                         "-H", "Content-Type: application/xml", body=LOCKINFO)
    eq(st, 200, "LOCK")
    token = re.search(r"(?im)^Lock-Token: <([^>]+)>", head).group(1)
    eq(dav("PUT", pub + "/a.txt", body=b"nope")[0], 423, "PUT without the lock token")
    # (apache2's own If parser refuses an entity tag holding "<": the unit
    # tests have those)
    cond = '<%s/a.txt> (<%s>) (Not <urn:x> ["e1"] <%s/a.txt>)' % (pub, token, pub)
    st, e = sent(ap, "PUT", pub + "/a.txt", "-H", "If: " + cond, body=b"locked")
    eq((st, e[5]), (204, cond.replace("<%s/a.txt> (" % pub, "<%s/a.txt> (" % ap.url, 1)),
       "PUT with If naming the public URL: status, the If apache2 got")
    st, e = sent(ap, "PUT", pub + "/a.txt", "-H", "If: (<%s>)" % token, body=b"again")
    eq((st, e[5]), (204, "(<%s>)" % token), "PUT with an untagged If")
    eq(dav("UNLOCK", pub + "/a.txt", "-H", "Lock-Token: <%s>" % token)[0], 204, "UNLOCK")
    eq(dav("GET", pub + "/a.txt")[:2], (200, b"again"), "GET")
    # A client that streams its upload (no Content-Length: chunked).
    big = os.urandom(300000)
    eq(dav("PUT", pub + "/big.bin", "-H", "Transfer-Encoding: chunked", body=big)[0], 201,
       "chunked PUT")
    eq(dav("GET", pub + "/big.bin")[:2], (200, big), "GET the chunked upload")


def test_curl_rewrite_location_off(t):
    # REWRITE_LOCATION=0: the service knows its public origin (it reads
    # X-Forwarded-*); URLs pass unchanged both ways.
    ap, s, a, pub = stack(t, {"REWRITE_LOCATION": "0"})
    eq(dav("PUT", pub + "/a.txt", body=b"hello")[0], 201, "PUT")
    e = sent(ap, "COPY", pub + "/a.txt", "-H", "Destination: %s/b.txt" % pub)[1]
    eq(e[4], pub + "/b.txt", "Destination with REWRITE_LOCATION=0")


def test_curl_base_path(t):
    # LOCAL_URL with a base path: a Destination's path is below it, as the
    # request target is (apache2 serves the same tree at /base).
    ap = apache(t)
    s = t.serve()
    t.agent(s, ap.url + "/base")
    pub = "http://localhost:%d" % s.port
    st, e = sent(ap, "PUT", pub + "/a.txt", body=b"based")
    eq((st, e[1]), (201, "/base/a.txt"), "PUT: status, target")
    st, e = sent(ap, "COPY", pub + "/a.txt", "-H", "Destination: %s/b.txt" % pub)
    eq((st, e[4]), (201, ap.url + "/base/b.txt"), "COPY: status, Destination")
    eq(dav("GET", pub + "/b.txt")[:2], (200, b"based"), "GET the copy")
    # A path (RFC 4918 allows one; apache2 wants an absolute URI and
    # answers 400 either way) is below the base path too.
    e = sent(ap, "COPY", pub + "/a.txt", "-H", "Destination: /c.txt")[1]
    eq(e[4], "/base/c.txt", "path Destination")
