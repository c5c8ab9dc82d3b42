/* agent_ops.c: what `natwrp agent` shows on its admin listener (--admin): its
 * metric families (counted where things happen: slot.c, local.c, admit.c
 * call in here), the gauges computed at scrape time, /api/status and the
 * /readyz check. Without --admin ag->ops is NULL and every counting call
 * returns at once.
 *
 * natwrp_local_requests_total counts every request the server opened on
 * this agent exactly once, by the status its client got: the head the
 * agent sent (the service's, or the agent's own 503), else the status
 * serve makes of the reset (502 service unreachable or failed, 503
 * refused, 504 timed out; as serve/response.c maps them), or 499 when the
 * server reset the stream first (its client went away). The duration
 * histogram observes each of them once, from the OPEN to that moment. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "agent_int.h"
#include "json.h"
#include "metrics.h"
#include "path.h"

#define CODE_MAX 600        /* series of status codes 0..599 kept at hand */
#define ROUTES_SEEN_MAX 256 /* routes listed in /api/status (64 a tunnel) */

/* Reconnect reasons (natwrp_reconnects_total{reason}) and local error
 * reasons (natwrp_local_errors_total{reason}): every series exists from
 * the start, at 0. */
static const char *const reconnect_reasons[] = {
    "connect_failed", "tls",    "refused_401",  "refused_403", "refused_other",
    "handshake",      "closed", "ping_timeout", "goaway",      "other",
};
static const char *const local_error_reasons[] = {
    "connect_refused", "connect_failed", "timeout",      "tls",        "reset",      "closed",
    "bad_response",    "write",          "queue_full",   "queue_timeout", "pipes_full", "io",
};

/* Request durations to the response head: 1 ms to a minute. */
static const double duration_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                          0.5,   1,     2.5,  5,     10,   30,  60};

/* A natwrp_remote_tunnels_up series shown at the last scrape, per
 * remotes[] entry: dropped once that entry holds another address. */
typedef struct {
    int shown;
    char remote[sizeof(((remote_t *)0)->url_str)];
    char addr[sizeof(((remote_t *)0)->addr)];
} shown_remote_t;

struct agent_ops_s {
    agent_t *ag;
    nw_metrics_t *m;
    nw_metric_t *f_requests, *f_reconnects, *f_errors, *f_remote_up;
    shown_remote_t *shown; /* MAX_REMOTES of them */
    nw_series_t *s_tunnels_up, *s_duration, *s_pool_idle, *s_pool_in_use, *s_in, *s_out,
        *s_inflight;
    nw_series_t *s_code[CODE_MAX];
    uint64_t requests, errors, bytes_in, bytes_out; /* for /api/status */
    uint64_t start_ns;
};

/* ------------------------------------------------------------ counting */

static nw_series_t *code_series(struct agent_ops_s *o, unsigned status) {
    char v[12];
    const char *vals[1] = {v};
    nw_series_t *s;
    if (status < CODE_MAX && (s = o->s_code[status]) != NULL)
        return s;
    snprintf(v, sizeof(v), "%u", status); /* llhttp: 3 digits at most */
    s = nw_metric_series(o->f_requests, vals);
    if (status < CODE_MAX)
        o->s_code[status] = s; /* the odd 6xx-9xx is looked up each time */
    return s;
}

static void count_request(struct agent_ops_s *o, unsigned status, uint64_t t_open) {
    nw_series_t *s = code_series(o, status);
    uint64_t now = uv_hrtime();
    if (s)
        nw_series_add(s, 1);
    if (o->s_duration)
        nw_series_observe(o->s_duration, t_open && now > t_open ? (double)(now - t_open) / 1e9 : 0);
    o->requests++;
    if (status >= 500)
        o->errors++;
}

void ops_response(lreq_t *r, unsigned status) {
    struct agent_ops_s *o = r->ag->ops;
    if (!o || r->counted)
        return;
    r->counted = 1;
    count_request(o, status, r->t_open);
}

/* The status serve gives the client for a stream the agent reset before
 * any head (serve/response.c, code_status). */
static unsigned reset_status(uint32_t code) {
    switch (code) {
    case NW_RST_REFUSED: return 503;
    case NW_RST_TIMEOUT: return 504;
    default: return 502;
    }
}

