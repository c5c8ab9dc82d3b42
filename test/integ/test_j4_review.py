"""j4 review: interim (1xx) responses across the tunnel, and WebDAV
Destination/If rewriting in the agent, attacked from a hostile local
service, a hand-made agent and a client."""

import socket
import struct
import threading
import time

from harness import Conn, check, eq, fail, http_request, timed
from test_a4_agent import LocalService


def canned_service(replies):
    """A local service that answers each request head (no body read) with
    the next bytes of replies (the last one repeats); records the heads."""
    def handler(svc, rec):
        pos = 0
        i = 0
        while True:
            while b"\r\n\r\n" not in rec.data[pos:]:
                if not svc.recv(rec):
                    return
            end = rec.data.index(b"\r\n\r\n", pos) + 4
            with svc.cond:
                svc.heads.append(rec.data[pos:end].decode("latin-1"))
                svc.cond.notify_all()
            rec.sock.sendall(replies[min(i, len(replies) - 1)])
            i += 1
            pos = end
    svc = LocalService(handler)
    svc.heads = []
    return svc


def read_all(cc, timeout=5.0):
    """Everything the client gets until serve closes or goes quiet."""
    cc.sock.settimeout(timeout)
    out = b""
    try:
        while True:
            b = cc.sock.recv(65536)
            if not b:
                break
            out += b
    except socket.timeout:
        pass
    return out


@timed(40)
def test_j4_interim_with_body_from_service(t):
    """A 1xx has no body (RFC 9110 15.2), whatever its fields say: a
    service's 150 with Content-Length (or chunked) must not have those
    bytes taken as body (DATA before the final HEAD, or the final response
    read as the 1xx's body); the client gets the 1xx then the 200."""
    for hint in (b"Content-Length: 5\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n"):
        svc = canned_service([b"HTTP/1.1 150 Odd\r\n" + hint +
                              b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
        s = t.serve()
        t.agent(s, svc.url)
        cc = Conn(s.port)
        cc.request("GET", "/x")
        got = read_all(cc, 3.0)
        cc.close()
        check(got.startswith(b"HTTP/1.1 150 Odd\r\n"), "interim first: %r" % got)
        check(b"\r\n\r\nHTTP/1.1 200 OK\r\n" in got and got.endswith(b"\r\n\r\nok"),
              "the final response whole after it (%r): %r" % (hint, got))
