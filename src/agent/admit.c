/* admit.c: admission to the local service: MAX_LOCAL_CONNS, the
 * LOCAL_QUEUE wait queue and its LOCAL_QUEUE_TIMEOUT, MAX_LOCAL_PIPES,
 * 503 refusals. */
#include <stdio.h>
#include <string.h>

#include "agent_int.h"

/* Start waiting requests while local connection slots are free. */
void admit_waiters(agent_t *ag) {
    if (ag->admitting)
        return;
    ag->admitting = 1;
    while (ag->wait_head && ag->nlocal < ag->cfg->max_local) {
        lreq_t *r = ag->wait_head;
        ag->wait_head = r->wnext;
        if (!ag->wait_head)
            ag->wait_tail = NULL;
        ag->nwait--;
        r->waiting = 0;
        r->admitted = 1;
        ag->nlocal++;
        if (!r->strm || nw_tun_closing(r->strm->tun)) {
            /* Its tunnel is going: its reset is on the way; start nothing. */
            continue;
        }
        lreq_start(r);
    }
    ag->admitting = 0;
}

/* Answer r 503 through the tunnel (an ordinary response, not a RST) and
 * free it. */
void lreq_refuse(lreq_t *r, const char *body, size_t len) {
    char cl[24];
    nw_hdr_t h[3];
    r->log_status = 503;
    if (r->strm && !nw_tun_closing(r->strm->tun)) {
        r->log_out = len;
        snprintf(cl, sizeof(cl), "%zu", len);
        h[0] = (nw_hdr_t){"Content-Type", 12, "text/plain; charset=utf-8", 25};
        h[1] = (nw_hdr_t){"Content-Length", 14, cl, strlen(cl)};
        h[2] = (nw_hdr_t){"Retry-After", 11, "1", 1};
        if (nw_strm_head(r->strm, 503, "Service Unavailable", 19, h, 3, 0) == 0) {
            ops_response(r, 503);
            ins_resp_head(r, 503, h, 3), ins_resp_body(r, body, len); /* the inspector */
            nw_strm_send(r->strm, body, len, 1);
        }
    }
    lreq_detach(r, 0);
    lreq_free(r);
}

/* LOCAL_QUEUE_TIMEOUT: requests still waiting for a local connection that
 * long get 503 (the queue is oldest first, so only its head is timed). */
static void on_queue_timeout(uv_timer_t *h) {
    agent_t *ag = h->data;
    static const char body[] = "natwrp agent: the local service is busy; try again\n";
    uint64_t now = uv_now(ag->loop), tmo = ag->cfg->local_queue_timeout_ms;
    while (ag->wait_head && now - ag->wait_head->wait_since >= tmo) {
        lreq_t *r = ag->wait_head;
        nw_warn("agent=%s strm=%u waited %llu ms for one of %zu busy local connections "
                "(LOCAL_QUEUE_TIMEOUT): 503",
                ag->cfg->agent_id, r->strm ? r->strm->sid : 0,
                (unsigned long long)(now - r->wait_since), ag->nlocal);
        ops_local_error(ag, "queue_timeout");
        lreq_refuse(r, body, sizeof(body) - 1); /* unlinks it from the queue */
    }
    if (ag->wait_head)
        uv_timer_start(&ag->qtimer, on_queue_timeout, ag->wait_head->wait_since + tmo - now, 0);
}

/* At most MAX_LOCAL_CONNS exchanges with the local service at once; up to
 * LOCAL_QUEUE more wait (their bodies are held by the stream's window) for
 * up to LOCAL_QUEUE_TIMEOUT; beyond that the request is answered 503
 * through the tunnel. */
void lreq_admit(lreq_t *r) {
    agent_t *ag = r->ag;
    static const char body[] = "natwrp agent: too many requests for the local service; "
                               "try again\n";
    if (ag->nlocal < ag->cfg->max_local && !ag->wait_head) {
        r->admitted = 1;
        ag->nlocal++;
        lreq_start(r);
        return;
    }
    if (ag->nwait < ag->cfg->local_queue) {
        r->waiting = 1;
        r->wnext = NULL;
        r->wait_since = uv_now(ag->loop);
        if (ag->wait_tail)
            ag->wait_tail->wnext = r;
        else
            ag->wait_head = r;
        ag->wait_tail = r;
        ag->nwait++;
        if (!uv_is_active((uv_handle_t *)&ag->qtimer))
            uv_timer_start(&ag->qtimer, on_queue_timeout, ag->cfg->local_queue_timeout_ms, 0);
        return;
    }
    nw_warn("agent=%s strm=%u %zu local connections busy and %zu requests waiting: 503",
            ag->cfg->agent_id, r->strm->sid, ag->nlocal, ag->nwait);
    ops_local_error(ag, "queue_full");
    lreq_refuse(r, body, sizeof(body) - 1);
}

/* MAX_LOCAL_PIPES: pipes have their own bound and, once up, take no
 * request slot, so idle WebSockets never starve plain requests. Counts r
 * as a pipe, or answers it 503 (freeing it) and returns -1. */
int admit_pipe(lreq_t *r) {
    agent_t *ag = r->ag;
    static const char body[] = "natwrp agent: too many upgraded connections (WebSockets) "
                               "to the local service; try again\n";
    if (ag->npipes >= ag->cfg->max_pipes) {
        nw_warn("agent=%s strm=%u %zu upgraded connections open (MAX_LOCAL_PIPES): 503",
                ag->cfg->agent_id, r->strm->sid, ag->npipes);
        ops_local_error(ag, "pipes_full");
        lreq_refuse(r, body, sizeof(body) - 1);
        return -1;
    }
    r->pipe_slot = 1;
    ag->npipes++;
    return 0;
}

/* r is going: out of the wait queue, and its slots given back. */
void admit_release(lreq_t *r) {
    agent_t *ag = r->ag;
    if (r->waiting) {
        lreq_t **pp = &ag->wait_head, *prev = NULL;
        while (*pp && *pp != r)
            prev = *pp, pp = &(*pp)->wnext;
        if (*pp) {
            *pp = r->wnext;
            if (ag->wait_tail == r)
                ag->wait_tail = prev;
            ag->nwait--;
        }
    }
    if (r->admitted)
        ag->nlocal--;
    if (r->pipe_slot)
        ag->npipes--;
}
