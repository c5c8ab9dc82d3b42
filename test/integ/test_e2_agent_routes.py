"""e2 the agent's side of routes and per-route Basic auth (issue 11):
ROUTES and AUTH_BASIC / AUTH_BASIC_FILE are checked at start (exit 2 naming
the setting), sent in the tunnel handshake (X-Natwrp-Routes, one
X-Natwrp-Auth-Basic per credential) and never logged; the routes serve
grants in its 101 are logged one line each; a 403 (a refused route) is
logged with serve's reason and retried only at the slow cap. The server is
fakeserver.py, so each field the agent sends is seen exactly."""

import base64
import os
import re

from fakeserver import FakeServer
from harness import check, eq, timed, write_env_file

AID = "rt"


def _b64(s):
    return base64.b64encode(s.encode()).decode()


def _fields(fields, name):
    return [v for k, v in fields if k.lower() == name.lower()]


def _start(t, fs, env=None, args=(), cwd=None, label="agent", extra=(), local=None):
    """An agent on fs; returns (agent, Tunnel) once the agent said tunnel up."""
    e = {"LOG_LEVEL": "debug"}
    e.update(env or {})
    a = t.agent(fs.url, local or "http://127.0.0.1:9", agent_id=AID, env=e, args=args,
                wait=False, label=label, cwd=cwd)
    tun = fs.accept(extra=extra)
    a.wait_for(r"tunnel up agent=%s\b" % AID, 15)
    return a, tun


@timed(40)
def test_e2_routes_sent_as_configured(t):
    """X-Natwrp-Routes carries ROUTES item by item, trimmed, joined with
    ", ", as written (dot-less names and case unchanged: serve resolves
    them), from the environment, a flag or .env. Without ROUTES no field
    is sent (a serve of any version gives the default route)."""
    fs = FakeServer()
    a, tun = _start(t, fs, env={"ROUTES": " Ollama ,a.example.com/api/ ,\t*.x.example.com"})
    eq(_fields(tun.fields, "X-Natwrp-Routes"),
       ["Ollama, a.example.com/api/, *.x.example.com"], "X-Natwrp-Routes from the environment")
    a.terminate()

    a, tun = _start(t, fs, args=["--routes", "b.example.com/v1/chat"], label="agent-flag")
    eq(_fields(tun.fields, "X-Natwrp-Routes"), ["b.example.com/v1/chat"],
       "X-Natwrp-Routes from --routes")
    a.terminate()

    home = os.path.join(t.logdir, "home")
    os.makedirs(home)
    write_env_file(os.path.join(home, ".env"), "ROUTES=jupyter, c.example.com # two\n")
    a, tun = _start(t, fs, cwd=home, label="agent-dotenv")
    eq(_fields(tun.fields, "X-Natwrp-Routes"), ["jupyter, c.example.com"],
       "X-Natwrp-Routes from .env")
    a.terminate()

    a, tun = _start(t, fs, label="agent-none")
    eq(_fields(tun.fields, "X-Natwrp-Routes"), [], "X-Natwrp-Routes without ROUTES")
    eq(_fields(tun.fields, "X-Natwrp-Auth-Basic"), [], "X-Natwrp-Auth-Basic without AUTH_BASIC")
    check(not a.find(r"serving |does not support routes"),
          "an agent without ROUTES logged about routes:\n" + a.text())
    fs.close()


