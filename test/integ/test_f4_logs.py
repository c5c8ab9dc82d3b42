"""f4 logs: the access log (--access-log) of serve and agent, its fields in
the text form (combined log format + duration, upstream status, route,
tunnel id) and as JSON (--log-format json, which makes the event log JSON
too), nginx-style escaping of what a client sends, SIGHUP reopening the
file (logrotate's create and copytruncate), "-" for standard output, and a
path that cannot be opened.

The access log is written at the end of a loop turn, so a line may land
just after the client has its response: file reads wait for the line with
a bounded poll (there is no event to wait on for a file)."""

import json
import os
import re
import signal
import time

from harness import Conn, check, eq, fail, http_request, timed

ROUTE = "a.example.com"

# host - - [time] "request" status bytes "referer" "ua" duration upstream route tunnel
LINE_RE = re.compile(
    r'^(\S+) - - \[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "((?:[^"\\]|\\x[0-9A-F]{2})*)" '
    r'(\d{3}) (\d+) "((?:[^"\\]|\\x[0-9A-F]{2})*)" "((?:[^"\\]|\\x[0-9A-F]{2})*)" '
    r'(\d+\.\d{3}) (\d{3}|-) (\S+) (\d+|-)$')

JSON_KEYS = {"time", "client", "method", "target", "proto", "status", "bytes_out", "bytes_in",
             "referer", "user_agent", "duration_seconds", "upstream_status", "route", "tunnel"}


def read_lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return [x.decode("utf-8") for x in data.split(b"\n") if x]


