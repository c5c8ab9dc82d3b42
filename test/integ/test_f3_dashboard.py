"""f3 the dashboard and the agent's request inspector (issue 12): the admin
listener's "/" page and its embedded assets on both roles, the inspector's
API (/api/requests, /api/requests/ID, POST /api/requests/ID/replay: secrets
masked, INSPECT=0, the ring of 200, 409 for a body not captured whole, 404
for an id not in the ring) and, in headless Chromium, the live page: its
numbers change with traffic, the inspector lists the requests just made, a
replay shows the service's new answer; serve's page shows the tunnel. The
screenshot is kept as build/dashboard-screenshot.png."""

import base64
import json
import os
import shutil
import tempfile

from harness import ROOT, check, eq, fail, http_request, timed
from test_c1_browser import CHROMIUM_FLAGS, Cdp, http_json

ADMIN_RE = r"admin listening on http://[^\s]*:(\d+)"


def admin_port(proc):
    return int(proc.wait_for(ADMIN_RE, 15).group(1))


def admin(port, method, path, body=None, headers=()):
    return http_request(port, method, path, headers=headers, body=body)


def admin_json(port, method, path, status=200, body=None):
    r = admin(port, method, path, body)
    eq(r.status, status, "%s %s status (body %r)" % (method, path, r.body[:300]))
    eq(r.header("content-type"), "application/json", "%s %s Content-Type" % (method, path))
    return r.json()


def inspected_stack(t, env=None):
    """Origin, serve, an agent with its admin listener; the admin port."""
    e = {"ADMIN_LISTEN": "127.0.0.1:0"}
    e.update(env or {})
    o, s, a = t.stack(agent_env=e)
    return o, s, a, admin_port(a)


def listed(port, after=0):
    j = admin_json(port, "GET", "/api/requests?after=%d" % after)
    return j


def find(entries, target):
    got = [e for e in entries if e["target"] == target]
    check(got, "no capture of %s in %r" % (target, [e["target"] for e in entries]))
    return got[-1]


def wait_done(port, target, tries=50):
    """The capture of target once its exchange ended (the agent records the
    end when the response's last byte went into the tunnel, which may be
    just after the client read it). Bounded: one admin request per try."""
    for _ in range(tries):
        e = find(listed(port)["requests"], target)
        if e["state"] != "pending":
            return e
    fail("capture of %s still pending" % target)


@timed(60)
def test_inspector_lists_masks_shows_bodies_and_replays(t):
    o, s, a, ap = inspected_stack(t)
    j = listed(ap)  # the dashboard is open from now on: bodies are captured
    eq((j["inspect"], j["requests"]), (True, []), "empty inspector")
    body = b"hello replay"
    r = http_request(s.port, "POST", "/echo?x=1", headers=[
        ("Authorization", "Bearer s3cret-token"), ("Cookie", "sid=abc123"),
        ("X-Auth-Token", "tok-999"), ("Content-Type", "text/plain"), ("X-Mine", "kept")],
        body=body)
    eq(r.status, 200, "request through the tunnel")
    e = wait_done(ap, "/echo?x=1")
    eq((e["method"], e["status"], e["state"], e["request_bytes"], e["response_bytes"]),
       ("POST", 200, "done", len(body), len(r.body)), "list entry")
    check(e["duration_seconds"] >= 0 and e["replayable"], "entry: %r" % e)
    one = admin_json(ap, "GET", "/api/requests/%d" % e["id"])
    hdrs = dict((k.lower(), v) for k, v in one["request"]["headers"])
    eq((hdrs["authorization"], hdrs["cookie"], hdrs["x-auth-token"], hdrs["x-mine"]),
       ("***", "***", "***", "kept"), "masked request fields")
    # (The echo's body repeats them: bodies are shown as they are.)
    raw = json.dumps([one["request"]["headers"], one["response"]["headers"]])
    for secret in ("s3cret-token", "sid=abc123", "tok-999"):
        check(secret not in raw, "secret %r shown by the inspector" % secret)
    eq(one["request"]["body"], {"text": "hello replay", "size": len(body), "truncated": False},
       "request body preview")
    eq(one["response"]["body"]["text"], r.body.decode(), "response body preview")
    eq(one["response"]["body"]["truncated"], False, "response body truncated")
    rh = dict((k.lower(), v) for k, v in one["response"]["headers"])
    eq(rh.get("content-type"), "application/json", "response fields")
    # Replay: the service sees the request again, secrets and body included.
    rp = admin_json(ap, "POST", "/api/requests/%d/replay" % e["id"])
    eq(rp["old"]["id"], e["id"], "old side")
    eq(rp["new"]["status"], 200, "replayed status (%r)" % rp)
    echoed = json.loads(rp["new"]["body"]["text"])
    eq((echoed["method"], echoed["body"]), ("POST", "hello replay"), "replayed request")
    check(echoed["path"] == "/echo?x=1", "replayed target: %r" % echoed["path"])
    eh = dict((k.lower(), v) for k, v in echoed["headers"])
    eq((eh.get("authorization"), eh.get("cookie"), eh.get("x-mine")),
       ("Bearer s3cret-token", "sid=abc123", "kept"), "replay sends the real values")
    # A replay is not a request through the tunnel: not captured again.
    eq([x["target"] for x in listed(ap)["requests"]], ["/echo?x=1"], "captures after replay")
    # Methods: the list and one capture are GET only, replay POST only.
    eq(admin(ap, "POST", "/api/requests").status, 405, "POST /api/requests")
    eq(admin(ap, "GET", "/api/requests/%d/replay" % e["id"]).status, 405, "GET replay")
    eq(admin(ap, "GET", "/api/requests/%d/other" % e["id"]).status, 404, "unknown sub-path")


