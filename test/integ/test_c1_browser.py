"""c1 a real browser: headless Chromium loads a page through natwrp serve;
the page (test/static/browser.html, served by the local service behind the
agent) reads a streamed fetch body (Ollama-shaped NDJSON), an EventSource
and a WebSocket, and writes the results into the DOM. The test drives
Chromium over the DevTools protocol (its own WebSocket): it navigates,
waits for the page's 'natwrp-done' event (no polling), reads the results
and the DOM, and keeps a screenshot as build/browser-screenshot.png.

Chromium comes from scripts/deps.sh --browser (make test runs it)."""

import base64
import json
import os
import re
import shutil
import socket
import struct
import tempfile

from harness import ROOT, check, eq, fail, timed

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--no-first-run",
                  "--disable-dev-shm-usage", "--remote-debugging-port=0",
                  "--remote-debugging-address=127.0.0.1"]


class Cdp:
    """The smallest DevTools client: one WebSocket, text frames, ids."""

    def __init__(self, url, timeout=30.0):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)$", url)
        check(m, "bad DevTools URL %r" % url)
        self.sock = socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n"
                           % (m.group(3), m.group(1), m.group(2), key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            b = self.sock.recv(4096)
            check(b, "DevTools closed during the handshake")
            head += b
        head, self.buf = head.split(b"\r\n\r\n", 1)
        check(head.startswith(b"HTTP/1.1 101"), "DevTools handshake: %r" % head[:100])
        self.next_id = 0
        self.events = []

    def _exact(self, n):
        while len(self.buf) < n:
            b = self.sock.recv(1 << 16)
            check(b, "DevTools connection closed")
            self.buf += b
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _recv_message(self):
        parts = []
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7f
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(n)
            op = b0 & 0x0f
            if op in (0x8,):
                fail("DevTools closed the connection")
            if op in (0x9, 0xa):
                continue
            parts.append(payload)
            if b0 & 0x80:
                return json.loads(b"".join(parts).decode())

    def send(self, method, **params):
        self.next_id += 1
        data = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        n = len(data)
        hdr = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                               bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                               bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(hdr + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(data)))
        return self.next_id

    def call(self, method, **params):
        want = self.send(method, **params)
        while True:
            msg = self._recv_message()
            if msg.get("id") == want:
                check("error" not in msg, "%s failed: %r" % (method, msg.get("error")))
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method):
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        while True:
            msg = self._recv_message()
            if msg.get("method") == method:
                return msg
            self.events.append(msg)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def http_json(port, path):
    """GET a DevTools JSON endpoint (it answers with Content-Length)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (path, port)).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        check(b, "DevTools HTTP closed early")
        data += b
    head, body = data.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    check(m, "DevTools answer without Content-Length: %r" % head[:200])
    while len(body) < int(m.group(1)):
        b = s.recv(65536)
        check(b, "DevTools HTTP closed early")
        body += b
    s.close()
    return json.loads(body.decode())


@timed(90)
def test_browser_fetch_sse_websocket_through_the_tunnel(t):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        fail("chromium is not installed (scripts/deps.sh --browser installs it)")
    o, s, a = t.stack()
    profile = tempfile.mkdtemp(prefix="natwrp-chromium-", dir=t.logdir)
    b = t.spawn("chromium", [exe] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile,
                                                     "about:blank"])
    m = b.wait_for(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)", 30)
    port = int(m.group(2))
    pages = [x for x in http_json(port, "/json/list") if x.get("type") == "page"]
    check(pages, "no page target in %r" % pages)
    cdp = Cdp(pages[0]["webSocketDebuggerUrl"])
    try:
        cdp.call("Page.enable")
        cdp.call("Runtime.enable")
        url = "http://127.0.0.1:%d/static/browser.html" % s.port
        cdp.call("Page.navigate", url=url)
        cdp.wait_event("Page.loadEventFired")
        # Resolves on the page's own 'natwrp-done' event (or at once if done).
        res = cdp.call("Runtime.evaluate", awaitPromise=True, returnByValue=True, expression=(
            "new Promise(r => window.natwrpResult ? r(window.natwrpResult) : "
            "window.addEventListener('natwrp-done', () => r(window.natwrpResult)))"))
        out = res["result"]["value"]
        title = cdp.call("Runtime.evaluate", expression="document.title",
                         returnByValue=True)["result"]["value"]
        dom = cdp.call("Runtime.evaluate", returnByValue=True,
                       expression="document.getElementById('out').textContent")["result"]["value"]
        shot = cdp.call("Page.captureScreenshot", format="png")["data"]
        png = base64.b64decode(shot)
        for path in (os.path.join(ROOT, "build", "browser-screenshot.png"),
                     os.path.join(t.logdir, "browser-screenshot.png")):
            with open(path, "wb") as f:
                f.write(png)
    finally:
        cdp.close()
    with open(os.path.join(t.logdir, "browser-result.json"), "w") as f:
        json.dump(out, f, indent=1)
    eq(title, "DONE", "page title (results: %r)" % out)
    eq(json.loads(dom), out, "results written into the DOM")
    f_ = out["fetch"]
    eq((f_["status"], f_["type"], f_["done"], f_["rest"]), (200, "application/x-ndjson", True, ""),
       "streamed fetch")
    check(f_["lines"] >= 3 and f_["tokens"], "fetch lines: %r" % f_)
    eq(out["sse"], {"ids": ["0", "1", "2", "3", "4"], "data": [0, 1, 2, 3, 4]}, "EventSource")
    w = out["ws"]
    eq(w["got"], ["hello through the tunnel", "bin:1,2,3,250,0", "text:100000"],
       "WebSocket echoes")
    eq(w["protocol"], "chat", "WebSocket subprotocol")
    eq((w["code"], w["clean"]), (1000, True), "WebSocket close")
    check("permessage-deflate" in w["extensions"],
          "permessage-deflate not negotiated end to end: %r" % w["extensions"])
    check(png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000, "screenshot is not a PNG")
