"""20 bodies: chunked uploads and downloads, 100 MB each way byte-exact,
200 concurrent requests over one tunnel."""

import hashlib
import http.client
import json
import os
import threading

from harness import (Conn, check, curl, curl_download_sha256, curl_status, eq, fail, pattern_chunks,
                     pattern_sha256, timed)

MB100 = 100 * 1024 * 1024


def test_chunked_upload_curl(t):
    o, s, a = t.stack()
    path = os.path.join(t.logdir, "upload.bin")
    data = b"".join(pattern_chunks(3 * 1024 * 1024 + 17, "cu"))
    with open(path, "wb") as f:
        f.write(data)
    want = hashlib.sha256(data).hexdigest()
    # Explicit chunked POST.
    res = curl("-H", "Transfer-Encoding: chunked", "--data-binary", "@" + path,
               "-w", "%{stderr}CODE=%{http_code}", s.url + "/upload", timeout=30)
    eq(res.rc, 0, "curl exit status (%s)" % res.err)
    eq(curl_status(res), 200, "status")
    r = json.loads(res.out)
    eq((r["len"], r["sha256"]), (len(data), want), "chunked POST at the origin")
    check(r["chunked"], "agent should send a body of unknown length chunked")
    # PUT from stdin: curl sends it chunked.
    res = curl("-T", "-", "-w", "%{stderr}CODE=%{http_code}", s.url + "/upload", stdin=data,
               timeout=30)
    eq(res.rc, 0, "curl -T - exit status (%s)" % res.err)
    eq(curl_status(res), 200, "PUT status")
    r = json.loads(res.out)
    eq((r["len"], r["sha256"]), (len(data), want), "chunked PUT at the origin")


def test_chunked_upload_raw(t):
    o, s, a = t.stack()
    sizes = [1, 7, 16, 4096, 65536 + 3, 200000, 2]
    data = b"".join(pattern_chunks(sum(sizes), "cr"))
    wire = b""
    off = 0
    for i, n in enumerate(sizes):
        ext = b";name=value" if i == 2 else b""
        wire += b"%x%s\r\n" % (n, ext) + data[off:off + n] + b"\r\n"
        off += n
    wire += b"0\r\nX-Trailer: t\r\n\r\n"
    c = Conn(s.port, timeout=20)
    c.send(b"POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n")
    # Send in odd pieces so chunk framing straddles reads.
    for i in range(0, len(wire), 9973):
        c.send(wire[i:i + 9973])
    r = c.read_response()
    eq(r.status, 200, "status")
    got = r.json()
    eq((got["len"], got["sha256"]), (len(data), hashlib.sha256(data).hexdigest()),
       "raw chunked upload at the origin")
    # The chunked body was consumed exactly: the connection still works.
    c.request("GET", "/name")
    eq(c.read_response().body, b"A\n", "request after a chunked upload")
    c.close()


def test_chunked_download(t):
    o, s, a = t.stack()
    n = 5 * 1024 * 1024 + 1
    c = Conn(s.port, timeout=30)
    c.request("GET", "/bytes?n=%d&chunked=1&seed=cd" % n)
    h = hashlib.sha256()
    count = [0]

    def sink(b):
        h.update(b)
        count[0] += len(b)
    r = c.read_response(sink=sink)
    eq(r.status, 200, "status")
    eq(r.framing, "chunked", "framing to an HTTP/1.1 client for an unknown-length body")
    check(r.complete, "chunked body not terminated")
    eq(count[0], n, "length")
    eq(h.hexdigest(), pattern_sha256(n, "cd"), "sha256")
    c.request("GET", "/name")
    eq(c.read_response().body, b"A\n", "request after a chunked download")
    c.close()


@timed(240)
def test_upload_100mb_exact(t):
    o, s, a = t.stack()
    c = Conn(s.port, timeout=120)
    c.request("POST", "/upload", [("Content-Length", str(MB100))])
    h = hashlib.sha256()
    for b in pattern_chunks(MB100, "up100"):
        h.update(b)
        c.send(b)
    r = c.read_response()
    c.close()
    eq(r.status, 200, "status")
    got = r.json()
    eq(got["len"], MB100, "length at the origin")
    eq(got["sha256"], h.hexdigest(), "sha256 at the origin")


