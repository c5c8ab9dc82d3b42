"""90 TLS: wss tunnels verified against a test CA, each verification failure
named and retried, TLS_INSECURE, https local services, TLS and plain
listeners in one serve, SIGHUP certificate reload, 100 MB through wss, and
hostile clients on the TLS port (plain HTTP, stalled handshakes).

Certificates come from test/mkpki.sh (a throwaway CA made at test time).
The test certificates name DNS:localhost, so TLS peers are addressed as
localhost (which resolves to loopback only)."""

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess

from harness import (Conn, TlsConn, check, curl, curl_download_sha256,
                     curl_status, eq, hdr, pattern_chunks, pattern_sha256, pem_to_der, pki,
                     timed)

P = pki()
MB100 = 100 * 1024 * 1024


def tls_serve(t, *args, cert="server.pem", key="server.key", label="serve"):
    return t.serve("--tls-cert", P(cert), "--tls-key", P(key), *args, label=label)


def tls_echo(port, target, headers=(), cafile=None):
    c = TlsConn(port, cafile=cafile or P("ca.pem"))
    try:
        c.request("GET", target, headers, host="localhost:%d" % port)
        r = c.read_response()
        eq(r.status, 200, "GET %s over TLS (body %r)" % (target, r.body[:200]))
        return r.json()
    finally:
        c.close()


def test_wss_tunnel_verified_end_to_end(t):
    o = t.origin()
    s = tls_serve(t)
    eq(s.scheme, "https", "listener scheme with a certificate")
    a = t.agent(s, o, env={"CA_FILE": P("ca.pem")})
    a.wait_for(r"agent=a1 tls: connected to wss://localhost:%d with TLSv1\.[23]$" % s.port)
    check(a.count(r"TLS_INSECURE") == 0, "insecure warning without TLS_INSECURE")
    # curl verifies serve's certificate against the same CA.
    res = curl("--cacert", P("ca.pem"), "-w", "%{stderr}CODE=%{http_code}",
               "https://localhost:%d/echo/tls?q=1" % s.port)
    eq((res.rc, curl_status(res)), (0, 200), "curl over https (%s)" % res.err)
    e = json.loads(res.out)
    eq(e["path"], "/echo/tls?q=1", "path at the origin")
    eq(hdr(e, "X-Forwarded-Proto"), ["https"], "X-Forwarded-Proto for a TLS request")
    eq(hdr(e, "X-Forwarded-Host"), ["localhost:%d" % s.port], "X-Forwarded-Host")
    # Keep-alive over TLS: several requests on one connection.
    c = TlsConn(s.port, cafile=P("ca.pem"))
    for i in range(5):
        c.request("POST", "/upload", body=b"x" * (1000 * i + 1), host="localhost")
        r = c.read_response()
        eq(r.status, 200, "request %d on one TLS connection" % i)
        eq(r.json()["len"], 1000 * i + 1, "upload length %d" % i)
    c.close()
    # Addressed by IP: verified against the certificate's IP:127.0.0.1 SAN.
    t.agent("https://127.0.0.1:%d" % s.port, o, agent_id="by-ip",
            env={"CA_FILE": P("ca.pem")}, label="agent-ip")
    s.wait_tunnel_open("by-ip")


def _refused(t, serve_cert, serve_key, agent_env, message):
    """The agent's handshake fails with `message`, is logged, and retried
    with backoff; serve never opens a tunnel; no request gets through."""
    o = t.origin()
    s = tls_serve(t, cert=serve_cert, key=serve_key)
    a = t.agent(s, o, env=agent_env, wait=False)
    for attempt in (1, 2):
        a.wait_for(r"tunnel down agent=a1 reason=cannot connect to wss://localhost:%d: "
                   r"tls: certificate verify failed: .*%s.*; reconnecting in \d+\.\d+s "
                   r"\(attempt %d\)" % (s.port, message, attempt), 15)
    check(s.proc.count(r"tunnel open") == 0, "serve opened a tunnel for a refused agent")
    check(a.count(r"tunnel up") == 0, "agent reported a tunnel up")
    r = Conn(s.port)
    r.sock = _insecure_wrap(r.sock)
    r.request("GET", "/x", host="localhost")
    resp = r.read_response()
    eq(resp.status, 503, "request while the only agent is refused")
    r.close()
    return a


def _insecure_wrap(sock):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(sock)


@timed(45)
def test_wss_hostname_mismatch_refused(t):
    _refused(t, "other.pem", "other.key", {"CA_FILE": P("ca.pem")}, "hostname mismatch")


@timed(45)
def test_wss_untrusted_ca_refused(t):
    _refused(t, "server.pem", "server.key", {"CA_FILE": P("other-ca.pem")},
             r"not trusted \(unknown CA\)")