@timed(30)
def test_e2_auth_basic_sent_never_logged(t):
    """One X-Natwrp-Auth-Basic per credential: base64 of user:password
    (RFC 4648, padded), AUTH_BASIC first, then the file's lines in order,
    a repeated one once. No credential appears in the agent's log, even at
    debug level."""
    fs = FakeServer()
    path = write_env_file(os.path.join(t.logdir, "logins"),
                          "# visitors\n\nbob:Hunter2-bob\r\n  # indented comment\n"
                          "carol:pa:ss w\u00f6rd\nalice:S3cr:et-alice\n")
    # A current serve answers with the routes it granted and the number of
    # logins it enforces (an agent with AUTH_BASIC refuses a 101 without
    # that: test_e6).
    a, tun = _start(t, fs, env={"AUTH_BASIC": "alice:S3cr:et-alice", "AUTH_BASIC_FILE": path,
                                "ROUTES": "a.example.com"},
                    extra=[("X-Natwrp-Routes", "http://a.example.com"),
                           ("X-Natwrp-Auth-Basic", "3")])
    want = [_b64("alice:S3cr:et-alice"), _b64("bob:Hunter2-bob"),
            base64.b64encode("carol:pa:ss w\u00f6rd".encode("utf-8")).decode()]
    eq(_fields(tun.fields, "X-Natwrp-Auth-Basic"), want, "X-Natwrp-Auth-Basic fields")
    eq(_fields(tun.fields, "X-Natwrp-Routes"), ["a.example.com"], "X-Natwrp-Routes beside them")
    a.terminate()
    log = a.text()
    for secret in ("S3cr", "et-alice", "Hunter2", "ss w", "alice:", "bob:", "carol:") + \
            tuple(want):
        check(secret not in log, "the agent logged %r:\n%s" % (secret, log))
    fs.close()


@timed(30)
def test_e2_granted_routes_logged(t):
    """The 101's X-Natwrp-Routes: one 'serving URL' line per granted route,
    items trimmed, bytes that do not print shown as '?'. A 101 without it
    (an older serve) gets one warning, and the tunnel still works."""
    fs = FakeServer()
    o = t.origin("A")
    granted = ("https://ollama.t.example.com ,  https://a.example.com/api,"
               "http://*.x.example.com, https://b\xffd.example.com")
    a, tun = _start(t, fs, env={"ROUTES": "ollama, a.example.com/api, *.x.example.com, bd"},
                    extra=[("X-Natwrp-Routes", granted)], local=o)
    for url in ("https://ollama.t.example.com", "https://a.example.com/api",
                "http://*.x.example.com", "https://b?d.example.com"):
        a.wait_for(r"info  agent=%s serving %s$" % (AID, re.escape(url)), 5)
    eq(a.count(r"serving "), 4, "serving lines")
    check(not a.find(r"does not support routes"), "warned with the field present")
    a.terminate()

    a, tun = _start(t, fs, env={"ROUTES": "a.example.com"}, label="agent-old-serve", local=o)
    a.wait_for(r"warn  agent=%s the server does not support routes" % AID, 5)
    eq(a.count(r"does not support routes"), 1, "warnings for an older serve")
    check(not a.find(r"serving "), "serving lines without the field")
    tun.open(1, "GET", "/name", [("Host", "a.example.com")])
    head, body, rst = tun.response(1)
    eq((head.status, body), (200, b"A\n"), "a request over the tunnel of an older serve")
    fs.close()


@timed(40)
def test_e2_refused_route_logged_slow_retry(t):
    """A 403 from serve can be a refused route: the agent logs serve's
    one-line reason with a hint naming both causes (ROUTES and AGENT_ID)
    and retries only at the slow cap, not within a few seconds."""
    fs = FakeServer()
    e = {"AGENT_ID": AID, "ROUTES": "a.example.com, b.example.com", "LOG_LEVEL": "debug"}
    a = t.agent(fs.url, "http://127.0.0.1:9", agent_id=AID, env=e, wait=False)
    fields = fs.refuse(403, "Forbidden",
                       "natwrp: route 'b.example.com' refused: not granted to this token\n")
    a.wait_for(r"error agent=%s forbidden: natwrp: route 'b\.example\.com' refused: not granted "
               r"to this token \(serve refuses a route in ROUTES .*AGENT_ID" % AID, 10)
    eq(_fields(fields, "X-Natwrp-Routes"), ["a.example.com, b.example.com"], "routes sent")
    m = a.wait_for(r"tunnel down agent=%s reason=server refused the tunnel: 403 .*; "
                   r"reconnecting in (\d+\.\d\d)s \(attempt 1\)$" % AID, 10)
    delay = float(m.group(1))
    check(20.0 <= delay <= 36.0, "reconnect delay after 403 is %.2fs, want the slow cap "
          "(24-36 s)" % delay)
    fs.no_connection(3.0)  # a fast backoff would be back within ~0.5 s
    check(a.alive(), "the agent exited after a 403")
    fs.close()


