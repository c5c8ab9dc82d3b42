"""a6 clear errors and the open-registration warning (issue 9, items 15 and
18): bad settings exit 2 with `natwrp serve: ...`; serve without CONN_TOKEN
says once that any agent may register; the agent logs one printable, capped
line for a refusal (never a pasted HTML page), one line per failed TLS
attempt, and does not blame the server for resets it did not send; the
response header field limit is the one the docs give."""

import re
import socket
import threading

from harness import check, eq, get, timed
from test_90_tls import P, tls_serve


def test_listen_host_name_exits_2(t):
    for bad in ("foo:80", "example.com:8000", "https://name.invalid:443"):
        rc, out = t.run_natwrp("serve", ["serve", "--listen", bad])
        eq(rc, 2, "exit status for --listen %s" % bad)
        check(out.startswith("natwrp serve: --listen"),
              "not a 'natwrp serve: --listen ...' line for %s: %r" % (bad, out[:200]))
        check(not re.match(r"\d{4}-\d\d-\d\dT", out), "a log line instead of a usage error")
    # An address this host cannot bind is a setting error too.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    rc, out = t.run_natwrp("serve", ["serve", "--listen", "127.0.0.1:%d" % held.getsockname()[1]])
    held.close()
    eq(rc, 2, "exit status for a port in use")
    check(out.startswith("natwrp serve: --listen: cannot listen on 127.0.0.1:"),
          "not a 'natwrp serve: ...' line for a port in use: %r" % out[:200])
    # Literals still work.
    s = t.serve(listen="localhost:0")
    check(s.port > 0, "localhost listener")


def test_open_registration_warned_once(t):
    s = t.serve()
    s.proc.wait_for(r"warn .*no CONN_TOKEN: any agent may register", 5)
    eq(s.proc.count(r"no CONN_TOKEN"), 1, "warning lines")
    s2 = t.serve(env={"CONN_TOKEN": "sekrit-token-1"}, label="serve-token")
    s2.proc.wait_for(r"listening on", 5)
    eq(s2.proc.count(r"no CONN_TOKEN"), 0, "warning with a token")


def _canned(answer):
    """A listener that reads one request head on each connection, sends
    the canned bytes and closes. Returns the listening socket (close it to
    stop)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)

    def run():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                c.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                c.sendall(answer)
            except OSError:
                pass
            finally:
                c.close()
    threading.Thread(target=run, daemon=True).start()
    return ls


def _refusing_server(body, ctype, status=b"404 Not Found"):
    """A fake server that answers every tunnel upgrade with one canned
    refusal. Returns (port, stop)."""
    ls = _canned(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype +
                 b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    return ls.getsockname()[1], ls.close


def _refusal_line(t, body, ctype):
    port, close = _refusing_server(body, ctype)
    try:
        a = t.agent("http://127.0.0.1:%d" % port, "http://127.0.0.1:9", wait=False,
                    label="agent-%s" % ctype.decode().split("/")[1].split(";")[0])
        m = a.wait_for(r"server refused the tunnel: 404.*", 10)
        return a, m.group(0)
    finally:
        close()


def test_refusal_html_page_never_pasted(t):
    page = (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n<body>"
            + b"<h1>Not Found</h1>\x1b[31m\x00" + b"x" * 3000 + b"\n</body></html>\n")
    a, line = _refusal_line(t, page, b"text/html; charset=utf-8")
    check("<" not in line and "Not Found</" not in line, "HTML pasted into the log: %r" % line)
    check("text/html" in line, "the body's type is not named: %r" % line)
    check(len(line) < 400, "refusal line is %d characters" % len(line))
    check(all(0x20 <= ord(ch) < 0x7f for ch in line), "unprintable bytes in %r" % line)
    eq(a.count(r"^\s*<|</html>|^x{20}"), 0, "lines of the page in the log")


def test_refusal_plain_body_quoted_one_capped_line(t):
    body = b"no tunnels here\r\nsecond line \x07" + b"y" * 2000 + b"\n"
    a, line = _refusal_line(t, body, b"text/plain")
    check("no tunnels here second line" in line, "the text body is not quoted: %r" % line)
    check("y..." in line, "a long body is not cut: %r" % line[-60:])
    check(len(line) < 400, "refusal line is %d characters" % len(line))
    check(all(0x20 <= ord(ch) < 0x7f for ch in line), "unprintable bytes in %r" % line)


@timed(45)
def test_tls_failure_logged_once_per_attempt(t):
    o = t.origin()
    s = tls_serve(t, cert="server.pem", key="server.key")
    a = t.agent(s, o, env={"CA_FILE": P("other-ca.pem")}, wait=False)
    a.wait_for(r"reconnecting in", 15)
    a.wait_for(r"reconnecting in", 15, a.last_at + 1)  # two attempts done
    attempts = a.count(r"connecting to wss://")
    fails = a.count(r"not trusted")
    check(attempts >= 2, "attempts: %d" % attempts)
    check(fails in (attempts, attempts - 1),
          "%d TLS failure lines for %d attempts" % (fails, attempts))


def _slow_local():
    """A local service that reads one request and never answers."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    conns = []
    arrived = threading.Event()

    def run():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            conns.append(c)
            try:
                c.settimeout(5)
                if c.recv(4096):
                    arrived.set()
            except OSError:
                pass
    threading.Thread(target=run, daemon=True).start()
    return ls, conns, arrived


def test_tunnel_loss_not_blamed_on_server(t):
    ls, conns, arrived = _slow_local()
    s = t.serve()
    a = t.agent(s, "http://127.0.0.1:%d" % ls.getsockname()[1])
    res = {}

    def req():
        try:
            res["r"] = get(s, "/hang", timeout=10)
        except Exception as e:  # the connection may just close
            res["e"] = e
    th = threading.Thread(target=req, daemon=True)
    th.start()
    # Cut the tunnel once the local service holds the request.
    check(arrived.wait(10), "the request never reached the local service")
    s.proc.kill()
    m = a.wait_for(r"strm=\d+ (.*): aborting the local request", 10)
    eq(m.group(1), "tunnel lost", "the cause logged for a request cut by tunnel loss")
    ls.close()
    th.join(5)


def _fields_local(n):
    """A local service answering every request with n header fields."""
    return _canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + b"".join(
        b"X-F%d: v\r\n" % i for i in range(n - 1)) + b"\r\nok")


def test_response_field_limit_is_the_documented_200(t):
    """docs/protocol.md: a head carries at most 200 fields; a local response
    over it becomes a 502."""
    s = t.serve()
    ok = _fields_local(200)
    over = _fields_local(201)
    t.agent(s, "http://127.0.0.1:%d" % ok.getsockname()[1], agent_id="ok")
    r = get(s, "/", timeout=10)
    eq(r.status, 200, "a response with 200 fields")
    eq(len(r.headers), 200, "fields passed to the client")
    ok.close()
    s2 = t.serve(label="serve-over")
    t.agent(s2, "http://127.0.0.1:%d" % over.getsockname()[1], agent_id="over", label="agent-over")
    r = get(s2, "/", timeout=10)
    eq(r.status, 502, "a response with 201 fields")
    over.close()
