/* registry.c: the tunnel registry (serve's side of each tunnel) and the
 * wait queue for a stream slot. Which tunnel serves a request: routing.c. */
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
#include "tun.h"
#include "ws.h"

static void wq_on_check(uv_check_t *h);

/* 1 when t was in the table (it had opened), else 0. */
static int reg_remove(serve_t *srv, nw_tun_t *t) {
    size_t i;
    for (i = 0; i < srv->ntuns; i++)
        if (srv->tuns[i] == t) {
            srv->tuns[i] = srv->tuns[--srv->ntuns];
            return 1;
        }
    return 0;
}

/* Whether any tunnel may take new streams (full or not). */
/* A tunnel takes new streams: no GOAWAY from its agent, not closing, its
 * grant not revoked. */
int reg_tun_usable(const nw_tun_t *t) {
    return !t->goaway_recv && !nw_tun_closing(t) && !((const srv_tun_t *)t->data)->revoked;
}

int reg_usable(serve_t *srv) {
    size_t i;
    for (i = 0; i < srv->ntuns; i++)
        if (reg_tun_usable(srv->tuns[i]))
            return 1;
    return 0;
}

/* Free serve's side of a tunnel; its secrets are wiped first. */
void reg_tun_free(srv_tun_t *st) {
    size_t i;
    if (!st)
        return;
    for (i = 0; i < st->ncreds; i++) {
        nw_wipe(st->creds[i].p, st->creds[i].n);
        nw_free(st->creds[i].p);
    }
    nw_free(st->creds);
    if (st->token)
        nw_wipe(st->token, st->toklen);
    nw_free(st->token);
    nw_free(st->routes);
    nw_free(st);
}

/* The tunnels of group opened with token tok (NULL: none). A group is
 * named by its agent, so another token's tunnels that take the same name
 * are not in it: they cannot use up its --max-agent-tunnels. */
size_t reg_count_group(serve_t *srv, const char *group, const char *tok, size_t tlen) {
    size_t i, n = 0;
    for (i = 0; i < srv->ntuns; i++) {
        const srv_tun_t *st = srv->tuns[i]->data;
        if (strcmp(srv->tuns[i]->group, group) == 0 &&
            (st->token && tok ? srv_token_eq(tok, tlen, st->token, st->toklen)
                              : !st->token && !tok))
            n++;
    }
    return n;
}

/* After an error reply: half-close, then read and drop whatever the client
 * still sends until it closes or LINGER_MS passes, so the reply is not lost
 * to a TCP reset caused by unread input. */
void wq_remove(pconn_t *pc) {
    serve_t *srv = pc->srv;
    if (!pc->queued)
        return;
    if (pc->qprev)
        pc->qprev->qnext = pc->qnext;
    else
        srv->wq_head = pc->qnext;
    if (pc->qnext)
        pc->qnext->qprev = pc->qprev;
    else
        srv->wq_tail = pc->qprev;
    pc->qprev = pc->qnext = NULL;
    pc->queued = 0;
}

/* Draining with no tunnel left that takes streams: none can come (the
 * handshake is refused while draining), so the requests that wait for one
 * are answered now instead of at --queue-timeout. */
void wq_fail_if_hopeless(serve_t *srv) {
    if (!srv->draining || srv->stopping || reg_usable(srv))
        return;
    while (srv->wq_head) {
        pconn_t *pc = srv->wq_head;
        wq_remove(pc);
        nw_warn("conn=%llu client=%s no agent connected and draining: 503",
                (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-");
        pc->keep_alive = 0;
        pc_reply(pc, 503, "no agent is connected to this server");
    }
}

static void srv_on_tun_close(nw_tun_t *t, int err) {
    srv_tun_t *st = t->data;
    serve_t *srv = st->srv;
    if (reg_remove(srv, t))
        srv_ops_tunnel(srv, "close");
    rt_detach(st, "tunnel closed");
    nw_info("tunnel closed tun=%llu agent=%s reason=%s", (unsigned long long)t->id, t->agent,
            nw_strerror(err));
    reg_tun_free(st);
    t->data = NULL;
    wq_kick(srv);
    wq_fail_if_hopeless(srv);
}

static void srv_on_goaway(nw_tun_t *t, uint32_t last, uint32_t code) {
    nw_info("tunnel draining tun=%llu agent=%s (GOAWAY %s)", (unsigned long long)t->id, t->agent,
            nw_mux_code_name(code));
    (void)last;
    wq_fail_if_hopeless(((srv_tun_t *)t->data)->srv);
}

/* A tunnel's events on serve; serve never gets an OPEN (on_open NULL). */
const nw_tun_cbs_t srv_tun_cbs = {
    .on_open = NULL,
    .on_head = srv_on_head,
    .on_data = srv_on_data,
    .on_reset = srv_on_reset,
    .on_drain = srv_on_drain,
    .on_goaway = srv_on_goaway,
    .on_close = srv_on_tun_close,
};

void wq_append(pconn_t *pc) {
    serve_t *srv = pc->srv;
    pc->queued = 1;
    pc->qnext = NULL;
    pc->qprev = srv->wq_tail;
    if (srv->wq_tail)
        srv->wq_tail->qnext = pc;
    else
        srv->wq_head = pc;
    srv->wq_tail = pc;
    uv_check_start(&srv->wq_check, wq_on_check);
}

/* Something may let a waiting request go: a stream slot freed, a tunnel
 * came or went, a held route was dropped. The next check runs the queue. */
void wq_kick(serve_t *srv) {
    srv->wq_kick = 1;
}

/* Requests waiting for a slot, oldest first. A uv_check runs this after
 * each loop iteration in which the queue is not empty, so slots freed in
 * any callback are used without re-entering it; it passes over the queue
 * only after a wq_kick, since nothing else can change its answer. Each
 * request that still has no tunnel goes back to the tail in the same
 * order (its route may be held while another route has room: no request
 * waits behind one of another route). */
static void wq_on_check(uv_check_t *h) {
    serve_t *srv = h->data;
    pconn_t *last = srv->wq_tail, *pc;
    int done = 0;
    if (!srv->wq_kick)
        return;
    srv->wq_kick = 0;
    while (!done && (pc = srv->wq_head) != NULL) {
        int st;
        done = pc == last;
        wq_remove(pc);
        st = pc_dispatch(pc);
        if (st == 1)
            continue; /* back at the tail (pc_wait_for_slot) */
        if (st != 0) {
            char mb[320];
            pc->keep_alive = 0;
            pc_reply(pc, st, pc_status_msg(pc, st, mb, sizeof(mb)));
            continue;
        }
        pc_sent(pc);
        if (pc->hold_parser) {
            pc->hold_parser = 0;
            pc_unpause(pc); /* the body, if any, flows to the stream now */
            /* With nothing buffered, run the parser once anyway: it was held
             * right after the head and still has to end the message. */
            if (!pc->pipeline.len && pc->state == PC_WAIT && pc->conn)
                pc_feed(pc, "", 0);
        }
    }
    if (srv->wq_head)
        return;
    uv_check_stop(&srv->wq_check);
}