void ops_request_end(lreq_t *r) {
    if (!r->ag->ops || r->counted)
        return;
    ops_response(r, r->peer_reset ? 499 : reset_status(r->rst));
}

void ops_unparsed(agent_t *ag) {
    if (ag->ops)
        count_request(ag->ops, 502, 0);
}

static void add_reason(nw_metric_t *f, const char *reason) {
    const char *vals[1] = {reason};
    nw_series_t *s = f ? nw_metric_series(f, vals) : NULL;
    if (s)
        nw_series_add(s, 1);
}

void ops_reconnect(slot_t *sl, const char *reason, const char *why) {
    snprintf(sl->last_error, sizeof(sl->last_error), "%s", why);
    sl->since = (int64_t)time(NULL);
    if (sl->ag->ops)
        add_reason(sl->ag->ops->f_reconnects, reason);
}

void ops_local_error(agent_t *ag, const char *reason) {
    if (ag->ops)
        add_reason(ag->ops->f_errors, reason);
}

void ops_dial_error(agent_t *ag, int err) {
    if (!ag->ops)
        return;
    ops_local_error(ag, err == UV_ECONNREFUSED ? "connect_refused"
                        : err == UV_ETIMEDOUT  ? "timeout"
                        : err == NW_ETLS       ? "tls"
                                               : "connect_failed");
}

void ops_read_error(agent_t *ag, ssize_t err) {
    if (!ag->ops)
        return;
    ops_local_error(ag, err == UV_EOF                                ? "closed"
                        : err == UV_ECONNRESET || err == UV_EPIPE     ? "reset"
                        : err == UV_ETIMEDOUT                         ? "timeout"
                        : err == NW_ETLS                              ? "tls"
                                                                      : "io");
}

void ops_bytes(agent_t *ag, int to_local, size_t n) {
    struct agent_ops_s *o = ag->ops;
    if (!o || !n)
        return;
    if (to_local) {
        o->bytes_out += n;
        nw_series_add(o->s_out, (double)n);
    } else {
        o->bytes_in += n;
        nw_series_add(o->s_in, (double)n);
    }
}

/* ------------------------------------------------------ scrape time */

static unsigned tunnels_up(const agent_t *ag) {
    unsigned k, n = 0;
    for (k = 0; k < ag->nslots; k++)
        n += ag->slots[k].tun != NULL;
    return n;
}

/* Tunnels up among the MAX_CONN slots of remotes[i]. */
static unsigned remote_up(const agent_t *ag, size_t i) {
    const slot_t *sl = &ag->slots[i * ag->cfg->max_conn];
    unsigned k, n = 0;
    for (k = 0; k < ag->cfg->max_conn; k++)
        n += sl[k].tun != NULL;
    return n;
}

static size_t pool_in_use(const agent_t *ag) {
    const lreq_t *r;
    size_t n = 0;
    for (r = ag->reqs; r; r = r->next)
        n += r->lc != NULL;
    return n;
}

/* natwrp_remote_tunnels_up{remote,address}: a series per address in use
 * (0 while its slots reconnect), gone with the address. */
static void collect_remotes(agent_t *ag, struct agent_ops_s *o) {
    size_t i;
    for (i = 0; i < ag->cfg->max_remotes; i++) {
        const remote_t *rem = &ag->remotes[i];
        shown_remote_t *sh = &o->shown[i];
        const char *v[2];
        nw_series_t *s;
        if (sh->shown && (!rem->used || strcmp(rem->url_str, sh->remote) != 0 ||
                          strcmp(rem->addr, sh->addr) != 0)) {
            v[0] = sh->remote, v[1] = sh->addr;
            nw_metric_remove(o->f_remote_up, v);
            sh->shown = 0;
        }
        if (!rem->used)
            continue;
        v[0] = rem->url_str, v[1] = rem->addr;
        if ((s = nw_metric_series(o->f_remote_up, v)) == NULL)
            continue;
        nw_series_set(s, remote_up(ag, i));
        sh->shown = 1;
        snprintf(sh->remote, sizeof(sh->remote), "%s", rem->url_str);
        snprintf(sh->addr, sizeof(sh->addr), "%s", rem->addr);
    }
}

