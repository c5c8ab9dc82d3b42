/* slot.c: tunnel slots: dial REMOTE_URL, the WebSocket handshake (and the
 * log line for a refusal), the tunnel's callbacks, backoff and GOAWAY. A
 * slot reconnects with exponential backoff and jitter after any loss, and
 * at once when the server says GOAWAY (the old tunnel finishes its streams
 * meanwhile). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agent_int.h"
#include "notify.h"
#include "handshake.h"
#include "ws.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define HEALTHY_MS 60000
#define REFUSAL_BODY_MAX 512
#define REFUSAL_QUOTE_MAX 160 /* body bytes quoted in the refusal log line */
#define ROUTES_LOG_MAX 64     /* "serving URL" lines per tunnel (NW_ROUTES_MAX) */
#define ROUTE_URL_LOG_MAX 800 /* bytes of one granted URL logged: scheme + a route */

/* ------------------------------------------------------------ backoff */

static void on_backoff(uv_timer_t *h) { slot_connect(h->data); }

const char *slot_remote(const slot_t *sl) { return sl->rem ? sl->rem->label : sl->ag->remote_str; }

static const nw_url_t *slot_url(const slot_t *sl) {
    return sl->rem ? &sl->ag->cfg->remotes.u[sl->rem->url] : &sl->ag->cfg->remote;
}

/* slow: the server refused us for a reason a retry will not fix soon
 * (401/403): wait the full cap, never a tight loop. kind labels
 * natwrp_reconnects_total (agent_ops.c). */
static void schedule_reconnect(slot_t *sl, const char *kind, const char *reason, int slow) {
    agent_t *ag = sl->ag;
    uint64_t now = uv_now(ag->loop), delay;
    unsigned r = 0;
    if (ag->stopping || !sl->rem)
        return;
    ops_reconnect(sl, kind, reason);
    if (sl->up_since && now - sl->up_since >= HEALTHY_MS)
        sl->attempt = 0; /* it was healthy: start over from the short delay */
    sl->up_since = 0;
    delay = slow ? BACKOFF_MAX_MS : BACKOFF_MIN_MS << NW_MIN(sl->attempt, 6u);
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    nw_random(&r, sizeof(r));
    delay = delay * (80 + r % 41) / 100; /* +-20% so agents do not march in step */
    sl->attempt++;
    nw_warn("tunnel down agent=%s reason=%s remote=%s; reconnecting in %.2fs (attempt %u)",
            sl->name, reason, slot_remote(sl), (double)delay / 1000.0, sl->attempt);
    uv_timer_start(&sl->timer, on_backoff, delay, 0);
}

/* ---------------------------------------------------------- the tunnel */

static void tuns_remove(agent_t *ag, nw_tun_t *t) {
    size_t i;
    for (i = 0; i < ag->ntuns; i++)
        if (ag->tuns[i] == t) {
            ag->tuns[i] = ag->tuns[--ag->ntuns];
            return;
        }
}

static slot_t *slot_of(agent_t *ag, nw_tun_t *t) {
    unsigned i;
    for (i = 0; i < ag->nslots; i++)
        if (ag->slots[i].tun == t)
            return &ag->slots[i];
    return NULL;
}

static void ag_on_tun_close(nw_tun_t *t, int err) {
    agent_t *ag = t->data;
    slot_t *sl = slot_of(ag, t);
    tuns_remove(ag, t);
    if (sl) {
        sl->tun = NULL;
        schedule_reconnect(sl, err == NW_ETIMEOUT ? "ping_timeout" : "closed", nw_strerror(err),
                           0);
    } else {
        nw_info("agent=%s retired tun=%llu closed", t->agent, (unsigned long long)t->id);
    }
    agent_check_done(ag);
}

/* The server is going away (draining for a restart): connect a fresh
 * tunnel now, which lands on whichever process listens on the port,
 * while this one finishes the streams it carries. At once only after a
 * healthy tunnel (or the first time): a server that says GOAWAY again
 * within HEALTHY_MS gets the slot's backoff, not a tight loop of
 * tunnels (each of which stays in ag->tuns until the server closes it). */
