/* serve.c: `natwrp serve`: main, signals, drain and the grace timer,
 * SIGHUP reload. The rest of serve lives beside it, one concern a file
 * (shared structs in serve_int.h):
 *   listen.c    listeners and accepting a public connection
 *   pconn.c     the public connection's lifecycle (state, timers, pipes, close)
 *   request.c   llhttp callbacks and the dispatch of a request to a stream
 *   fwd.c       the forwarded head (pure)
 *   response.c  the response to the client (stream callbacks, error replies)
 *   access.c    screening, AUTH_TOKEN/AUTH_RULE
 *   upgrade.c   the tunnel upgrade (CONN_TOKEN, --allow-agent, limits)
 *   registry.c  serve's side of each tunnel, the wait queue for a stream slot
 *   routing.c   which tunnel serves a request: routes, the hold, --balance,
 *               per-route Basic credentials, grants after a SIGHUP
 *   routes.c    the route model and matcher (pure); tokens.c --tokens (pure)
 *   serve_ops.c metrics, /readyz and /api/status (with --admin)
 *
 * Public HTTP/1.x connections (pconn) are parsed with llhttp in strict
 * mode; each request becomes one stream on an agent tunnel with a free
 * slot, picked by --balance. The tunnel upgrade arrives on the same port,
 * on the reserved path NW_TUNNEL_PATH.
 *
 * One request per connection is in flight: pipelined requests wait in the
 * parser (paused) until the previous response is written, so responses
 * leave in order. */
#include <errno.h>
#include <llhttp.h>
#include <regex.h>
#include <unistd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "accesslog.h"
#include "cfg.h"
#include "conn.h"
#include "http1.h"
#include "log.h"
#include "notify.h"
#include "path.h"
#include "proc.h"
#include "serve.h"
#include "serve_int.h"
#include "tokens.h"
#include "tun.h"
#include "ui.h"
#include "ws.h"

/* The tokens (--tokens, CONN_TOKEN) into *out: NULL when neither is set
 * (any agent, any route). 0, or NW_ECONFIG with err naming the line. */
static int srv_load_tokens(const nw_serve_cfg_t *cfg, nw_tokens_t **out, char *err,
                           size_t errlen) {
    *out = NULL;
    if (cfg->tokens_file[0])
        return nw_tokens_load(cfg->tokens_file, cfg->domain, cfg->conn_token, out, err, errlen);
    if (cfg->conn_token[0])
        return nw_tokens_parse("", 0, cfg->domain, cfg->conn_token, out, err, errlen);
    return 0;
}

/* SIGHUP, tokens: read the file again; a file that does not parse
 * changes nothing. Tunnels that lost their grant drain (rt_regrant). */
static void srv_reload_tokens(serve_t *srv) {
    char err[NW_CFG_ERRLEN + 1024];
    nw_tokens_t *t;
    if (srv_load_tokens(srv->cfg, &t, err, sizeof(err)) != 0) {
        nw_err("tokens: reload failed, keeping the old tokens: %s", err);
        return;
    }
    nw_tokens_free(srv->tokens);
    srv->tokens = t;
    nw_info("tokens: reloaded %s (%zu token(s))", srv->cfg->tokens_file, nw_tokens_count(t));
    rt_regrant(srv);
}

/* SIGHUP: load the certificate pair and the tokens file again. New
 * handshakes use the new pair; live sessions keep theirs (the
 * configuration is reference-counted). */
static void srv_reload(serve_t *srv) {
    char err[NW_TLS_ERRLEN];
    nw_tls_conf_t *c;
    nw_alog_reopen();
    if (srv->cfg->tokens_file[0])
        srv_reload_tokens(srv);
    if (!srv->cfg->tls_cert[0]) {
        if (!srv->cfg->tokens_file[0] && !nw_alog_on())
            nw_info("received SIGHUP: no certificate or tokens file configured, nothing to reload");
        return;
    }
    c = nw_tls_conf_server(srv->cfg->tls_cert, srv->cfg->tls_key, err, sizeof(err));
    if (!c) {
        nw_err("tls: reload failed, keeping the old certificate: %s", err);
        return;
    }
    nw_tls_conf_unref(srv->tls);
    srv->tls = c;
    nw_info("tls: reloaded certificate %s and key %s", srv->cfg->tls_cert, srv->cfg->tls_key);
}