@timed(60)
def test_inspector_secrets_shown_with_inspect_secrets(t):
    o, s, a, ap = inspected_stack(t, {"INSPECT_SECRETS": "1"})
    r = http_request(s.port, "GET", "/name", headers=[("Authorization", "Bearer visible-1")])
    eq(r.status, 200, "request")
    e = wait_done(ap, "/name")
    one = admin_json(ap, "GET", "/api/requests/%d" % e["id"])
    hdrs = dict((k.lower(), v) for k, v in one["request"]["headers"])
    eq(hdrs["authorization"], "Bearer visible-1", "INSPECT_SECRETS=1 shows the value")


@timed(60)
def test_inspect_0_captures_nothing(t):
    o, s, a, ap = inspected_stack(t, {"INSPECT": "0"})
    listed(ap)
    for i in range(3):
        eq(http_request(s.port, "GET", "/name?%d" % i).status, 200, "request %d" % i)
    j = listed(ap)
    eq((j["inspect"], j["requests"]), (False, []), "INSPECT=0: nothing listed")
    eq(admin(ap, "GET", "/api/requests/1").status, 404, "INSPECT=0: no capture 1")
    eq(admin(ap, "POST", "/api/requests/1/replay").status, 404, "INSPECT=0: no replay")


@timed(120)
def test_ring_keeps_the_last_200_and_404_outside_it(t):
    from harness import Conn
    o, s, a, ap = inspected_stack(t)
    c = Conn(s.port)
    try:
        for i in range(205):
            c.request("GET", "/name?n=%d" % i)
            eq(c.read_response().status, 200, "request %d" % i)
    finally:
        c.close()
    wait_done(ap, "/name?n=204")
    j = listed(ap)
    ids = [e["id"] for e in j["requests"]]
    eq((len(ids), ids[0], ids[-1], j["last"]), (200, 6, 205, 205), "the ring's 200 newest")
    eq([e["target"] for e in j["requests"]][:2], ["/name?n=5", "/name?n=6"], "oldest kept")
    eq([e["id"] for e in listed(ap, 203)["requests"]], [204, 205], "?after=203")
    eq(admin(ap, "GET", "/api/requests/5").status, 404, "capture 5 left the ring")
    eq(admin(ap, "GET", "/api/requests/99999").status, 404, "unknown id")
    eq(admin(ap, "POST", "/api/requests/99999/replay").status, 404, "replay of an unknown id")
    eq(admin(ap, "GET", "/api/requests/abc").status, 404, "id that is not a number")
    eq(admin_json(ap, "GET", "/api/requests/6")["target"], "/name?n=5", "capture 6")


