/* dial.c: the dialer: resolve a host, try each address in turn, optional
 * TLS handshake, all under one timeout. */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "dial.h"
#include "log.h"

struct nw_dial_s {
    uv_loop_t *loop;
    uint16_t port;
    nw_dial_cb cb;
    void *ud;
    uv_getaddrinfo_t gai;
    struct addrinfo *res, *cur;
    uv_connect_t creq;
    nw_conn_t *c;
    uv_timer_t timer;
    int last_err;
    nw_tls_conf_t *tls;
    char host[256];
    char msg[NW_TLS_ERRLEN + 64];
    struct addrinfo num_ai;          /* an IP-literal host needs no lookup */
    struct sockaddr_storage num_ss;
    uint64_t timeout_ms;
    unsigned gai_pending : 1, connect_pending : 1, timer_open : 1, done : 1, numeric : 1;
};

const char *nw_dial_strerror(const nw_dial_t *d) { return d->msg; }

static void dial_maybe_free(nw_dial_t *d) {
    if (!d->done || d->gai_pending || d->connect_pending || d->timer_open)
        return;
    if (d->res && !d->numeric)
        uv_freeaddrinfo(d->res);
    if (d->tls)
        nw_tls_conf_unref(d->tls);
    nw_free(d);
}

static void dial_on_timer_close(uv_handle_t *h) {
    nw_dial_t *d = h->data;
    d->timer_open = 0;
    dial_maybe_free(d);
}

/* Ends the dial: reports (unless cancelled) and releases everything. */
static void dial_finish(nw_dial_t *d, nw_conn_t *c, int err, int report) {
    if (d->done)
        return;
    d->done = 1;
    if (err && !d->msg[0])
        snprintf(d->msg, sizeof(d->msg), "%s", nw_strerror(err));
    if (!c && d->c) {
        nw_conn_close(d->c); /* fires the pending connect with ECANCELED */
        d->c = NULL;
    }
    if (d->gai_pending)
        uv_cancel((uv_req_t *)&d->gai);
    uv_close((uv_handle_t *)&d->timer, dial_on_timer_close);
    if (report)
        d->cb(d, c, err, d->ud);
    dial_maybe_free(d);
}

static void dial_try_next(nw_dial_t *d);

/* TLS runs inside the dial: the owner only ever sees an established,
 * verified connection (or the reason it is not). */
static void dial_tls_up(nw_conn_t *c) {
    nw_dial_t *d = c->data;
    c->on_handshake = NULL;
    nw_conn_pause(c, NW_PAUSE_OWNER);
    d->c = NULL;
    dial_finish(d, c, 0, 1);
}

static void dial_tls_read(nw_conn_t *c, ssize_t nread, const char *buf) {
    nw_dial_t *d = c->data;
    (void)buf;
    if (nread >= 0)
        return;
    if (nread == NW_ETLS)
        snprintf(d->msg, sizeof(d->msg), "tls: %s", nw_conn_tls_error(c));
    else
        snprintf(d->msg, sizeof(d->msg), "tls: connection lost during the handshake (%s)",
                 nw_strerror((int)nread));
    dial_finish(d, NULL, NW_ETLS, 1);
}

static void dial_start_tls(nw_dial_t *d, nw_conn_t *c) {
    nw_conn_set_owner(c, d, dial_tls_read, NULL, NULL);
    c->on_handshake = dial_tls_up;
    if (nw_conn_start_tls(c, d->tls, d->host) != 0) {
        snprintf(d->msg, sizeof(d->msg), "tls: %s", nw_conn_tls_error(c));
        dial_finish(d, NULL, NW_ETLS, 1);
        return;
    }
    nw_conn_resume(c, NW_PAUSE_OWNER);
}

static void dial_on_connect(uv_connect_t *req, int status) {
    nw_dial_t *d = req->data;
    nw_conn_t *c = d->c;
    d->connect_pending = 0;
    if (d->done) {
        dial_maybe_free(d);
        return;
    }
    if (status == 0) {
        nw_conn_ready(c);
        if (d->tls) {
            dial_start_tls(d, c);
            return;
        }
        d->c = NULL;
        dial_finish(d, c, 0, 1);
        return;
    }
    d->last_err = status;
    d->c = NULL;
    nw_conn_close(c);
    d->cur = d->cur->ai_next;
    dial_try_next(d);
}