static void on_collect(nw_metrics_t *m, void *ud) {
    agent_t *ag = ud;
    struct agent_ops_s *o = ag->ops;
    (void)m;
    nw_series_set(o->s_tunnels_up, tunnels_up(ag));
    nw_series_set(o->s_pool_idle, (double)ag->nidle);
    nw_series_set(o->s_pool_in_use, (double)pool_in_use(ag));
    nw_series_set(o->s_inflight, (double)ag->nreqs);
    collect_remotes(ag, o);
}

static const char *unready(const agent_t *ag) {
    return ag->stopping ? "draining" : !tunnels_up(ag) ? "no tunnel up" : NULL;
}

/* /readyz: useful while at least one tunnel is up and no drain began.
 * verbose: a line per address (its tunnels up of MAX_CONN, the last
 * reason one went down), then the verdict. */
static int ready(void *ud, const char *query, nw_sbuf_t *out) {
    agent_t *ag = ud;
    const char *r = unready(ag);
    char v[2];
    size_t i;
    if (nw_query_param(query, "verbose", v, sizeof(v)) >= 0) {
        for (i = 0; i < ag->cfg->max_remotes; i++) {
            const remote_t *rem = &ag->remotes[i];
            const slot_t *sl = &ag->slots[i * ag->cfg->max_conn];
            const char *err = "";
            unsigned k, up;
            if (!rem->used)
                continue;
            up = remote_up(ag, i);
            for (k = 0; k < ag->cfg->max_conn && !err[0]; k++)
                err = sl[k].tun ? "" : sl[k].last_error;
            nw_sbuf_appendf(out, "[%c]remote=%s: %u/%u tunnels up%s%s\n", up ? '+' : '-',
                            rem->label, up, ag->cfg->max_conn, err[0] ? "; last error: " : "",
                            err);
        }
        nw_sbuf_appendf(out, r ? "not ready: %s\n" : "ready\n", r ? r : "");
    } else if (r) {
        nw_sbuf_appendf(out, "%s\n", r);
    }
    return r == NULL;
}

/* ------------------------------------------------------- /api/status */

static const char *slot_state(const agent_t *ag, const slot_t *sl) {
    if (sl->tun)
        return "up";
    if (sl->dial || sl->hs)
        return "connecting";
    if (ag->stopping)
        return "closed";
    return "backoff";
}

/* The routes the server granted the tunnels that are up (X-Natwrp-Routes
 * of their 101: public URLs; "*" for the default route), each once. */
static int routes_json(const agent_t *ag, nw_sbuf_t *b) {
    const char *seen[ROUTES_SEEN_MAX];
    size_t seen_len[ROUTES_SEEN_MAX], nseen = 0, i;
    unsigned k;
    int rc = nw_sbuf_appends(b, "[");
    for (k = 0; k < ag->nslots; k++) {
        const nw_sbuf_t *g = &ag->slots[k].granted;
        const char *p = g->p, *end = g->p + g->len;
        if (!ag->slots[k].tun)
            continue;
        while (g->len && p < end) {
            const char *c = memchr(p, ',', (size_t)(end - p)), *e = c ? c : end;
            size_t len;
            while (p < e && (*p == ' ' || *p == '\t'))
                p++;
            len = (size_t)(e - p);
            while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
                len--;
            for (i = 0; i < nseen && (seen_len[i] != len || memcmp(seen[i], p, len)); i++)
                ;
            if (len && i == nseen && nseen < ROUTES_SEEN_MAX) {
                rc |= nw_sbuf_appends(b, nseen ? "," : "");
                rc |= nw_json_str(b, p, len);
                seen[nseen] = p, seen_len[nseen++] = len;
            }
            p = c ? c + 1 : end;
        }
    }
    return rc | nw_sbuf_appends(b, "]");
}

static int tunnel_json(nw_sbuf_t *b, uint64_t id, const char *name, const char *remote,
                       const char *addr, const char *state, int64_t since, size_t streams,
                       const char *err) {
    int rc = nw_sbuf_appendf(b, "{\"id\":%llu,\"name\":", (unsigned long long)id);
    rc |= nw_json_cstr(b, name);
    rc |= nw_sbuf_appends(b, ",\"remote\":");
    rc |= nw_json_cstr(b, remote);
    rc |= nw_sbuf_appends(b, ",\"address\":");
    rc |= nw_json_cstr(b, addr);
    rc |= nw_sbuf_appendf(b, ",\"state\":\"%s\",\"since\":%lld,\"streams\":%zu,\"last_error\":",
                          state, (long long)since, streams);
    rc |= nw_json_cstr(b, err);
    return rc | nw_sbuf_appends(b, "}");
}

