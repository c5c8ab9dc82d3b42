/* upgrade.c: the tunnel upgrade on serve: CONN_TOKEN, --allow-agent, limits, take-over. */
#include <errno.h>
#include <llhttp.h>
#include <regex.h>
#include <unistd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "cfg.h"
#include "conn.h"
#include "http1.h"
#include "log.h"
#include "path.h"
#include "serve.h"
#include "serve_int.h"
#include "handshake.h"
#include "tun.h"
#include "ws.h"

/* Refuse a tunnel upgrade with a status and a one-line reason. */
static void tunnel_refuse(pconn_t *pc, int status, const char *agent, const char *why) {
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

/* May this agent have a tunnel here: CONN_TOKEN, --allow-agent, the
 * tunnel limits, not draining. 0, or -1 once refused. */
static int admit(pconn_t *pc, const char *agent, const char *group) {
    const nw_serve_cfg_t *cfg = pc->srv->cfg;
    nw_hdr_t f;
    int i;
    if (cfg->conn_token[0]) {
        const char *tok = NULL;
        size_t tlen = 0;
        i = nw_hf_find(&pc->hf, "authorization", 0);
        if (i >= 0)
            nw_hf_get(&pc->hf, (size_t)i, &f);
        if (i < 0 || !srv_auth_value(&f, 1, &tok, &tlen) ||
            !srv_token_eq(tok, tlen, cfg->conn_token, strlen(cfg->conn_token))) {
            tunnel_refuse(pc, 401, agent,
                          i < 0 ? "unauthorized: no CONN_TOKEN presented (Authorization: Bearer)"
                                : "unauthorized: wrong CONN_TOKEN");
            return -1;
        }
    }
    if (pc->srv->has_allow && regexec(&pc->srv->allow_re, group, 0, NULL, 0) != 0) {
        tunnel_refuse(pc, 403, agent, "forbidden: AGENT_ID not allowed by --allow-agent");
        return -1;
    }
    {
        /* A same-name tunnel is replaced, so it does not count; one that
         * drains after GOAWAY is not replaced (pc_take_over), so it does:
         * the tunnel table stays within --max-tunnels. */
        size_t k, total = pc->srv->ntuns, mine = reg_count_group(pc->srv, group);
        for (k = 0; k < pc->srv->ntuns; k++)
            if (strcmp(pc->srv->tuns[k]->agent, agent) == 0 && !pc->srv->tuns[k]->goaway_recv)
                total--, mine -= strcmp(pc->srv->tuns[k]->group, group) == 0;
        if (total >= cfg->max_tunnels) {
            tunnel_refuse(pc, 503, agent, "too many tunnels on this server (--max-tunnels)");
            return -1;
        }
        if (mine >= cfg->max_agent_tunnels) {
            tunnel_refuse(pc, 429, agent, "too many tunnels for this AGENT_ID (--max-agent-tunnels)");
            return -1;
        }
    }
    if (pc->srv->draining) {
        tunnel_refuse(pc, 503, agent, "server is shutting down");
        return -1;
    }
    return 0;
}

/* The tunnel upgrade: checks in the order an agent's mistakes are best
 * reported, then the 101. 0 when answered with 101, else -1 (refused). */
static int tunnel_handshake(pconn_t *pc, char *agent, char *group, uint32_t *peer_window) {
    char accept[29], resp[512];
    int n;

    if (check_websocket(pc, accept) != 0 || read_names(pc, agent, group) != 0 ||
        admit(pc, agent, group) != 0)
        return -1;
    if (nw_hs_window(&pc->hf, peer_window) != 0) {
        tunnel_refuse(pc, 400, agent, "invalid " NW_HS_WINDOW);
        return -1;
    }
    n = snprintf(resp, sizeof(resp),
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                 "Sec-WebSocket-Protocol: " NW_HS_SUBPROTO "\r\n" NW_HS_WINDOW ": %u\r\n\r\n",
                 accept, pc->srv->cfg->window);
    return pc_write(pc, resp, (size_t)n, 0) == 0 ? 0 : -1;
}

/* The connection becomes a tunnel; the pconn shell goes away. */
void pc_take_over(pconn_t *pc, const char *rest, size_t rest_len) {
    serve_t *srv = pc->srv;
    char agent[140], group[140];
    uint32_t peer_window = 0;
    nw_tun_cfg_t tc;
    nw_tun_t *t;
    nw_conn_t *c = pc->conn;
    size_t i;

    if (tunnel_handshake(pc, agent, group, &peer_window) != 0)
        return;
    tc.my_window = srv->cfg->window;
    tc.peer_window = peer_window;
    tc.ping_interval_ms = srv->cfg->ping_interval_ms;
    pc->conn = NULL;
    pc_set_state(pc, PC_CLOSED);
    uv_close((uv_handle_t *)&pc->timer, pc_on_timer_close);
    pc_maybe_free(pc); /* drops the conn's share */
    nw_conn_set_owner(c, NULL, NULL, NULL, NULL); /* the pconn is gone */
    t = nw_tun_new(srv->loop, c, 0, &tc, &srv_tun_cbs, srv);
    if (!t)
        return;
    t->id = ++srv->next_tun_id;
    snprintf(t->agent, sizeof(t->agent), "%s", agent);
    snprintf(t->group, sizeof(t->group), "%s", group);
    /* One that sent GOAWAY is left alone: it finishes its streams and
     * closes by itself (an agent restarting under the same id). */
    for (i = 0; i < srv->ntuns; i++)
        if (strcmp(srv->tuns[i]->agent, agent) == 0 && !srv->tuns[i]->goaway_recv) {
            nw_info("tunnel replaced tun=%llu agent=%s by tun=%llu",
                    (unsigned long long)srv->tuns[i]->id, agent, (unsigned long long)t->id);
            nw_tun_close(srv->tuns[i], NW_ECLOSED);
            break;
        }
    if (srv->ntuns >= MAX_TUNNELS) {
        /* Only when a replaced tunnel is still closing: never past the table. */
        nw_warn("tunnel refused tun=%llu agent=%s: the tunnel table is full",
                (unsigned long long)t->id, agent);
        nw_tun_close(t, NW_ECLOSED);
        return;
    }
    srv->tuns[srv->ntuns++] = t;
    nw_info("tunnel open tun=%llu agent=%s peer=%s", (unsigned long long)t->id, agent, c->peer);
    nw_tun_start(t, rest, rest_len);
}
