"""10 HTTP/1.x on the public side: methods, HEAD, targets, HTTP/1.0,
Expect: 100-continue, keep-alive on both sides, pipelining, base path."""

import hashlib
import http.client
import json
import socket

from harness import (Conn, check, curl, curl_status, echo, eq, fail, get, hdr, pattern_chunks)


def test_methods(t):
    o, s, a = t.stack()
    for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        body = b"" if m in ("GET", "OPTIONS") else ("body of %s \x00\xff" % m).encode("latin-1")
        args = ["-X", m, "-w", "%{stderr}CODE=%{http_code}"]
        if body:
            args += ["--data-binary", "@-", "-H", "Content-Type: application/octet-stream"]
        res = curl(*args, s.url + "/echo/m?method=" + m, stdin=body, timeout=10)
        eq(res.rc, 0, "%s: curl exit status (%s)" % (m, res.err))
        eq(curl_status(res), 200, "%s status" % m)
        e = json.loads(res.out)
        eq(e["method"], m, "method the origin saw")
        eq(e["path"], "/echo/m?method=" + m, "%s target" % m)
        eq(e["body_len"], len(body), "%s body length" % m)
        eq(e["body_sha256"], hashlib.sha256(body).hexdigest(), "%s body sha256" % m)
    # HEAD through curl: headers of the GET, no body.
    res = curl("-I", "-w", "%{stderr}CODE=%{http_code}", s.url + "/bytes?n=12345", timeout=10)
    eq(res.rc, 0, "HEAD: curl exit status (%s)" % res.err)
    eq(curl_status(res), 200, "HEAD status")
    check(b"content-length: 12345" in res.out.lower(), "HEAD lost Content-Length: %r" % res.out)


def test_head_then_reuse(t):
    o, s, a = t.stack()
    c = Conn(s.port)
    for target in ("/bytes?n=12345", "/bytes?n=777&chunked=1", "/echo"):
        c.request("HEAD", target)
        r = c.read_response("HEAD")
        eq(r.status, 200, "HEAD %s status" % target)
        if "chunked" not in target and target != "/echo":
            eq(r.header("Content-Length"), "12345", "HEAD %s Content-Length" % target)
        # If serve sent a body after the HEAD head, the next read sees junk.
        c.request("GET", "/name")
        r = c.read_response()
        eq(r.status, 200, "GET after HEAD %s status" % target)
        eq(r.body, b"A\n", "GET after HEAD %s body" % target)
    c.close()


def test_query_and_percent_encoding_unchanged(t):
    o, s, a = t.stack()
    targets = [
        "/echo/a%20b%2Fc?x=1&y=%41",
        "/echo/%7Euser/%2e%2e/x;p=1?q=a+b&q=%2B&empty=&flag&&z=%3F%26",
        "/echo/%E2%82%AC/%25?k=%E2%82%AC&s=a%2fb",
        "/echo?",
        "/echo//double//slash/?a=b?c",
    ]
    for target in targets:
        e = echo(s, target)
        eq(e["path"], target, "target seen by the origin")
    res = curl(s.url + "/echo/a%20b%2Fc?x=1&y=%41", timeout=10)
    eq(res.rc, 0, "curl exit status (%s)" % res.err)
    eq(json.loads(res.out)["path"], "/echo/a%20b%2Fc?x=1&y=%41", "curl target seen by the origin")


def test_absolute_form_target(t):
    o, s, a = t.stack()
    cases = [
        ("http://example.test:8080/echo/abs?q=1&r=%20", "/echo/abs?q=1&r=%20"),
        ("http://127.0.0.1:%d/echo/x" % s.port, "/echo/x"),
        ("http://example.test/", "/"),
    ]
    for target, want in cases:
        c = Conn(s.port)
        c.request("GET", target, [("Host", "example.test:8080")])
        r = c.read_response()
        c.close()
        eq(r.status, 200, "absolute-form %s status (body %r)" % (target, r.body[:200]))
        eq(r.json()["path"], want, "origin-form target for %s" % target)


