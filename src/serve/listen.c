/* listen.c: listeners (SO_REUSEPORT bind, IPv4 fallback) and accepting a public connection. */
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

/* A new public connection: from the listener (server) or, while a drain
 * starts, a socket already accepted by hand (fd >= 0). */
void pc_accept(serve_t *srv, uv_stream_t *server, int fd, int tls) {
    pconn_t *pc;
    nw_conn_t *c;
    int rc = -1;
    c = nw_conn_new(srv->loop);
    pc = nw_calloc(1, sizeof(*pc));
    if (c) /* accept even without memory for pc: libuv stalls a listener otherwise */
        rc = fd >= 0 ? uv_tcp_open(&c->tcp, fd) : uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc != 0 || !pc) {
        nw_free(pc);
        if (fd >= 0 && rc != 0)
            close(fd);
        if (c)
            nw_conn_close(c);
        return;
    }
    pc->srv = srv;
    pc->conn = c;
    pc->id = ++srv->next_pc_id;
    pc->handles = 2;
    if (srv->npconns < srv->cfg->max_conns) {
        pc->counted = 1;
        srv->npconns++;
        nw_trimmer_load(&srv->trim, srv->npconns);
    }
    nw_hf_init(&pc->hf, srv->cfg->max_head);
    llhttp_init(&pc->parser, HTTP_REQUEST, &pc_settings);
    pc->parser.data = pc;
    uv_timer_init(srv->loop, &pc->timer);
    pc->timer.data = pc;
    pc->next = srv->pconns;
    if (srv->pconns)
        srv->pconns->prev = pc;
    srv->pconns = pc;
    nw_conn_set_owner(c, pc, pc_on_read, pc_on_written, pc_on_conn_close);
    nw_conn_ready(c);
    if (!pc->counted) {
        /* Over --max-conns: existing connections are untouched; this one
         * gets a plain 503 (or, on a TLS port, just a close). */
        nw_warn("conn=%llu client=%s refused: --max-conns (%u) reached: 503",
                (unsigned long long)pc->id, c->peer, srv->cfg->max_conns);
        if (tls) {
            pc_close(pc);
        } else {
            pc_set_state(pc, PC_IDLE);
            pc->err_reason = "too_many_connections";
            pc_reply(pc, 503, "too many connections; try again");
            nw_conn_resume(c, NW_PAUSE_OWNER); /* the linger drains what it sends */
        }
        return;
    }
    if (tls) {
        pc->https = 1;
        if (nw_conn_start_tls(c, srv->tls, NULL) != 0) {
            pc_close(pc);
            return;
        }
    }
    pc_set_state(pc, PC_IDLE);
    pc->scanning = 1;
    nw_headscan_init(&pc->scan);
    pc_arm(pc, srv->draining ? FRESH_DRAIN_MS : srv->cfg->idle_timeout_ms);
    nw_conn_resume(c, NW_PAUSE_OWNER);
}

static void on_connection(uv_stream_t *server, int status) {
    serve_t *srv = server->data;
    if (status < 0)
        return;
    pc_accept(srv, server, -1, srv->listener_tls[(uv_tcp_t *)server - srv->listeners]);
}

/* Listen on sa with the handle h. Everything that can fail for a reason of
 * the host (address taken, no IPv6) fails before h is initialised, so the
 * caller may try another address with the same h. *used is set once h was
 * initialised: it is then listening, or closing (its close callback has
 * not run yet, so its memory must not be initialised again). */
static int listen_on(serve_t *srv, uv_tcp_t *h, const struct sockaddr *sa, int *used) {
    int rc, fd = nw_listen_socket(sa, 1, 1024); /* SO_REUSEPORT: rolling restarts */
    if (fd < 0)
        return fd;
    uv_tcp_init(srv->loop, h);
    *used = 1;
    h->data = srv;
    rc = uv_tcp_open(h, fd);
    if (rc != 0)
        close(fd);
    else
        rc = uv_listen((uv_stream_t *)h, 1024, on_connection);
    if (rc != 0)
        uv_close((uv_handle_t *)h, NULL);
    return rc;
}

int srv_listen_one(serve_t *srv, const nw_listen_t *l) {
    uv_tcp_t *h = &srv->listeners[srv->nlisteners];
    struct sockaddr_storage ss;
    char name[INET6_ADDRSTRLEN];
    int len = sizeof(ss), rc, used = 0;

    const char *host = l->host[0] ? l->host : "::";
    if (strchr(host, ':'))
        rc = uv_ip6_addr(host, l->port, (struct sockaddr_in6 *)&ss);
    else
        rc = uv_ip4_addr(strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, l->port,
                         (struct sockaddr_in *)&ss);
    if (rc != 0) { /* cfg let only literals through */
        fprintf(stderr, "natwrp serve: --listen %s:%u: not an IP address\n", l->host, l->port);
        return rc;
    }
    rc = listen_on(srv, h, (struct sockaddr *)&ss, &used);
    if (rc != 0 && !l->host[0] && !used) {
        /* No IPv6 here (or [::]:port taken): every IPv4 interface. */
        uv_ip4_addr("0.0.0.0", l->port, (struct sockaddr_in *)&ss);
        rc = listen_on(srv, h, (struct sockaddr *)&ss, &used);
    }
    if (rc != 0) { /* a setting this host cannot honour: a usage error, exit 2 */
        fprintf(stderr, "natwrp serve: --listen: cannot listen on %s:%u: %s\n",
                l->host[0] ? l->host : "*", l->port, uv_strerror(rc));
        return rc;
    }
    srv->listener_tls[srv->nlisteners++] = l->tls;
    uv_tcp_getsockname(h, (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, name, sizeof(name));
        nw_info("listening on %s://[%s]:%d", l->tls ? "https" : "http", name,
                ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    } else {
        uv_ip4_name((struct sockaddr_in *)&ss, name, sizeof(name));
        nw_info("listening on %s://%s:%d", l->tls ? "https" : "http", name,
                ntohs(((struct sockaddr_in *)&ss)->sin_port));
    }
    return 0;
}
