/* upgrade.c: the tunnel upgrade on serve: CONN_TOKEN, --allow-agent, limits, take-over. */
#include <errno.h>
#include <llhttp.h>
#include <regex.h>
#include <unistd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfg.h"
#include "conn.h"
#include "http1.h"
#include "log.h"
#include "path.h"
#include "serve.h"
#include "serve_int.h"
#include "basic.h"
#include "handshake.h"
#include "tokens.h"
#include "tun.h"
#include "ws.h"

/* The natwrp_tunnel_refusals_total reason of a refusal (serve_ops.c). */
static const char *refusal_reason(int status, const char *why) {
    switch (status) {
    case 401: return "token";
    case 403: return strncmp(why, "refused:", 8) == 0 ? "route" : "forbidden";
    case 429: return "limits";
    case 503:
        return strcmp(why, "out of memory") == 0          ? "internal"
               : strcmp(why, "server is shutting down") == 0 ? "draining"
                                                            : "limits";
    default: return "bad_handshake";
    }
}

/* Refuse a tunnel upgrade with a status and a one-line reason. */
static void tunnel_refuse(pconn_t *pc, int status, const char *agent, const char *why) {
    srv_ops_refused(pc->srv, refusal_reason(status, why));
    nw_warn("tunnel refused from %s agent=%s: %d %s", pc->conn->peer, agent && *agent ? agent : "-",
            status, why);
    pc->keep_alive = 0;
    pc_reply(pc, status, why);
}

/* The subprotocol is not ours: a 400 that names both versions. */
static void refuse_subproto(pconn_t *pc) {
    nw_hfields_t *h = &pc->hf;
    nw_hdr_t f;
    char msg[256], resp[512];
    int n, i = nw_hf_find(h, "sec-websocket-protocol", 0);
    if (i >= 0)
        nw_hf_get(h, (size_t)i, &f);
    snprintf(msg, sizeof(msg),
             "protocol version mismatch: agent offered '%.*s', server speaks " NW_HS_SUBPROTO,
             i >= 0 ? (int)NW_MIN(f.value_len, 100) : 4, i >= 0 ? f.value : "none");
    nw_warn("tunnel refused from %s: %s", pc->conn->peer, msg);
    srv_ops_refused(pc->srv, "bad_handshake");
    n = snprintf(resp, sizeof(resp),
                 "HTTP/1.1 400 Bad Request\r\n" NW_HS_VERSION ": %d\r\n"
                 "Content-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n"
                 "natwrp: %s\n",
                 NW_PROTO_VERSION, strlen(msg) + 9, msg);
    pc_write(pc, resp, (size_t)n, 0);
    pc->head_sent = 1;
    pc_linger(pc);
}

/* The WebSocket part of the upgrade: a GET with Upgrade, version 13, a
 * valid key (its answer into accept) and our subprotocol. 0, or -1 once
 * refused. */
static int check_websocket(pconn_t *pc, char accept[29]) {
    nw_hfields_t *h = &pc->hf;
    nw_hdr_t f;
    int i;

    if (pc->parser.method != HTTP_GET || !nw_http_has_token(h, "upgrade", "websocket") ||
        !nw_http_has_token(h, "connection", "upgrade")) {
        tunnel_refuse(pc, 426, NULL, "this path is reserved for agent tunnels (WebSocket upgrade)");
        return -1;
    }
    i = nw_hf_find(h, "sec-websocket-version", 0);
    if (i < 0 || (nw_hf_get(h, (size_t)i, &f), !nw_strieq(f.value, f.value_len, "13"))) {
        const char r[] = "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n";
        nw_warn("tunnel refused from %s agent=-: 426 Sec-WebSocket-Version is not 13",
                pc->conn->peer);
        srv_ops_refused(pc->srv, "bad_handshake");
        pc_write(pc, r, sizeof(r) - 1, 0);
        pc_linger(pc);
        return -1;
    }
    i = nw_hf_find(h, "sec-websocket-key", 0);
    if (i < 0 || (nw_hf_get(h, (size_t)i, &f), !nw_ws_key_valid(f.value, f.value_len)) ||
        nw_ws_accept(f.value, f.value_len, accept) != 0) {
        tunnel_refuse(pc, 400, NULL, "missing or invalid Sec-WebSocket-Key");
        return -1;
    }
    if (!nw_hs_subproto_offered(h)) {
        refuse_subproto(pc);
        return -1;
    }
    return 0;
}

