"""f0 admin listener (--admin, issue 12): the core both roles share.

/livez and /readyz; ADMIN_TOKEN (Bearer, or Basic with the token as the
password; /livez open; 401 with a Basic challenge); 404, 405 with Allow, 413,
HEAD; keep-alive and pipelining; the connection limit and the idle timeout;
nothing admin on the public port (there /metrics and /livez are the local
service's paths like any other); /metrics accepted by `promtool check
metrics` without a word; the port of --admin ...:0 in the log; an address
that cannot be bound exits 2 naming --admin."""

import base64
import shutil
import signal
import socket
import subprocess

from harness import Conn, check, eq, get, http_request, timed

ADMIN_RE = r"admin listening on http://127\.0\.0\.1:(\d+)"


def _serve_admin(t, *args, env=None):
    s = t.serve("--admin", "127.0.0.1:0", *args, env=env)
    m = s.proc.wait_for(ADMIN_RE, 10)
    return s, int(m.group(1))


def _basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def test_livez_readyz_serve(t):
    s, ap = _serve_admin(t)
    check(ap != s.port, "the admin port is its own")
    r = get(ap, "/livez")
    eq((r.status, r.body), (200, b"ok\n"), "/livez")
    eq(r.header("Cache-Control"), "no-store", "/livez Cache-Control")
    eq(r.header("X-Content-Type-Options"), "nosniff", "/livez nosniff")
    r = get(ap, "/readyz")
    eq((r.status, r.body), (503, b"no tunnel\n"), "/readyz without a tunnel")
    o = t.origin("A")
    t.agent(s, o)
    r = get(ap, "/readyz")
    eq((r.status, r.body), (200, b"ready\n"), "/readyz with a tunnel")
    # SIGTERM with a request in flight: draining, and /readyz says so at
    # once while the admin listener still answers.
    c = Conn(s.port)
    mark = o.proc.mark()
    c.request("GET", "/hang")
    o.proc.wait_for(r"event hang-start path=/hang", 10, since=mark)
    mark = s.proc.mark()
    s.proc.send(signal.SIGTERM)
    s.proc.wait_for(r"received SIGTERM: draining", 10, since=mark)
    r = get(ap, "/readyz")
    eq((r.status, r.body), (503, b"draining\n"), "/readyz while draining")
    eq(get(ap, "/livez").status, 200, "/livez while draining")
    c.sock.close()  # the last request goes: serve stops, the admin listener with it
    eq(s.proc.wait_exit(15), 0, "serve's exit status after the drain")


def test_livez_readyz_agent(t):
    o = t.origin("A")
    s = t.serve()
    a = t.agent(s, o, env={"ADMIN_LISTEN": "127.0.0.1:0"})
    ap = int(a.wait_for(ADMIN_RE, 10).group(1))
    eq(get(ap, "/livez").status, 200, "agent /livez")
    r = get(ap, "/readyz")
    eq((r.status, r.body), (200, b"ready\n"), "agent /readyz with its tunnel up")
    r = get(ap, "/metrics")
    eq(r.status, 200, "agent /metrics")
    check(b"\nprocess_resident_memory_bytes " in r.body, "agent process metrics:\n%s" % r.text())
    # The tunnel lost (serve gone): not ready.
    s.proc.kill()
    a.wait_for(r"tunnel down agent=a1 ", 15)
    r = get(ap, "/readyz")
    eq((r.status, r.body), (503, b"no tunnel up\n"), "agent /readyz without a tunnel")


def test_readyz_agent_draining(t):
    o = t.origin("A")
    s = t.serve()
    a = t.agent(s, o, env={"ADMIN_LISTEN": "127.0.0.1:0"})
    ap = int(a.wait_for(ADMIN_RE, 10).group(1))
    c = Conn(s.port)
    mark = o.proc.mark()
    c.request("GET", "/hang")
    o.proc.wait_for(r"event hang-start path=/hang", 10, since=mark)
    mark = a.mark()
    a.send(signal.SIGTERM)
    a.wait_for(r"received SIGTERM: shutting down", 10, since=mark)
    r = get(ap, "/readyz")
    eq((r.status, r.body), (503, b"draining\n"), "agent /readyz while draining")
    c.sock.close()  # its one request goes: the agent finishes and exits
    eq(a.wait_exit(15), 0, "the agent's exit status after the drain")