def wait_lines(path, n, timeout=10.0):
    """The file's lines once it has at least n (bounded poll)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = read_lines(path)
        if len(lines) >= n:
            return lines
        if time.monotonic() > deadline:
            fail("%s: %d line(s) within %.1fs, want %d: %r" % (path, len(lines), timeout, n,
                                                              lines))
        time.sleep(0.02)


def parse(line):
    m = LINE_RE.match(line)
    check(m, "access log line does not parse: %r" % line)
    keys = ("client", "time", "request", "status", "bytes", "referer", "ua", "duration",
            "upstream", "route", "tunnel")
    return dict(zip(keys, m.groups()))


def stack(t, serve_args=(), agent_env=None, agent_args=()):
    o = t.origin()
    s = t.serve(*serve_args)
    e = {"ROUTES": ROUTE}
    e.update(agent_env or {})
    a = t.agent(s, o, env=e, args=agent_args)
    tun = s.proc.find(r"tunnel open tun=(\d+) agent=a1\b")[0].group(1)
    return o, s, a, tun


def req(s, method, target, headers=(), body=None, host=ROUTE):
    return http_request(s.port, method, target, [("Host", host)] + list(headers), body)


# ------------------------------------------------------------------- serve


@timed(60)
def test_f4_serve_text_lines(t):
    """A proxied 200, serve's own 404 (no route), 401 (AUTH_TOKEN) and 400
    (no Host): one line each, every field where it belongs."""
    path = os.path.join(t.logdir, "access-f4.txt")
    o, s, a, tun = stack(t, ["--access-log", path, "--auth-token", "tok",
                             "--auth-rule", "^/private"])
    r = req(s, "POST", "/echo/x?q=1", [("User-Agent", "ua/1.0"),
                                       ("Referer", "http://ref.example/p")], body=b"12345")
    eq(r.status, 200, "proxied POST")
    d = parse(wait_lines(path, 1)[0])
    eq(d["client"], "127.0.0.1", "client")
    eq(d["request"], "POST /echo/x?q=1 HTTP/1.1", "request line")
    eq((d["status"], d["upstream"]), ("200", "200"), "status, upstream status")
    eq(int(d["bytes"]), len(r.body), "bytes sent (the body)")
    eq((d["referer"], d["ua"]), ("http://ref.example/p", "ua/1.0"), "referer, user agent")
    eq((d["route"], d["tunnel"]), (ROUTE, tun), "route, tunnel id")
    check(float(d["duration"]) < 10, "duration %s" % d["duration"])
    check(re.match(r"\d\d/%s/\d{4}" % time.strftime("%b", time.gmtime()), d["time"]),
          "time %r" % d["time"])

    r = req(s, "GET", "/nothing", host="b.example.com")
    eq(r.status, 404, "unclaimed host")
    d = parse(wait_lines(path, 2)[1])
    eq((d["request"], d["status"], d["upstream"], d["route"], d["tunnel"], d["ua"]),
       ("GET /nothing HTTP/1.1", "404", "-", "-", "-", "-"), "serve's 404")
    eq(int(d["bytes"]), len(r.body), "404 bytes")

    r = req(s, "GET", "/private/x")
    eq(r.status, 401, "no token")
    d = parse(wait_lines(path, 3)[2])
    eq((d["request"], d["status"], d["upstream"], d["tunnel"]),
       ("GET /private/x HTTP/1.1", "401", "-", "-"), "serve's 401")

    c = Conn(s.port)
    c.send(b"GET /nohost HTTP/1.1\r\n\r\n")
    r = c.read_response()
    c.close()
    eq(r.status, 400, "no Host")
    d = parse(wait_lines(path, 4)[3])
    eq((d["request"], d["status"], d["upstream"], d["route"], d["tunnel"]),
       ("GET /nohost HTTP/1.1", "400", "-", "-", "-"), "serve's 400")
    eq(len(read_lines(path)), 4, "one line per request")


@timed(60)
def test_f4_agent_502_both_logs(t):
    """The local service is down: the agent logs its 502, serve logs the
    502 it answered (no upstream status, the tunnel named)."""
    spath = os.path.join(t.logdir, "access-serve.txt")
    apath = os.path.join(t.logdir, "access-agent.txt")
    s = t.serve("--access-log", spath)
    # A port nothing listens on: bind, take its number, close.
    import socket
    k = socket.socket()
    k.bind(("127.0.0.1", 0))
    dead = k.getsockname()[1]
    k.close()
    t.agent(s, "http://127.0.0.1:%d" % dead, env={"ACCESS_LOG": apath})
    tun = s.proc.find(r"tunnel open tun=(\d+) agent=a1\b")[0].group(1)
    r = http_request(s.port, "GET", "/down", [("User-Agent", "ua/2")])
    eq(r.status, 502, "local service down")
    d = parse(wait_lines(spath, 1)[0])
    eq((d["request"], d["status"], d["upstream"], d["route"], d["tunnel"], d["ua"]),
       ("GET /down HTTP/1.1", "502", "-", "*", tun, "ua/2"), "serve's line")
    d = parse(wait_lines(apath, 1)[0])
    eq((d["request"], d["status"], d["upstream"], d["ua"], d["client"]),
       ("GET /down HTTP/1.1", "502", "-", "ua/2", "127.0.0.1"), "agent's line")
    check(re.match(r"^\d+$", d["tunnel"]), "agent's tunnel id %r" % d["tunnel"])


@timed(60)
def test_f4_agent_proxied_200(t):
    """The agent's line for a request it served: the local status as both
    status and upstream status, body bytes each way."""
    path = os.path.join(t.logdir, "access-agent.txt")
    o, s, a, tun = stack(t, agent_args=["--access-log", path])
    r = req(s, "PUT", "/echo/up", [("User-Agent", "up/1")], body=b"x" * 1000)
    eq(r.status, 200, "proxied PUT")
    d = parse(wait_lines(path, 1)[0])
    eq((d["request"], d["status"], d["upstream"], d["ua"]),
       ("PUT /echo/up HTTP/1.1", "200", "200", "up/1"), "agent's line")
    eq(int(d["bytes"]), len(r.body), "agent: bytes sent back")


# -------------------------------------------------------------------- JSON


@timed(60)
def test_f4_json_access_and_event_log(t):
    """--log-format json: each access-log line is a JSON object with the
    documented keys, and so is every line of the event log."""
    spath = os.path.join(t.logdir, "access-serve.json")
    apath = os.path.join(t.logdir, "access-agent.json")
    o, s, a, tun = stack(t, ["--access-log", spath, "--log-format", "json"],
                         agent_env={"ACCESS_LOG": apath, "LOG_FORMAT": "json"})
    r1 = req(s, "GET", "/echo/j?a=%22b%22", [("User-Agent", "j\"son\\ \xe9")])
    eq(r1.status, 200, "proxied GET")
    r = req(s, "GET", "/x", host="b.example.com")
    eq(r.status, 404, "unclaimed host")
    lines = wait_lines(spath, 2)
    j = json.loads(lines[0])
    eq(set(j), JSON_KEYS, "serve JSON keys")
    eq((j["client"], j["method"], j["target"], j["proto"], j["status"], j["upstream_status"],
        j["route"], j["tunnel"]),
       ("127.0.0.1", "GET", "/echo/j?a=%22b%22", "HTTP/1.1", 200, 200, ROUTE, int(tun)),
       "serve JSON fields")
    # \xe9 arrived as one Latin-1 byte, not UTF-8: shown as U+00E9.
    eq(j["user_agent"], "j\"son\\ \u00e9", "user agent round trip")
    eq((j["bytes_out"], j["bytes_in"]), (len(r1.body), 0), "body bytes")
    check(isinstance(j["duration_seconds"], float), "duration is a number")
    check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", j["time"]), "time %r" % j["time"])
    j = json.loads(lines[1])
    eq((j["status"], j["upstream_status"], j["route"], j["tunnel"], j["referer"]),
       (404, None, None, None, None), "serve's own 404 in JSON")
    j = json.loads(wait_lines(apath, 1)[0])
    eq(set(j), JSON_KEYS, "agent JSON keys")
    eq((j["status"], j["upstream_status"], j["method"]), (200, 200, "GET"), "agent JSON fields")
    for p in (s.proc, a):
        lines = [x for x in p.text().splitlines() if x.strip()]
        check(lines, "%s logged nothing" % p.label)
        for x in lines:
            try:
                ev = json.loads(x)
            except ValueError:
                fail("%s: event log line is not JSON: %r" % (p.label, x))
            eq(sorted(ev), ["level", "msg", "time"], "event log keys")
    s.proc.wait_for(r'"msg":"listening on http://')


# ---------------------------------------------------------------- escaping


@timed(60)
def test_f4_hostile_user_agent_escaped(t):
    """A User-Agent and Referer with quotes, backslashes, a tab and bytes
    over 0x7f cannot forge fields or a line: each becomes \\xHH."""
    path = os.path.join(t.logdir, "access-f4.txt")
    o, s, a, tun = stack(t, ["--access-log", path])
    ua = 'x" 200 1 "-" "forged\\\t\xff\x80'
    c = Conn(s.port)
    c.send(("GET /echo/%%22q HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nReferer: a\"b\r\n\r\n"
            % (ROUTE, ua)).encode("latin-1"))
    r = c.read_response()
    c.close()
    eq(r.status, 200, "hostile UA proxied")
    lines = wait_lines(path, 1)
    eq(len(lines), 1, "one line")
    d = parse(lines[0])
    eq(d["ua"], 'x\\x22 200 1 \\x22-\\x22 \\x22forged\\x5C\\x09\\xFF\\x80', "escaped UA")
    eq(d["referer"], "a\\x22b", "escaped referer")
    eq((d["status"], d["route"], d["tunnel"]), ("200", ROUTE, tun), "fields after the UA")


# ------------------------------------------------------------------ SIGHUP


def hup_cycle(t, proc, path, do_request, label):
    """Rename the file (logrotate's create), HUP, check the next line goes
    to a new file at path; then truncate it (copytruncate) and check the
    next line starts the file again."""
    do_request()
    wait_lines(path, 1)
    os.rename(path, path + ".1")
    mark = proc.mark()
    proc.send(signal.SIGHUP)
    proc.wait_for(r"access log: reopened %s" % re.escape(path), 10, mark)
    do_request()
    eq(len(wait_lines(path, 1)), 1, "%s: the new file gets the next line" % label)
    eq(len(read_lines(path + ".1")), 1, "%s: the rotated file keeps only the old line" % label)
    with open(path, "r+b") as f:
        f.truncate(0)
    do_request()
    lines = wait_lines(path, 1)
    eq(len(lines), 1, "%s: after copytruncate the line starts the file" % label)
    with open(path, "rb") as f:
        check(not f.read(1).startswith(b"\0"), "%s: a hole before the line" % label)
    parse(lines[0])
    check(proc.alive(), "%s survived SIGHUP" % label)


@timed(60)
def test_f4_sighup_reopens_serve(t):
    path = os.path.join(t.logdir, "access-serve.txt")
    o, s, a, tun = stack(t, ["--access-log", path])
    hup_cycle(t, s.proc, path, lambda: eq(req(s, "GET", "/echo").status, 200, "GET"), "serve")


@timed(60)
def test_f4_sighup_reopens_agent(t):
    """The agent had no SIGHUP handler (the default action ended it): now
    HUP reopens its access log."""
    path = os.path.join(t.logdir, "access-agent.txt")
    o, s, a, tun = stack(t, agent_env={"ACCESS_LOG": path})
    hup_cycle(t, a, path, lambda: eq(req(s, "GET", "/echo").status, 200, "GET"), "agent")


# ----------------------------------------------------------- stdout, errors


@timed(60)
def test_f4_access_log_stdout(t):
    """--access-log - writes the lines to standard output."""
    o, s, a, tun = stack(t, ["--access-log", "-"])
    mark = s.proc.mark()
    eq(req(s, "GET", "/echo/out", [("User-Agent", "stdout/1")]).status, 200, "GET")
    m = s.proc.wait_for(r'^127\.0\.0\.1 - - \[.*\] "GET /echo/out HTTP/1\.1" 200 \d+ "-" '
                        r'"stdout/1" \d+\.\d{3} 200 %s %s$' % (re.escape(ROUTE), tun), 10, mark)
    parse(m.group(0))


@timed(30)
def test_f4_bad_path_exits_2(t):
    """A file that cannot be opened: exit 2 naming the setting and the path."""
    bad = os.path.join(t.logdir, "no-such-dir", "x.log")
    rc, out = t.run_natwrp("serve-bad", ["serve", "--listen", "127.0.0.1:0",
                                         "--access-log", bad])
    eq(rc, 2, "serve exit status (output %r)" % out[-300:])
    check("--access-log" in out and bad in out, "serve names the setting and path: %r" % out)
    rc, out = t.run_natwrp("agent-bad", ["agent"], env={
        "AGENT_ID": "a1", "REMOTE_URL": "http://127.0.0.1:9", "LOCAL_URL": "http://127.0.0.1:9",
        "ACCESS_LOG": bad})
    eq(rc, 2, "agent exit status (output %r)" % out[-300:])
    check("ACCESS_LOG" in out and bad in out, "agent names the setting and path: %r" % out)
