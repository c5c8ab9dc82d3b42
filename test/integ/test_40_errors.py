"""40 error paths: 503 no agent, 502 local unreachable, 504 response timeout,
400 malformed, 431 head too large."""

import socket
import time

from harness import Conn, check, echo, eq, get, hdr, pattern_chunks


def _short_text(r, code, also=()):
    check(r.status == code or r.status in also,
          "status %s, want %s (body %r)" % (r.status, code, r.body[:200]))
    code = r.status
    check(0 < len(r.body) < 1024, "%d wants a short text body, got %r" % (code, r.body[:200]))
    ct = (r.header("Content-Type") or "").lower()
    check(ct.startswith("text/"), "%d Content-Type %r" % (code, ct))


def test_503_without_agent(t):
    o = t.origin("A")
    s = t.serve()
    mark = s.proc.mark()
    r = get(s, "/echo?x=1")
    _short_text(r, 503)
    s.proc.wait_for(r"\b(warn|error)\b", 5, since=mark)  # the 503 is logged
    # Once an agent is up the same request works.
    t.agent(s, o)
    eq(echo(s, "/echo?x=1")["path"], "/echo?x=1", "after the agent connected")


def test_502_local_service_unreachable(t):
    # A bound socket that never listens: connections to it are refused, and
    # nothing else can take the port while we hold it.
    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))
    port = hold.getsockname()[1]
    try:
        s = t.serve()
        t.agent(s, "http://127.0.0.1:%d" % port)
        mark = s.proc.mark()
        c = Conn(s.port)
        c.request("GET", "/echo")
        r = c.read_response()
        _short_text(r, 502)
        s.proc.wait_for(r"\b(warn|error)\b", 5, since=mark)  # the 502 is logged
        # Unless serve announced the close, the connection stays usable.
        if "close" in (r.header("Connection") or "").lower():
            check(c.wait_closed(10), "Connection: close announced but not done")
        else:
            c.request("GET", "/echo/again")
            r2 = c.read_response(allow_eof=True)
            check(r2 is not None, "serve closed the connection after a 502 without "
                  "'Connection: close'")
            eq(r2.status, 502, "second request on the connection")
        c.close()
    finally:
        hold.close()


def test_502_bad_local_response(t):
    o, s, a = t.stack()
    for target in ("/malformed", "/drop", "/big-head?n=100000"):
        r = get(s, target)
        _short_text(r, 502)
    eq(echo(s, "/echo?after=bad")["path"], "/echo?after=bad", "request after bad local responses")


def test_local_cut_body_stays_cut(t):
    o, s, a = t.stack()
    want = b"".join(pattern_chunks(5000, "0"))
    for chunked in (0, 1):
        c = Conn(s.port)
        c.request("GET", "/cut?n=100000&sent=5000&chunked=%d" % chunked)
        r = c.read_response()
        c.close()
        eq(r.status, 200, "status (chunked=%d)" % chunked)
        check(not r.complete, "a body the origin cut short looked complete to the client "
              "(chunked=%d, %d bytes, framing %s)" % (chunked, len(r.body), r.framing))
        check(want.startswith(r.body), "bytes before the cut differ (chunked=%d)" % chunked)
    eq(echo(s, "/echo?after=cut")["path"], "/echo?after=cut", "request after cut bodies")


def test_504_response_timeout(t):
    o, s, a = t.stack(serve_args=["--response-timeout", "1"])
    t0 = time.monotonic()
    r = get(s, "/sleep?ms=3000", timeout=15)
    dt = time.monotonic() - t0
    _short_text(r, 504)
    check(dt < 2.9, "504 took %.2fs; the origin answers at 3s, the timeout is 1s" % dt)
    # The tunnel and the agent are fine afterwards.
    eq(echo(s, "/echo?after=504")["path"], "/echo?after=504", "request after a 504")


def test_response_timeout_does_not_cut_streaming(t):
    o, s, a = t.stack(serve_args=["--response-timeout", "1"])
    # Head at once, then 6 parts 400 ms apart: the body takes ~2 s > 1 s.
    for chunked in ("0", "1"):
        r = get(s, "/slow-body?ms=400&parts=6&size=1000&seed=st&chunked=" + chunked, timeout=20)
        eq(r.status, 200, "status (chunked=%s)" % chunked)
        check(r.complete, "streaming body was cut (chunked=%s)" % chunked)
        check(r.body == b"".join(pattern_chunks(6000, "st")), "body differs (chunked=%s)" % chunked)