static int status_json(agent_t *ag, nw_sbuf_t *b) {
    struct agent_ops_s *o = ag->ops;
    const char *why = unready(ag);
    int ok = why == NULL, rc;
    unsigned k;
    size_t i, n = 0;

    rc = nw_sbuf_appends(b, "{\"role\":\"agent\",\"agent\":");
    rc |= nw_json_cstr(b, ag->cfg->agent_id);
    rc |= nw_sbuf_appendf(b, ",\"version\":\"" NW_VERSION "\",\"uptime_seconds\":%.3f,"
                             "\"ready\":%s,\"ready_reason\":",
                          (double)(uv_hrtime() - o->start_ns) / 1e9, ok ? "true" : "false");
    rc |= nw_json_cstr(b, ok ? "" : why);
    rc |= nw_sbuf_appendf(b, ",\"draining\":%s,\"local\":", ag->stopping ? "true" : "false");
    rc |= nw_json_cstr(b, ag->local_str);
    rc |= nw_sbuf_appendf(b,
                          ",\"requests\":%llu,\"errors\":%llu,\"bytes_in\":%llu,"
                          "\"bytes_out\":%llu,\"inflight\":%zu,\"routes\":",
                          (unsigned long long)o->requests, (unsigned long long)o->errors,
                          (unsigned long long)o->bytes_in, (unsigned long long)o->bytes_out,
                          ag->nreqs);
    rc |= routes_json(ag, b);
    rc |= nw_sbuf_appendf(b, ",\"pool\":{\"idle\":%zu,\"in_use\":%zu},\"tunnels\":[", ag->nidle,
                          pool_in_use(ag));
    for (k = 0; k < ag->nslots; k++) {
        const slot_t *sl = &ag->slots[k];
        if (!sl->rem)
            continue; /* no address for it (yet) */
        rc |= nw_sbuf_appends(b, n++ ? "," : "");
        rc |= tunnel_json(b, sl->tun ? sl->tun->id : 0, sl->name, sl->rem->url_str, sl->rem->addr,
                          slot_state(ag, sl),
                          sl->since, sl->tun ? sl->tun->nstreams : 0, sl->last_error);
    }
    /* Tunnels the server sent GOAWAY on: they finish their streams. */
    for (i = 0; i < ag->ntuns; i++) {
        const nw_tun_t *t = ag->tuns[i];
        for (k = 0; k < ag->nslots && ag->slots[k].tun != t; k++)
            ;
        if (k < ag->nslots)
            continue;
        rc |= nw_sbuf_appends(b, n++ ? "," : "");
        rc |= tunnel_json(b, t->id, t->agent, "", "", "retiring", 0, t->nstreams, "");
    }
    rc |= nw_sbuf_appendf(b, "],\"inspect\":%s}\n", ag->cfg->inspect ? "true" : "false");
    return rc;
}

static void on_status(nw_admin_req_t *req, void *ud) {
    nw_sbuf_t b = {0};
    if (status_json(ud, &b) != 0) {
        nw_sbuf_free(&b);
        nw_admin_respond(req, 500, NULL, "out of memory\n", 14);
        return;
    }
    nw_admin_respond(req, 200, "application/json", b.p, b.len);
    nw_sbuf_free(&b);
}

/* ------------------------------------------------------------- set-up */

static nw_series_t *one_series(nw_metrics_t *m, int type, const char *name, const char *help) {
    nw_metric_t *f = nw_metric_new(m, type, name, help, NULL, NULL, 0);
    return f ? nw_metric_series(f, NULL) : NULL;
}