/* systemd hears of the reload (RELOADING=1, then READY=1). */
static void on_sighup(uv_signal_t *h, int signum) {
    serve_t *srv = h->data;
    (void)signum;
    if (srv->draining) { /* systemd was told STOPPING=1: no state change */
        srv_reload(srv);
        return;
    }
    nw_notify_reloading();
    srv_reload(srv);
    nw_notify("READY=1\nSTATUS=listening");
}

/* Close everything now: listeners, tunnels (their streams are cut),
 * public connections, then the handles that keep the loop alive. */
static void srv_stop(serve_t *srv) {
    pconn_t *pc;
    int i;
    if (srv->stopping)
        return;
    srv->stopping = 1;
    nw_admin_stop(srv->admin);
    srv->admin = NULL;
    for (i = 0; i < srv->nlisteners; i++)
        uv_close((uv_handle_t *)&srv->listeners[i], NULL);
    srv->nlisteners = 0;
    for (pc = srv->pconns; pc; pc = pc->next) {
        /* A request that has had no answer yet gets one, not zero bytes. */
        if (!pc->head_sent && (pc->state == PC_QUEUED || pc->state == PC_WAIT) && pc->conn) {
            nw_warn("conn=%llu client=%s no response before the server stopped: 503",
                    (unsigned long long)pc->id, pc->conn->peer);
            pc->keep_alive = 0;
            pc->err_reason = "shutting_down";
            pc_reply(pc, 503, "the server is shutting down");
        }
    }
    while (srv->ntuns)
        nw_tun_close(srv->tuns[0], NW_ECLOSED); /* removes itself */
    for (pc = srv->pconns; pc; pc = pc->next)
        pc_close(pc);
    for (i = 0; i < 3; i++)
        uv_close((uv_handle_t *)&srv->sig[i], NULL);
    /* Closing them restored the default actions: a signal that arrives
     * while serve tears down would end it with a signal status instead of
     * its exit 0. It is stopping already: ignore them. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    uv_close((uv_handle_t *)&srv->grace, NULL);
    uv_close((uv_handle_t *)&srv->wq_check, NULL);
    uv_close((uv_handle_t *)&srv->heads_idle, NULL);
    uv_close((uv_handle_t *)&srv->sweep, NULL);
    uv_close((uv_handle_t *)&srv->watchdog, NULL);
}

/* Draining ends when the last public connection is gone. */
void srv_check_drained(serve_t *srv) {
    if (!srv->draining || srv->stopping || srv->pconns)
        return;
    nw_info("drained: every request finished; closing %zu tunnel(s)", srv->ntuns);
    srv_stop(srv);
}

static void on_grace(uv_timer_t *h) {
    serve_t *srv = h->data;
    size_t n = 0;
    pconn_t *pc;
    for (pc = srv->pconns; pc; pc = pc->next)
        n++;
    nw_warn("grace period (%llu ms) over: closing %zu connection(s) still open",
            (unsigned long long)srv->cfg->grace_ms, n);
    srv_stop(srv);
}

/* SIGTERM/SIGINT: stop accepting (a new process may already listen on
 * the port with SO_REUSEPORT), tell every agent with GOAWAY so it
 * connects a new tunnel, close idle connections, let requests in flight
 * finish within --grace, then exit 0. A second signal stops at once. */
static void on_signal(uv_signal_t *h, int signum) {
    serve_t *srv = h->data;
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    pconn_t *pc, *next;
    size_t i, busy = 0;
    int k;
    if (srv->draining) {
        nw_info("received %s again: stopping now", name);
        srv_stop(srv);
        return;
    }
    srv->draining = 1;
    nw_notify("STOPPING=1\nSTATUS=draining");
    for (k = 0; k < srv->nlisteners; k++) {
        /* Take what the kernel already queued for us first: closing the
         * socket would reset those clients. */
        uv_os_fd_t fd;
        int cfd;
        if (uv_fileno((uv_handle_t *)&srv->listeners[k], &fd) == 0)
            while ((cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
                pc_accept(srv, NULL, cfd, srv->listener_tls[k]);
        uv_close((uv_handle_t *)&srv->listeners[k], NULL);
    }
    srv->nlisteners = 0;
    for (i = 0; i < srv->ntuns; i++)
        nw_tun_goaway(srv->tuns[i], 0);
    wq_fail_if_hopeless(srv);
    for (pc = srv->pconns; pc; pc = next) {
        next = pc->next;
        if (pc->state == PC_IDLE && !pc->pipeline.len && !pc->paused && !pc->out_wait) {
            if (pc->used) {
                pc_close(pc); /* idle keep-alive: the client reconnects elsewhere */
                continue;
            }
            pc_arm(pc, FRESH_DRAIN_MS); /* just connected: its request is on the way */
        }
        if (pc->state != PC_CLOSED)
            busy++;
    }
    nw_info("received %s: draining: listeners closed, GOAWAY sent on %zu tunnel(s), %zu "
            "connection(s) finishing (grace %llu ms)",
            name, srv->ntuns, busy, (unsigned long long)srv->cfg->grace_ms);
    uv_timer_start(&srv->grace, on_grace, srv->cfg->grace_ms, 0);
    srv_check_drained(srv);
}

/* The --allow-agent and AUTH_RULE expressions (cfg checked that both
 * compile). */
static void srv_compile(serve_t *srv, const nw_serve_cfg_t *cfg) {
    if (cfg->allow_agent[0] &&
        regcomp(&srv->allow_re, cfg->allow_agent, REG_EXTENDED | REG_NOSUB) == 0)
        srv->has_allow = 1;
    /* AUTH_RULE matches in any case: Express and ASP.NET route /PRIVATE as
     * /private by default, so a case-sensitive rule would let it through.
     * (Wider matching only ever asks for the token more often.) */
    if (cfg->auth_rule[0] &&
        regcomp(&srv->auth_re, cfg->auth_rule, REG_EXTENDED | REG_NOSUB | REG_ICASE) == 0)
        srv->has_auth_rule = 1;
}

/* The handles serve runs on: its timers, the listeners, the signals.
 * 0, or the error of a listener that could not be set up. */
static int srv_start(serve_t *srv) {
    uv_loop_t *loop = srv->loop;
    int rc = 0, i;
    uv_timer_init(loop, &srv->grace);
    srv->grace.data = srv;
    uv_check_init(loop, &srv->wq_check);
    srv->wq_check.data = srv;
    uv_idle_init(loop, &srv->heads_idle);
    srv->heads_idle.data = srv;
    if (rt_init(srv) != 0)
        return NW_ENOMEM;
    nw_trimmer_start(loop, &srv->trim);
    nw_watchdog_start(loop, &srv->watchdog);
    /* Signals before the listeners: a supervisor may stop serve as soon
     * as it logs "listening". */
    for (i = 0; i < 3; i++) {
        uv_signal_init(loop, &srv->sig[i]);
        srv->sig[i].data = srv;
    }
    uv_signal_start(&srv->sig[0], on_signal, SIGINT);
    uv_signal_start(&srv->sig[1], on_signal, SIGTERM);
    uv_signal_start(&srv->sig[2], on_sighup, SIGHUP);
    for (i = 0; i < srv->cfg->nlisten && rc == 0; i++)
        rc = srv_listen_one(srv, &srv->cfg->listen[i]);
    if (rc != 0)
        return rc;
    if (!srv->tokens)
        nw_warn("no CONN_TOKEN: any agent may register a tunnel and receive requests; "
                "set CONN_TOKEN (or --conn-token) here and on your agents to stop it");
    nw_notify("READY=1\nSTATUS=listening");
    return 0;
}

/* --admin: the admin listener with /metrics (build and process metrics,
 * and serve's own: serve_ops.c), /readyz and /api/status. 0, or 2 when the
 * address cannot be used (said on stderr), 1 out of memory. */
static int srv_admin(serve_t *srv) {
    const nw_listen_t *l = &srv->cfg->ops.admin.addr;
    int rc;
    if (!srv->cfg->ops.admin.set)
        return 0;
    srv->metrics = nw_metrics_new();
    if (!srv->metrics || nw_build_info_metric(srv->metrics) != 0 ||
        nw_proc_metrics(srv->metrics) != 0)
        return 1;
    rc = nw_admin_start(srv->loop, &srv->cfg->ops, &srv->admin);
    if (rc != 0) {
        fprintf(stderr, "natwrp serve: --admin: cannot listen on %s:%u: %s\n",
                l->host[0] ? l->host : "*", l->port, nw_strerror(rc));
        return 2;
    }
    if (srv_ops_init(srv, srv->metrics, srv->admin) != 0 ||
        nw_admin_metrics(srv->admin, srv->metrics) != 0)
        return 1;
    nw_admin_ui(srv->admin); /* the dashboard (ui.c) */
    return 0;
}

static void srv_free(serve_t *srv) {
    srv_ops_free(srv);
    nw_metrics_free(srv->metrics);
    nw_routes_free(srv->routes);
    nw_tokens_free(srv->tokens);
    if (srv->tls)
        nw_tls_conf_unref(srv->tls);
    if (srv->has_allow)
        regfree(&srv->allow_re);
    if (srv->has_auth_rule)
        regfree(&srv->auth_re);
    nw_free(srv);
}

int nw_serve_main(int argc, char **argv) {
    nw_serve_cfg_t cfg;
    char err[NW_CFG_ERRLEN];
    serve_t *srv;
    uv_loop_t loop;
    int rc;

    rc = nw_cfg_serve(argc, argv, &cfg, err, sizeof(err));
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "natwrp serve: %s\n", err);
        return 2;
    }
    nw_log_level = cfg.log_level;
    nw_log_json = cfg.ops.log_format == NW_LOGFMT_JSON;

    srv = nw_calloc(1, sizeof(*srv));
    if (!srv)
        return 1;
    srv_compile(srv, &cfg);
    uv_loop_init(&loop);
    if (nw_alog_open(&loop, cfg.ops.access_log, cfg.ops.log_format == NW_LOGFMT_JSON, err,
                     sizeof(err)) != 0) {
        fprintf(stderr, "natwrp serve: %s\n", err);
        rc = -1;
        goto out;
    }
    srv->loop = &loop;
    srv->cfg = &cfg;
    rc = 0;
    if (cfg.tls_cert[0]) {
        char terr[NW_TLS_ERRLEN];
        srv->tls = nw_tls_conf_server(cfg.tls_cert, cfg.tls_key, terr, sizeof(terr));
        if (!srv->tls) {
            fprintf(stderr, "natwrp serve: %s\n", terr);
            rc = -1;
        }
    }
    if (rc == 0 && srv_load_tokens(&cfg, &srv->tokens, err, sizeof(err)) != 0) {
        fprintf(stderr, "natwrp serve: TOKENS_FILE: %s\n", err);
        rc = -1;
    }
    if (rc == 0)
        rc = srv_start(srv);
    if (rc == 0 && (rc = srv_admin(srv)) != 0)
        srv_stop(srv);
    if (rc == 0)
        uv_run(&loop, UV_RUN_DEFAULT);
out:
    nw_loop_teardown(&loop);
    nw_alog_close();
    srv_free(srv);
    /* A setting this host cannot honour (certificate, listener, admin
     * address) fails here; 1 is out of memory. */
    return rc == 0 ? 0 : rc == 1 ? 1 : 2;
}