@timed(45)
def test_wss_expired_certificate_refused(t):
    a = _refused(t, "expired.pem", "expired.key", {"CA_FILE": P("ca.pem")}, "expired")
    check(a.count(r"hostname mismatch|not trusted") == 0,
          "an expired but otherwise valid certificate was blamed on something else")


def test_wss_system_bundle_does_not_trust_test_ca(t):
    """Without CA_FILE the system bundle is used: our throwaway CA is not in it."""
    _refused(t, "server.pem", "server.key", {}, r"not trusted")


def test_tls_insecure_accepts_with_warning(t):
    o = t.origin()
    s = tls_serve(t, cert="other.pem", key="other.key")
    since = s.proc.mark()
    a = t.agent(s, o, env={"TLS_INSECURE": "1"})
    a.wait_for(r"TLS_INSECURE is set: the server's certificate is not verified")
    a.wait_for(r"tls: connected to .* \(certificate NOT verified\)")
    c = Conn(s.port)
    c.sock = _insecure_wrap(c.sock)
    c.request("GET", "/name")
    eq(c.read_response().body, b"A\n", "request through an unverified wss tunnel")
    c.close()
    # The warning comes again at every connect: drop the tunnel (restart
    # serve on the same port is not portable; kill the tunnel from serve's
    # side by a same-id replacement instead).
    first = a.count(r"TLS_INSECURE is set")
    b = t.agent(s, o, env={"TLS_INSECURE": "1"}, label="agent-b")
    a.wait_for(r"tunnel down agent=a1", 15)
    a.wait_for(r"TLS_INSECURE is set", 15, since=a.last_at + 1)
    check(a.count(r"TLS_INSECURE is set") > first, "no warning on reconnect")
    check(s.proc.count(r"tunnel open", since) >= 2, "second tunnel not opened")
    b.terminate()


def test_https_local_service(t):
    o = t.origin(tls=(P("server.pem"), P("server.key")))
    s = t.serve()
    # Verified against LOCAL_CA_FILE.
    a = t.agent(s, o, env={"LOCAL_CA_FILE": P("ca.pem")})
    e = json.loads(curl(s.url + "/echo/local-tls").out)
    eq(e["path"], "/echo/local-tls", "path at the https origin")
    ports = set()
    for i in range(4):  # the pool reuses TLS connections too
        ports.add(json.loads(curl(s.url + "/echo/r%d" % i).out)["remote_port"])
    check(len(ports) < 4, "no TLS connection reuse to the local service: %r" % ports)
    big = b"".join(pattern_chunks(3 * 1024 * 1024, "ltls"))
    res = curl("--data-binary", "@-", s.url + "/upload", stdin=big, timeout=60)
    eq(json.loads(res.out)["sha256"], hashlib.sha256(big).hexdigest(), "3 MiB upload via https local")
    a.terminate()

    # Not trusted (no LOCAL_CA_FILE, system bundle): 502 with the reason logged.
    a2 = t.agent(s, o, agent_id="a2", label="agent-untrusted")
    res = curl("-w", "%{stderr}CODE=%{http_code}", s.url + "/echo/x")
    eq(curl_status(res), 502, "untrusted local certificate")
    a2.wait_for(r"agent=a2 strm=\d+ local request failed: .*not trusted")
    a2.terminate()

    # LOCAL_INSECURE accepts it, with a warning.
    a3 = t.agent(s, o, agent_id="a3", env={"LOCAL_INSECURE": "1"}, label="agent-insecure")
    a3.wait_for(r"LOCAL_INSECURE is set")
    res = curl("-w", "%{stderr}CODE=%{http_code}", s.url + "/name")
    eq((curl_status(res), res.out), (200, b"A\n"), "LOCAL_INSECURE request")


def test_plain_and_tls_listeners_in_one_process(t):
    o = t.origin()
    plain, tls = t.serve_multi(["http://127.0.0.1:0", "https://127.0.0.1:0"],
                               "--tls-cert", P("chain.pem"), "--tls-key", P("server.key"))
    eq((plain.scheme, tls.scheme), ("http", "https"), "listener schemes")
    t.agent(tls, o, env={"CA_FILE": P("ca.pem")})  # the agent comes in over wss
    e = tls_echo(tls.port, "/echo/t")
    eq(hdr(e, "X-Forwarded-Proto"), ["https"], "X-Forwarded-Proto on the TLS listener")
    c = Conn(plain.port)
    c.request("GET", "/echo/p")
    r = c.read_response()
    eq(r.status, 200, "plain listener")
    eq(hdr(r.json(), "X-Forwarded-Proto"), ["http"], "X-Forwarded-Proto on the plain listener")
    c.close()
    # A PEM chain: the server sent leaf + CA.
    res = curl("-v", "--cacert", P("ca.pem"), "https://localhost:%d/name" % tls.port)
    eq(res.out, b"A\n", "curl through the chain listener (%s)" % res.err[-300:])
    # A plain agent can use the plain listener at the same time.
    t.agent(plain, o, agent_id="plain1", label="agent-plain")


