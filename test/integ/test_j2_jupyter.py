"""j2: a real Jupyter Notebook server (Debian's jupyter-notebook, notebook 6)
behind natwrp, used as a browser and a client library use it, through
serve's public URL: the tree page and its static assets, the token login
(the login form POST with its _xsrf cookie, and Authorization: token),
contents, a kernel whose WebSocket runs print(6*7) (Jupyter messaging
protocol v5, JSON text frames), interrupt and restart, a terminal over its
WebSocket, and shutdown; over plain http and over https (a certificate from
the test CA for the public name). Headless Chromium opens a notebook by the
URL Jupyter prints and runs its cell (the kernel's WebSocket watched over
DevTools), also behind README's Jupyter route (ROUTES, AUTH_BASIC) over https.

The agent is configured as README says for Jupyter (PRESERVE_HOST=1), and the
public name is not a loopback one (jupyter.example.test, which the clients
send as Host while they connect to 127.0.0.1), so Jupyter's own
allow_remote_access check is met as a user meets it. Without PRESERVE_HOST,
Jupyter refuses a browser's WebSocket (403) and its API writes (404), as its
Origin names the public host while its Host names LOCAL_URL: the agent says
so in one warning line naming PRESERVE_HOST.

Jupyter comes from scripts/deps.sh --jupyter (make test runs it)."""

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import urllib.parse
import uuid

import wsclient
from harness import Conn, TlsConn, check, eq, fail, pki, timed, wait_any

PUBLIC = "jupyter.example.test"
TOKEN = "j2-token-0123456789abcdef"
JUPYTER_VARS = ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                "JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "IPYTHONDIR", "JUPYTER_TOKEN")


def find_jupyter():
    exe = shutil.which("jupyter-notebook")
    if not exe:
        fail("jupyter-notebook is not installed (scripts/deps.sh --jupyter installs it)")
    return exe


def free_port():
    # notebook 6 prints the port it was given, so it needs a fixed one.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_jupyter(t, extra=()):
    """A notebook server on 127.0.0.1 with a token, in its own directories
    (no user configuration). Returns its LOCAL_URL."""
    exe = find_jupyter()
    home = os.path.join(t.logdir, "jupyter")
    nbdir = os.path.join(home, "notebooks")
    os.makedirs(nbdir, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in JUPYTER_VARS}
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")):
        env[var] = os.path.join(home, sub)
    env["PYTHONUNBUFFERED"] = "1"
    env["SHELL"] = "/bin/sh"
    for attempt in range(3):
        port = free_port()
        argv = [exe, "--no-browser", "--allow-root", "--ip=127.0.0.1", "--port=%d" % port,
                "--port-retries=0", "--NotebookApp.token=" + TOKEN,
                "--notebook-dir=" + nbdir] + list(extra)
        p = t.spawn("jupyter", argv, env=env, cwd=home)
        _, m = wait_any([(p, r"is running at", 0), (p, r"already in use", 0)], 30)
        if "running" in m.group(0):
            p.local_url = "http://127.0.0.1:%d" % port
            return p, p.local_url
        p.wait_exit(10)  # another process took the free port meanwhile: again
    fail("jupyter found no free port in 3 attempts")


