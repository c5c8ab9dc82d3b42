"""30 header rewriting: Host, X-Forwarded-*, hop-by-hop removal both ways,
repeated response headers."""

from harness import Conn, check, echo, eq, hdr


def _names(e):
    return [k.lower() for k, _ in e["headers"]]


def test_forwarded_headers_and_host(t):
    """Without --trust-proxy (the default) the client's own X-Forwarded-*
    values are dropped: X-Forwarded-For is exactly the client address, so a
    client cannot spoof it (issue 3). With --trust-proxy see
    test_trust_proxy_keeps_forwarded_values."""
    o, s, a = t.stack()
    e = echo(s, "/echo/fwd", headers=[("Host", "public.example:8443"),
                                      ("X-Forwarded-For", "10.1.2.3"),
                                      ("X-Custom", "kept")])
    eq(hdr(e, "Host"), ["127.0.0.1:%d" % o.port], "Host at the origin (LOCAL_URL's host:port)")
    eq(hdr(e, "X-Forwarded-For"), ["127.0.0.1"], "X-Forwarded-For (spoofed value dropped)")
    eq(hdr(e, "X-Forwarded-Proto"), ["http"], "X-Forwarded-Proto")
    eq(hdr(e, "X-Forwarded-Host"), ["public.example:8443"], "X-Forwarded-Host")
    eq(hdr(e, "X-Custom"), ["kept"], "ordinary header")
    # No X-Forwarded-For from the client: just the client address.
    e = echo(s, "/echo/fwd2", headers=[("Host", "h2.example")])
    eq(hdr(e, "X-Forwarded-For"), ["127.0.0.1"], "X-Forwarded-For without a client value")
    eq(hdr(e, "X-Forwarded-Host"), ["h2.example"], "X-Forwarded-Host")
    # Values the client made up are replaced, not passed on.
    e = echo(s, "/echo/fwd3", headers=[("Host", "h3.example"), ("X-Forwarded-Proto", "https"),
                                       ("X-Forwarded-Host", "evil.example")])
    eq(hdr(e, "X-Forwarded-Proto"), ["http"], "client-supplied X-Forwarded-Proto replaced")
    eq(hdr(e, "X-Forwarded-Host"), ["h3.example"], "client-supplied X-Forwarded-Host replaced")


def test_trust_proxy_keeps_forwarded_values(t):
    """--trust-proxy: the proxy in front speaks for the client; its
    X-Forwarded-For is extended with the proxy's address, and its
    X-Forwarded-Proto/Host are kept."""
    o, s, a = t.stack(serve_args=("--trust-proxy",))
    e = echo(s, "/echo/fwd", headers=[("Host", "public.example:8443"),
                                      ("X-Forwarded-For", "10.1.2.3"),
                                      ("X-Forwarded-For", "10.9.9.9"),
                                      ("X-Forwarded-Proto", "https"),
                                      ("X-Forwarded-Host", "front.example")])
    xff = ", ".join(hdr(e, "X-Forwarded-For")).replace(" ", "")
    eq(xff, "10.1.2.3,10.9.9.9,127.0.0.1", "X-Forwarded-For (client address appended)")
    eq(hdr(e, "X-Forwarded-Proto"), ["https"], "X-Forwarded-Proto kept")
    eq(hdr(e, "X-Forwarded-Host"), ["front.example"], "X-Forwarded-Host kept")
    # Nothing from the proxy: serve fills them in as usual.
    e = echo(s, "/echo/fwd2", headers=[("Host", "h2.example")])
    eq(hdr(e, "X-Forwarded-For"), ["127.0.0.1"], "X-Forwarded-For without a proxy value")
    eq(hdr(e, "X-Forwarded-Proto"), ["http"], "X-Forwarded-Proto without a proxy value")
    eq(hdr(e, "X-Forwarded-Host"), ["h2.example"], "X-Forwarded-Host without a proxy value")


def test_request_hop_by_hop_removed(t):
    o, s, a = t.stack()
    c = Conn(s.port)
    c.request("GET", "/echo/hop", [
        ("Connection", "close, X-Secret"),
        ("X-Secret", "1"),
        ("Keep-Alive", "5"),
        ("TE", "trailers"),
        ("Trailer", "X-Sum"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Proxy-Connection", "keep-alive"),
        ("Upgrade", "example/1"),
        ("X-Keep-Me", "yes"),
    ])
    r = c.read_response()
    eq(r.status, 200, "status")
    e = r.json()
    names = _names(e)
    for h in ("x-secret", "keep-alive", "te", "trailer", "proxy-authorization",
              "proxy-connection", "transfer-encoding", "upgrade"):
        check(h not in names, "origin received hop-by-hop header %s: %r" % (h, e["headers"]))
    for v in hdr(e, "Connection"):
        check("secret" not in v.lower() and "close" not in v.lower(),
              "client's Connection header reached the origin: %r" % v)
    eq(hdr(e, "X-Keep-Me"), ["yes"], "end-to-end header")
    # Connection: close from the client closes the client connection.
    check(c.wait_closed(10), "serve did not close after Connection: close")
    c.close()


def test_response_hop_by_hop_removed(t):
    o, s, a = t.stack()
    c = Conn(s.port)
    c.request("GET", "/hop")
    r = c.read_response()
    eq(r.status, 200, "status")
    eq(r.body, b"hop\n", "body")
    names = [k.lower() for k, _ in r.headers]
    for h in ("x-private", "keep-alive", "proxy-foo", "trailer"):
        check(h not in names, "client received hop-by-hop header %s: %r" % (h, r.headers))
    for v in r.header_all("Connection"):
        check("x-private" not in v.lower(), "origin's Connection header passed on: %r" % v)
    eq(r.header_all("X-End-To-End"), ["kept"], "end-to-end response header")
    # The origin's keep-alive headers do not close the client connection.
    c.request("GET", "/name")
    eq(c.read_response().body, b"A\n", "next request on the same connection")
    c.close()


def test_repeated_response_headers_keep_order(t):
    o, s, a = t.stack()
    c = Conn(s.port)
    c.request("GET", "/cookies")
    r = c.read_response()
    c.close()
    eq(r.status, 200, "status")
    eq(r.header_all("Set-Cookie"), ["a=1; Path=/", "b=2; Path=/; HttpOnly"],
       "Set-Cookie multiplicity and order")
    eq(r.header_all("X-Multi"), ["one", "two", "three"], "X-Multi multiplicity and order")