def test_admin_token(t):
    tok = "s3cret-admin-token"
    s, ap = _serve_admin(t, env={"ADMIN_TOKEN": tok})
    for path in ("/metrics", "/readyz", "/nope"):
        r = get(ap, path)
        eq(r.status, 401, "%s without the token" % path)
        eq(r.header("WWW-Authenticate"), 'Basic realm="natwrp admin", charset="UTF-8"',
           "the challenge")
    eq(get(ap, "/livez").status, 200, "/livez needs no token")
    ok = [("Bearer " + tok), ("bearer  " + tok), _basic("admin", tok), _basic("", tok),
          "BASIC " + base64.b64encode(("x:" + tok).encode()).decode().rstrip("=")]
    for v in ok:
        r = get(ap, "/metrics", headers=[("Authorization", v)])
        eq(r.status, 200, "Authorization %r" % v)
    bad = ["Bearer " + tok + "x", "Bearer " + tok[:-1], "Bearer", _basic(tok, "x"),
           _basic("admin", tok + " "), "Basic !!!", "Token " + tok, tok]
    for v in bad:
        r = get(ap, "/metrics", headers=[("Authorization", v)])
        eq(r.status, 401, "Authorization %r" % v)
    r = get(ap, "/nope", headers=[("Authorization", "Bearer " + tok)])
    eq(r.status, 404, "an unknown path, with the token")


