"""d1: the agent's HTTP face for browser apps (issue 11): PRESERVE_HOST sends
the public Host to the local service, and Location, Content-Location and
Refresh URLs that point at LOCAL_URL (or at the Host sent) are rewritten to
the public origin the client used (REWRITE_LOCATION, on by default).

The local service is a small HTTP server in this process: /redir answers
with the response fields its query names, /jupyter refuses (403) a request
whose Origin host differs from its Host, as Jupyter's server does."""

import http.server
import json
import threading
import urllib.parse

from harness import check, eq, http_request, timed


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def answer(self, code, fields=(), body=b""):
        self.send_response(code)
        for k, v in fields:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        # Read the body, or the keep-alive connection would start with it.
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qsl(url.query)
        seen = json.dumps({"host": self.headers.get("Host"),
                           "xfh": self.headers.get("X-Forwarded-Host")}).encode()
        if url.path.endswith("/redir"):
            # ?h=Name:Value, repeated: the fields to answer with.
            fields = [tuple(v.split(":", 1)) for k, v in q if k == "h"]
            self.answer(302, fields, seen)
        elif url.path.endswith("/jupyter"):
            origin = self.headers.get("Origin")
            host = self.headers.get("Host")
            if origin and urllib.parse.urlsplit(origin).netloc != host:
                self.answer(403, body=b"origin %s does not match host %s" % (
                    origin.encode(), host.encode()))
            else:
                self.answer(200, body=seen)
        else:
            self.answer(200, body=seen)

    do_POST = do_GET