@timed(60)
def test_replay_refused_409_when_the_body_was_not_captured_whole(t):
    o, s, a, ap = inspected_stack(t)
    # No dashboard has asked yet: bodies are not captured (sizes only).
    eq(http_request(s.port, "POST", "/upload", body=b"x" * 100).status, 200, "upload")
    e = wait_done(ap, "/upload")  # this asks: from now on bodies are kept
    eq((e["request_bytes"], e["replayable"]), (100, False), "body not captured")
    one = admin_json(ap, "GET", "/api/requests/%d" % e["id"])
    eq(one["request"]["body"], {"text": "", "size": 100, "truncated": True}, "no body kept")
    eq(admin(ap, "POST", "/api/requests/%d/replay" % e["id"]).status, 409, "replay: 409")
    # Over 64 KiB: the first 64 KiB are kept, the replay is refused.
    big = bytes(range(256)) * 300  # 76800 bytes, binary
    eq(http_request(s.port, "POST", "/upload?big", body=big).status, 200, "big upload")
    e = wait_done(ap, "/upload?big")
    one = admin_json(ap, "GET", "/api/requests/%d" % e["id"])
    b = one["request"]["body"]
    eq((b["size"], b["truncated"], "text" in b), (len(big), True, False), "binary body")
    eq(b["hex"], big[:1024].hex(), "hex preview of the first 1 KiB")
    r = admin(ap, "POST", "/api/requests/%d/replay" % e["id"])
    eq(r.status, 409, "replay of a truncated body")
    check("cannot be replayed" in r.json()["error"], "409 body: %r" % r.body)
    # A body under the bound replays.
    eq(http_request(s.port, "POST", "/upload?small", body=b"y" * 1000).status, 200, "upload")
    e = wait_done(ap, "/upload?small")
    rp = admin_json(ap, "POST", "/api/requests/%d/replay" % e["id"])
    eq(json.loads(rp["new"]["body"]["text"])["len"], 1000, "replayed body length")


@timed(60)
def test_replay_of_an_unreachable_service_is_502(t):
    o, s, a, ap = inspected_stack(t)
    eq(http_request(s.port, "GET", "/name?z").status, 200, "request")
    e = wait_done(ap, "/name?z")
    o.proc.terminate()
    r = admin(ap, "POST", "/api/requests/%d/replay" % e["id"])
    eq(r.status, 502, "replay with the service gone (%r)" % r.body)
    check("cannot connect to local service" in r.json()["error"], "error: %r" % r.body)


@timed(60)
def test_dashboard_assets_on_both_roles(t):
    o = t.origin("A")
    s = t.serve("--admin", "127.0.0.1:0")
    sp = admin_port(s.proc)
    a = t.agent(s, o, env={"ADMIN_LISTEN": "127.0.0.1:0"})
    ap = admin_port(a)
    for port in (sp, ap):
        r = admin(port, "GET", "/")
        eq(r.status, 200, "GET /")
        eq(r.header("content-type"), "text/html; charset=utf-8", "page type")
        page = r.body.decode()
        check("/ui/app.js" in page and "/ui/style.css" in page, "page names its assets")
        check("http://" not in page.replace("http://www.w3.org", "") and "https://" not in page,
              "page loads nothing from elsewhere")
        for name, ctype in (("app.js", "text/javascript; charset=utf-8"),
                            ("style.css", "text/css; charset=utf-8")):
            r = admin(port, "GET", "/ui/" + name)
            eq((r.status, r.header("content-type")), (200, ctype), "/ui/" + name)
            with open(os.path.join(ROOT, "src", "admin", "ui", name), "rb") as f:
                eq(r.body, f.read(), "/ui/%s is the repo's file" % name)
        eq(admin(port, "GET", "/ui/nope.js").status, 404, "unknown asset")
        eq(admin(port, "GET", "/ui/../admin.c").status, 404, "no path out of the assets")
        eq(admin(port, "POST", "/").status, 405, "POST /")
    # Nothing of it on the public port: there "/" goes to the service.
    r = http_request(s.port, "GET", "/ui/app.js")
    eq(r.status, 200, "public /ui/app.js")
    eq(json.loads(r.body)["path"], "/ui/app.js", "public /ui/ goes to the service (echo)")


def page_eval(cdp, expr):
    res = cdp.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
    check("exceptionDetails" not in res, "page script failed: %r" % res.get("exceptionDetails"))
    return res["result"].get("value")


def wait_page(cdp, cond, what, timeout_ms=15000):
    """Wait until the page's expression cond is true: the page checks it on
    each DOM change (MutationObserver) and the promise settles at once, or
    rejects after timeout_ms."""
    ok = page_eval(cdp, """new Promise((res) => {
        const test = () => { try { return !!(%s); } catch (e) { return false; } };
        if (test()) return res(true);
        const ob = new MutationObserver(() => { if (test()) { ob.disconnect(); res(true); } });
        ob.observe(document.body, {subtree: true, childList: true, characterData: true,
                                   attributes: true});
        setTimeout(() => { ob.disconnect(); res(test()); }, %d);
    })""" % (cond, timeout_ms))
    check(ok, "page never showed: %s" % what)


