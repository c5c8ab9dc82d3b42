"""00 smoke: the binary starts, answers --help, rejects bad flags, proxies one
request, and exits 0 on SIGTERM/SIGINT."""

import json
import signal

from harness import TUNNEL_PATH, Conn, check, curl, curl_status, echo, eq, fail


def test_smoke_get(t):
    o, s, a = t.stack()
    res = curl("-w", "%{stderr}CODE=%{http_code}", s.url + "/any/path?q=1", timeout=10)
    eq(res.rc, 0, "curl exit status (%s)" % res.err)
    eq(curl_status(res), 200, "status")
    body = json.loads(res.out)
    eq(body["path"], "/any/path?q=1", "path seen by the origin")
    eq(body["method"], "GET", "method seen by the origin")
    eq(body["name"], "A", "origin name")
    # The reserved path is never proxied.
    check("_natwrp" not in o.proc.text(), "origin saw a request for the tunnel path")
    eq(TUNNEL_PATH, "/_natwrp/tunnel", "tunnel path")


def _help_ok(t, args, flags):
    rc, out = t.run_natwrp("help", args)
    eq(rc, 0, "natwrp %s exit status; output:\n%s" % (" ".join(args), out))
    for f in flags:
        check(f in out, "natwrp %s does not mention %s:\n%s" % (" ".join(args), f, out))


def test_help_exits_zero(t):
    _help_ok(t, ["serve", "--help"],
             ["--listen", "--response-timeout", "--ping-interval", "--max-head", "--window",
              "--log-level"])
    _help_ok(t, ["agent", "--help"],
             ["--env", "--id", "--remote", "--local", "AGENT_ID", "REMOTE_URL", "LOCAL_URL"])


def test_serve_bad_flags_exit_2(t):
    cases = [
        (["--bogus"], "bogus"),
        (["--listen", "nonsense"], "listen"),
        (["--listen", "127.0.0.1:99999"], "listen"),
        (["--listen"], "listen"),
        (["--response-timeout", "abc"], "response-timeout"),
        (["--ping-interval", "-1"], "ping-interval"),
        (["--max-head", "lots"], "max-head"),
        (["--window", "12"], "window"),
        (["--log-level", "loud"], "log-level"),
    ]
    for args, name in cases:
        rc, out = t.run_natwrp("serve-bad", ["serve"] + args)
        lines = [x for x in out.splitlines() if x.strip()]
        ctx = "natwrp serve %s -> status %s, output:\n%s" % (" ".join(args), rc, out)
        eq(rc, 2, "exit status: " + ctx)
        check(lines, "no reason printed: " + ctx)
        check(len(lines) <= 2, "want a one-line reason: " + ctx)
        check(name in out, "reason does not name %r: %s" % (name, ctx))
    rc, out = t.run_natwrp("bad-cmd", ["frobnicate"])
    eq(rc, 2, "natwrp frobnicate exit status; output:\n%s" % out)


def test_sigterm_and_sigint_exit_zero(t):
    o, s, a = t.stack()
    echo(s, "/echo")
    mark = s.proc.mark()
    a.send(signal.SIGTERM)
    eq(a.wait_exit(5), 0, "agent exit status after SIGTERM")
    s.wait_tunnel_closed("a1", since=mark, timeout=10)
    s.proc.send(signal.SIGINT)
    eq(s.proc.wait_exit(5), 0, "serve exit status after SIGINT")

    # And SIGTERM to serve while an agent is connected.
    s2 = t.serve(label="serve2")
    a2 = t.agent(s2, o, agent_id="a2", label="agent2")
    echo(s2, "/echo")
    mark = a2.mark()
    s2.proc.send(signal.SIGTERM)
    eq(s2.proc.wait_exit(5), 0, "serve exit status after SIGTERM")
    a2.wait_for(r"tunnel down agent=a2\b", 10, since=mark)
    a2.send(signal.SIGINT)
    eq(a2.wait_exit(5), 0, "agent exit status after SIGINT while reconnecting")
    if a2.alive():
        fail("agent still alive")

    # SIGTERM with a request in flight that never ends: it may run for
    # --grace, then it is cut, and the exit status is still 0.
    s3 = t.serve("--grace", "1", label="serve3")
    a3 = t.agent(s3, o, agent_id="a3", label="agent3")
    mark = o.proc.mark()
    c = Conn(s3.port)
    c.request("GET", "/hang")
    o.proc.wait_for(r"event hang-start", 10, since=mark)
    s3.proc.send(signal.SIGTERM)
    s3.proc.wait_for(r"grace period \(1000 ms\) over: closing 1 connection", 5)
    eq(s3.proc.wait_exit(5), 0, "serve exit status after SIGTERM with a request in flight")
    r = c.read_response(allow_eof=True)
    check(r is None or r.status >= 500, "in-flight request got %r" % r)
    c.close()
    a3.send(signal.SIGTERM)
    eq(a3.wait_exit(5), 0, "agent exit status after SIGTERM")