class Client:
    """HTTP/1.1 to serve's public URL as a browser (cookies, Origin, the
    X-XSRFToken Jupyter's JavaScript sends) or a script (Authorization:
    token) would; connects to 127.0.0.1 but names PUBLIC in Host."""

    def __init__(self, serve, cafile=None):
        self.serve = serve
        self.tls = serve.scheme == "https"
        self.cafile = cafile
        self.host = "%s:%d" % (PUBLIC, serve.port)
        self.origin = "%s://%s" % (serve.scheme, self.host)
        self.cookies = {}
        self.auth = None  # "cookie" (a browser) or "token" (a script)
        self._c = None

    def close(self):
        if self._c is not None:
            self._c.close()
            self._c = None

    def conn(self):
        if self.tls:
            return TlsConn(self.serve.port, cafile=self.cafile, server_name=PUBLIC, timeout=20)
        return Conn(self.serve.port, timeout=20)

    def headers(self, method, extra=()):
        h = [("Host", self.host)]
        if self.cookies:
            h.append(("Cookie", "; ".join("%s=%s" % kv for kv in self.cookies.items())))
        if self.auth == "token":
            h.append(("Authorization", "token " + TOKEN))
        elif method not in ("GET", "HEAD"):
            # What a browser's fetch from the notebook page sends.
            h.append(("Origin", self.origin))
            if "_xsrf" in self.cookies:
                h.append(("X-XSRFToken", self.cookies["_xsrf"]))
        return h + list(extra)

    def request(self, method, path, body=None, extra=(), json_body=None):
        if json_body is not None:
            body = json.dumps(json_body).encode()
            extra = list(extra) + [("Content-Type", "application/json")]
        # One keep-alive connection, as a browser keeps one.
        if self._c is None:
            self._c = self.conn()
        try:
            self._c.request(method, path, self.headers(method, extra), body)
            r = self._c.read_response(method)
        except BaseException:
            self.close()
            raise
        if (r.header("Connection") or "").lower() == "close" or self._c.closed_by_peer:
            self.close()
        check(r.complete, "%s %s: response cut short" % (method, path))
        for v in r.header_all("Set-Cookie"):
            name, _, rest = v.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return r

    def expect(self, method, path, status, **kw):
        r = self.request(method, path, **kw)
        eq(r.status, status, "%s %s status (body %r)" % (method, path, r.body[:300]))
        return r

    def ws(self, path, **kw):
        headers = [("Cookie", "; ".join("%s=%s" % kv for kv in self.cookies.items()))] \
            if self.cookies else []
        if self.auth == "token":
            headers.append(("Authorization", "token " + TOKEN))
        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.cafile)
        # A browser always sends Origin on a WebSocket handshake.
        return wsclient.connect(self.serve.port, path, headers=headers, host_header=self.host,
                                origin=self.origin, tls=ctx, server_name=PUBLIC,
                                timeout=20, **kw)


def login_form(c):
    """The browser's way in: /tree redirects to the login page, whose form
    carries _xsrf (also set as a cookie); POSTing the token as the password
    sets the login cookie and redirects back."""
    r = c.expect("GET", "/tree", 302)
    loc = r.header("Location")
    check(loc and "/login" in loc, "/tree redirects to the login page: %r" % loc)
    if loc.startswith("http"):
        check(loc.startswith(c.origin + "/"),
              "an absolute redirect names the public origin: %r (want %s)" % (loc, c.origin))
    path = loc[len(c.origin):] if loc.startswith("http") else loc
    r = c.expect("GET", path, 200)
    check("_xsrf" in c.cookies, "the login page sets the _xsrf cookie: %r" % r.headers)
    m = re.search(rb'name="_xsrf" value="([^"]+)"', r.body)
    check(m, "the login form has an _xsrf field")
    form = urllib.parse.urlencode({"_xsrf": m.group(1).decode(), "password": TOKEN}).encode()
    r = c.request("POST", path, body=form,
                  extra=[("Content-Type", "application/x-www-form-urlencoded"),
                         ("Referer", c.origin + path)])
    eq(r.status, 302, "login POST status (body %r)" % r.body[:300])
    check(any(k.startswith("username-") for k in c.cookies),
          "login sets the session cookie: %r" % list(c.cookies))
    loc = r.header("Location") or ""
    check(loc.endswith("/tree") or loc.endswith("/tree?"), "after login: %r" % loc)
    c.auth = "cookie"


def tree_and_assets(c):
    r = c.expect("GET", "/tree", 200)
    page = r.text()
    check("Notebook" in page or "notebook" in page, "the tree page: %r" % page[:200])
    srcs = re.findall(r'src="(/static/[^"?]+)', page) + \
        re.findall(r'href="(/static/[^"?]+\.css)', page)
    check(len(srcs) >= 2, "static assets referenced by the tree page: %r" % srcs)
    for path in srcs[:6]:
        a = c.expect("GET", path, 200)
        check(a.body, "static asset %s is empty" % path)


def send_msg(ws, msg_type, content, session, channel="shell"):
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "j2", "session": session,
                   "msg_type": msg_type, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": channel, "buffers": [],
        "content": content}))
    return msg_id


def replies(ws, msg_id):
    """The messages whose parent is msg_id, until the kernel's status goes
    back to idle after the reply."""
    reply, idle = None, False
    while reply is None or not idle:
        m = ws.recv(timeout=20)
        if m.opcode != wsclient.OP_TEXT:
            continue
        msg = json.loads(m.text)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if kind.endswith("_reply"):
            reply = msg
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
        yield msg