int ops_start(agent_t *ag) {
    static const char *const l_reason[] = {"reason", NULL}, *const l_code[] = {"code", NULL},
                             *const l_state[] = {"state", NULL},
                             *const l_dir[] = {"direction", NULL},
                             *const l_remote[] = {"remote", "address", NULL};
    struct agent_ops_s *o;
    nw_metrics_t *m = ag->metrics;
    nw_metric_t *f_hist, *f_pool, *f_bytes;
    size_t i;
    const char *v[1];

    if (!m)
        return 0;
    if (!(o = nw_calloc(1, sizeof(*o))))
        return NW_ENOMEM;
    ag->ops = o;
    o->ag = ag;
    o->m = m;
    o->start_ns = uv_hrtime();
    o->s_tunnels_up = one_series(m, NW_METRIC_GAUGE, "natwrp_tunnels_up",
                                 "Tunnels to the server that are up (retiring ones not counted).");
    o->f_remote_up = nw_metric_new(m, NW_METRIC_GAUGE, "natwrp_remote_tunnels_up",
                                   "Tunnels up to each server address (of MAX_CONN), by "
                                   "REMOTE_URL and the address it resolved to.",
                                   l_remote, NULL, 0);
    o->shown = nw_calloc(ag->cfg->max_remotes, sizeof(*o->shown));
    o->f_reconnects = nw_metric_new(
        m, NW_METRIC_COUNTER, "natwrp_reconnects_total",
        "Tunnel losses and failed attempts after which a slot reconnects, by reason.", l_reason,
        NULL, 0);
    o->f_requests = nw_metric_new(
        m, NW_METRIC_COUNTER, "natwrp_local_requests_total",
        "Requests the server sent this agent, by the status their client got (499: the server "
        "reset the stream first).",
        l_code, NULL, 0);
    f_hist = nw_metric_new(m, NW_METRIC_HISTOGRAM, "natwrp_local_request_duration_seconds",
                           "Time from a request's arrival on the tunnel to its response head.",
                           NULL, duration_buckets, NW_ARRAY_LEN(duration_buckets));
    o->s_duration = f_hist ? nw_metric_series(f_hist, NULL) : NULL;
    o->f_errors = nw_metric_new(m, NW_METRIC_COUNTER, "natwrp_local_errors_total",
                                "Failed exchanges with the local service, by reason.", l_reason,
                                NULL, 0);
    f_pool = nw_metric_new(m, NW_METRIC_GAUGE, "natwrp_pool_connections",
                           "Connections to the local service: idle in the keep-alive pool, or "
                           "in use by a request.",
                           l_state, NULL, 0);
    f_bytes = nw_metric_new(m, NW_METRIC_COUNTER, "natwrp_local_bytes_total",
                            "Bytes exchanged with the local service: out sent to it (requests), "
                            "in received from it (responses), as on the wire.",
                            l_dir, NULL, 0);
    o->s_inflight = one_series(m, NW_METRIC_GAUGE, "natwrp_local_requests_in_flight",
                               "Requests this agent holds: waiting, at the local service, or "
                               "piped.");
    if (!o->s_tunnels_up || !o->f_remote_up || !o->shown || !o->f_reconnects || !o->f_requests || !o->s_duration ||
        !o->f_errors || !f_pool || !f_bytes || !o->s_inflight)
        goto fail;
    v[0] = "idle", o->s_pool_idle = nw_metric_series(f_pool, v);
    v[0] = "in_use", o->s_pool_in_use = nw_metric_series(f_pool, v);
    v[0] = "in", o->s_in = nw_metric_series(f_bytes, v);
    v[0] = "out", o->s_out = nw_metric_series(f_bytes, v);
    for (i = 0; i < NW_ARRAY_LEN(reconnect_reasons); i++)
        v[0] = reconnect_reasons[i], nw_metric_series(o->f_reconnects, v);
    for (i = 0; i < NW_ARRAY_LEN(local_error_reasons); i++)
        v[0] = local_error_reasons[i], nw_metric_series(o->f_errors, v);
    if (!o->s_pool_idle || !o->s_pool_in_use || !o->s_in || !o->s_out)
        goto fail;
    if (ag->admin && nw_admin_handle(ag->admin, "/api/status", on_status, ag) != 0)
        goto fail;
    nw_metrics_on_collect(m, on_collect, ag);
    if (ag->admin)
        nw_admin_set_ready(ag->admin, ready, ag);
    return 0;
fail: /* nothing counts into a half-made set */
    ops_free(ag);
    return NW_ENOMEM;
}

void ops_free(agent_t *ag) {
    if (ag->ops)
        nw_free(ag->ops->shown);
    nw_free(ag->ops);
    ag->ops = NULL;
}