def screenshot(cdp, t, name):
    png = base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"])
    for path in (os.path.join(ROOT, "build", name), os.path.join(t.logdir, name)):
        with open(path, "wb") as f:
            f.write(png)
    check(png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000, "screenshot is not a PNG")


@timed(120)
def test_dashboard_in_chromium(t):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        fail("chromium is not installed (scripts/deps.sh --browser installs it)")
    o = t.origin("A")
    s = t.serve("--admin", "127.0.0.1:0")
    sp = admin_port(s.proc)
    a = t.agent(s, o, env={"ADMIN_LISTEN": "127.0.0.1:0"})
    ap = admin_port(a)
    profile = tempfile.mkdtemp(prefix="natwrp-chromium-", dir=t.logdir)
    b = t.spawn("chromium", [exe] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile,
                                                     "--window-size=1400,1000", "about:blank"])
    port = int(b.wait_for(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)", 30).group(2))
    pages = [x for x in http_json(port, "/json/list") if x.get("type") == "page"]
    check(pages, "no page target in %r" % pages)
    cdp = Cdp(pages[0]["webSocketDebuggerUrl"])
    try:
        cdp.call("Page.enable")
        cdp.call("Runtime.enable")
        cdp.call("Page.navigate", url="http://127.0.0.1:%d/" % ap)
        cdp.wait_event("Page.loadEventFired")
        wait_page(cdp, "document.getElementById('role').textContent === 'agent'", "role agent")
        wait_page(cdp, "!document.getElementById('inspector').hidden && "
                  "document.getElementById('req-count').textContent", "the inspector polling")
        before = int(page_eval(cdp, "document.getElementById('total-requests').textContent"))
        # Traffic through the tunnel, once the page polls (bodies captured).
        for i in range(5):
            eq(http_request(s.port, "GET", "/name?page=%d" % i).status, 200, "GET %d" % i)
        eq(http_request(s.port, "POST", "/echo?replay-me", body=b"page body",
                        headers=[("Authorization", "Bearer hidden")]).status, 200, "POST")
        wait_page(cdp, "+document.getElementById('total-requests').textContent >= %d"
                  % (before + 6), "the request count going up by 6")
        wait_page(cdp, "[...document.querySelectorAll('#req-list td.path')].map(e => "
                  "e.textContent).join(' ').includes('/echo?replay-me')", "the POST listed")
        paths = page_eval(cdp, "[...document.querySelectorAll('#req-list td.path')]"
                          ".map(e => e.textContent)")
        for i in range(5):
            check("/name?page=%d" % i in paths, "inspector lists /name?page=%d: %r" % (i, paths))
        check(float(page_eval(cdp, "document.getElementById('rate').textContent")) >= 0,
              "a request rate")
        # Select the POST, check its details, replay it.
        page_eval(cdp, "[...document.querySelectorAll('#req-list tbody tr')].find(tr => "
                  "tr.querySelector('td.path').textContent === '/echo?replay-me').click()")
        wait_page(cdp, "document.getElementById('replay')", "the details with Replay")
        detail = page_eval(cdp, "document.getElementById('detail').textContent")
        check("page body" in detail, "request body in the details: %r" % detail[:500])
        req_hdrs = page_eval(cdp, "document.querySelector('#detail pre.headers').textContent")
        check("Authorization: ***" in req_hdrs and "hidden" not in req_hdrs,
              "Authorization masked in the page: %r" % req_hdrs)
        page_eval(cdp, "document.getElementById('replay').click()")
        wait_page(cdp, "document.querySelector('#replay-result .new .status')",
                  "the replay's answer")
        new_status = page_eval(cdp, "document.querySelector('#replay-result .new .status')"
                               ".textContent")
        eq(new_status, "200", "replayed status on the page")
        new_body = page_eval(cdp, "document.querySelector('#replay-result .new pre.body')"
                             ".textContent")
        eq(json.loads(new_body)["body"], "page body", "replayed body shown")
        wait_page(cdp, "document.querySelectorAll('#tunnels tbody tr').length >= 1",
                  "the agent's tunnel")
        screenshot(cdp, t, "dashboard-screenshot.png")
        # serve's page shows the tunnel and its route.
        cdp.call("Page.navigate", url="http://127.0.0.1:%d/" % sp)
        cdp.wait_event("Page.loadEventFired")
        wait_page(cdp, "document.getElementById('role').textContent === 'serve'", "role serve")
        wait_page(cdp, "[...document.querySelectorAll('#tunnels tbody td')].some(td => "
                  "td.textContent === 'a1')", "tunnel a1 on serve's page")
        check(page_eval(cdp, "document.querySelector('#inspector').hidden"),
              "no inspector on serve")
        screenshot(cdp, t, "dashboard-serve-screenshot.png")
    finally:
        cdp.close()


@timed(60)
def test_websocket_through_a_live_inspector(t):
    """An upgraded exchange is listed with its 101 while its pipe runs (the
    pipe's bytes are not captured as a body) and ends when it closes."""
    import wsclient
    o, s, a, ap = inspected_stack(t)
    listed(ap)
    ws = wsclient.connect(s.port, "/ws", timeout=10)
    eq(ws.status, 101, "WebSocket through the tunnel")
    ws.send(b"x" * 70000)
    eq(ws.recv(timeout=10).data, b"x" * 70000, "echo through the pipe")
    e = find(listed(ap)["requests"], "/ws")
    eq((e["method"], e["status"], e["state"]), ("GET", 101, "pending"), "listed while piped")
    mark = o.proc.mark()
    ws.close()
    ws.close_socket()
    o.proc.wait_for(r"ws done", 10, since=mark)  # the pipe ended at the service
    e = wait_done(ap, "/ws", tries=200)
    eq((e["status"], e["state"], e["request_bytes"], e["response_bytes"]), (101, "done", 0, 0),
       "after the pipe closed")
    one = admin_json(ap, "GET", "/api/requests/%d" % e["id"])
    rh = dict((k.lower(), v) for k, v in one["response"]["headers"])
    eq(rh.get("upgrade", "").lower(), "websocket", "101 fields")
    eq(http_request(s.port, "GET", "/name").status, 200, "plain request after it")


@timed(60)
def test_admin_token_guards_the_dashboard_and_inspector(t):
    """With ADMIN_TOKEN the page, its assets and the inspector need the token
    (Bearer, or Basic with it as the password, which a browser sends)."""
    o, s, a, ap = inspected_stack(t, {"ADMIN_TOKEN": "adm-tok-1"})
    basic = "Basic " + base64.b64encode(b"anyone:adm-tok-1").decode()
    for path in ("/", "/ui/app.js", "/api/requests", "/api/requests/1"):
        r = admin(ap, "GET", path)
        eq(r.status, 401, "%s without the token" % path)
        check("Basic" in (r.header("www-authenticate") or ""), "%s asks for a login" % path)
    eq(admin(ap, "POST", "/api/requests/1/replay").status, 401, "replay without the token")
    eq(admin(ap, "GET", "/", headers=[("Authorization", basic)]).status, 200, "/ with Basic")
    eq(admin(ap, "GET", "/ui/style.css", headers=[("Authorization", "Bearer adm-tok-1")]).status,
       200, "asset with Bearer")
    j = admin(ap, "GET", "/api/requests", headers=[("Authorization", basic)]).json()
    eq(j["requests"], [], "the list with the token")
    eq(http_request(s.port, "GET", "/name").status, 200, "request")
    e = find(admin(ap, "GET", "/api/requests", headers=[("Authorization", basic)])
             .json()["requests"], "/name")
    r = admin(ap, "POST", "/api/requests/%d/replay" % e["id"], headers=[("Authorization", basic)])
    eq((r.status, r.json()["new"]["status"]), (200, 200), "replay with the token")


@timed(60)
def test_agent_own_503_is_listed(t):
    """A request the agent refuses itself (LOCAL_QUEUE full) is listed with
    the 503 and body its client got."""
    import threading
    o, s, a, ap = inspected_stack(t, {"MAX_LOCAL_CONNS": "1", "LOCAL_QUEUE": "0"})
    listed(ap)
    th = threading.Thread(target=lambda: http_request(s.port, "GET", "/hang?max_ms=3000",
                                                      timeout=15), daemon=True)
    th.start()
    o.proc.wait_for(r"event hang-start", 10)
    r = http_request(s.port, "GET", "/name?refused")
    eq(r.status, 503, "agent's own 503")
    e = wait_done(ap, "/name?refused")
    eq((e["status"], e["response_bytes"]), (503, len(r.body)), "listed with its 503")
    one = admin_json(ap, "GET", "/api/requests/%d" % e["id"])
    eq(one["response"]["body"]["text"], r.body.decode(), "the agent's body")
    th.join(15)