/* The tunnel's name (X-Natwrp-Agent) and its group (X-Natwrp-Group, else
 * the name) into agent and group (140 bytes each). 0, or -1 once refused. */
static int read_names(pconn_t *pc, char *agent, char *group) {
    nw_hfields_t *h = &pc->hf;
    nw_hdr_t f;
    int i = nw_hf_find(h, NW_HS_AGENT, 0);

    if (i < 0 || (nw_hf_get(h, (size_t)i, &f),
                  !nw_hs_agent_id_ok(f.value, f.value_len,
                                     nw_hf_find(h, NW_HS_GROUP, 0) >= 0 ? NW_HS_TUNNEL_NAME_MAX
                                                                        : NW_HS_AGENT_ID_MAX))) {
        tunnel_refuse(pc, 400, NULL,
                      "missing or invalid X-Natwrp-Agent (1-128 of A-Z a-z 0-9 . _ @ : + -)");
        return -1;
    }
    memcpy(agent, f.value, f.value_len);
    agent[f.value_len] = 0;
    /* MAX_CONN agents name each tunnel AGENT_ID-k and send AGENT_ID here. */
    i = nw_hf_find(h, NW_HS_GROUP, 0);
    if (i >= 0 &&
        (nw_hf_get(h, (size_t)i, &f), !nw_hs_agent_id_ok(f.value, f.value_len, NW_HS_AGENT_ID_MAX))) {
        tunnel_refuse(pc, 400, agent, "invalid X-Natwrp-Group");
        return -1;
    }
    if (i >= 0) {
        memcpy(group, f.value, f.value_len);
        group[f.value_len] = 0;
    } else {
        memcpy(group, agent, strlen(agent) + 1);
    }
    return 0;
}

/* The Bearer token of the upgrade, or NULL. */
static const char *bearer_of(pconn_t *pc, size_t *len) {
    nw_hdr_t f;
    const char *tok = NULL;
    int i = nw_hf_find(&pc->hf, "authorization", 0);
    if (i < 0)
        return NULL;
    nw_hf_get(&pc->hf, (size_t)i, &f);
    return srv_auth_value(&f, 1, &tok, len) ? tok : NULL;
}

/* The upgrade's X-Natwrp-Instance into out (NW_HS_INSTANCE_MAX + 1
 * bytes; "" without one). 0, or -1 once refused. */
static int read_instance(pconn_t *pc, const char *agent, char *out) {
    nw_hdr_t f;
    int i = nw_hf_find(&pc->hf, NW_HS_INSTANCE, 0);
    out[0] = 0;
    if (i < 0)
        return 0;
    nw_hf_get(&pc->hf, (size_t)i, &f);
    if (!nw_hs_instance_ok(f.value, f.value_len) ||
        nw_hf_find(&pc->hf, NW_HS_INSTANCE, (size_t)i + 1) >= 0) {
        tunnel_refuse(pc, 400, agent, "invalid " NW_HS_INSTANCE);
        return -1;
    }
    memcpy(out, f.value, f.value_len);
    out[f.value_len] = 0;
    return 0;
}

/* Two tunnels' tokens are the same (both none counts). */
static int same_token(const srv_tun_t *a, const char *tok, size_t len) {
    if (!a->token || !tok)
        return !a->token && !tok;
    return srv_token_eq(tok, len, a->token, a->toklen);
}

/* May this agent have a tunnel here: a token of CONN_TOKEN or --tokens
 * (its line in *line), --allow-agent, the tunnel limits, replacing a
 * same-name tunnel only with its token, not draining. 0, or -1 once
 * refused. */