@timed(60)
def test_e2_bad_settings_exit_2(t):
    """Bad ROUTES, AUTH_BASIC or AUTH_BASIC_FILE: exit 2 at start with one
    line naming the setting (and the route, or the file and line), never
    the secret; a handshake over 64 KiB is refused at start too."""
    base = {"AGENT_ID": AID, "REMOTE_URL": "http://127.0.0.1:9", "LOCAL_URL": "http://127.0.0.1:9"}
    d = t.logdir
    bad_file = write_env_file(os.path.join(d, "bad-logins"),
                              "ok:Fine-Secret-1\n# fine\nnopassword-Secret-2\nz:Later-3\n")
    empty_user = write_env_file(os.path.join(d, "empty-user"), "\n:Secret-4\n")
    many = write_env_file(os.path.join(d, "many"),
                          "".join("u%d:%s\n" % (i, "p" * 250) for i in range(64)))
    host = ".".join(["b" * 60] * 3)
    huge = ",".join("h%d.%s/%s" % (i, host, "a" * 510) for i in range(64))
    cases = [
        ({"ROUTES": "a.example.com,,b.example.com"}, [], r"^natwrp agent: ROUTES: empty route"),
        ({"ROUTES": "a.example.com/%41"}, [],
         r"^natwrp agent: ROUTES: route \"a\.example\.com/%41\": '%' in path"),
        ({}, ["--routes", "*"], r"^natwrp agent: --routes: route \"\*\": "),
        ({"ROUTES": "a.*.example.com"}, [], r"^natwrp agent: ROUTES: route \"a\.\*\.example\.com\""),
        ({"ROUTES": "a.example.com/x?y=1"}, [], r"^natwrp agent: ROUTES: route .*no query"),
        ({"ROUTES": ",".join("h%d.example.com" % i for i in range(65))}, [],
         r"^natwrp agent: ROUTES: at most 64 routes \(65 given\)"),
        ({"AUTH_BASIC": "just-Secret-5"}, [], r"^natwrp agent: AUTH_BASIC: expected user:password"),
        ({}, ["--auth-basic", "user:"], r"^natwrp agent: --auth-basic: empty password"),
        ({"AUTH_BASIC_FILE": bad_file}, [],
         r"^natwrp agent: AUTH_BASIC_FILE: %s: line 3: expected user:password" % re.escape(bad_file)),
        ({"AUTH_BASIC_FILE": empty_user}, [],
         r"^natwrp agent: AUTH_BASIC_FILE: .*: line 2: empty user name"),
        ({"AUTH_BASIC_FILE": os.path.join(d, "missing")}, [],
         r"^natwrp agent: AUTH_BASIC_FILE: .*/missing: No such file"),
        ({"ROUTES": huge, "AUTH_BASIC_FILE": many}, [],
         r"^natwrp agent: ROUTES and AUTH_BASIC make the tunnel handshake \d+ bytes, over 65536"),
    ]
    for env, args, want in cases:
        e = dict(base)
        e.update(env)
        rc, out = t.run_natwrp("agent-bad", ["agent"] + args, env=e, timeout=5.0)
        what = "%r %r" % (sorted(env)[:1], args)
        eq(rc, 2, "exit status for %s (output %r)" % (what, out[-300:]))
        check(re.search(want, out, re.M), "message for %s: want /%s/, got %r"
              % (what, want, out[-300:]))
        for secret in ("Secret-", "Later-3", "ppppp"):
            check(secret not in out, "a secret in the message for %s: %r" % (what, out))