static void dial_try_next(nw_dial_t *d) {
    for (; d->cur; d->cur = d->cur->ai_next) {
        struct sockaddr_storage ss;
        int rc;
        if (d->cur->ai_family != AF_INET && d->cur->ai_family != AF_INET6)
            continue;
        memcpy(&ss, d->cur->ai_addr, d->cur->ai_addrlen);
        if (ss.ss_family == AF_INET)
            ((struct sockaddr_in *)&ss)->sin_port = htons(d->port);
        else
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons(d->port);
        d->c = nw_conn_new(d->loop);
        if (!d->c) {
            d->last_err = NW_ENOMEM;
            break;
        }
        d->creq.data = d;
        rc = uv_tcp_connect(&d->creq, &d->c->tcp, (struct sockaddr *)&ss, dial_on_connect);
        if (rc == 0) {
            d->connect_pending = 1;
            return;
        }
        d->last_err = rc;
        nw_conn_close(d->c);
        d->c = NULL;
    }
    dial_finish(d, NULL, d->last_err ? d->last_err : UV_EADDRNOTAVAIL, 1);
}

static void dial_on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    nw_dial_t *d = req->data;
    d->gai_pending = 0;
    d->res = res;
    if (d->done) {
        dial_maybe_free(d);
        return;
    }
    if (status < 0) {
        dial_finish(d, NULL, status, 1);
        return;
    }
    d->cur = res;
    dial_try_next(d);
}

static void dial_on_timeout(uv_timer_t *t) {
    nw_dial_t *d = t->data;
    dial_finish(d, NULL, UV_ETIMEDOUT, 1);
}

/* IP-literal host: the connect starts from the first timer run (never
 * from inside nw_dial_start), which then becomes the dial's deadline. */
static void dial_on_start(uv_timer_t *t) {
    nw_dial_t *d = t->data;
    uv_timer_start(&d->timer, dial_on_timeout, d->timeout_ms, 0);
    d->res = d->cur = &d->num_ai;
    dial_try_next(d);
}

static int dial_numeric(nw_dial_t *d, const char *host) {
    struct sockaddr_in *a4 = (struct sockaddr_in *)&d->num_ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&d->num_ss;
    if (uv_ip4_addr(host, 0, a4) == 0)
        d->num_ai.ai_addrlen = sizeof(*a4);
    else if (uv_ip6_addr(host, 0, a6) == 0 && strchr(host, ':'))
        d->num_ai.ai_addrlen = sizeof(*a6);
    else
        return 0;
    d->num_ai.ai_family = d->num_ss.ss_family;
    d->num_ai.ai_socktype = SOCK_STREAM;
    d->num_ai.ai_addr = (struct sockaddr *)&d->num_ss;
    d->numeric = 1;
    return 1;
}

nw_dial_t *nw_dial_start(uv_loop_t *loop, const char *host, uint16_t port,
                         uint64_t timeout_ms, nw_tls_conf_t *tls, nw_dial_cb cb, void *ud) {
    return nw_dial_start_at(loop, host, host, port, timeout_ms, tls, cb, ud);
}

nw_dial_t *nw_dial_start_at(uv_loop_t *loop, const char *host, const char *addr, uint16_t port,
                            uint64_t timeout_ms, nw_tls_conf_t *tls, nw_dial_cb cb, void *ud) {
    struct addrinfo hints;
    nw_dial_t *d = nw_calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->loop = loop;
    d->port = port;
    d->cb = cb;
    d->ud = ud;
    snprintf(d->host, sizeof(d->host), "%s", host);
    d->timeout_ms = timeout_ms;
    if (dial_numeric(d, addr)) {
        /* No thread pool for addresses: it costs threads and memory. */
        d->tls = tls ? nw_tls_conf_ref(tls) : NULL;
        uv_timer_init(loop, &d->timer);
        d->timer.data = d;
        d->timer_open = 1;
        uv_timer_start(&d->timer, dial_on_start, 0, 0);
        return d;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    d->gai.data = d;
    /* getaddrinfo runs on the thread pool, so cb never fires from inside
     * this call. */
    if (uv_getaddrinfo(loop, &d->gai, dial_on_gai, addr, NULL, &hints) != 0) {
        nw_free(d);
        return NULL;
    }
    d->gai_pending = 1;
    d->tls = tls ? nw_tls_conf_ref(tls) : NULL;
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    d->timer_open = 1;
    uv_timer_start(&d->timer, dial_on_timeout, timeout_ms, 0);
    return d;
}

void nw_dial_cancel(nw_dial_t *d) { dial_finish(d, NULL, UV_ECANCELED, 0); }