def test_400_malformed_requests(t):
    o, s, a = t.stack()
    cases = [
        b"NOT A REQUEST\r\n\r\n",
        b"GET /x1 HTTP/1.1 extra\r\nHost: a\r\n\r\n",
        b"GET /x2 HTTP/1.1\r\nHost: a\r\nBad Header Line\r\n\r\n",
        b"GET /x3 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /x4 HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        b"GET /x6 HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET /x7 HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /x8 HTTP/1.1\r\nHost: a\r\nX-Bare: a\rb\r\n\r\n",  # bare CR
        b"GET /x9 HTTP/1.1\r\nHost: a\r\nX-Null: a\x00b\r\n\r\n",
    ]
    for raw in cases + [b"GET /x5 HTTP/7.7\r\nHost: a\r\n\r\n"]:
        c = Conn(s.port)
        c.send(raw)
        r = c.read_response()
        _short_text(r, 400, also=(505,) if b"/x5" in raw else ())
        check(c.wait_closed(10), "connection not closed after 400 for %r" % raw)
        c.close()
    text = o.proc.text()
    for p in ("/x1", "/x2", "/x3", "/x4", "/x5", "/x6", "/x7", "/x8", "/x9"):
        check(p not in text, "origin received malformed request %s" % p)
    eq(echo(s, "/echo?after=400")["path"], "/echo?after=400", "request after the 400s")


def test_content_length_with_transfer_encoding(t):
    # Request smuggling guard: serve must reject the request (400) or drop
    # Content-Length, use the chunked body, and close the connection.
    o, s, a = t.stack()
    c = Conn(s.port)
    c.send(b"POST /echo/clte HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
           b"GET /echo/smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
    r = c.read_response()
    if r.status == 400:
        check(c.wait_closed(10), "connection not closed after 400")
    else:
        eq(r.status, 200, "status")
        eq(r.json()["body"], "abc", "body the origin received")
        check(c.wait_closed(10), "connection not closed after a CL+TE request")
    c.close()
    check("/echo/smuggled" not in o.proc.text(), "origin received the smuggled request")


def test_too_many_headers(t):
    o, s, a = t.stack()
    # The exact field-count limit is serve's choice (the protocol carries up
    # to 256); 150 must pass and 300 must be refused cleanly.
    e = echo(s, "/echo/h150", headers=[("X-H%d" % i, str(i)) for i in range(150)])
    eq([v for k, v in e["headers"] if k.startswith("X-H")], [str(i) for i in range(150)],
       "150 request headers at the origin")
    c = Conn(s.port)
    c.request("GET", "/echo/h300", [("X-H%d" % i, str(i)) for i in range(300)])
    r = c.read_response()
    _short_text(r, 431)
    c.close()
    # Responses: 150 headers pass, 300 cannot be forwarded: 502.
    r = get(s, "/many-headers?n=150")
    eq(r.status, 200, "150 response headers")
    eq([v for k, v in r.headers if k.startswith("X-M")], [str(i) for i in range(150)],
       "150 response headers at the client")
    r = get(s, "/many-headers?n=300")
    _short_text(r, 502)
    eq(echo(s, "/echo?after=many")["path"], "/echo?after=many", "request afterwards")


def test_431_request_head_too_large(t):
    o, s, a = t.stack(serve_args=["--max-head", "4096"])
    # Under the limit: fine.
    e = echo(s, "/echo?small", headers=[("X-Pad", "p" * 2000)])
    eq(hdr(e, "X-Pad"), ["p" * 2000], "header under the limit")
    # One big header, and many small ones.
    for hdrs in ([("X-Big", "b" * 8000)],
                 [("X-H%d" % i, "v" * 20) for i in range(300)]):
        c = Conn(s.port)
        c.request("GET", "/echo?big", hdrs)
        r = c.read_response()
        _short_text(r, 431)
        check(c.wait_closed(10), "connection not closed after 431")
        c.close()
    # A huge request line counts too.
    c = Conn(s.port)
    c.request("GET", "/echo?" + "q" * 9000)
    r = c.read_response()
    check(r.status in (414, 431), "long request line: status %s, want 431 (or 414)" % r.status)
    c.close()
    check("?big" not in o.proc.text(), "origin received an oversized head")
    eq(echo(s, "/echo?after=431")["path"], "/echo?after=431", "request after the 431s")