static void ag_on_goaway(nw_tun_t *t, uint32_t last, uint32_t code) {
    agent_t *ag = t->data;
    slot_t *sl = slot_of(ag, t);
    int now_ = 0;
    (void)last;
    if (sl && !ag->stopping) {
        if (sl->up_since && uv_now(ag->loop) - sl->up_since >= HEALTHY_MS)
            sl->attempt = 0;
        now_ = sl->attempt == 0;
    }
    nw_info("agent=%s server sent GOAWAY (%s) on tun=%llu%s", t->agent, nw_mux_code_name(code),
            (unsigned long long)t->id,
            !sl || ag->stopping ? ""
            : now_ ? ": connecting a new tunnel, this one finishes its streams"
                   : ": a new tunnel after backoff, this one finishes its streams");
    if (!sl || ag->stopping)
        return;
    sl->tun = NULL; /* retiring: stays in ag->tuns until the server closes it */
    if (!now_) {
        schedule_reconnect(sl, "goaway", "server sent GOAWAY again soon after the last", 0);
        return;
    }
    ops_reconnect(sl, "goaway", "server sent GOAWAY");
    sl->attempt = 1; /* the next GOAWAY within HEALTHY_MS backs off */
    sl->up_since = 0;
    slot_connect(sl);
}

static const nw_tun_cbs_t ag_tun_cbs = {
    .on_open = ag_on_open,
    .on_data = ag_on_data,
    .on_reset = ag_on_reset,
    .on_drain = ag_on_drain,
    .on_goaway = ag_on_goaway,
    .on_close = ag_on_tun_close,
};

static void hs_fail(slot_t *sl, const char *kind, const char *why, int slow) {
    uv_timer_stop(&sl->timer);
    if (sl->hs) {
        nw_conn_close(sl->hs);
        sl->hs = NULL;
    }
    schedule_reconnect(sl, kind, why, slow);
    agent_check_done(sl->ag);
}