def test_http10_client(t):
    o, s, a = t.stack()
    # Content-Length response.
    c = Conn(s.port)
    c.send(b"GET /echo?v=10 HTTP/1.0\r\nHost: h10.test\r\n\r\n")
    r = c.read_response()
    eq(r.status, 200, "HTTP/1.0 status")
    check(r.version in ("HTTP/1.0", "HTTP/1.1"), "status line version %r" % r.version)
    check(r.complete, "HTTP/1.0 body incomplete")
    eq(r.json()["path"], "/echo?v=10", "path")
    check(c.wait_closed(10), "serve kept an HTTP/1.0 connection open without keep-alive")
    c.close()
    # Chunked from the origin: an HTTP/1.0 client must get a close-delimited body.
    c = Conn(s.port)
    c.send(b"GET /bytes?n=300000&chunked=1&seed=h10 HTTP/1.0\r\nHost: h10.test\r\n\r\n")
    r = c.read_response()
    c.close()
    eq(r.status, 200, "HTTP/1.0 chunked-origin status")
    eq(r.header("Transfer-Encoding"), None, "Transfer-Encoding sent to an HTTP/1.0 client")
    check(r.framing in ("close", "length"), "framing %s for HTTP/1.0" % r.framing)
    eq(len(r.body), 300000, "HTTP/1.0 body length")
    check(r.body == b"".join(pattern_chunks(300000, "h10")), "HTTP/1.0 body bytes differ")


def test_expect_100_continue(t):
    o, s, a = t.stack()
    body = b"".join(pattern_chunks(200000, "exp"))
    c = Conn(s.port)
    c.request("POST", "/echo/expect", [("Expect", "100-continue"),
                                       ("Content-Length", str(len(body)))])
    r = c.read_response(interim=True)  # waits (bounded) for the interim response
    eq(r.status, 100, "interim status before the body is sent")
    c.send(body)
    r = c.read_response()
    eq(r.status, 200, "final status")
    e = r.json()
    eq(e["body_len"], len(body), "body length at the origin")
    eq(e["body_sha256"], hashlib.sha256(body).hexdigest(), "body sha256 at the origin")
    eq(hdr(e, "Expect"), [], "Expect header forwarded to the origin")
    # The connection is still usable.
    c.request("GET", "/name")
    eq(c.read_response().body, b"A\n", "request after Expect on the same connection")
    c.close()


def test_interim_1xx_forwarded(t):
    """A proxy forwards 1xx responses (RFC 9110 15.2): the origin's 103
    Early Hints reaches an HTTP/1.1 client with its fields, ahead of the
    200; an HTTP/1.0 client, which knows no 1xx, gets only the 200."""
    o, s, a = t.stack()
    c = Conn(s.port)
    c.request("GET", "/interim")
    r = c.read_head()
    eq((r.status, r.reason, r.headers), (103, "Early Hints", [("Link", "</s.css>; rel=preload")]),
       "first head the client sees: the origin's 103")
    r = c.read_head()
    eq(r.status, 200, "then the final response")
    c.read_body(r)
    eq(r.body, b"after interim\n", "body")
    c.request("GET", "/name")
    eq(c.read_response().body, b"A\n", "next request on the connection")
    c.close()
    c = Conn(s.port)
    c.send(b"GET /interim HTTP/1.0\r\nHost: x\r\n\r\n")
    r = c.read_head()
    eq(r.status, 200, "first status line an HTTP/1.0 client sees (no 1xx)")
    c.close()


def test_client_keepalive_reuse(t):
    o, s, a = t.stack()
    c = Conn(s.port)
    c.request("GET", "/echo?n=1")
    r1 = c.read_response()
    c.request("POST", "/echo?n=2", body=b"second")
    r2 = c.read_response()
    c.request("GET", "/bytes?n=100000&chunked=1")
    r3 = c.read_response()
    c.request("GET", "/echo?n=4")
    r4 = c.read_response()
    c.close()
    eq([r1.status, r2.status, r3.status, r4.status], [200] * 4, "statuses on one connection")
    eq(r1.json()["path"], "/echo?n=1", "first")
    eq(r2.json()["body"], "second", "second body")
    check(r3.body == b"".join(pattern_chunks(100000)), "third body differs")
    eq(r4.json()["path"], "/echo?n=4", "fourth")
    # http.client keeps its connection too.
    hc = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    for i in range(3):
        hc.request("GET", "/echo?hc=%d" % i)
        resp = hc.getresponse()
        data = resp.read()
        eq(resp.status, 200, "http.client status %d" % i)
        eq(json.loads(data)["path"], "/echo?hc=%d" % i, "http.client path")
        sock = hc.sock
        check(sock is not None, "http.client connection was closed by serve after request %d" % i)
    hc.close()


