"""50 tunnel handshake (docs/protocol.md section 1): version mismatch on both
sides, agent id validation, bad upgrades, and the agent's own request."""

import queue
import re
import socket
import threading

from harness import (Conn, TUNNEL_PATH, check, eq, tunnel_upgrade, ws_accept)


def test_version_mismatch_refused(t):
    o, s, a = t.stack()
    mark = s.proc.mark()
    c, r = tunnel_upgrade(s.port, agent_id="old@box", protocol="natwrp.99")
    c.close()
    eq(r.status, 400, "status for natwrp.99 (body %r)" % r.body)
    eq(r.header("X-Natwrp-Version"), "1", "X-Natwrp-Version (the versions serve speaks)")
    body = r.text()
    check("99" in body and "1" in body and len(body.strip().splitlines()) == 1,
          "want a one-line body naming the offered and spoken versions, got %r" % body)
    s.proc.wait_for(r"99", 10, since=mark)
    check(not s.proc.find(r"tunnel open .*agent=old@box", since=mark),
          "serve opened a tunnel for a mismatched version")
    # Several offered, one of them ours: accepted.
    c, r = tunnel_upgrade(s.port, agent_id="multi", protocol="natwrp.99, natwrp.1")
    eq(r.status, 101, "status for 'natwrp.99, natwrp.1'")
    eq(r.header("Sec-WebSocket-Protocol"), "natwrp.1", "chosen subprotocol")
    c.close()


def test_tunnel_handshake_validation(t):
    o, s, a = t.stack()
    mark = s.proc.mark()
    cases = [
        ("missing agent id", dict(agent_id=None), (400,)),
        ("agent id with a space", dict(agent_id="bad id"), (400,)),
        ("agent id with a slash", dict(agent_id="bad/id"), (400,)),
        ("agent id too long", dict(agent_id="x" * 129), (400,)),
        ("no subprotocol", dict(protocol=None), (400,)),
        ("websocket version 8", dict(version="8"), (426,)),
        ("missing key", dict(key=None), (400,)),
        ("bad key", dict(key="short"), (400,)),
        ("no Upgrade header", dict(drop=("Upgrade",)), (426,)),
        ("POST upgrade", dict(method="POST"), (426, 400, 405)),
    ]
    for what, kw, want in cases:
        c, r = tunnel_upgrade(s.port, **kw)
        c.close()
        check(r.status in want, "%s: status %s, want %s (body %r)" % (what, r.status, want,
                                                                      r.body[:200]))
        if what == "websocket version 8":
            eq(r.header("Sec-WebSocket-Version"), "13", "Sec-WebSocket-Version in the 426")
    # A plain GET on the reserved path is not proxied either.
    c = Conn(s.port)
    c.request("GET", TUNNEL_PATH)
    r = c.read_response()
    c.close()
    eq(r.status, 426, "plain GET %s" % TUNNEL_PATH)
    check("_natwrp" not in o.proc.text(), "origin saw the reserved path")
    check(not s.proc.find(r"tunnel open ", since=mark), "a bad handshake opened a tunnel")
    # A correct hand-made upgrade is accepted, and logged open then closed.
    key = "AAECAwQFBgcICQoLDA0ODw=="
    c, r = tunnel_upgrade(s.port, agent_id="by.hand@test:1+x-y_z", key=key)
    eq(r.status, 101, "valid upgrade status")
    eq(r.header("Sec-WebSocket-Accept"), ws_accept(key), "Sec-WebSocket-Accept")
    eq(r.header("Sec-WebSocket-Protocol"), "natwrp.1", "subprotocol")
    win = r.header("X-Natwrp-Window")
    check(win is None or (win.isdigit() and 1024 <= int(win) < 2 ** 31), "X-Natwrp-Window %r" % win)
    s.wait_tunnel_open("by.hand@test:1+x-y_z", since=mark)
    c.close()
    s.wait_tunnel_closed("by.hand@test:1+x-y_z", since=mark)


class FakeServer:
    """Accepts agent upgrades and answers each with the next scripted reply.
    Heads it received are put on self.heads (a queue)."""

    def __init__(self, replies):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.replies = list(replies)
        self.heads = queue.Queue()
        self.conns = []
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            c.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    b = c.recv(4096)
                    if not b:
                        break
                    data += b
            except OSError:
                pass
            head = data.split(b"\r\n\r\n")[0].decode("latin-1")
            self.heads.put(head)
            reply = self.replies.pop(0) if self.replies else None
            if reply is None:
                c.close()
                continue
            m = re.search(r"(?im)^sec-websocket-key:\s*(\S+)", head)
            key = m.group(1) if m else ""
            try:
                c.sendall(reply(key).encode("latin-1"))
            except OSError:
                pass

    def next_head(self, timeout=15):
        try:
            return self.heads.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the agent did not connect within %ds" % timeout)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_agent_side_version_mismatch(t):
    o = t.origin("A")
    body = "offered natwrp.1; this server speaks natwrp.7\n"

    def refuse(key):
        return ("HTTP/1.1 400 Bad Request\r\nX-Natwrp-Version: 7\r\nContent-Type: text/plain\r\n"
                "Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))

    def wrong_101(key):
        return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: natwrp.7\r\n\r\n"
                % ws_accept(key))

    fake = FakeServer([refuse, wrong_101])
    try:
        a = t.agent(fake.url, o, agent_id="fake1", wait=False)
        head = fake.next_head()
        lines = head.split("\r\n")
        eq(lines[0], "GET %s HTTP/1.1" % TUNNEL_PATH, "agent's upgrade request line")
        h = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            h[k.strip().lower()] = v.strip()
        eq(h.get("upgrade", "").lower(), "websocket", "Upgrade")
        check("upgrade" in h.get("connection", "").lower(), "Connection: %r" % h.get("connection"))
        eq(h.get("sec-websocket-version"), "13", "Sec-WebSocket-Version")
        eq(h.get("sec-websocket-protocol"), "natwrp.1", "Sec-WebSocket-Protocol")
        eq(h.get("x-natwrp-agent"), "fake1", "X-Natwrp-Agent")
        check(h.get("host", "").endswith(":%d" % fake.port), "Host %r" % h.get("host"))
        # The refusal: status and body logged, then a retry.
        a.wait_for(r"400", 10)
        a.wait_for(re.escape("natwrp.7"), 10)
        a.wait_for(r"reconnecting in [\d.]+s \(attempt \d+\)", 10)
        retry = a.last_at + 1
        fake.next_head()  # the retry arrives
        # A 101 naming another subprotocol: closes and logs a version mismatch.
        a.wait_for(r"(?i)version", 10, since=retry)
        a.wait_for(r"reconnecting in", 10, since=a.last_at + 1)
        check(not a.find(r"tunnel up"), "agent reported the tunnel up on a wrong subprotocol")
    finally:
        fake.close()