static int admit(pconn_t *pc, const char *agent, const char *group, const char *inst,
                 int *line) {
    serve_t *srv = pc->srv;
    const nw_serve_cfg_t *cfg = srv->cfg;
    size_t tlen = 0, k, total, mine;
    const char *tok = bearer_of(pc, &tlen);
    *line = -1;
    if (srv->tokens && (!tok || (*line = nw_tokens_find(srv->tokens, tok, tlen)) < 0)) {
        tunnel_refuse(pc, 401, agent,
                      nw_hf_find(&pc->hf, "authorization", 0) < 0
                          ? "unauthorized: no CONN_TOKEN presented (Authorization: Bearer)"
                          : "unauthorized: wrong CONN_TOKEN");
        return -1;
    }
    if (srv->has_allow && regexec(&srv->allow_re, group, 0, NULL, 0) != 0) {
        tunnel_refuse(pc, 403, agent, "forbidden: AGENT_ID not allowed by --allow-agent");
        return -1;
    }
    /* A same-name tunnel is replaced, so it does not count; one that
     * drains after GOAWAY is not replaced (pc_take_over), so it does:
     * the tunnel table stays within --max-tunnels. */
    total = srv->ntuns, mine = reg_count_group(srv, group, tok, tlen);
    for (k = 0; k < srv->ntuns; k++) {
        nw_tun_t *t = srv->tuns[k];
        if (strcmp(t->agent, agent) != 0 || t->goaway_recv)
            continue;
        /* Whoever knows an AGENT_ID must not take over its tunnel (and
         * its routes): only the token that opened it may. */
        if (!same_token(t->data, tok, tlen)) {
            tunnel_refuse(pc, 403, agent,
                          "forbidden: this AGENT_ID is connected with another token");
            return -1;
        }
        if (nw_hs_coexist(((const srv_tun_t *)t->data)->instance, inst))
            continue; /* the same agent through another address: both stay */
        total--, mine -= strcmp(t->group, group) == 0;
    }
    if (total >= cfg->max_tunnels) {
        tunnel_refuse(pc, 503, agent, "too many tunnels on this server (--max-tunnels)");
        return -1;
    }
    if (mine >= cfg->max_agent_tunnels) {
        tunnel_refuse(pc, 429, agent, "too many tunnels for this AGENT_ID (--max-agent-tunnels)");
        return -1;
    }
    if (srv->draining) {
        tunnel_refuse(pc, 503, agent, "server is shutting down");
        return -1;
    }
    return 0;
}

/* The routes the agent asks for (X-Natwrp-Routes, else the default
 * route), each granted by its token's line, into st. 0, or -1 once
 * refused: 403 naming the first route refused and why. */
static int read_routes(pconn_t *pc, const char *agent, int line, srv_tun_t *st) {
    serve_t *srv = pc->srv;
    char err[256], why[400], name[NW_ROUTE_HOST_MAX + NW_ROUTE_PATH_MAX + 8];
    nw_route_t *r;
    nw_hdr_t f;
    size_t n = 0, i;
    int hi = nw_hf_find(&pc->hf, NW_HS_ROUTES, 0);

    r = nw_calloc(hi < 0 ? 1 : NW_ROUTES_MAX, sizeof(*r));
    if (!r) {
        tunnel_refuse(pc, 503, agent, "out of memory");
        return -1;
    }
    st->routes = r;
    if (hi >= 0 && nw_hf_find(&pc->hf, NW_HS_ROUTES, (size_t)hi + 1) >= 0) {
        tunnel_refuse(pc, 400, agent, "more than one " NW_HS_ROUTES);
        return -1;
    }
    if (hi < 0) {
        nw_route_default(&r[0]);
        n = 1;
    } else {
        char *list;
        int rc;
        nw_hf_get(&pc->hf, (size_t)hi, &f);
        list = nw_strndup(f.value, f.value_len);
        rc = list ? nw_routes_parse_list(list, srv->cfg->domain, r, NW_ROUTES_MAX, &n, err,
                                         sizeof(err))
                  : NW_ENOMEM;
        nw_free(list);
        if (rc != 0) {
            snprintf(why, sizeof(why), "refused: %s", rc == NW_ENOMEM ? "out of memory" : err);
            tunnel_refuse(pc, 403, agent, why);
            return -1;
        }
        st->named = 1;
        if ((r = nw_realloc(st->routes, n * sizeof(*r))) != NULL)
            st->routes = r; /* keep only what is used (a route is 780 bytes) */
        r = st->routes;
    }
    st->nroutes = n;
    for (i = 0; srv->tokens && i < n; i++)
        if (!nw_tokens_grants(srv->tokens, line, &r[i])) {
            nw_route_format(&r[i], name, sizeof(name));
            snprintf(why, sizeof(why), "refused: route \"%.300s\": not granted to this token",
                     name);
            tunnel_refuse(pc, 403, agent, why);
            return -1;
        }
    return 0;
}

/* The Basic credentials the agent's routes demand (X-Natwrp-Auth-Basic,
 * base64 of user:password, as in a Basic Authorization) into st. 0, or
 * -1 once refused. The values are never logged. */
