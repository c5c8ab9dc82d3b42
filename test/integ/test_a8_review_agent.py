"""a8 review of the agent and the tunnel session (after issue 9).

Attacks from a hostile server (fakeserver.py), hostile local services and
hostile tunnel peers that the issue-9 hardening still let through; each test
failed before its fix."""

import socket
import threading
import time

from fakeserver import FakeServer
from harness import check, eq, fail, timed
from test_a4_agent import LocalService, expect_rst, start_agent

PROTOCOL = 4  # RST code


def early_answer_service(svc, rec):
    """Answers each request as soon as its head is in (keep-alive, without
    waiting for the body), then reads the body its Content-Length announced
    before the next request, as an HTTP/1.1 server must. Records every
    request line it parsed."""
    pos = 0
    svc.lines = getattr(svc, "lines", [])
    while True:
        while b"\r\n\r\n" not in rec.data[pos:]:
            if not svc.recv(rec):
                return
        end = rec.data.index(b"\r\n\r\n", pos) + 4
        lines = rec.data[pos:end - 4].decode("latin-1").split("\r\n")
        with svc.cond:
            svc.lines.append(lines[0])
            svc.cond.notify_all()
        n = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                n = int(v.strip())
        rec.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        while len(rec.data) < end + n:
            if not svc.recv(rec):
                return
        pos = end + n


@timed(30)
def test_a8_open_end_with_content_length(t):
    """An OPEN that ends the request (END) while announcing Content-Length > 0:
    the service is told a body follows that never will, and the next request
    on that keep-alive connection is read as its body (a desync a hostile
    server can aim). The stream is reset (PROTOCOL) and never reaches the
    service."""
    svc = LocalService(early_answer_service)
    fs = FakeServer()
    a, tun = start_agent(t, fs, svc)
    tun.open(1, "POST", "/a", [("Content-Length", "20")], end=True)
    f, _ = tun.expect(lambda f: f.sid == 1 and (f.type == 5 or f.end), "stream 1 answered")
    tun.open(3, "GET", "/next", end=True)
    head, body, rst = tun.response(3)
    eq((head.status, body), (200, b"ok"), "the next request")
    lines = list(getattr(svc, "lines", []))
    for line in lines:
        check(line.split(" ")[0] in ("GET", "POST") and line.split(" ")[1].startswith("/"),
              "the service parsed a request the agent never sent: %r (all: %r)" % (line, lines))
    eq((f.type, f.code), (5, PROTOCOL), "OPEN with END and Content-Length: 20 is reset")
    check(not any("/a" in line for line in lines), "the bodiless POST reached the service: %r"
          % lines)