def test_sighup_reloads_certificate(t):
    d = os.path.join(t.logdir, "certs")
    os.makedirs(d)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    shutil.copy(P("server.pem"), cert)
    shutil.copy(P("server.key"), key)
    o = t.origin()
    s = t.serve("--tls-cert", cert, "--tls-key", key)
    t.agent(s, o, env={"CA_FILE": P("ca.pem")})
    live = TlsConn(s.port, cafile=P("ca.pem"))
    eq(live.peer_cert_der(), pem_to_der(P("server.pem")), "certificate before reload")
    live.request("GET", "/name", host="localhost")
    eq(live.read_response().body, b"A\n", "live connection before reload")

    shutil.copy(P("server2.pem"), cert)
    shutil.copy(P("server2.key"), key)
    mark = s.proc.mark()
    s.proc.send(signal.SIGHUP)
    s.proc.wait_for(r"tls: reloaded certificate %s" % cert, since=mark)
    fresh = TlsConn(s.port, cafile=P("ca.pem"))
    eq(fresh.peer_cert_der(), pem_to_der(P("server2.pem")), "certificate after reload")
    fresh.request("GET", "/name", host="localhost")
    eq(fresh.read_response().body, b"A\n", "new connection after reload")
    # The connection made before the reload is still up and still works.
    live.request("GET", "/name", host="localhost")
    eq(live.read_response().body, b"A\n", "live connection after reload")
    # The tunnel (a TLS connection too) survived the reload.
    check(s.proc.count(r"tunnel closed") == 0, "tunnel dropped by the reload")

    # A bad pair (key does not match) is refused; the old one stays.
    shutil.copy(P("wrong.key"), key)
    mark = s.proc.mark()
    s.proc.send(signal.SIGHUP)
    s.proc.wait_for(r"tls: reload failed, keeping the old certificate: .*does not match",
                    since=mark)
    again = TlsConn(s.port, cafile=P("ca.pem"))
    eq(again.peer_cert_der(), pem_to_der(P("server2.pem")), "certificate after a failed reload")
    again.request("GET", "/name", host="localhost")
    eq(again.read_response().body, b"A\n", "request after a failed reload")
    # A missing file too.
    os.unlink(cert)
    mark = s.proc.mark()
    s.proc.send(signal.SIGHUP)
    s.proc.wait_for(r"tls: reload failed, keeping the old certificate: .*cert\.pem", since=mark)
    live.request("GET", "/name", host="localhost")
    eq(live.read_response().body, b"A\n", "live connection after a failed reload")
    for c in (live, fresh, again):
        c.close()


def test_bad_certificate_at_start_exits_2(t):
    cases = [
        (["--tls-cert", P("server.pem"), "--tls-key", P("wrong.key")], "does not match"),
        (["--tls-cert", P("server.pem"), "--tls-key", "/nonexistent/k.pem"], "/nonexistent/k.pem"),
        (["--tls-cert", P("ca.key"), "--tls-key", P("server.key")], "not a valid PEM certificate"),
        (["--tls-cert", P("server.pem")], "tls-key"),
        (["--listen", "https://127.0.0.1:0"], "tls-cert"),
    ]
    for args, want in cases:
        rc, out = t.run_natwrp("serve-badcert", ["serve", "--listen", "127.0.0.1:0"] + args)
        ctx = "natwrp serve %s -> %s:\n%s" % (" ".join(args), rc, out)
        eq(rc, 2, "exit status: " + ctx)
        check(want in out, "reason does not mention %r: %s" % (want, ctx))
    rc, out = t.run_natwrp("agent-badca", ["agent"], env={
        "AGENT_ID": "x", "REMOTE_URL": "https://localhost:1", "LOCAL_URL": "http://127.0.0.1:1",
        "CA_FILE": "/nonexistent/ca.pem"})
    eq(rc, 2, "agent with a missing CA_FILE: %s" % out)
    check("/nonexistent/ca.pem" in out, "agent error does not name the CA file: %s" % out)


@timed(240)
def test_100mb_each_way_through_wss(t):
    o = t.origin()
    s = tls_serve(t)
    t.agent(s, o, env={"CA_FILE": P("ca.pem")})
    rc, code, n, sha, err = curl_download_sha256(
        "https://localhost:%d/bytes?n=%d&seed=wss100" % (s.port, MB100), timeout=180,
        extra=["--cacert", P("ca.pem")])
    eq((rc, code), (0, 200), "download over wss (%s)" % err)
    eq(n, MB100, "download length")
    eq(sha, pattern_sha256(MB100, "wss100"), "download sha256")
    c = TlsConn(s.port, cafile=P("ca.pem"), timeout=180)
    c.request("POST", "/upload", [("Content-Length", str(MB100))], host="localhost")
    h = hashlib.sha256()
    for b in pattern_chunks(MB100, "wssup"):
        h.update(b)
        c.send(b)
    r = c.read_response()
    eq(r.status, 200, "upload status")
    eq((r.json()["len"], r.json()["sha256"]), (MB100, h.hexdigest()), "upload at origin")
    c.close()