def local_service(t):
    """Start the service; returns its port (it stops with the test process)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def stack(t, env=None, local_fmt="http://127.0.0.1:%d", serve_args=()):
    port = local_service(t)
    s = t.serve(*serve_args)
    t.agent(s, local_fmt % port, env=env)
    return s, port


def redir(s, fields, host="public.example.com", headers=()):
    """GET /redir from serve, the service answering with fields; returns the
    response."""
    q = urllib.parse.urlencode([("h", "%s:%s" % kv) for kv in fields])
    r = http_request(s.port, "GET", "/redir?" + q, [("Host", host)] + list(headers))
    eq(r.status, 302, "status of /redir (body %r)" % r.body[:200])
    return r


@timed(40)
def test_d1_location_rewritten(t):
    """Absolute URLs at LOCAL_URL's origin become the public origin; paths,
    queries and fragments stay; relative and foreign URLs pass unchanged."""
    s, lp = stack(t)
    local = "http://127.0.0.1:%d" % lp
    cases = [
        (("Location", local + "/login?next=%2Fa#f"), "http://public.example.com/login?next=%2Fa#f"),
        (("Location", local), "http://public.example.com"),
        (("Location", local + "?q=1"), "http://public.example.com?q=1"),
        (("Content-Location", local + "/doc/1"), "http://public.example.com/doc/1"),
        (("Refresh", "5; url=" + local + "/next"), "5; url=http://public.example.com/next"),
        (("Refresh", "0;URL='%s/q'" % local), "0;URL='http://public.example.com/q'"),
        # relative: unchanged
        (("Location", "/relative/path"), "/relative/path"),
        (("Location", "other?x=1"), "other?x=1"),
        (("Location", "//elsewhere.example/x"), "//elsewhere.example/x"),
        (("Refresh", "3"), "3"),
        (("Refresh", "3; url=/rel"), "3; url=/rel"),
        # foreign: unchanged (another host, another port, another scheme,
        # user info)
        (("Location", "http://foreign.example/x"), "http://foreign.example/x"),
        (("Location", "http://127.0.0.1:%d/x" % (lp + 1 if lp < 65535 else lp - 1)),
         "http://127.0.0.1:%d/x" % (lp + 1 if lp < 65535 else lp - 1)),
        (("Location", "https://127.0.0.1:%d/x" % lp), "https://127.0.0.1:%d/x" % lp),
        (("Location", "http://u@127.0.0.1:%d/x" % lp), "http://u@127.0.0.1:%d/x" % lp),
        (("Location", "ftp://127.0.0.1:%d/x" % lp), "ftp://127.0.0.1:%d/x" % lp),
        (("Location", "http://127.0.0.1:/x"), "http://127.0.0.1:/x"),  # port 80
    ]
    for field, want in cases:
        r = redir(s, [field])
        eq(r.header(field[0]), want, "%s: %s" % field)
    # Several at once, each rewritten on its own.
    r = redir(s, [("Location", local + "/a"), ("Content-Location", "/b"),
                  ("Refresh", "1; url=%s/c" % local)])
    eq((r.header("Location"), r.header("Content-Location"), r.header("Refresh")),
       ("http://public.example.com/a", "/b", "1; url=http://public.example.com/c"),
       "three fields in one response")


@timed(40)
def test_d1_location_case_and_default_ports(t):
    """Scheme and host compare case-insensitively (LOCAL_URL http://LocalHost);
    the public origin is a trusted proxy's X-Forwarded-Proto and
    X-Forwarded-Host, port included."""
    port = local_service(t)
    s = t.serve("--trust-proxy")
    t.agent(s, "http://LocalHost:%d" % port)
    cases = [
        ("HTTP://LOCALHOST:%d/x" % port, "https://pub.example.com:8443/x"),
        ("http://localhost:%d/x" % port, "https://pub.example.com:8443/x"),
        ("Http://LocalHost:%d" % port, "https://pub.example.com:8443"),
    ]
    xf = [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "pub.example.com:8443")]
    for loc, want in cases:
        r = redir(s, [("Location", loc)], headers=xf)
        eq(r.header("Location"), want, "Location %s" % loc)


@timed(40)
def test_d1_location_default_port_equal_absent(t):
    """With PRESERVE_HOST the service sees Host "app.example.com" (no port):
    http://app.example.com:80/x and http://APP.example.com/x both point at
    the Host sent, and become the public origin https://app.example.com
    (through a trusted proxy saying https). :443 under https is the same."""
    s, lp = stack(t, env={"PRESERVE_HOST": "1"}, serve_args=("--trust-proxy",))
    xf = [("X-Forwarded-Proto", "https")]
    for loc, want in [("http://app.example.com:80/x", "https://app.example.com/x"),
                      ("http://APP.example.com/x", "https://app.example.com/x"),
                      ("https://app.example.com:443/y", "https://app.example.com/y"),
                      ("https://app.example.com:80/y", "https://app.example.com:80/y"),
                      ("http://app.example.com:8080/z", "http://app.example.com:8080/z")]:
        r = redir(s, [("Location", loc)], host="app.example.com", headers=xf)
        eq(r.header("Location"), want, "Location %s" % loc)


@timed(40)
def test_d1_rewrite_location_off(t):
    """REWRITE_LOCATION=0 (and --rewrite-location=0) pass every URL unchanged."""
    port = local_service(t)
    s = t.serve()
    local = "http://127.0.0.1:%d" % port
    t.agent(s, local, env={"REWRITE_LOCATION": "0"})
    r = redir(s, [("Location", local + "/x"), ("Refresh", "1; url=%s/y" % local)])
    eq((r.header("Location"), r.header("Refresh")), (local + "/x", "1; url=%s/y" % local),
       "REWRITE_LOCATION=0")
    s2 = t.serve(label="serve2")
    t.agent(s2, local, agent_id="a2", args=["--rewrite-location=0"], label="agent2")
    r = redir(s2, [("Location", local + "/x")])
    eq(r.header("Location"), local + "/x", "--rewrite-location=0")


@timed(40)
def test_d1_preserve_host(t):
    """PRESERVE_HOST=1: the service gets the public Host (the client's Host,
    or a trusted proxy's X-Forwarded-Host); without it, LOCAL_URL's."""
    s, lp = stack(t, env={"PRESERVE_HOST": "1"})
    r = http_request(s.port, "GET", "/seen", [("Host", "App.Example.com:8080")])
    eq(r.status, 200, "status")
    eq(json.loads(r.body)["host"], "App.Example.com:8080", "Host with PRESERVE_HOST")
    s2 = t.serve("--trust-proxy", label="serve2")
    t.agent(s2, "http://127.0.0.1:%d" % lp, agent_id="a2", args=["--preserve-host"],
            label="agent2")
    r = http_request(s2.port, "GET", "/seen", [("Host", "10.0.0.1:81"),
                                               ("X-Forwarded-Host", "pub.example.com")])
    eq(json.loads(r.body)["host"], "pub.example.com", "Host from a trusted X-Forwarded-Host")
    s3 = t.serve(label="serve3")
    t.agent(s3, "http://127.0.0.1:%d" % lp, agent_id="a3", label="agent3")
    r = http_request(s3.port, "GET", "/seen", [("Host", "app.example.com")])
    eq(json.loads(r.body)["host"], "127.0.0.1:%d" % lp, "Host without PRESERVE_HOST")


@timed(40)
def test_d1_jupyter_origin_check(t):
    """A service that, as Jupyter, refuses a request whose Origin host differs
    from its Host: a browser's same-origin POST passes with PRESERVE_HOST=1
    and is refused (403) without it; then the agent logs, once, that the
    service may need PRESERVE_HOST=1. A refusal of a foreign Origin (a
    cross-site request, refused whatever the Host) or one with PRESERVE_HOST
    set gets no such line."""
    hint = r"warn .*the local service answered 403 .*needs PRESERVE_HOST=1"
    port = local_service(t)
    hdrs = [("Host", "nb.example.com"), ("Origin", "http://nb.example.com")]
    s = t.serve()
    a = t.agent(s, "http://127.0.0.1:%d" % port, env={"PRESERVE_HOST": "1"})
    r = http_request(s.port, "POST", "/api/kernels/jupyter", hdrs, body=b"{}")
    eq(r.status, 200, "same-origin POST with PRESERVE_HOST=1 (body %r)" % r.body[:200])
    r = http_request(s.port, "POST", "/api/kernels/jupyter",
                     [("Host", "nb.example.com"), ("Origin", "http://evil.example")], body=b"{}")
    eq(r.status, 403, "a cross-site POST with PRESERVE_HOST=1")
    s3 = t.serve(label="serve3")
    a3 = t.agent(s3, "http://127.0.0.1:%d" % port, agent_id="a3", label="agent3")
    for origin in ("https://nb.example.com", "http://nb.example.com:81", "http://evil.example",
                   "null"):
        r = http_request(s3.port, "POST", "/api/kernels/jupyter",
                         [("Host", "nb.example.com"), ("Origin", origin)], body=b"{}")
        eq(r.status, 403, "a POST from %s without PRESERVE_HOST" % origin)
    s2 = t.serve(label="serve2")
    a2 = t.agent(s2, "http://127.0.0.1:%d" % port, agent_id="a2", label="agent2")
    r = http_request(s2.port, "POST", "/api/kernels/jupyter", hdrs, body=b"{}")
    eq(r.status, 403, "the same POST without PRESERVE_HOST")
    a2.wait_for(hint, 10)
    for _ in range(2):
        r = http_request(s2.port, "POST", "/api/kernels/jupyter", hdrs, body=b"{}")
        eq(r.status, 403, "the same POST again")
    eq(a2.count(hint), 1, "the hint is logged once")
    eq(a.count(hint), 0, "no hint with PRESERVE_HOST=1")
    eq(a3.count(hint), 0, "no hint for Origins other than the public one")


@timed(30)
def test_d1_bad_settings(t):
    """PRESERVE_HOST and REWRITE_LOCATION take 1/0 (true/false, yes/no,
    on/off); anything else exits 2 naming the setting."""
    for env, args, name in [({"PRESERVE_HOST": "maybe"}, [], "PRESERVE_HOST"),
                            ({"REWRITE_LOCATION": "2"}, [], "REWRITE_LOCATION"),
                            ({}, ["--rewrite-location=nope"], "--rewrite-location"),
                            ({}, ["--preserve-host=x"], "--preserve-host")]:
        e = {"AGENT_ID": "a1", "REMOTE_URL": "http://127.0.0.1:1",
             "LOCAL_URL": "http://127.0.0.1:2"}
        e.update(env)
        rc, out = t.run_natwrp("agent", ["agent"] + args, env=e)
        eq(rc, 2, "exit status for %s %s" % (env, args))
        check(name in out, "the error names %s: %r" % (name, out))
