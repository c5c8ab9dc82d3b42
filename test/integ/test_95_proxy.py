"""95 behind a reverse proxy: nginx terminates TLS in front of a plain
`natwrp serve`, forwards the agent's WebSocket upgrade and ordinary
requests, and serve's --trust-proxy decides whether nginx's X-Forwarded-*
values are kept (trusted) or replaced (the default, so that nobody can
spoof a client address). The nginx configuration is the one README.md
documents. nginx comes from scripts/deps.sh --nginx (make test runs it)."""

import json
import os
import shutil
import socket
import time

from harness import TlsConn, check, curl, curl_download_sha256, eq, fail, hdr, pattern_sha256, pki

P = pki()

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate     {cert};
        ssl_certificate_key {key};
        client_max_body_size 0;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1d;
            proxy_send_timeout 1d;
        }}
    }}
}}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def nginx(t, upstream):
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(exe, os.X_OK):
        fail("nginx is not installed (scripts/deps.sh --nginx installs it)")
    d = os.path.join(t.logdir, "nginx")
    os.makedirs(d)
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=d, port=port, upstream=upstream, cert=P("chain.pem"),
                                  key=P("server.key")))
    p = t.spawn("nginx", [exe, "-c", conf, "-p", d, "-e", "stderr"])
    # nginx logs nothing when it is ready; probe the port, bounded.
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port
        except OSError:
            if not p.alive() or time.monotonic() > deadline:
                fail("nginx did not start:\n%s" % p.tail_text())
            time.sleep(0.05)


def _through_nginx(t, trust):
    o = t.origin()
    s = t.serve(*(["--trust-proxy"] if trust else []))
    port = nginx(t, s.port)
    url = "https://localhost:%d" % port
    # The agent's tunnel goes through nginx as wss (nginx forwards the upgrade).
    t.agent(url, o, env={"CA_FILE": P("ca.pem")})
    s.wait_tunnel_open("a1")
    res = curl("--cacert", P("ca.pem"), "-H", "X-Forwarded-For: 6.6.6.6", url + "/echo/p?x=1")
    eq(res.rc, 0, "curl through nginx (%s)" % res.err)
    e = json.loads(res.out)
    eq(e["path"], "/echo/p?x=1", "path at the origin")
    return o, s, port, e


def test_behind_nginx_trust_proxy(t):
    o, s, port, e = _through_nginx(t, trust=True)
    # nginx appended the client (127.0.0.1) to the spoofed value; serve,
    # trusting nginx, appended nginx's own address.
    xff = [x.strip() for x in ",".join(hdr(e, "X-Forwarded-For")).split(",")]
    eq(xff, ["6.6.6.6", "127.0.0.1", "127.0.0.1"], "X-Forwarded-For via a trusted proxy")
    eq(hdr(e, "X-Forwarded-Proto"), ["https"], "X-Forwarded-Proto from nginx kept")
    eq(hdr(e, "X-Forwarded-Host"), ["localhost:%d" % port], "X-Forwarded-Host (the public Host)")
    # Streaming through both hops: 20 MB byte-exact.
    n = 20 * 1024 * 1024
    rc, code, got, sha, err = curl_download_sha256(
        "https://localhost:%d/bytes?n=%d&seed=ngx" % (port, n), timeout=120,
        extra=["--cacert", P("ca.pem")])
    eq((rc, code, got), (0, 200, n), "download through nginx (%s)" % err)
    eq(sha, pattern_sha256(n, "ngx"), "sha256 through nginx")
    # Keep-alive through nginx: several requests on one TLS connection.
    c = TlsConn(port, cafile=P("ca.pem"))
    for i in range(3):
        c.request("GET", "/name", host="localhost")
        eq(c.read_response().body, b"A\n", "request %d on one connection via nginx" % i)
    c.close()


def test_behind_nginx_without_trust_proxy(t):
    o, s, port, e = _through_nginx(t, trust=False)
    # Without --trust-proxy nothing nginx (or the client) said is kept:
    # the client address is nginx's, and the scheme is serve's own.
    eq(hdr(e, "X-Forwarded-For"), ["127.0.0.1"], "X-Forwarded-For not trusted")
    eq(hdr(e, "X-Forwarded-Proto"), ["http"], "X-Forwarded-Proto not trusted")
    check("6.6.6.6" not in json.dumps(e), "spoofed address reached the origin")