static int read_creds(pconn_t *pc, const char *agent, srv_tun_t *st) {
    char val[8 + 4 * NW_HS_BASIC_LEN / 3 + 8], dec[NW_BASIC_CAP(sizeof(val))];
    const char *pass;
    size_t plen, n = 0;
    nw_hdr_t f;
    int i = -1;
    while ((i = nw_hf_find(&pc->hf, NW_HS_AUTH_BASIC, (size_t)(i + 1))) >= 0)
        n++;
    if (n > NW_HS_BASIC_MAX) {
        tunnel_refuse(pc, 400, agent, "more than 64 " NW_HS_AUTH_BASIC " fields");
        return -1;
    }
    if (n && !(st->creds = nw_calloc(n, sizeof(*st->creds)))) {
        tunnel_refuse(pc, 503, agent, "out of memory");
        return -1;
    }
    while ((i = nw_hf_find(&pc->hf, NW_HS_AUTH_BASIC, (size_t)(i + 1))) >= 0) {
        int vl;
        nw_hf_get(&pc->hf, (size_t)i, &f);
        vl = snprintf(val, sizeof(val), "Basic %.*s", (int)NW_MIN(f.value_len, sizeof(val)),
                      f.value);
        if (f.value_len + 6 >= sizeof(val) ||
            nw_basic_parse(val, (size_t)vl, dec, sizeof(dec), &pass, &plen) != NW_BASIC_OK) {
            nw_wipe(dec, sizeof(dec));
            nw_wipe(val, sizeof(val));
            tunnel_refuse(pc, 400, agent, "invalid " NW_HS_AUTH_BASIC
                                          " (base64 of user:password, at most 512 bytes)");
            return -1;
        }
        plen = (size_t)(pass + plen - dec);
        if (!(st->creds[st->ncreds].p = nw_strndup(dec, plen))) {
            tunnel_refuse(pc, 503, agent, "out of memory");
            return -1;
        }
        st->creds[st->ncreds++].n = plen;
    }
    nw_wipe(dec, sizeof(dec));
    nw_wipe(val, sizeof(val));
    return 0;
}

/* The public scheme agents' routes are reached by: the listener's, or
 * what a trusted proxy in front says. */
static int public_https(pconn_t *pc) {
    nw_hdr_t f;
    int i;
    if (pc->srv->cfg->trust_proxy && (i = nw_hf_find(&pc->hf, "x-forwarded-proto", 0)) >= 0) {
        nw_hf_get(&pc->hf, (size_t)i, &f);
        return nw_strieq(f.value, f.value_len, "https");
    }
    return pc->https;
}

/* The 101; for an agent that named its routes, with the routes granted
 * as public URLs. 0, or -1. */
static int answer_101(pconn_t *pc, const char *accept, const srv_tun_t *st) {
    char url[NW_ROUTE_HOST_MAX + NW_ROUTE_PATH_MAX + 16];
    nw_sbuf_t b = {0};
    size_t i;
    int rc;
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "Sec-WebSocket-Protocol: " NW_HS_SUBPROTO "\r\n" NW_HS_WINDOW ": %u\r\n"
                     NW_HS_INTERIM ": 1\r\n",
                     accept, pc->srv->cfg->window);
    nw_sbuf_append(&b, head, (size_t)n);
    if (st->named) {
        nw_sbuf_append(&b, NW_HS_ROUTES ": ", sizeof(NW_HS_ROUTES) + 1);
        for (i = 0; i < st->nroutes; i++) {
            size_t ul = rt_public_url(&st->routes[i], public_https(pc), url, sizeof(url));
            if (i)
                nw_sbuf_append(&b, ", ", 2);
            nw_sbuf_append(&b, url, ul);
        }
        nw_sbuf_append(&b, "\r\n", 2);
    }
    if (st->ncreds) /* the agent serves only once it knows they are enforced */
        nw_sbuf_appendf(&b, NW_HS_AUTH_BASIC ": %zu\r\n", st->ncreds);
    rc = nw_sbuf_append(&b, "\r\n", 2) == 0 ? pc_write(pc, b.p, b.len, 0) : -1;
    nw_sbuf_free(&b);
    return rc == 0 ? 0 : -1;
}

/* The tunnel upgrade: checks in the order an agent's mistakes are best
 * reported, then the 101. serve's side of the tunnel, or NULL (refused). */