def kernel_ready(ws, session):
    """What the notebook's JavaScript does on a new kernel WebSocket: a
    kernel_info_request, answered once the kernel is up."""
    msg_id = send_msg(ws, "kernel_info_request", {}, session)
    info = [m for m in replies(ws, msg_id) if m["header"]["msg_type"] == "kernel_info_reply"]
    eq(info[0]["content"]["status"], "ok", "kernel_info_reply")


def execute(ws, code, session):
    """An execute_request on the shell channel; returns (stdout stream
    text, the execute_reply content)."""
    msg_id = send_msg(ws, "execute_request", {
        "code": code, "silent": False, "store_history": True, "user_expressions": {},
        "allow_stdin": False, "stop_on_error": True}, session)
    out, reply = "", None
    for msg in replies(ws, msg_id):
        kind = msg["header"]["msg_type"]
        if kind == "stream" and msg["content"]["name"] == "stdout":
            out += msg["content"]["text"]
        elif kind == "execute_reply":
            reply = msg["content"]
    return out, reply


def kernel_session(c):
    """Contents, a kernel, its WebSocket, interrupt, restart, shutdown."""
    r = c.expect("POST", "/api/contents", 201, json_body={"type": "notebook"})
    nb = r.json()
    eq(nb["type"], "notebook", "new notebook")
    name = "j2.ipynb"
    c.expect("PATCH", "/api/contents/" + urllib.parse.quote(nb["path"]), 200,
             json_body={"path": name})
    body = {"type": "notebook", "format": "json", "content": {
        "cells": [{"cell_type": "code", "source": "print(6*7)", "metadata": {},
                   "outputs": [], "execution_count": None}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
    c.expect("PUT", "/api/contents/" + name, 200, json_body=body)
    got = c.expect("GET", "/api/contents/" + name, 200).json()
    eq(got["content"]["cells"][0]["source"], "print(6*7)", "notebook saved and read back")
    r = c.expect("POST", "/api/sessions", 201, json_body={
        "path": name, "type": "notebook", "name": name, "kernel": {"name": "python3"}})
    sess = r.json()
    kid = sess["kernel"]["id"]
    sid = uuid.uuid4().hex
    ws_path = "/api/kernels/%s/channels?session_id=%s" % (kid, sid)
    ws = c.ws(ws_path)
    try:
        kernel_ready(ws, sid)
        out, reply = execute(ws, "print(6*7)", sid)
        eq(out, "42\n", "stream output of print(6*7)")
        eq(reply["status"], "ok", "execute_reply status")
        # Interrupt a cell that would run for a minute: KeyboardInterrupt.
        msg_id = send_msg(ws, "execute_request", {
            "code": "import time\nprint('sleeping', flush=True)\ntime.sleep(60)",
            "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True}, sid)
        msgs = replies(ws, msg_id)
        for msg in msgs:
            if msg["header"]["msg_type"] == "stream":
                break
        c.expect("POST", "/api/kernels/%s/interrupt" % kid, 204)
        reply = [m for m in msgs if m["header"]["msg_type"] == "execute_reply"][0]
        eq((reply["content"]["status"], reply["content"].get("ename")),
           ("error", "KeyboardInterrupt"), "the interrupted cell's reply")
        # The notebook's JavaScript closes its channels, restarts, reopens.
        eq(ws.close(1000, "restart", timeout=20)[0], 1000, "kernel WebSocket close code")
    finally:
        ws.close_socket()
    r = c.expect("POST", "/api/kernels/%s/restart" % kid, 200)
    eq(r.json()["id"], kid, "restarted kernel id")
    ws = c.ws(ws_path)
    try:
        kernel_ready(ws, sid)
        out, reply = execute(ws, "x = 6\nprint(x*7)", sid)
        eq((out, reply["status"]), ("42\n", "ok"), "after the restart")
        eq(ws.close(1000, "bye", timeout=20)[0], 1000, "kernel WebSocket close code")
    finally:
        ws.close_socket()
    c.expect("DELETE", "/api/sessions/" + sess["id"], 204)
    kernels = c.expect("GET", "/api/kernels", 200).json()
    check(kid not in [k["id"] for k in kernels], "kernel %s still listed: %r" % (kid, kernels))
    c.expect("DELETE", "/api/contents/" + name, 204)


def big_transfers(c):
    """Large messages both ways: a 3 MB file upload (PUT, JSON), read back
    from /api/contents and as a raw file from /files/ (with the browser's
    Referer, which Jupyter checks there), a 2 MB cell output on the kernel
    WebSocket, and a static asset revalidated (304)."""
    blob = "".join("%07d\n" % i for i in range(375000))  # 3 MB of text
    c.expect("PUT", "/api/contents/big.txt", 201,
             json_body={"type": "file", "format": "text", "content": blob})
    got = c.expect("GET", "/api/contents/big.txt?content=1&format=text", 200).json()
    check(got["content"] == blob, "the uploaded file read back unchanged (%d bytes, want %d)"
          % (len(got["content"]), len(blob)))
    r = c.expect("GET", "/files/big.txt", 200, extra=[("Referer", c.origin + "/tree")])
    check(r.body == blob.encode(), "/files/big.txt: %d bytes, want %d" % (len(r.body), len(blob)))
    kid = c.expect("POST", "/api/kernels", 201, json_body={"name": "python3"}).json()["id"]
    sid = uuid.uuid4().hex
    ws = c.ws("/api/kernels/%s/channels?session_id=%s" % (kid, sid))
    try:
        kernel_ready(ws, sid)
        out, reply = execute(ws, "print('x' * 2000000)", sid)
        eq((len(out), reply["status"]), (2000001, "ok"), "a 2 MB output")
    finally:
        ws.close_socket()
    c.expect("DELETE", "/api/kernels/" + kid, 204)
    c.expect("DELETE", "/api/contents/big.txt", 204)
    r = c.expect("GET", "/static/base/js/namespace.js", 200)
    mod = r.header("Last-Modified")
    check(mod, "static assets carry Last-Modified: %r" % r.headers)
    r = c.expect("GET", "/static/base/js/namespace.js", 304, extra=[("If-Modified-Since", mod)])
    eq(r.body, b"", "the 304 has no body")
    c.expect("GET", "/api/status", 200)  # the connection after a 304 is sound


def terminal_session(c):
    """A terminal: POST /api/terminals, then its WebSocket speaks terminado's
    JSON lists (["stdin", ...] in, ["stdout", ...] out)."""
    r = c.expect("POST", "/api/terminals", 200)
    name = r.json()["name"]
    ws = c.ws("/terminals/websocket/" + name)
    try:
        ws.send(json.dumps(["stdin", "echo j2-$((6*7))-done\r"]))
        out = ""
        while "j2-42-done" not in out:
            m = ws.recv(timeout=20)
            if m.opcode == wsclient.OP_TEXT:
                msg = json.loads(m.text)
                if msg[0] == "stdout":
                    out += msg[1]
    finally:
        ws.close_socket()
    c.expect("DELETE", "/api/terminals/" + name, 204)


def public_cert(t):
    """A leaf for PUBLIC signed by the test CA: serve's certificate for the
    name the browser uses (and localhost, the name the agent dials, as
    PUBLIC resolves nowhere)."""
    ca = pki()
    out = os.path.join(t.logdir, "public")
    ext = out + ".ext"
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                "subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n" % PUBLIC)
    for argv in (["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout",
                  out + ".key", "-subj", "/CN=" + PUBLIC, "-out", out + ".csr"],
                 ["openssl", "x509", "-req", "-in", out + ".csr", "-CA", ca("ca.pem"),
                  "-CAkey", ca("ca.key"), "-set_serial", "4242", "-days", "30", "-sha256",
                  "-extfile", ext, "-out", out + ".pem"]):
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        check(r.returncode == 0, "%s: %s" % (" ".join(argv[:2]), r.stdout.decode()[-300:]))
    return ca("ca.pem"), out + ".pem", out + ".key"


def jupyter_stack(t, tls=False, agent_env=None,
                  jupyter_args=("--NotebookApp.allow_remote_access=True",)):
    jp, local = start_jupyter(t, jupyter_args)
    cafile = None
    args = ()
    if tls:
        cafile, cert, key = public_cert(t)
        args = ("--tls-cert", cert, "--tls-key", key)
    s = t.serve(*args)
    env = dict(agent_env if agent_env is not None else {"PRESERVE_HOST": "1"})
    if tls:
        env["CA_FILE"] = cafile
    a = t.agent(s, local, env=env)
    return jp, s, a, cafile


def shutdown(c, jp):
    c.expect("POST", "/api/shutdown", 200)
    rc = jp.wait_exit(20)
    eq(rc, 0, "jupyter exit status after /api/shutdown")


@timed(60)
def test_j2_jupyter_browser_flow_http(t):
    """As README configures it (PRESERVE_HOST=1), over http, what a browser
    does: the login form, the tree page and its assets, a notebook written
    and read, a session's kernel on its WebSocket (print(6*7), an interrupt
    of a running cell, a restart), a terminal, and shutdown."""
    jp, s, a, _ = jupyter_stack(t)
    c = Client(s)
    login_form(c)
    tree_and_assets(c)
    kernel_session(c)
    terminal_session(c)
    shutdown(c, jp)


@timed(60)
def test_j2_jupyter_https_browser_and_script(t):
    """The same over https, then what a client library does (its token in
    Authorization, no cookie, no Origin), with large transfers both ways."""
    jp, s, a, cafile = jupyter_stack(t, tls=True)
    c = Client(s, cafile)
    login_form(c)
    tree_and_assets(c)
    kernel_session(c)
    # A client library: no cookie, no Origin, Authorization: token.
    lib = Client(s, cafile)
    lib.auth = "token"
    check(lib.expect("GET", "/api/status", 200).json().get("started"), "/api/status")
    kernel_session(lib)
    big_transfers(lib)
    terminal_session(lib)
    shutdown(lib, jp)


HINT = (r"warn .*agent=a1 the local service answered (403|404) to a browser request whose "
        r"(Origin|Referer) is the public origin .*needs PRESERVE_HOST=1")


@timed(60)
def test_j2_jupyter_without_preserve_host(t):
    """README's defaults alone (Host rewritten to LOCAL_URL's): a script
    with its token works (Jupyter skips its Origin check for it), and so do
    the browser's login and pages; but the browser's file downloads (403:
    its Referer), API writes (404) and kernel WebSocket (403: their Origin)
    are refused, as those name the public host. The agent says why, once,
    naming PRESERVE_HOST."""
    jp, s, a, _ = jupyter_stack(t, agent_env={})
    lib = Client(s)
    lib.auth = "token"
    kernel_session(lib)
    lib.expect("PUT", "/api/contents/f.txt", 201,
               json_body={"type": "file", "format": "text", "content": "42"})
    kid = lib.expect("POST", "/api/kernels", 201, json_body={"name": "python3"}).json()["id"]
    c = Client(s)
    login_form(c)
    tree_and_assets(c)
    check(not a.find(HINT), "no hint while nothing was refused: %s" % a.find(HINT))
    r = c.request("GET", "/files/f.txt", extra=[("Referer", c.origin + "/tree")])
    eq(r.status, 403, "the browser's GET /files/f.txt without PRESERVE_HOST")
    a.wait_for(HINT.replace("(Origin|Referer)", "Referer"), 10)
    jp.wait_for(r"Blocking Cross Origin request", 10)
    r = c.request("POST", "/api/contents", json_body={"type": "notebook"})
    eq(r.status, 404, "the browser's POST /api/contents without PRESERVE_HOST")
    jp.wait_for(r"Blocking Cross Origin API request", 10)
    try:
        c.ws("/api/kernels/%s/channels?session_id=%s" % (kid, uuid.uuid4().hex)).close_socket()
        fail("the kernel WebSocket was accepted with a mismatched Origin and Host")
    except wsclient.HandshakeError as e:
        eq(e.status, 403, "the browser's kernel WebSocket without PRESERVE_HOST")
    eq(a.count(HINT), 1, "the hint is logged once")
    # The fix the hint names: the same agent with PRESERVE_HOST=1.
    since = s.proc.mark()
    eq(a.terminate()[1], None, "the first agent stops cleanly")
    t.agent(s, jp.local_url, agent_id="a1", env={"PRESERVE_HOST": "1"}, label="agent-ph")
    s.wait_tunnel_open("a1", since)
    # Jupyter names its login cookie after the Host it sees: log in again.
    c = Client(s)
    login_form(c)
    c.expect("POST", "/api/contents", 201, json_body={"type": "notebook"})
    c.expect("GET", "/files/f.txt", 200, extra=[("Referer", c.origin + "/tree")])
    ws = c.ws("/api/kernels/%s/channels?session_id=%s" % (kid, uuid.uuid4().hex))
    ws.close_socket()
    shutdown(lib, jp)


@timed(60)
def test_j2_jupyter_public_name_needs_allow_remote_access(t):
    """With PRESERVE_HOST=1 Jupyter sees the public name, which notebook
    6 refuses (403) unless allow_remote_access is set, as README says; a
    loopback public host (127.0.0.1) passes without it."""
    jp, s, a, _ = jupyter_stack(t, jupyter_args=())
    c = Client(s)
    r = c.request("GET", "/login")
    eq(r.status, 403, "a non-local Host without allow_remote_access")
    jp.wait_for(r"Blocking request with non-local 'Host'", 10)
    c.host = "127.0.0.1:%d" % s.port
    c.origin = "http://" + c.host
    login_form(c)
    shutdown(c, jp)


def browser_frames(cdp, wants, deadline_s=30):
    """Read DevTools events until the WebSocket frames the page received
    satisfied each of wants (predicates on a frame's JSON; the kernel's
    channels may interleave them in any order); returns the frames that
    did, in wants' order. A failed handshake or frame error fails at once."""
    import time
    deadline = time.monotonic() + deadline_s
    got = [None] * len(wants)
    while None in got:
        if time.monotonic() > deadline:
            fail("the page's kernel WebSocket did not deliver the awaited messages in %ds "
                 "(got %r)" % (deadline_s, got))
        msg = cdp.events.pop(0) if cdp.events else cdp._recv_message()
        meth = msg.get("method")
        if meth == "Network.webSocketHandshakeResponseReceived":
            st = msg["params"]["response"]["status"]
            check(st == 101, "the page's WebSocket handshake got %s" % st)
        elif meth == "Network.webSocketFrameError":
            fail("the page's WebSocket failed: %r" % msg["params"])
        elif meth == "Network.webSocketFrameReceived":
            try:
                payload = json.loads(msg["params"]["response"]["payloadData"])
            except ValueError:
                continue
            for i, want in enumerate(wants):
                if got[i] is None and isinstance(payload, dict) and want(payload):
                    got[i] = payload
                    break
    return got


NOTEBOOK = {"type": "notebook", "format": "json", "content": {
    "cells": [{"cell_type": "code", "source": "print(6*7)", "metadata": {}, "outputs": [],
               "execution_count": None, "id": "c0"}],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5}}


def run_cell(cdp):
    """The page runs its cell; its kernel WebSocket brings the output and
    the reply, and the page shows 42."""
    res = cdp.call("Runtime.evaluate", expression="Jupyter.notebook.execute_all_cells()")
    check("exceptionDetails" not in res, "execute_all_cells: %r" % res.get("exceptionDetails"))
    stream, reply = browser_frames(cdp, [lambda p: p.get("msg_type") == "stream",
                                         lambda p: p.get("msg_type") == "execute_reply"])
    eq(stream["content"]["text"], "42\n", "the cell's output on the page's WebSocket")
    eq(reply["content"]["status"], "ok", "the cell's execute_reply")
    # The frame event can precede the page's handler: wait for the DOM.
    out = cdp.call("Runtime.evaluate", returnByValue=True, awaitPromise=True, expression=(
        "new Promise(r => { const f = () => { const x = Array.from(document."
        "querySelectorAll('.output_subarea')).map(e => e.textContent).join('|');"
        " if (x.includes('42')) { r(x); return true; } return false; };"
        " if (!f()) new MutationObserver((_, o) => { if (f()) o.disconnect(); })"
        ".observe(document.body, {childList: true, subtree: true, characterData: true});"
        " })"))["result"]["value"]
    check("42" in out, "the page shows the output: %r" % out)


def chromium_notebook(t, url, tls=False, then=None):
    """Headless Chromium, PUBLIC mapped to 127.0.0.1, opens url (a notebook
    page); the page's kernel WebSocket (watched over DevTools) must report
    the kernel idle, then the page runs its cell and shows 42. With tls it
    accepts serve's certificate (from the test CA, which it does not know).
    then(cdp), if given, runs last, with the page still open."""
    from test_c1_browser import CHROMIUM_FLAGS, Cdp, http_json
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        fail("chromium is not installed (scripts/deps.sh --browser installs it)")
    profile = os.path.join(t.logdir, "chromium-profile")
    b = t.spawn("chromium", [exe] + CHROMIUM_FLAGS + [
        "--user-data-dir=" + profile, "--host-resolver-rules=MAP %s 127.0.0.1" % PUBLIC] +
        (["--ignore-certificate-errors"] if tls else []) + ["about:blank"])
    m = b.wait_for(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)", 30)
    pages = [x for x in http_json(int(m.group(2)), "/json/list") if x.get("type") == "page"]
    check(pages, "no page target in %r" % pages)
    cdp = Cdp(pages[0]["webSocketDebuggerUrl"])
    try:
        cdp.call("Network.enable")
        cdp.call("Page.enable")
        cdp.call("Page.navigate", url=url)
        browser_frames(cdp, [lambda p: p.get("msg_type") == "status" and
                             p["content"].get("execution_state") == "idle"])
        run_cell(cdp)
        if then:
            then(cdp)
    finally:
        cdp.close()


@timed(90)
def test_j2_jupyter_in_chromium(t):
    """Headless Chromium opens a notebook through natwrp by the URL Jupyter
    prints (?token=...), under the public name. Then the agent restarts:
    it closes the page's kernel WebSocket, the page opens a new one through
    the new agent (101) and runs its cell again."""
    jp, s, a, _ = jupyter_stack(t)
    lib = Client(s)
    lib.auth = "token"
    lib.expect("PUT", "/api/contents/j2.ipynb", 201, json_body=NOTEBOOK)

    def restart_agent(cdp):
        eq(a.terminate()[1], None, "the agent stops cleanly")
        cdp.wait_event("Network.webSocketClosed")
        t.agent(s, jp.local_url, env={"PRESERVE_HOST": "1"}, label="agent-new")
        ev = cdp.wait_event("Network.webSocketHandshakeResponseReceived")
        eq(ev["params"]["response"]["status"], 101, "the page's new kernel WebSocket")
        cdp.events.clear()  # what came before it: the old WebSocket's
        browser_frames(cdp, [lambda p: p.get("msg_type") == "status" and
                             p["content"].get("execution_state") == "idle"])
        run_cell(cdp)

    chromium_notebook(t, "http://%s:%d/notebooks/j2.ipynb?token=%s" % (PUBLIC, s.port, TOKEN),
                      then=restart_agent)
    shutdown(lib, jp)


@timed(90)
def test_j2_jupyter_route_with_basic_login(t):
    """README's Jupyter agent: ROUTES, PRESERVE_HOST=1 and AUTH_BASIC. serve
    asks for the login first, so a script's Authorization: token alone gets
    natwrp's 401; it sends the login and puts Jupyter's token in the query
    (a request has one Authorization field). A browser that has the login
    (here in the URL) runs a notebook, its kernel WebSocket included. Over
    https, as README wants for AUTH_BASIC."""
    login = "alice:correct-horse"
    basic = "Basic " + __import__("base64").b64encode(login.encode()).decode()
    jp, s, a, cafile = jupyter_stack(t, tls=True, agent_env={
        "PRESERVE_HOST": "1", "ROUTES": PUBLIC, "AUTH_BASIC": login})
    lib = Client(s, cafile)
    lib.auth = "token"
    r = lib.expect("GET", "/api/status", 401)
    eq(r.header("WWW-Authenticate"), 'Basic realm="%s"' % PUBLIC, "serve's 401 challenge")
    lib.auth = None
    lib.origin = None  # a script sends no Origin
    q = "?token=" + TOKEN
    lib.expect("PUT", "/api/contents/j2.ipynb" + q, 201, json_body=NOTEBOOK,
               extra=[("Authorization", basic)])
    kid = lib.expect("POST", "/api/kernels" + q, 201, json_body={"name": "python3"},
                     extra=[("Authorization", basic)]).json()["id"]
    sid = uuid.uuid4().hex
    ws = wsclient.connect(s.port, "/api/kernels/%s/channels%s&session_id=%s" % (kid, q, sid),
                          host_header=lib.host, headers=[("Authorization", basic)], timeout=20,
                          tls=ssl.create_default_context(cafile=cafile), server_name=PUBLIC)
    try:
        kernel_ready(ws, sid)
        out, reply = execute(ws, "print(6*7)", sid)
        eq((out, reply["status"]), ("42\n", "ok"), "print(6*7) with the login and ?token=")
    finally:
        ws.close_socket()
    chromium_notebook(t, "https://%s@%s:%d/notebooks/j2.ipynb?token=%s" % (
        login, PUBLIC, s.port, TOKEN), tls=True)
    lib.expect("POST", "/api/shutdown" + q, 200, extra=[("Authorization", basic)])
    eq(jp.wait_exit(20), 0, "jupyter exit status after /api/shutdown")