def test_plain_http_client_on_tls_port_closed(t):
    o = t.origin()
    s = tls_serve(t)
    t.agent(s, o, env={"CA_FILE": P("ca.pem")})
    mark = s.proc.mark()
    c = Conn(s.port, timeout=10)
    c.send(b"GET /name HTTP/1.1\r\nHost: localhost\r\n\r\n")
    check(c.wait_closed(10), "serve kept a plain-HTTP connection on its TLS port open")
    c.close()
    s.proc.wait_for(r"tls: handshake failed: peer does not speak TLS", since=mark)
    # Garbage that looks like a TLS record header, then close.
    c = Conn(s.port, timeout=10)
    c.send(b"\x16\x03\x01\x00\x05hello-not-really")
    check(c.wait_closed(10), "serve kept a garbage handshake open")
    c.close()
    # Serve is unharmed.
    e = tls_echo(s.port, "/echo/after")
    eq(e["path"], "/echo/after", "TLS request after hostile clients")


def test_stalled_handshakes_do_not_block(t):
    o = t.origin()
    s = tls_serve(t)
    t.agent(s, o, env={"CA_FILE": P("ca.pem")})
    stalled = []
    for i in range(20):
        c = Conn(s.port)
        if i % 2:
            c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # half a ClientHello
        stalled.append(c)
    # Meanwhile, full handshakes and requests go through at once.
    for i in range(5):
        eq(tls_echo(s.port, "/echo/ok%d" % i)["path"], "/echo/ok%d" % i, "request beside stalls")
    # A TLS client that stops reading mid-handshake does not hurt others either.
    raw = socket.create_connection(("127.0.0.1", s.port))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(P("ca.pem"))
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inb, outb, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    raw.sendall(outb.read())  # ClientHello sent; the answer is never read
    eq(tls_echo(s.port, "/echo/still")["path"], "/echo/still", "request beside a stuck client")
    for c in stalled:
        c.close()
    raw.close()


def _tls12_handshake(port, cipher):
    """True if serve completes a TLS 1.2 handshake offering only cipher
    (an OpenSSL name), False if it refuses, None if this OpenSSL lacks it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.set_ciphers(cipher + ":@SECLEVEL=0")
    except ssl.SSLError:
        return None
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        with ctx.wrap_socket(raw, server_hostname="localhost") as c:
            return c.cipher()[0] == cipher
    except (ssl.SSLError, ConnectionError):
        return False
    finally:
        raw.close()


@timed(60)
def test_tls_server_offers_only_forward_secret_aead(t):
    """serve offered every suite of mbedTLS: CBC with SHA-1, CCM, CAMELLIA
    and, with an RSA key, static RSA (no forward secrecy): what TLS
    scanners and Mozilla's "intermediate" profile flag. It now takes only
    ECDHE (or DHE-RSA) with AES-GCM or ChaCha20-Poly1305, for an ECDSA
    and an RSA certificate alike."""
    d = os.path.join(t.logdir, "rsa")
    os.makedirs(d)
    rsa_key, rsa_cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        rsa_key, "-out", rsa_cert, "-days", "2", "-subj", "/CN=localhost"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    eq(r.returncode, 0, "openssl req for an RSA certificate: %r" % r.stderr[-300:])
    cases = {
        "ecdsa": (tls_serve(t, label="serve-ecdsa"),
                  ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                   "ECDHE-ECDSA-CHACHA20-POLY1305"],
                  ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384",
                   "ECDHE-ECDSA-AES128-CCM", "ECDHE-ECDSA-AES128-CCM8",
                   "ECDHE-ECDSA-CAMELLIA128-SHA256"]),
        "rsa": (t.serve("--tls-cert", rsa_cert, "--tls-key", rsa_key, label="serve-rsa"),
                ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305",
                 "DHE-RSA-AES128-GCM-SHA256"],
                ["AES128-SHA", "AES256-SHA256", "AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA",
                 "DHE-RSA-AES256-SHA", "CAMELLIA128-SHA"]),
    }
    for kind, (s, taken, refused) in cases.items():
        for c in taken:
            eq(_tls12_handshake(s.port, c), True, "%s certificate: %s taken" % (kind, c))
        for c in refused:
            check(_tls12_handshake(s.port, c) in (False, None),
                  "%s certificate: %s must be refused" % (kind, c))