static srv_tun_t *tunnel_handshake(pconn_t *pc, char *agent, char *group,
                                   uint32_t *peer_window) {
    char accept[29], inst[NW_HS_INSTANCE_MAX + 1];
    srv_tun_t *st;
    size_t tlen = 0;
    const char *tok;
    int line;

    if (check_websocket(pc, accept) != 0 || read_names(pc, agent, group) != 0 ||
        read_instance(pc, agent, inst) != 0 || admit(pc, agent, group, inst, &line) != 0)
        return NULL;
    if (nw_hs_window(&pc->hf, peer_window) != 0) {
        tunnel_refuse(pc, 400, agent, "invalid " NW_HS_WINDOW);
        return NULL;
    }
    if (!(st = nw_calloc(1, sizeof(*st)))) {
        tunnel_refuse(pc, 503, agent, "out of memory");
        return NULL;
    }
    st->srv = pc->srv;
    memcpy(st->instance, inst, sizeof(inst));
    tok = bearer_of(pc, &tlen);
    if (read_routes(pc, agent, line, st) != 0 || read_creds(pc, agent, st) != 0 ||
        (tok && !(st->token = nw_strndup(tok, tlen)))) {
        if (!pc->head_sent)
            tunnel_refuse(pc, 503, agent, "out of memory");
        reg_tun_free(st);
        return NULL;
    }
    st->toklen = tlen;
    if (answer_101(pc, accept, st) != 0) {
        reg_tun_free(st);
        return NULL;
    }
    return st;
}

/* The connection becomes a tunnel; the pconn shell goes away. */
void pc_take_over(pconn_t *pc, const char *rest, size_t rest_len) {
    serve_t *srv = pc->srv;
    char agent[140], group[140];
    uint32_t peer_window = 0;
    nw_tun_cfg_t tc;
    nw_tun_t *t;
    nw_conn_t *c = pc->conn;
    srv_tun_t *st;
    size_t i;

    if (!(st = tunnel_handshake(pc, agent, group, &peer_window)))
        return;
    tc.my_window = srv->cfg->window;
    tc.peer_window = peer_window;
    tc.ping_interval_ms = srv->cfg->ping_interval_ms;
    pc->conn = NULL;
    pc_set_state(pc, PC_CLOSED);
    uv_close((uv_handle_t *)&pc->timer, pc_on_timer_close);
    pc_maybe_free(pc); /* drops the conn's share */
    nw_conn_set_owner(c, NULL, NULL, NULL, NULL); /* the pconn is gone */
    t = nw_tun_new(srv->loop, c, 0, &tc, &srv_tun_cbs, st);
    if (!t) {
        reg_tun_free(st);
        return;
    }
    st->tun = t;
    t->id = ++srv->next_tun_id;
    snprintf(t->agent, sizeof(t->agent), "%s", agent);
    snprintf(t->group, sizeof(t->group), "%s", group);
    /* One that sent GOAWAY is left alone: it finishes its streams and
     * closes by itself (an agent restarting under the same id). admit()
     * checked that this one has the replaced tunnel's token. */
    for (i = 0; i < srv->ntuns; i++)
        if (strcmp(srv->tuns[i]->agent, agent) == 0 && !srv->tuns[i]->goaway_recv &&
            !nw_hs_coexist(((const srv_tun_t *)srv->tuns[i]->data)->instance, st->instance)) {
            nw_info("tunnel replaced tun=%llu agent=%s by tun=%llu",
                    (unsigned long long)srv->tuns[i]->id, agent, (unsigned long long)t->id);
            nw_tun_close(srv->tuns[i], NW_ECLOSED);
            srv_ops_tunnel(srv, "replace");
            break;
        }
    if (srv->ntuns >= MAX_TUNNELS) {
        /* Only when a replaced tunnel is still closing: never past the table. */
        nw_warn("tunnel refused tun=%llu agent=%s: the tunnel table is full",
                (unsigned long long)t->id, agent);
        srv_ops_refused(srv, "limits");
        nw_tun_close(t, NW_ECLOSED);
        return;
    }
    srv->tuns[srv->ntuns++] = t;
    snprintf(st->peer, sizeof(st->peer), "%s", c->peer);
    st->since = (int64_t)time(NULL);
    srv_ops_tunnel(srv, "open");
    nw_info("tunnel open tun=%llu agent=%s peer=%s", (unsigned long long)t->id, agent, c->peer);
    if (rt_attach(st) != 0) {
        nw_warn("tunnel tun=%llu agent=%s: out of memory for its routes", (unsigned long long)t->id,
                agent);
        nw_tun_close(t, NW_ENOMEM);
        return;
    }
    nw_tun_start(t, rest, rest_len);
}