def test_pipelined_requests_in_order(t):
    o, s, a = t.stack()
    c = Conn(s.port, timeout=15)
    # The first response is the slowest, so out-of-order answers would show.
    c.send(b"GET /sleep?ms=300 HTTP/1.1\r\nHost: p\r\n\r\n"
           b"POST /echo?p=2 HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\ntwo"
           b"GET /bytes?n=70000&seed=p3 HTTP/1.1\r\nHost: p\r\n\r\n"
           b"GET /echo?p=4 HTTP/1.1\r\nHost: p\r\n\r\n")
    r1 = c.read_response()
    r2 = c.read_response()
    r3 = c.read_response()
    r4 = c.read_response()
    c.close()
    eq((r1.status, r1.body), (200, b"slept 300\n"), "pipelined response 1")
    eq(r2.status, 200, "pipelined response 2 status")
    eq((r2.json()["path"], r2.json()["body"]), ("/echo?p=2", "two"), "pipelined response 2")
    eq(r3.status, 200, "pipelined response 3 status")
    check(r3.body == b"".join(pattern_chunks(70000, "p3")), "pipelined response 3 body differs")
    eq(r4.json()["path"], "/echo?p=4", "pipelined response 4")
    # A long pipeline in one send, mixing bodies in: all answered, in order.
    c = Conn(s.port, timeout=30)
    reqs = []
    for i in range(100):
        if i % 3 == 1:
            reqs.append(b"POST /echo?q=%d HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\n%02d"
                        % (i, i))
        else:
            reqs.append(b"GET /echo?q=%d HTTP/1.1\r\nHost: p\r\n\r\n" % i)
    c.send(b"".join(reqs))
    for i in range(100):
        r = c.read_response()
        eq(r.status, 200, "pipelined #%d status" % i)
        e = r.json()
        eq(e["path"], "/echo?q=%d" % i, "pipelined #%d answered in order" % i)
        if i % 3 == 1:
            eq(e["body"], "%02d" % i, "pipelined #%d body" % i)
    c.close()


def test_agent_keepalive_reuse(t):
    o, s, a = t.stack()
    ports = []
    counts = []
    for i in range(5):
        e = echo(s, "/echo?seq=%d" % i, method="POST" if i % 2 else "GET",
                 body=b"x" * 100 if i % 2 else None)
        ports.append(e["remote_port"])
        counts.append(e["conn_requests"])
    eq(len(set(ports)), 1, "origin-side client ports for 5 sequential requests %r "
       "(one port means the agent reused its keep-alive connection)" % ports)
    eq(counts, sorted(counts), "requests per connection")


def test_status_codes_pass_through(t):
    o, s, a = t.stack()
    c = Conn(s.port)
    for code in (200, 201, 204, 301, 404, 418, 500, 503):
        c.request("GET", "/status/%d" % code)
        r = c.read_response()
        eq(r.status, code, "status passed through")
        if code != 204:
            eq(r.body, b"status %d\n" % code, "body of %d" % code)
        else:
            eq(r.body, b"", "204 body")
    c.close()


def test_local_url_base_path(t):
    o = t.origin("A")
    s = t.serve()
    a = t.agent(s, o.url + "/base")
    eq(echo(s, "/echo/x?y=1")["path"], "/base/echo/x?y=1", "base path + target")
    eq(echo(s, "/")["path"], "/base/", "base path + /")
    eq(echo(s, "/?q=%20")["path"], "/base/?q=%20", "base path + query")
    a.terminate()
    a2 = t.agent(s, o.url + "/deep/base/", label="agent2")
    eq(echo(s, "/echo/x")["path"], "/deep/base/echo/x", "base path with a trailing slash")
    check(a2.alive(), "agent2 died")


def test_listen_ipv6_loopback(t):
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        print("::1 unavailable here; nothing to test")
        return
    o = t.origin("A")
    s = t.serve(listen="[::1]:0")
    eq(s.host, "::1", "listen host in the log")
    t.agent(s, o)
    r = get(s.port, "/echo?six=1", host="::1")
    eq(r.status, 200, "status over ::1")
    e = r.json()
    eq(e["path"], "/echo?six=1", "path over ::1")
    xff = ", ".join(hdr(e, "X-Forwarded-For"))
    check("::1" in xff, "X-Forwarded-For %r lacks the IPv6 client address" % xff)
    if not s.proc.alive():
        fail("serve died")