def test_errors_head_keepalive(t):
    s, ap = _serve_admin(t)
    eq(get(ap, "/nope").status, 404, "unknown path")
    eq(get(ap, "/metrics/").status, 404, "exact paths only")
    r = http_request(ap, "POST", "/metrics", body=b"x")
    eq(r.status, 405, "POST /metrics")
    eq(r.header("Allow"), "GET, HEAD", "Allow")
    eq(http_request(ap, "DELETE", "/livez").status, 405, "DELETE /livez")
    r = get(ap, "/metrics")
    c = Conn(ap)
    c.request("HEAD", "/metrics")
    h = c.read_response("HEAD")
    eq(h.status, 200, "HEAD /metrics")
    eq(h.body, b"", "HEAD has no body")
    check(int(h.header("Content-Length")) > 0, "HEAD: the GET's Content-Length")
    eq(h.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8", "type")
    # keep-alive: the same connection again, then two pipelined requests
    c.request("GET", "/livez")
    eq(c.read_response().body, b"ok\n", "second request on the connection")
    c.send(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\nGET /readyz HTTP/1.1\r\nHost: a\r\n\r\n")
    eq(c.read_response().status, 200, "pipelined 1")
    eq(c.read_response().status, 503, "pipelined 2, in order")
    # 413: a body over 128 KiB is refused before it is read
    c = Conn(ap)
    c.send(b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n")
    r = c.read_response()
    eq(r.status, 413, "body over NW_ADMIN_BODY_MAX")
    eq(r.header("Connection"), "close", "413 closes")
    # a request that is not HTTP: 400, closed
    c = Conn(ap)
    c.send(b"HELLO\r\n\r\n")
    eq(c.read_response().status, 400, "garbage")
    # Connection: close is honoured
    c = Conn(ap)
    c.request("GET", "/livez", headers=[("Connection", "close")])
    eq(c.read_response().status, 200, "Connection: close")
    check(c.read_head(allow_eof=True) is None, "closed after Connection: close")


def test_not_on_public_port(t):
    o = t.origin("A")
    s, ap = _serve_admin(t)
    t.agent(s, o)
    for path in ("/metrics", "/livez", "/readyz", "/api/status", "/"):
        r = get(s, path)
        eq(r.status, 200, "public %s" % path)
        j = r.json()  # the origin's /echo, not admin data
        eq(j["path"], path, "public %s reached the local service" % path)
    r = get(ap, "/echo")
    eq(r.status, 404, "the admin port proxies nothing")


def test_metrics_promtool(t):
    s, ap = _serve_admin(t)
    r = get(ap, "/metrics")
    eq(r.status, 200, "/metrics")
    eq(r.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8", "type")
    body = r.text()
    for name in ("natwrp_build_info{version=", "process_cpu_seconds_total ",
                 "process_start_time_seconds ", "process_resident_memory_bytes ",
                 "process_virtual_memory_bytes ", "process_open_fds ", "process_max_fds "):
        check("\n" + name in "\n" + body, "%s missing:\n%s" % (name, body))
    check(",libuv=\"" in body and ",mbedtls=\"" in body, "build_info labels:\n" + body)
    promtool = shutil.which("promtool")
    check(promtool, "promtool not installed (scripts/deps.sh --promtool)")
    p = subprocess.run([promtool, "check", "metrics"], input=r.body, capture_output=True,
                       timeout=30)
    eq((p.returncode, p.stdout + p.stderr), (0, b""), "promtool check metrics")


@timed(40)
def test_conn_limit_and_idle_timeout(t):
    s, ap = _serve_admin(t)
    held = [Conn(ap) for _ in range(64)]
    # The 65th takes the place of the oldest idle one (n1: held connections
    # must not lock a health probe out; test_f7_review_ops.py).
    extra = Conn(ap, timeout=5)
    extra.request("GET", "/livez")
    eq(extra.read_response().status, 200, "the 65th admin connection is answered")
    s.proc.wait_for(r"admin: 64 connections open: closing the oldest idle one", 5)
    held[0].sock.settimeout(5)
    try:
        b = held[0].sock.recv(100)
    except ConnectionResetError:
        b = b""
    eq(b, b"", "the oldest admin connection is closed")
    # The others still work.
    held[1].request("GET", "/livez")
    eq(held[1].read_response().status, 200, "a held connection still answers")
    extra.sock.close()
    for c in held:
        c.sock.close()
    # An idle connection is closed after the idle timeout (10 s).
    c = Conn(ap, timeout=20)
    check(c.read_head(allow_eof=True) is None, "idle connection closed by the server")
    # A request head that never ends is cut too (head timeout).
    c = Conn(ap, timeout=20)
    c.send(b"GET /livez HTTP/1.1\r\nHost: a\r\n")
    check(c.read_head(allow_eof=True) is None, "slow head closed by the server")


def test_admin_port_zero_and_bad_address(t):
    s, ap = _serve_admin(t)
    eq(get(ap, "/livez").status, 200, "the logged port answers")
    # An address in use: exit 2 naming the setting.
    rc, out = t.run_natwrp("serve2", ["serve", "--listen", "127.0.0.1:0",
                                      "--admin", "127.0.0.1:%d" % ap])
    eq(rc, 2, "exit status for an admin address in use:\n%s" % out)
    check("natwrp serve: --admin: cannot listen on 127.0.0.1:%d" % ap in out,
          "the reason names --admin:\n%s" % out)
    rc, out = t.run_natwrp("agent2", ["agent", "--admin", "127.0.0.1:%d" % ap],
                           env={"REMOTE_URL": s.url, "LOCAL_URL": "http://127.0.0.1:9",
                                "AGENT_ID": "x"})
    eq(rc, 2, "agent exit status for an admin address in use:\n%s" % out)
    check("natwrp agent: --admin: cannot listen on 127.0.0.1:%d" % ap in out,
          "the agent's reason names --admin:\n%s" % out)
    # Not an address at all: the configuration refuses it.
    rc, out = t.run_natwrp("serve3", ["serve", "--admin", "nope:x"])
    eq(rc, 2, "exit status for a bad --admin:\n%s" % out)
    check("--admin" in out, "the error names --admin:\n%s" % out)


def test_version_lists_libraries(t):
    for args in (["--version"], ["serve", "--version"], ["agent", "--version"]):
        rc, out = t.run_natwrp("version", args)
        eq(rc, 0, "%s exit status" % args)
        lines = out.strip().splitlines()
        eq(len(lines), 2, "%s: two lines:\n%s" % (args, out))
        check(lines[0].startswith("natwrp 0."), "%s: the version line: %r" % (args, lines[0]))
        for lib in ("libuv ", "llhttp ", "wslay ", "mbedtls "):
            check(lib in lines[1], "%s: %s in %r" % (args, lib, lines[1]))
