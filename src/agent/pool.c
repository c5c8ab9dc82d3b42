/* pool.c: the keep-alive pool of local connections: idle list, the
 * reuse decision when an exchange ends, the checks before one is taken. */
#include <errno.h>
#include <sys/socket.h>

#include "agent_int.h"

static void pool_remove(agent_t *ag, lconn_t *lc) {
    lconn_t **pp = &ag->idle;
    while (*pp && *pp != lc)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = lc->next;
        ag->nidle--;
    }
    lc->idle = 0;
}

void lc_close(lconn_t *lc) {
    if (lc->idle)
        pool_remove(lc->ag, lc);
    nw_conn_close(lc->conn);
}

/* Abort mid-exchange: a reset reaches the service even when the request
 * body it never read is still queued in front of a FIN. */
void lc_abort(lconn_t *lc) {
    if (lc->idle)
        pool_remove(lc->ag, lc);
    nw_conn_abort(lc->conn);
}

/* The exchange finished cleanly: pool the connection if it can be reused. */
void lreq_done(lreq_t *r) {
    lconn_t *lc = r->lc;
    agent_t *ag = r->ag;
    int reuse = lc && !r->upgrade && llhttp_should_keep_alive(&lc->parser) && r->req_end &&
                !r->early.bytes && lc->conn->wbytes == 0 && !ag->stopping && !lc->stray &&
                !lc->conn->closing;
    lreq_detach(r, 0);
    if (lc) {
        lc->req = NULL;
        r->lc = NULL;
        if (r->piped) {
            /* Let the client's last bytes and the half-close reach the
             * service before the connection goes. */
            lc->idle = 0;
            nw_conn_close_after_flush(lc->conn);
        } else if (reuse && ag->nidle < ag->cfg->pool_size) {
            lc_parser_init(lc);
            lc->idle = 1;
            lc->reused = 1;
            lc->next = ag->idle;
            ag->idle = lc;
            ag->nidle++;
            nw_conn_resume(lc->conn, NW_PAUSE_CREDIT | NW_PAUSE_DONE);
        } else {
            lc_close(lc);
        }
    }
    lreq_free(r);
}

/* A pooled connection is usable only if nothing arrived on it since its
 * last response: bytes waiting there (or its EOF) would be read as the
 * next request's response. The read callback closes such connections as
 * soon as it runs, but the OPEN may be handled first in the same turn.
 * Over TLS, bytes can also wait in the TLS layer: part of a record (no
 * plaintext yet, so no read callback), whose rest would come later. */
static int lc_reusable(lconn_t *lc) {
    uv_os_fd_t fd;
    char b;
    ssize_t n;
    if (lc->conn->closing || lc->stray)
        return 0;
    if (nw_conn_input_pending(lc->conn)) {
        nw_warn("agent=%s local service sent bytes on an idle keep-alive connection: closed",
                lc->ag->cfg->agent_id);
        return 0;
    }
    if (uv_fileno((uv_handle_t *)&lc->conn->tcp, &fd) != 0)
        return 0;
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        nw_warn("agent=%s local service sent bytes on an idle keep-alive connection: closed",
                lc->ag->cfg->agent_id);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* An idle connection fit for the next request, or NULL; unfit ones met on
 * the way are closed. */
lconn_t *pool_take(agent_t *ag) {
    lconn_t *lc;
    while ((lc = ag->idle) != NULL) {
        pool_remove(ag, lc);
        if (lc_reusable(lc))
            return lc;
        lc_close(lc);
    }
    return NULL;
}