static int hs_on_headers_complete(llhttp_t *p) {
    return p->status_code == 101 ? 2 : 0;
}
static int hs_on_body(llhttp_t *p, const char *at, size_t n) {
    slot_t *sl = p->data;
    if (sl->hs_body.len < REFUSAL_BODY_MAX)
        nw_sbuf_append(&sl->hs_body, at, NW_MIN(n, REFUSAL_BODY_MAX - sl->hs_body.len));
    return 0;
}
static int hs_on_message_complete(llhttp_t *p) {
    if (p->status_code == 101)
        return 0; /* llhttp goes on to HPE_PAUSED_UPGRADE */
    ((slot_t *)p->data)->hs_done = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t hs_settings = {
    .on_status = nw_http_cb_first,
    .on_header_field = nw_http_cb_name,
    .on_header_value = nw_http_cb_value,
    .on_headers_complete = hs_on_headers_complete,
    .on_body = hs_on_body,
    .on_message_complete = hs_on_message_complete,
};

/* The server answered something other than 101: say what it said, as one
 * printable line. Only a short text/plain body is quoted (natwrp's own
 * refusals are one line); anything else, such as a proxy's HTML error page,
 * is named by its type and size, never pasted into the log. */
static void hs_refused(slot_t *sl) {
    char why[400], body[REFUSAL_QUOTE_MAX + 4];
    size_t i, k = 0, n = sl->hs_body.len;
    unsigned st = sl->hs_parser.status_code;
    const char *b = sl->hs_body.p ? sl->hs_body.p : "";
    nw_hdr_t ct = {0};
    int ci = nw_hf_find(&sl->hs_hf, "content-type", 0), plain;
    if (ci >= 0)
        nw_hf_get(&sl->hs_hf, (size_t)ci, &ct);
    plain = ci < 0 || (ct.value_len >= 10 && nw_strieq(ct.value, 10, "text/plain"));
    while (n && (b[n - 1] == '\n' || b[n - 1] == '\r'))
        n--;
    if (plain && n) {
        for (i = 0; i < n && k < REFUSAL_QUOTE_MAX; i++) {
            char ch = (b[i] > 0x20 && b[i] < 0x7f) ? b[i] : ' ';
            if (ch != ' ' || (k && body[k - 1] != ' '))
                body[k++] = ch; /* runs of blanks and control bytes: one space */
        }
        if (i < n)
            memcpy(body + k, "...", 3), k += 3;
        body[k] = 0;
    } else if (n) {
        snprintf(body, sizeof(body), "(%.*s body, not shown)",
                 (int)NW_MIN(ct.value_len, (size_t)40), ct.value);
    } else {
        body[0] = 0;
    }
    snprintf(why, sizeof(why), "server refused the tunnel: %u %.*s%s%s", st,
             (int)NW_MIN(sl->hs_hf.first_len, (size_t)80), sl->hs_hf.raw.p ? sl->hs_hf.raw.p : "",
             body[0] ? ": " : "", body);
    for (i = 0; why[i]; i++)
        if ((unsigned char)why[i] < 0x20 || (unsigned char)why[i] >= 0x7f)
            why[i] = ' ';
    if (nw_hf_find(&sl->hs_hf, NW_HS_VERSION, 0) >= 0)
        nw_err("agent=%s protocol version mismatch with the server (agent speaks " NW_WS_SUBPROTO
               ")", sl->name);
    if (st == 401)
        nw_err("agent=%s unauthorized: check CONN_TOKEN (the server wants the same token; "
               "retrying every %ds)", sl->name, BACKOFF_MAX_MS / 1000);
    if (st == 403)
        nw_err("agent=%s forbidden: %s (serve refuses a route in ROUTES (its --tokens or "
               "--domain) or this AGENT_ID (its --allow-agent); retrying every %ds)",
               sl->name, body[0] ? body : "no reason given", BACKOFF_MAX_MS / 1000);
    hs_fail(sl, st == 401 ? "refused_401" : st == 403 ? "refused_403" : "refused_other", why,
            st == 401 || st == 403);
}

/* The 101 names the routes serve granted, as public URLs, in
 * X-Natwrp-Routes: one log line each. Bytes that do not print become
 * '?' and a long item is cut: the values come from the network. A 101
 * without the field comes from a serve that predates routes: it ignored
 * ROUTES and gave this tunnel its default route. */
static void hs_log_routes(slot_t *sl) {
    const nw_hfields_t *h = &sl->hs_hf;
    unsigned lines = 0;
    nw_hdr_t f;
    int i = nw_hf_find(h, NW_HS_ROUTES, 0);

    if (i < 0) {
        nw_warn("agent=%s the server does not support routes (an older natwrp serve?): it "
                "ignored ROUTES and sends this tunnel its default route", sl->name);
        return;
    }
    for (; i >= 0; i = nw_hf_find(h, NW_HS_ROUTES, (size_t)i + 1)) {
        const char *p, *end;
        nw_hf_get(h, (size_t)i, &f);
        for (p = f.value, end = f.value + f.value_len; p < end && lines < ROUTES_LOG_MAX;) {
            const char *comma = memchr(p, ',', (size_t)(end - p)), *e = comma ? comma : end;
            char url[ROUTE_URL_LOG_MAX + 4];
            size_t k = 0;
            while (p < e && (*p == ' ' || *p == '\t'))
                p++;
            while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            for (; p < e && k < ROUTE_URL_LOG_MAX; p++)
                url[k++] = *p > 0x20 && *p < 0x7f ? *p : '?';
            if (p < e)
                memcpy(url + k, "...", 3), k += 3;
            url[k] = 0;
            if (k) {
                nw_info("agent=%s serving %s", sl->name, url);
                lines++;
            }
            p = comma ? comma + 1 : end;
        }
    }
}

/* The routes the 101 granted, for /api/status: its X-Natwrp-Routes
 * values as sent, or "*" (the default route) without the field. */
static void hs_keep_routes(slot_t *sl) {
    const nw_hfields_t *h = &sl->hs_hf;
    nw_hdr_t f;
    int i = nw_hf_find(h, NW_HS_ROUTES, 0);
    sl->granted.len = 0;
    if (i < 0) {
        nw_sbuf_appends(&sl->granted, "*");
        return;
    }
    for (; i >= 0; i = nw_hf_find(h, NW_HS_ROUTES, (size_t)i + 1)) {
        nw_hf_get(h, (size_t)i, &f);
        if (sl->granted.len)
            nw_sbuf_append(&sl->granted, ",", 1);
        nw_sbuf_append(&sl->granted, f.value, f.value_len);
    }
}

static void hs_upgraded(slot_t *sl, const char *rest, size_t rest_len) {
    agent_t *ag = sl->ag;
    nw_hfields_t *h = &sl->hs_hf;
    char expect[29];
    nw_hdr_t f;
    nw_tun_cfg_t tc;
    nw_conn_t *c = sl->hs;
    uint32_t win;
    int i;

    nw_ws_accept(sl->hs_key, strlen(sl->hs_key), expect);
    i = nw_hf_find(h, "sec-websocket-accept", 0);
    if (i < 0 || (nw_hf_get(h, (size_t)i, &f), !nw_strieq(f.value, f.value_len, expect)) ||
        f.value_len != strlen(expect) || memcmp(f.value, expect, f.value_len) != 0) {
        hs_fail(sl, "handshake", "bad Sec-WebSocket-Accept from server", 0);
        return;
    }
    if (!nw_hs_subproto_selected(h)) {
        nw_err("agent=%s protocol version mismatch: server did not select " NW_HS_SUBPROTO,
               sl->name);
        hs_fail(sl, "handshake", "protocol version mismatch", 0);
        return;
    }
    if (nw_hs_window(h, &win) != 0) {
        hs_fail(sl, "handshake", "invalid " NW_HS_WINDOW " from server", 0);
        return;
    }
    /* A serve that predates routes ignores X-Natwrp-Auth-Basic: the
     * service would be public while AUTH_BASIC says it is not. A serve
     * that enforces the logins says so in its 101; else fail closed. */
    if (ag->cfg->basic.n && nw_hf_find(h, NW_HS_AUTH_BASIC, 0) < 0) {
        nw_err("agent=%s the server did not confirm AUTH_BASIC (an older natwrp serve?): it would "
               "not enforce it, so this agent does not serve through it (retrying every %ds)",
               sl->name, BACKOFF_MAX_MS / 1000);
        hs_fail(sl, "handshake", "the server would not enforce AUTH_BASIC", 1);
        return;
    }
    uv_timer_stop(&sl->timer);
    sl->hs = NULL;
    if (ag->ntuns == MAX_TUNS) {
        nw_conn_close(c);
        schedule_reconnect(sl, "other", "too many retiring tunnels", 0);
        return;
    }
    tc.my_window = ag->cfg->window;
    tc.peer_window = win;
    tc.ping_interval_ms = ag->cfg->ping_interval_ms;
    sl->tun = nw_tun_new(ag->loop, c, 1, &tc, &ag_tun_cbs, ag);
    if (!sl->tun) {
        schedule_reconnect(sl, "other", "out of memory", 0);
        return;
    }
    sl->tun->interim = nw_hf_find(h, NW_HS_INTERIM, 0) >= 0;
    ag->tuns[ag->ntuns++] = sl->tun;
    sl->tun->id = ++ag->tun_seq;
    snprintf(sl->tun->agent, sizeof(sl->tun->agent), "%s", sl->name);
    sl->up_since = uv_now(ag->loop);
    sl->since = (int64_t)time(NULL);
    sl->last_error[0] = 0;
    hs_keep_routes(sl);
    nw_info("tunnel up agent=%s remote=%s tun=%llu", sl->name, slot_remote(sl),
            (unsigned long long)sl->tun->id);
    if (ag->cfg->routes[0])
        hs_log_routes(sl);
    if (!ag->notified_ready) { /* systemd: useful from the first tunnel on */
        ag->notified_ready = 1;
        nw_notifyf("READY=1\nSTATUS=tunnel up to %s", slot_remote(sl));
    }
    nw_tun_start(sl->tun, rest, rest_len);
}

static void hs_on_read(nw_conn_t *c, ssize_t nread, const char *buf) {
    slot_t *sl = c->data;
    llhttp_errno_t e;
    const char *pos;
    if (nread < 0) {
        if (sl->hs_parser.status_code && sl->hs_parser.status_code != 101 &&
            llhttp_finish(&sl->hs_parser) == HPE_OK) {
            hs_refused(sl);
            return;
        }
        hs_fail(sl, "handshake",
                nread == UV_EOF ? "server closed the connection during the handshake"
                                : nw_strerror((int)nread),
                0);
        return;
    }
    e = llhttp_execute(&sl->hs_parser, buf, (size_t)nread);
    if (e == HPE_PAUSED_UPGRADE) {
        pos = llhttp_get_error_pos(&sl->hs_parser);
        hs_upgraded(sl, pos, (size_t)(buf + nread - pos));
    } else if (sl->hs_done) {
        hs_refused(sl);
    } else if (e != HPE_OK) {
        hs_fail(sl, "handshake", "malformed handshake response from server", 0);
    }
}

static void hs_on_close(nw_conn_t *c) { (void)c; }

static void hs_on_timeout(uv_timer_t *h) {
    hs_fail(h->data, "handshake", "handshake timed out", 0);
}

int slot_hs_request(const slot_t *sl, const char *key, nw_sbuf_t *req) {
    const agent_t *ag = sl->ag;
    const nw_agent_cfg_t *cfg = ag->cfg;
    const nw_url_t *u = slot_url(sl);
    int v6 = strchr(u->host, ':') != NULL;
    size_t i;
    int rc;

    /* The token goes in a header, never the URL, to stay out of logs. */
    rc = nw_sbuf_appendf(req,
                         "GET %s" NW_TUNNEL_PATH " HTTP/1.1\r\nHost: %s%s%s:%u\r\n"
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                         "Sec-WebSocket-Protocol: " NW_HS_SUBPROTO "\r\n"
                         NW_HS_AGENT ": %s\r\n" NW_HS_WINDOW ": %u\r\n",
                         u->path, v6 ? "[" : "", u->host, v6 ? "]" : "", u->port, key, sl->name,
                         cfg->window);
    /* serve replaces a live tunnel of the same name unless it is this
     * process's through another address (handshake.h, nw_hs_coexist). */
    if (sl->rem)
        rc |= nw_sbuf_appendf(req, NW_HS_INSTANCE ": %s-%s\r\n", ag->instance, sl->rem->key);
    if (cfg->max_conn > 1)
        rc |= nw_sbuf_appendf(req, NW_HS_GROUP ": %s\r\n", cfg->agent_id);
    if (cfg->conn_token[0])
        rc |= nw_sbuf_appendf(req, "Authorization: Bearer %s\r\n", cfg->conn_token);
    /* Without ROUTES no field: a serve of any version gives the default
     * route, as before routes existed. */
    if (cfg->routes[0]) {
        rc |= nw_sbuf_appends(req, NW_HS_ROUTES ": ");
        rc |= nw_sbuf_appends(req, cfg->routes);
        rc |= nw_sbuf_appends(req, "\r\n");
    }
    for (i = 0; i < cfg->basic.n; i++)
        rc |= nw_sbuf_appendf(req, NW_HS_AUTH_BASIC ": %s\r\n", cfg->basic.b64[i]);
    rc |= nw_sbuf_appends(req, "User-Agent: natwrp/" NW_VERSION "\r\n\r\n");
    return rc ? NW_ENOMEM : 0;
}

static void on_remote_dial(nw_dial_t *d, nw_conn_t *c, int err, void *ud) {
    slot_t *sl = ud;
    agent_t *ag = sl->ag;
    const nw_agent_cfg_t *cfg = ag->cfg;
    nw_sbuf_t req = {0};
    uv_buf_t b;
    char reason[1600];
    int rc;
    sl->dial = NULL;
    if (!c) {
        snprintf(reason, sizeof(reason), "cannot connect to %s: %s",
                 sl->rem ? sl->rem->url_str : ag->remote_str,
                 nw_dial_strerror(d));
        schedule_reconnect(sl, err == NW_ETLS ? "tls" : "connect_failed", reason,
                           0); /* logs the reason: once per attempt */
        return;
    }
    if (c->tls)
        nw_info("agent=%s tls: connected to %s with %s%s", sl->name,
                sl->rem ? sl->rem->url_str : ag->remote_str,
                nw_tls_version(c->tls), cfg->insecure ? " (certificate NOT verified)" : "");
    if (c->tls)
        nw_info("agent=%s tls: cipher suite %s", sl->name, nw_tls_suite(c->tls));
    sl->hs = c;
    nw_conn_set_owner(c, sl, hs_on_read, NULL, hs_on_close);
    nw_hf_reset(&sl->hs_hf);
    nw_sbuf_free(&sl->hs_body);
    sl->hs_done = 0;
    llhttp_init(&sl->hs_parser, HTTP_RESPONSE, &hs_settings);
    sl->hs_parser.data = sl;
    nw_ws_new_key(sl->hs_key);
    rc = slot_hs_request(sl, sl->hs_key, &req);
    b = uv_buf_init(req.p, (unsigned)req.len);
    if (rc != 0 || !req.p || nw_conn_write(c, &b, 1, 0) != 0) {
        nw_sbuf_free(&req);
        hs_fail(sl, "other", "cannot send the handshake", 0);
        return;
    }
    nw_sbuf_free(&req);
    uv_timer_start(&sl->timer, hs_on_timeout, cfg->connect_timeout_ms, 0);
    nw_conn_resume(c, NW_PAUSE_OWNER);
}

void slot_connect(slot_t *sl) {
    agent_t *ag = sl->ag;
    const nw_url_t *u;
    if (ag->stopping || !sl->rem || sl->tun || sl->dial || sl->hs)
        return;
    u = slot_url(sl);
    nw_info("agent=%s connecting to %s", sl->name, slot_remote(sl));
    if (!sl->since)
        sl->since = (int64_t)time(NULL);
    if (u->tls && ag->cfg->insecure)
        nw_warn("agent=%s tls: TLS_INSECURE is set: the server's certificate is not verified "
                "(insecure; anyone on the path can impersonate the server)",
                sl->name);
    sl->dial = nw_dial_start_at(ag->loop, u->host, sl->rem->addr, u->port,
                                ag->cfg->connect_timeout_ms, u->tls ? ag->remote_tls : NULL,
                                on_remote_dial, sl);
    if (!sl->dial)
        schedule_reconnect(sl, "other", "cannot start a connection", 0);
}

void slot_random_hex(char out[17]) {
    unsigned char r[8] = {0};
    unsigned i;
    nw_random(r, sizeof(r));
    for (i = 0; i < 8; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
}

/* Stop a slot's backoff, dial or handshake (its tunnel is left alone). */
void slot_cancel(slot_t *sl) {
    uv_timer_stop(&sl->timer);
    if (sl->dial) {
        nw_dial_cancel(sl->dial);
        sl->dial = NULL;
    }
    if (sl->hs) {
        nw_conn_close(sl->hs);
        sl->hs = NULL;
    }
}