@timed(240)
def test_download_100mb_exact(t):
    o, s, a = t.stack()
    rc, code, n, sha, err = curl_download_sha256(s.url + "/bytes?n=%d&seed=dl100" % MB100,
                                                 timeout=180)
    eq(rc, 0, "curl exit status (%s)" % err)
    eq(code, 200, "status")
    eq(n, MB100, "length")
    eq(sha, pattern_sha256(MB100, "dl100"), "sha256")
    # And chunked from the origin (serve frames it chunked), 20 MB.
    n2 = 20 * 1024 * 1024
    rc, code, n, sha, err = curl_download_sha256(
        s.url + "/bytes?n=%d&seed=dl20&chunked=1" % n2, timeout=120)
    eq((rc, code, n), (0, 200, n2), "chunked download rc/status/length (%s)" % err)
    eq(sha, pattern_sha256(n2, "dl20"), "chunked download sha256")


@timed(180)
def test_200_concurrent_requests_one_tunnel(t):
    o, s, a = t.stack()
    N = 200
    barrier = threading.Barrier(N)
    errors = []
    done = [0]
    lock = threading.Lock()

    def one(i):
        try:
            hc = http.client.HTTPConnection("127.0.0.1", s.port, timeout=90)
            barrier.wait(30)
            kind = i % 4
            if kind == 0:
                hc.request("GET", "/echo/c%d?i=%d" % (i, i))
                resp = hc.getresponse()
                body = resp.read()
                if resp.status != 200 or json.loads(body)["path"] != "/echo/c%d?i=%d" % (i, i):
                    raise AssertionError("echo %d: %s %r" % (i, resp.status, body[:100]))
            elif kind == 1:
                n = 10000 + i * 997
                hc.request("GET", "/bytes?n=%d&seed=c%d" % (n, i))
                resp = hc.getresponse()
                body = resp.read()
                if resp.status != 200 or body != b"".join(pattern_chunks(n, "c%d" % i)):
                    raise AssertionError("bytes %d: status %s, %d bytes" % (i, resp.status,
                                                                           len(body)))
            elif kind == 2:
                data = b"".join(pattern_chunks(50000 + i, "u%d" % i))
                hc.request("POST", "/upload", body=data)
                resp = hc.getresponse()
                got = json.loads(resp.read())
                if resp.status != 200 or got["sha256"] != hashlib.sha256(data).hexdigest():
                    raise AssertionError("upload %d: %s %r" % (i, resp.status, got))
            else:
                hc.request("GET", "/bytes?n=30000&chunked=1&seed=k%d" % i)
                resp = hc.getresponse()
                body = resp.read()
                if resp.status != 200 or body != b"".join(pattern_chunks(30000, "k%d" % i)):
                    raise AssertionError("chunked %d: status %s, %d bytes" % (i, resp.status,
                                                                             len(body)))
            hc.close()
            with lock:
                done[0] += 1
        except BaseException as e:  # noqa: B902 - collected and reported
            with lock:
                errors.append("request %d: %r" % (i, e))

    ths = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(N)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(150)
    alive = sum(th.is_alive() for th in ths)
    if errors or alive:
        fail("%d of %d requests failed, %d unfinished; first errors:\n  %s" % (
            len(errors), N, alive, "\n  ".join(errors[:10])))
    eq(done[0], N, "requests completed")
    eq(s.proc.count(r"tunnel open tun="), 1, "tunnels opened (all requests shared one)")


@timed(120)
def test_1000_concurrent_streams(t):
    o, s, a = t.stack()
    N = 1000
    errors = []
    lock = threading.Lock()

    def one(i):
        try:
            hc = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
            hc.request("GET", "/echo?k=%d" % i)
            resp = hc.getresponse()
            body = resp.read()
            if resp.status != 200 or json.loads(body)["path"] != "/echo?k=%d" % i:
                raise AssertionError("status %s body %r" % (resp.status, body[:80]))
            hc.close()
        except BaseException as e:  # noqa: B902 - collected and reported
            with lock:
                errors.append("request %d: %r" % (i, e))

    ths = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(N)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(90)
    alive = sum(th.is_alive() for th in ths)
    if errors or alive:
        fail("%d of %d requests failed, %d unfinished; first errors:\n  %s" % (
            len(errors), N, alive, "\n  ".join(errors[:10])))
