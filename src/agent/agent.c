/* agent.c: `natwrp agent`: start-up and exit (one cleanup path), signals,
 * drain (GOAWAY, then the grace period) and stop. The agent keeps MAX_CONN
 * tunnel slots to REMOTE_URL (slot.c) and turns every stream the server
 * opens into one HTTP/1.1 exchange with LOCAL_URL (local.c), admitted
 * under its limits (admit.c), over a keep-alive pool (pool.c). */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>

#include "accesslog.h"
#include "agent.h"
#include "agent_int.h"
#include "notify.h"
#include "proc.h"

#define HS_REQUEST_MAX 65536  /* the tunnel upgrade request: serve's default --max-head */
#define HS_RESPONSE_MAX 65536 /* its 101: X-Natwrp-Routes lists up to 64 route URLs */

/* ---------------------------------------------------------------- main */

/* Close everything now; in-flight requests are cut. */
static void agent_stop(agent_t *ag) {
    unsigned i;
    if (ag->stopping == 2)
        return;
    ag->stopping = 2;
    nw_admin_stop(ag->admin);
    ag->admin = NULL;
    remotes_close(ag);
    for (i = 0; i < ag->nslots; i++) {
        slot_cancel(&ag->slots[i]);
        ag->slots[i].tun = NULL;
        uv_close((uv_handle_t *)&ag->slots[i].timer, NULL);
    }
    while (ag->ntuns)
        nw_tun_close(ag->tuns[ag->ntuns - 1], NW_ECLOSED); /* resets streams, removes itself */
    while (ag->reqs)
        lreq_fail(ag->reqs, NW_RST_CANCEL, "shutting down");
    while (ag->idle)
        lc_close(ag->idle);
    uv_close((uv_handle_t *)&ag->sig[0], NULL);
    uv_close((uv_handle_t *)&ag->sig[1], NULL);
    uv_close((uv_handle_t *)&ag->hup, NULL);
    /* Closing them restored the default actions: a SIGTERM or SIGINT that
     * arrives while the process tears down would kill it with a signal
     * status instead of its exit 0. It is stopping already: ignore them. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    uv_close((uv_handle_t *)&ag->grace, NULL);
    uv_close((uv_handle_t *)&ag->drain, NULL);
    uv_close((uv_handle_t *)&ag->qtimer, NULL);
    uv_close((uv_handle_t *)&ag->watchdog, NULL);
}

/* Draining: done when no request is in flight and every stream's last
 * bytes have left (a tunnel frees a stream once all of it is queued). */
void agent_check_done(agent_t *ag) {
    size_t i, streams = 0;
    if (ag->stopping != 1 || ag->reqs)
        return;
    for (i = 0; i < ag->ntuns; i++)
        streams += ag->tuns[i]->nstreams;
    if (streams)
        return;
    if (!ag->drained) {
        ag->drained = 1;
        nw_info("agent=%s drained: every request finished; closing %zu tunnel(s)",
                ag->cfg->agent_id, ag->ntuns);
    }
    for (i = 0; i < ag->ntuns; i++)
        nw_tun_shutdown(ag->tuns[i]); /* close frame after what is queued */
    if (ag->ntuns == 0)
        agent_stop(ag);
}

/* After each turn's I/O: has the drain finished? (The tunnel flushes it
 * arms are idle handles, so they leave on the next turn.) */
static void on_drain_check(uv_check_t *h) {
    agent_t *ag = h->data;
    size_t n = 0;
    lreq_t *r;
    if (ag->stopping == 1 && ag->reqs) {
        /* Once only upgraded pipes are left, close them rather than wait
         * out the grace for connections that may stay open for hours:
         * their clients reconnect (to another agent). Runs here, outside
         * every callback, as it frees requests. */
        for (r = ag->reqs; r; r = r->next) {
            if (!r->piped)
                return;
            n++;
        }
        nw_info("agent=%s plain requests done: closing %zu upgraded pipe(s)", ag->cfg->agent_id,
                n);
        while (ag->reqs) {
            r = ag->reqs;
            if (r->strm && !r->resp_end)
                nw_strm_send(r->strm, NULL, 0, 1); /* the service's side ends here */
            r->resp_end = 1;
            lreq_done(r); /* a reset follows for the client's side */
        }
    }
    agent_check_done(ag);
}

static void on_grace(uv_timer_t *h) {
    agent_t *ag = h->data;
    nw_warn("agent=%s grace period (%llu ms) over: cutting %zu request(s) still running",
            ag->cfg->agent_id, (unsigned long long)ag->cfg->grace_ms, ag->nreqs);
    agent_stop(ag);
}

/* SIGHUP: reopen the access log file (logrotate); nothing else reloads. */
static void on_sighup(uv_signal_t *h, int signum) {
    agent_t *ag = h->data;
    (void)signum;
    if (nw_alog_on())
        nw_alog_reopen();
    else
        nw_info("agent=%s received SIGHUP: no access log file, nothing to reopen",
                ag->cfg->agent_id);
}

/* SIGTERM/SIGINT: stop taking streams (GOAWAY on every tunnel; the server
 * sends new requests elsewhere), finish the ones in flight within GRACE,
 * then exit 0. A second signal stops at once. */
static void on_signal(uv_signal_t *h, int signum) {
    agent_t *ag = h->data;
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    size_t i;
    unsigned k;
    if (ag->stopping) {
        nw_info("agent=%s received %s again: stopping now", ag->cfg->agent_id, name);
        agent_stop(ag);
        return;
    }
    nw_info("agent=%s received %s: shutting down (%zu request(s) in flight, grace %llu ms)",
            ag->cfg->agent_id, name, ag->nreqs, (unsigned long long)ag->cfg->grace_ms);
    ag->stopping = 1;
    nw_notify("STOPPING=1\nSTATUS=draining");
    remotes_stop(ag);
    for (k = 0; k < ag->nslots; k++)
        slot_cancel(&ag->slots[k]);
    for (i = 0; i < ag->ntuns; i++)
        nw_tun_goaway(ag->tuns[i], 0);
    uv_timer_start(&ag->grace, on_grace, ag->cfg->grace_ms, 0);
    uv_check_start(&ag->drain, on_drain_check);
    agent_check_done(ag);
}

/* 127.0.0.0/8, ::1 (also v4-mapped) and localhost never leave the host. */
static int host_is_loopback(const char *host) {
    struct in_addr a4;
    struct in6_addr a6;
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return 0;
}

static void fmt_url(char *out, size_t cap, const nw_url_t *u, const char *scheme) {
    int v6 = strchr(u->host, ':') != NULL;
    snprintf(out, cap, "%s://%s%s%s:%u%s", scheme, v6 ? "[" : "", u->host, v6 ? "]" : "",
             u->port, u->path);
}

/* REMOTE_URL's and LOCAL_URL's TLS configurations (none for plain URLs). */
static int agent_tls(agent_t *ag, const nw_agent_cfg_t *cfg, char *err, size_t errlen) {
    unsigned u, any_tls = 0;
    for (u = 0; u < cfg->remotes.n; u++)
        any_tls |= cfg->remotes.u[u].tls;
    if (any_tls &&
        !(ag->remote_tls = nw_tls_conf_client(cfg->ca_file[0] ? cfg->ca_file : NULL,
                                              cfg->insecure, err, errlen))) {
        fprintf(stderr, "natwrp agent: REMOTE_URL: %s\n", err);
        return -1;
    }
    if (cfg->local.tls &&
        !(ag->local_tls = nw_tls_conf_client(cfg->local_ca_file[0] ? cfg->local_ca_file : NULL,
                                             cfg->local_insecure, err, errlen))) {
        fprintf(stderr, "natwrp agent: LOCAL_URL: %s\n", err);
        return -1;
    }
    for (u = 0; u < cfg->remotes.n; u++) {
        const nw_url_t *r = &cfg->remotes.u[u];
        if (cfg->conn_token[0] && !r->tls && !host_is_loopback(r->host))
            nw_warn("agent=%s CONN_TOKEN goes to %s over plain ws://: the token travels in clear "
                    "(anyone on the path can read it and open tunnels); use an https:// "
                    "REMOTE_URL", cfg->agent_id, r->host);
        if (cfg->basic.n && !r->tls && !host_is_loopback(r->host))
            nw_warn("agent=%s AUTH_BASIC logins go to %s over plain ws://: they travel in clear; "
                    "use an https:// REMOTE_URL", cfg->agent_id, r->host);
    }
    if (ag->local_tls && cfg->local_insecure)
        nw_warn("agent=%s tls: LOCAL_INSECURE is set: the local service's certificate is not "
                "verified (insecure)", cfg->agent_id);
    return 0;
}

/* The URLs as logged, and LOCAL_URL's authority for the Host header. */
static void agent_names(agent_t *ag, const nw_agent_cfg_t *cfg) {
    int v6 = strchr(cfg->local.host, ':') != NULL;
    int dflt = cfg->local.port == (cfg->local.tls ? 443 : 80);
    unsigned u;
    size_t n;
    for (u = 0; u < cfg->remotes.n; u++) { /* REMOTE_URL's list, as ws(s):// URLs */
        n = strlen(ag->remote_str);
        if (u)
            snprintf(ag->remote_str + n, sizeof(ag->remote_str) - n, ",");
        n = strlen(ag->remote_str);
        fmt_url(ag->remote_str + n, sizeof(ag->remote_str) - n, &cfg->remotes.u[u],
                cfg->remotes.u[u].tls ? "wss" : "ws");
    }
    fmt_url(ag->local_str, sizeof(ag->local_str), &cfg->local, cfg->local.tls ? "https" : "http");
    snprintf(ag->host_hdr, sizeof(ag->host_hdr), "%s%s%s", v6 ? "[" : "", cfg->local.host,
             v6 ? "]" : "");
    if (!dflt)
        snprintf(ag->host_hdr + strlen(ag->host_hdr), sizeof(ag->host_hdr) - strlen(ag->host_hdr),
                 ":%u", cfg->local.port);
}

/* The slots' names and timers, the drain and queue timers, the signals. */
static void agent_handles(agent_t *ag, uv_loop_t *loop) {
    unsigned k;
    for (k = 0; k < ag->nslots; k++) {
        slot_t *sl = &ag->slots[k];
        sl->ag = ag;
        if (ag->cfg->max_conn > 1) /* the same ids on every address */
            snprintf(sl->name, sizeof(sl->name), "%s-%u", ag->cfg->agent_id,
                     k % ag->cfg->max_conn + 1);
        else
            snprintf(sl->name, sizeof(sl->name), "%s", ag->cfg->agent_id);
        nw_hf_init(&sl->hs_hf, HS_RESPONSE_MAX);
        uv_timer_init(loop, &sl->timer);
        sl->timer.data = sl;
    }
    uv_timer_init(loop, &ag->grace);
    ag->grace.data = ag;
    uv_check_init(loop, &ag->drain);
    ag->drain.data = ag;
    uv_timer_init(loop, &ag->qtimer);
    ag->qtimer.data = ag;
    nw_trimmer_start(loop, &ag->trim);
    nw_watchdog_start(loop, &ag->watchdog);
    uv_signal_init(loop, &ag->sig[0]);
    uv_signal_init(loop, &ag->sig[1]);
    ag->sig[0].data = ag->sig[1].data = ag;
    uv_signal_start(&ag->sig[0], on_signal, SIGINT);
    uv_signal_start(&ag->sig[1], on_signal, SIGTERM);
    uv_signal_init(loop, &ag->hup);
    ag->hup.data = ag;
    uv_signal_start(&ag->hup, on_sighup, SIGHUP);
}

/* The tunnel handshake must fit in serve's request head limit (its
 * --max-head, 64k by default): ROUTES and AUTH_BASIC make it long. Built
 * once here with the longest tunnel name. 0, 1 out of memory, or 2 (said
 * on stderr). */
static int agent_hs_fits(agent_t *ag) {
    slot_t *sl = nw_calloc(1, sizeof(*sl));
    nw_sbuf_t req = {0};
    size_t len;
    int rc;
    if (!sl)
        return 1;
    sl->ag = ag;
    if (ag->cfg->max_conn > 1)
        snprintf(sl->name, sizeof(sl->name), "%s-%u", ag->cfg->agent_id, ag->cfg->max_conn);
    else
        snprintf(sl->name, sizeof(sl->name), "%s", ag->cfg->agent_id);
    rc = slot_hs_request(sl, "AAAAAAAAAAAAAAAAAAAAAA==", &req);
    len = req.len;
    if (req.p)
        memset(req.p, 0, req.len); /* it holds the credentials */
    nw_sbuf_free(&req);
    nw_free(sl);
    if (rc)
        return 1;
    if (len <= HS_REQUEST_MAX)
        return 0;
    fprintf(stderr,
            "natwrp agent: ROUTES and AUTH_BASIC make the tunnel handshake %zu bytes, over "
            "%d (serve's default --max-head): list fewer or shorter routes or credentials\n",
            len, HS_REQUEST_MAX);
    return 2;
}

/* --admin: the admin listener with /metrics (build and process metrics;
 * the agent's own are registered beside them) and /readyz. 0, 2 when the
 * address cannot be used (said on stderr), 1 out of memory. */
static int agent_admin(agent_t *ag) {
    const nw_listen_t *l = &ag->cfg->ops.admin.addr;
    int rc;
    if (!ag->cfg->ops.admin.set)
        return 0;
    ag->metrics = nw_metrics_new();
    if (!ag->metrics || nw_build_info_metric(ag->metrics) != 0 ||
        nw_proc_metrics(ag->metrics) != 0)
        return 1;
    rc = nw_admin_start(ag->loop, &ag->cfg->ops, &ag->admin);
    if (rc != 0) {
        fprintf(stderr, "natwrp agent: --admin: cannot listen on %s:%u: %s\n",
                l->host[0] ? l->host : "*", l->port, nw_strerror(rc));
        return 2;
    }
    if (nw_admin_metrics(ag->admin, ag->metrics) != 0)
        return 1;
    if (ag_inspect_start(ag, ag->admin) != 0) /* the dashboard, the inspector (requests.c) */
        return 1;
    return ops_start(ag) != 0 ? 1 : 0; /* the agent's families, /api/status, its /readyz */
}

/* Free what nw_agent_main built, however far it got. */
static void agent_free(agent_t *ag) {
    unsigned k;
    if (!ag)
        return;
    for (k = 0; ag->slots && k < ag->nslots; k++) {
        nw_hf_free(&ag->slots[k].hs_hf);
        nw_sbuf_free(&ag->slots[k].hs_body);
        nw_sbuf_free(&ag->slots[k].granted);
    }
    ops_free(ag);
    ag_inspect_free(ag);
    nw_free(ag->slots);
    nw_free(ag->remotes);
    nw_metrics_free(ag->metrics);
    if (ag->remote_tls)
        nw_tls_conf_unref(ag->remote_tls);
    if (ag->local_tls)
        nw_tls_conf_unref(ag->local_tls);
    nw_free(ag);
}

/* Exit codes: 0 done, 1 out of memory, 2 bad configuration. Every exit
 * after the agent exists goes through agent_free. */
int nw_agent_main(int argc, char **argv) {
    nw_agent_cfg_t cfg;
    char err[NW_CFG_ERRLEN];
    agent_t *ag;
    uv_loop_t loop;
    int rc;

    rc = nw_cfg_agent(argc, argv, &cfg, err, sizeof(err));
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "natwrp agent: %s\n", err);
        return 2;
    }
    nw_log_level = cfg.log_level;
    nw_log_json = cfg.ops.log_format == NW_LOGFMT_JSON;

    /* LOCAL_URL's lookups are rare and quick; REMOTE_URL's run on threads
     * of their own (lookup.c), so a name whose DNS hangs holds up neither
     * them nor the exit. libuv's default of 4 pool threads costs memory
     * for nothing. */
    setenv("UV_THREADPOOL_SIZE", "2", 0);
    rc = 1;
    ag = nw_calloc(1, sizeof(*ag));
    if (!ag)
        goto out;
    if (agent_tls(ag, &cfg, err, sizeof(err)) != 0) {
        rc = 2;
        goto out;
    }
    ag->nslots = cfg.max_remotes * cfg.max_conn;
    ag->cfg = &cfg;
    if ((rc = agent_hs_fits(ag)) != 0)
        goto out;
    rc = 1;
    ag->slots = nw_calloc(ag->nslots, sizeof(*ag->slots));
    ag->remotes = nw_calloc(cfg.max_remotes, sizeof(*ag->remotes));
    if (!ag->slots || !ag->remotes)
        goto out;
    uv_loop_init(&loop);
    if (nw_alog_open(&loop, cfg.ops.access_log, cfg.ops.log_format == NW_LOGFMT_JSON, err,
                     sizeof(err)) != 0) {
        fprintf(stderr, "natwrp agent: %s\n", err);
        uv_loop_close(&loop);
        rc = 2;
        goto out;
    }
    ag->loop = &loop;
    ag->cfg = &cfg;
    agent_names(ag, &cfg);
    agent_handles(ag, &loop);
    remotes_init(ag);
    nw_info("agent=%s local=%s env=%s tunnels=%u per address", cfg.agent_id, ag->local_str,
            cfg.env_file[0] ? cfg.env_file : "(none)", cfg.max_conn);
    rc = agent_admin(ag);
    if (rc != 0) {
        agent_stop(ag);
        nw_loop_teardown(&loop);
        goto out;
    }
    remotes_start(ag); /* each address found gets its slots (remotes.c) */
    uv_run(&loop, UV_RUN_DEFAULT);
    nw_loop_teardown(&loop);
    nw_alog_close();
    rc = 0;
out:
    agent_free(ag);
    return rc;
}
