/* serve_ops.c: what serve tells its operator on the admin listener (admin.c):
 * its metric families in the registry, counted where things happen
 * (requests by route and status code, the time to the response head,
 * body bytes, tunnel events and refusals, serve's own error replies), the
 * gauges read at scrape time, the /readyz answer and /api/status.
 *
 * Counting is exact: every response head serve writes to a client counts
 * once, in natwrp_requests_total{route,code}, at the moment it is handed
 * to the connection (a head held for its first body bytes counts when it
 * goes, and not at all when a reset replaces it with a 502). The tunnel
 * handshake is not a request: it counts in natwrp_tunnel_events_total or
 * natwrp_tunnel_refusals_total. A route's counters live in a map here,
 * keyed by the route's name and bounded (RSTAT_MAX); the route table
 * (routes.c) is not touched. Without --admin srv->ops is NULL and nothing
 * is counted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "path.h"
#include "serve_int.h"

#define RSTAT_MAX 4096      /* routes with counters of their own; later ones share "_other" */
#define RSTAT_BUCKETS 1024  /* hash buckets of the route map (a power of two) */
#define CODE_CACHE 8        /* status codes a route keeps its series of at hand */
#define ROUTE_NAME_MAX (NW_ROUTE_HOST_MAX + NW_ROUTE_PATH_MAX + 8)

/* One route's counters (the route named, "-" for requests answered before
 * a route was known, "_other" past RSTAT_MAX). */
struct srv_rstat_s {
    srv_rstat_t *next;    /* hash chain */
    uint64_t hash;
    nw_series_t *dur;     /* natwrp_request_duration_seconds{route} */
    nw_series_t *bin;     /* natwrp_request_bytes_total{route} */
    nw_series_t *bout;    /* natwrp_response_bytes_total{route} */
    struct {
        int code;
        nw_series_t *s;   /* natwrp_requests_total{route,code} */
    } codes[CODE_CACHE];  /* the codes seen first (no lookup per request for them) */
    size_t ncodes;
    uint64_t requests, errors, bytes_in, bytes_out;
    char name[];
};

struct srv_ops_s {
    nw_metrics_t *m;
    nw_admin_t *admin;
    nw_metric_t *requests, *duration, *req_bytes, *resp_bytes, *streams, *conns, *tunnels,
        *events, *refusals, *waiting, *qtimeouts, *errors;
    nw_series_t *s_streams, *s_conns, *s_waiting, *s_qtimeouts;
    srv_rstat_t *buckets[RSTAT_BUCKETS];
    size_t nrstat;
    srv_rstat_t *none;    /* "-" */
    srv_rstat_t *other;   /* "_other" */
    uint64_t requests_n, errors_n, bytes_in, bytes_out;
    uint64_t start_ns;    /* uv_hrtime() at start, for uptime */
    nw_sbuf_t tun_pairs;  /* natwrp_tunnels series of the last scrape: "route\0group\0"... */
};

static const double dur_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                     0.5,   1,    2.5,   5,    10,  30};

/* ---- routes' counters ---- */

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    size_t i;
    for (i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static srv_rstat_t *rstat_new(srv_ops_t *o, const char *name, size_t n, uint64_t h) {
    const char *lv[1];
    srv_rstat_t *r = nw_calloc(1, sizeof(*r) + n + 1);
    if (!r)
        return NULL;
    memcpy(r->name, name, n);
    r->hash = h;
    lv[0] = r->name;
    r->dur = nw_metric_series(o->duration, lv);
    r->bin = nw_metric_series(o->req_bytes, lv);
    r->bout = nw_metric_series(o->resp_bytes, lv);
    if (!r->dur || !r->bin || !r->bout) {
        nw_free(r);
        return NULL;
    }
    return r;
}

/* The counters of the route named name (n bytes), created at first use;
 * "_other" once RSTAT_MAX routes have their own. NULL out of memory. */
static srv_rstat_t *rstat_get(srv_ops_t *o, const char *name, size_t n, int create) {
    uint64_t h = fnv(name, n);
    srv_rstat_t **slot = &o->buckets[h & (RSTAT_BUCKETS - 1)], *r;
    for (r = *slot; r; r = r->next)
        if (r->hash == h && strlen(r->name) == n && memcmp(r->name, name, n) == 0)
            return r;
    if (!create)
        return NULL;
    if (o->nrstat >= RSTAT_MAX)
        return o->other ? o->other : (o->other = rstat_new(o, "_other", 6, 0));
    if (!(r = rstat_new(o, name, n, h)))
        return NULL;
    r->next = *slot;
    *slot = r;
    o->nrstat++;
    return r;
}

/* pc's route counters: "-" while it has no route. NULL out of memory. */
static srv_rstat_t *rstat_of(srv_ops_t *o, const pconn_t *pc) {
    if (pc->rstat)
        return pc->rstat;
    return o->none ? o->none : (o->none = rstat_new(o, "-", 1, 0));
}

/* ---- where things happen ---- */

/* A request's first byte was parsed (start 1), or the previous one was
 * answered and the connection waits for the next (start 0: a head refused
 * before llhttp saw it is counted all the same, with no duration). */
void srv_ops_begin(pconn_t *pc, int start) {
    pc->rstat = NULL;
    pc->err_reason = NULL;
    pc->resp_status = 0;
    pc->resp_counted = 0;
    pc->t_begin = start && pc->srv->ops ? uv_hrtime() : 0;
}

/* The request was routed to r (a route of the table). */
void srv_ops_route(pconn_t *pc, const nw_route_t *r) {
    char name[ROUTE_NAME_MAX];
    srv_ops_t *o = pc->srv->ops;
    size_t n;
    if (!o || !r)
        return;
    if (pc->rstat) /* dispatched again from the wait queue: the same route */
        return;
    n = nw_route_format(r, name, sizeof(name));
    pc->rstat = rstat_get(o, name, n, 1);
}

/* The reason serve answered with status itself, when the site did not
 * say (pc->err_reason). */
static const char *own_reason(int status) {
    switch (status) {
    case 400: return "bad_request";
    case 401: return "auth";
    case 404: return "no_route";
    case 408: return "timeout";
    case 413:
    case 414:
    case 431: return "too_large";
    case 500: return "internal";
    case 501: return "not_implemented";
    case 502: return "agent_error";
    case 503: return "no_tunnel";
    case 504: return "timeout";
    case 505: return "bad_version";
    default: return "other";
    }
}

/* The code label: three digits (a status is 100..999 here). */
static void code_label(int status, char out[4]) {
    if (status < 100 || status > 999)
        status = 999;
    out[0] = (char)('0' + status / 100);
    out[1] = (char)('0' + status / 10 % 10);
    out[2] = (char)('0' + status % 10);
    out[3] = 0;
}

/* natwrp_requests_total{route,code} for r and status. */
static nw_series_t *code_series(srv_ops_t *o, srv_rstat_t *r, int status) {
    const char *lv[2];
    char code[4];
    nw_series_t *s;
    size_t i;
    for (i = 0; i < r->ncodes; i++)
        if (r->codes[i].code == status)
            return r->codes[i].s;
    code_label(status, code);
    lv[0] = r->name;
    lv[1] = code;
    s = nw_metric_series(o->requests, lv);
    if (s && r->ncodes < CODE_CACHE) {
        r->codes[r->ncodes].code = status;
        r->codes[r->ncodes++].s = s;
    }
    return s;
}

/* A response head with status went to pc's client; own: serve wrote it
 * (an error reply), else it came from the agent. Once per request. */
void srv_ops_head(pconn_t *pc, int status, int own) {
    srv_ops_t *o = pc->srv->ops;
    srv_rstat_t *r;
    const char *lv[1];
    nw_series_t *s;
    int err;
    if (!o || pc->resp_counted || pc->tunnel || !(r = rstat_of(o, pc)))
        return;
    pc->resp_counted = 1;
    nw_series_add(code_series(o, r, status), 1);
    nw_series_observe(r->dur, pc->t_begin ? (double)(uv_hrtime() - pc->t_begin) / 1e9 : 0);
    err = status >= 500 || (own && status >= 400);
    r->requests++;
    r->errors += (uint64_t)err;
    o->requests_n++;
    o->errors_n += (uint64_t)err;
    if (own && status >= 400) {
        lv[0] = pc->err_reason ? pc->err_reason : own_reason(status);
        if ((s = nw_metric_series(o->errors, lv)) != NULL)
            nw_series_add(s, 1);
    }
}

/* Body bytes of pc's request went into stream s (in), or bytes of its
 * response to the client (out). */
void srv_ops_bytes(pconn_t *pc, nw_strm_t *s, size_t in, size_t out) {
    srv_ops_t *o = pc->srv->ops;
    srv_tun_t *st = s ? s->tun->data : NULL;
    srv_rstat_t *r;
    if (!o || (!in && !out) || !(r = rstat_of(o, pc)))
        return;
    if (in) {
        nw_series_add(r->bin, (double)in);
        r->bytes_in += in;
        o->bytes_in += in;
    }
    if (out) {
        nw_series_add(r->bout, (double)out);
        r->bytes_out += out;
        o->bytes_out += out;
    }
    if (st) {
        st->bytes_in += in;
        st->bytes_out += out;
    }
}

static void count1(nw_metric_t *f, const char *v) {
    const char *lv[1];
    nw_series_t *s;
    lv[0] = v;
    if ((s = nw_metric_series(f, lv)) != NULL)
        nw_series_add(s, 1);
}

/* A tunnel event: "open", "close" or "replace". */
void srv_ops_tunnel(serve_t *srv, const char *event) {
    if (srv->ops)
        count1(srv->ops->events, event);
}

/* A tunnel handshake refused, by reason (token, forbidden, limits,
 * draining, route, bad_handshake, internal). */
void srv_ops_refused(serve_t *srv, const char *reason) {
    if (srv->ops)
        count1(srv->ops->refusals, reason);
}

/* pc waited --queue-timeout for a tunnel or a slot: its 503 follows. */
void srv_ops_queue_timeout(pconn_t *pc) {
    pc->err_reason = "queue_timeout";
    if (pc->srv->ops)
        nw_series_add(pc->srv->ops->s_qtimeouts, 1);
}

/* A stream of a tunnel failed (reason for its last_error). */
void srv_ops_strm_error(nw_strm_t *s, const char *reason) {
    srv_tun_t *st = s->tun->data;
    if (st)
        st->last_error = reason;
}

/* The errors_total reason of a 400 from its log reason: the ones about
 * where a message ends (what request smuggling plays on) are "smuggling". */
const char *srv_ops_why_reason(const char *why) {
    static const char *const framing[] = {"Transfer-Encoding", "Content-Length", "bare CR",
                                          "bare LF", "obs-fold", "CRLF", "chunk", "CGI",
                                          NULL};
    size_t i;
    for (i = 0; why && framing[i]; i++)
        if (strstr(why, framing[i]))
            return "smuggling";
    return "bad_request";
}

/* The errors_total reason of an error reply for a stream reset with code. */
const char *srv_ops_rst_reason(uint32_t code) {
    switch (code) {
    case NW_RST_CONNECT: return "local_unreachable";
    case NW_RST_REFUSED: return "agent_refused";
    case NW_RST_TIMEOUT: return "timeout";
    case NW_RST_TUNNEL_LOST:
    case NW_RST_UNSENT: return "tunnel_lost";
    default: return "agent_error";
    }
}

/* ---- scrape time ---- */

static size_t wq_len(const serve_t *srv) {
    const pconn_t *pc;
    size_t n = 0;
    for (pc = srv->wq_head; pc; pc = pc->qnext)
        n++;
    return n;
}

static size_t streams_active(const serve_t *srv) {
    size_t i, n = 0;
    for (i = 0; i < srv->ntuns; i++)
        n += srv->tuns[i]->active;
    return n;
}

static size_t conns_active(const serve_t *srv) {
    const pconn_t *pc;
    size_t n = 0;
    for (pc = srv->pconns; pc; pc = pc->next)
        n += pc->state != PC_CLOSED;
    return n;
}

/* natwrp_tunnels{route,group}: the series of the last scrape go, the
 * current ones are set (a route or group gone leaves no stale series). */
static void collect_tunnels(serve_t *srv, srv_ops_t *o) {
    char name[ROUTE_NAME_MAX];
    const char *lv[2];
    size_t i, k, j, off;
    nw_sbuf_t now = {0};
    for (off = 0; off < o->tun_pairs.len;) {
        lv[0] = o->tun_pairs.p + off;
        lv[1] = lv[0] + strlen(lv[0]) + 1;
        off = (size_t)(lv[1] - o->tun_pairs.p) + strlen(lv[1]) + 1;
        nw_metric_remove(o->tunnels, lv);
    }
    nw_sbuf_free(&o->tun_pairs);
    for (i = 0; i < nw_routes_count(srv->routes); i++) {
        nw_route_hit_t e = nw_routes_at(srv->routes, i);
        nw_route_format(e.route, name, sizeof(name));
        for (k = 0; k < e.nowners; k++) {
            const char *g = ((const srv_tun_t *)e.owners[k])->tun->group;
            size_t n = 0;
            nw_series_t *s;
            for (j = 0; j < k; j++)
                if (strcmp(((const srv_tun_t *)e.owners[j])->tun->group, g) == 0)
                    break;
            if (j < k)
                continue; /* this group was counted at its first tunnel */
            for (j = k; j < e.nowners; j++)
                n += strcmp(((const srv_tun_t *)e.owners[j])->tun->group, g) == 0;
            lv[0] = name;
            lv[1] = g;
            if ((s = nw_metric_series(o->tunnels, lv)) != NULL)
                nw_series_set(s, (double)n);
            if (nw_sbuf_append(&now, name, strlen(name) + 1) != 0 ||
                nw_sbuf_append(&now, g, strlen(g) + 1) != 0)
                nw_metric_remove(o->tunnels, lv); /* not remembered: not left behind */
        }
    }
    o->tun_pairs = now;
}

static void on_collect(nw_metrics_t *m, void *ud) {
    serve_t *srv = ud;
    srv_ops_t *o = srv->ops;
    (void)m;
    nw_series_set(o->s_streams, (double)streams_active(srv));
    nw_series_set(o->s_conns, (double)conns_active(srv));
    nw_series_set(o->s_waiting, (double)wq_len(srv));
    collect_tunnels(srv, o);
}

/* ---- /readyz ---- */

/* Why serve is not useful at all (NULL: it is): listening, not draining,
 * and a tunnel that takes streams. */
static const char *srv_unready(serve_t *srv) {
    return srv->draining || srv->stopping ? "draining"
           : srv->nlisteners == 0         ? "not listening yet"
           : !reg_usable(srv)             ? "no tunnel"
                                          : NULL;
}

/* verbose: a line per route of the table (at most READY_ROUTES_MAX). */
#define READY_ROUTES_MAX 256
static void ready_routes(serve_t *srv, nw_sbuf_t *out) {
    char name[ROUTE_NAME_MAX];
    size_t i, n = nw_routes_count(srv->routes);
    for (i = 0; i < n && i < READY_ROUTES_MAX; i++) {
        nw_route_hit_t e = nw_routes_at(srv->routes, i);
        size_t k, up = 0;
        for (k = 0; k < e.nowners; k++)
            up += reg_tun_usable(((const srv_tun_t *)e.owners[k])->tun);
        nw_route_format(e.route, name, sizeof(name));
        nw_sbuf_appendf(out, "[%c]route %s: %zu tunnel%s%s\n", up ? '+' : '-', name, up,
                        up == 1 ? "" : "s", e.nowners ? "" : " (held)");
    }
    if (n > READY_ROUTES_MAX)
        nw_sbuf_appendf(out, "... %zu more routes\n", n - READY_ROUTES_MAX);
}

/* /readyz: srv_unready; with host=NAME (and path=P), a tunnel for the
 * route a request for NAME and P takes (the default route when no named
 * one matches), so that a load balancer with a backend per public name
 * checks the route it sends there. verbose: a line per route first. */
static int srv_ready(void *ud, const char *query, nw_sbuf_t *out) {
    serve_t *srv = ud;
    char host[NW_ROUTE_HOST_MAX + 8], path[NW_ROUTE_PATH_MAX + 2], name[ROUTE_NAME_MAX];
    char why[sizeof(name) + 40];
    const char *r = srv_unready(srv);
    int hl = nw_query_param(query, "host", host, sizeof(host));
    int pl = nw_query_param(query, "path", path, sizeof(path));

    why[0] = 0;
    if ((!r || strcmp(r, "no tunnel") == 0) && (hl != -1 || pl != -1)) {
        int up = hl < -1 || pl < -1 ? -2
                                    : rt_ready(srv, hl > 0 ? host : "", hl > 0 ? (size_t)hl : 0,
                                               pl > 0 ? path : "/", pl > 0 ? (size_t)pl : 1,
                                               name, sizeof(name));
        if (up == -2)
            r = "bad host or path";
        else if (up < 0)
            snprintf(why, sizeof(why), "no route for %s", hl > 0 ? host : "this host");
        else if (up == 0)
            snprintf(why, sizeof(why), "route %s: no tunnel", name);
        else
            r = NULL;
    }
    if (why[0])
        r = why;
    if (nw_query_param(query, "verbose", name, sizeof(name)) >= 0) {
        nw_sbuf_appendf(out, "[%c]listening\n[%c]not draining\n", srv->nlisteners ? '+' : '-',
                        srv->draining || srv->stopping ? '-' : '+');
        ready_routes(srv, out);
        nw_sbuf_appendf(out, r ? "not ready: %s\n" : "ready\n", r ? r : "");
    } else if (r) {
        nw_sbuf_appendf(out, "%s\n", r);
    }
    return r == NULL;
}

/* ---- /api/status ---- */

static const char *tun_state(const srv_tun_t *st) {
    if (st->revoked)
        return "revoked";
    if (st->tun->goaway_recv || st->tun->goaway_sent || nw_tun_closing(st->tun))
        return "draining";
    return "open";
}

static void status_routes(serve_t *srv, nw_sbuf_t *b) {
    char name[ROUTE_NAME_MAX];
    size_t i, n;
    nw_sbuf_appends(b, "\"routes\":[");
    for (i = 0; i < nw_routes_count(srv->routes); i++) {
        nw_route_hit_t e = nw_routes_at(srv->routes, i);
        const srv_rstat_t *r;
        n = nw_route_format(e.route, name, sizeof(name));
        r = rstat_get(srv->ops, name, n, 0);
        nw_sbuf_appends(b, i ? ",{\"route\":" : "{\"route\":");
        nw_json_str(b, name, n);
        nw_sbuf_appendf(b,
                        ",\"tunnels\":%zu,\"held\":%s,\"requests\":%llu,\"errors\":%llu,"
                        "\"bytes_in\":%llu,\"bytes_out\":%llu}",
                        e.nowners, e.nowners ? "false" : "true",
                        (unsigned long long)(r ? r->requests : 0),
                        (unsigned long long)(r ? r->errors : 0),
                        (unsigned long long)(r ? r->bytes_in : 0),
                        (unsigned long long)(r ? r->bytes_out : 0));
    }
    nw_sbuf_appends(b, "]");
}

static void status_tunnels(serve_t *srv, nw_sbuf_t *b) {
    char name[ROUTE_NAME_MAX];
    size_t i, k, n;
    nw_sbuf_appends(b, "\"tunnels\":[");
    for (i = 0; i < srv->ntuns; i++) {
        const nw_tun_t *t = srv->tuns[i];
        const srv_tun_t *st = t->data;
        nw_sbuf_appendf(b, "%s{\"id\":%llu,\"agent\":", i ? "," : "", (unsigned long long)t->id);
        nw_json_cstr(b, t->agent);
        nw_sbuf_appends(b, ",\"group\":");
        nw_json_cstr(b, t->group);
        nw_sbuf_appends(b, ",\"routes\":[");
        for (k = 0; k < st->nroutes; k++) {
            n = nw_route_format(&st->routes[k], name, sizeof(name));
            if (k)
                nw_sbuf_append(b, ",", 1);
            nw_json_str(b, name, n);
        }
        nw_sbuf_appends(b, "],\"peer\":");
        nw_json_cstr(b, st->peer);
        nw_sbuf_appendf(b,
                        ",\"since\":%lld,\"streams\":%zu,\"state\":\"%s\",\"bytes_in\":%llu,"
                        "\"bytes_out\":%llu,\"last_error\":",
                        (long long)st->since, t->active, tun_state(st),
                        (unsigned long long)st->bytes_in, (unsigned long long)st->bytes_out);
        nw_json_cstr(b, st->last_error ? st->last_error : "");
        nw_sbuf_appends(b, "}");
    }
    nw_sbuf_appends(b, "]");
}

static void page_status(nw_admin_req_t *req, void *ud) {
    serve_t *srv = ud;
    srv_ops_t *o = srv->ops;
    const char *why = srv_unready(srv);
    int ready = why == NULL;
    nw_sbuf_t b = {0};
    nw_sbuf_appendf(&b,
                    "{\"role\":\"serve\",\"version\":\"%s\",\"uptime_seconds\":%.3f,"
                    "\"ready\":%s,\"ready_reason\":",
                    NW_VERSION, (double)(uv_hrtime() - o->start_ns) / 1e9,
                    ready ? "true" : "false");
    nw_json_cstr(&b, why ? why : "");
    nw_sbuf_appendf(&b,
                    ",\"draining\":%s,\"connections\":%zu,\"streams\":%zu,\"waiting\":%zu,"
                    "\"requests\":%llu,\"errors\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,",
                    srv->draining ? "true" : "false", conns_active(srv), streams_active(srv),
                    wq_len(srv), (unsigned long long)o->requests_n,
                    (unsigned long long)o->errors_n, (unsigned long long)o->bytes_in,
                    (unsigned long long)o->bytes_out);
    status_routes(srv, &b);
    nw_sbuf_append(&b, ",", 1);
    status_tunnels(srv, &b);
    if (nw_sbuf_appends(&b, "}\n") != 0 || !b.p) {
        nw_sbuf_free(&b);
        nw_admin_respond(req, 503, NULL, "out of memory\n", 14);
        return;
    }
    nw_admin_respond(req, 200, "application/json", b.p, b.len);
    nw_sbuf_free(&b);
}

/* ---- start and end ---- */

static nw_metric_t *fam(srv_ops_t *o, int type, const char *name, const char *help,
                        const char *l1, const char *l2, int *bad) {
    const char *labels[3] = {l1, l2, NULL};
    nw_metric_t *f = nw_metric_new(o->m, type, name, help, labels,
                                   type == NW_METRIC_HISTOGRAM ? dur_buckets : NULL,
                                   type == NW_METRIC_HISTOGRAM
                                       ? sizeof(dur_buckets) / sizeof(dur_buckets[0])
                                       : 0);
    *bad |= f == NULL;
    return f;
}

static nw_series_t *plain(nw_metric_t *f, int *bad) {
    nw_series_t *s = f ? nw_metric_series(f, NULL) : NULL;
    *bad |= s == NULL;
    return s;
}

/* Register serve's families in m and its pages on a (the admin listener;
 * NULL: none, for tests), with /readyz asking srv_ready. 0 or NW_ENOMEM. */
int srv_ops_init(serve_t *srv, nw_metrics_t *m, nw_admin_t *a) {
    srv_ops_t *o = nw_calloc(1, sizeof(*o));
    int bad = 0;
    if (!o)
        return NW_ENOMEM;
    o->m = m;
    o->admin = a;
    o->start_ns = uv_hrtime();
    o->requests = fam(o, NW_METRIC_COUNTER, "natwrp_requests_total",
                      "Responses serve wrote to public clients, by route and status code.",
                      "route", "code", &bad);
    o->duration = fam(o, NW_METRIC_HISTOGRAM, "natwrp_request_duration_seconds",
                      "Time from a request's first byte to its response head, by route.",
                      "route", NULL, &bad);
    o->req_bytes = fam(o, NW_METRIC_COUNTER, "natwrp_request_bytes_total",
                       "Request body bytes (and upgraded bytes) sent into tunnels, by route.",
                       "route", NULL, &bad);
    o->resp_bytes = fam(o, NW_METRIC_COUNTER, "natwrp_response_bytes_total",
                        "Response body bytes (and upgraded bytes) from tunnels to clients, by "
                        "route.",
                        "route", NULL, &bad);
    o->streams = fam(o, NW_METRIC_GAUGE, "natwrp_streams_active",
                     "Streams in flight on all tunnels.", NULL, NULL, &bad);
    o->conns = fam(o, NW_METRIC_GAUGE, "natwrp_connections_active",
                   "Open public client connections.", NULL, NULL, &bad);
    o->tunnels = fam(o, NW_METRIC_GAUGE, "natwrp_tunnels",
                     "Tunnels serving each route, by agent group.", "route", "group", &bad);
    o->events = fam(o, NW_METRIC_COUNTER, "natwrp_tunnel_events_total",
                    "Tunnels opened, closed, and replaced by a new tunnel of the same name.",
                    "event", NULL, &bad);
    o->refusals = fam(o, NW_METRIC_COUNTER, "natwrp_tunnel_refusals_total",
                      "Tunnel handshakes refused, by reason.", "reason", NULL, &bad);
    o->waiting = fam(o, NW_METRIC_GAUGE, "natwrp_requests_waiting",
                     "Requests waiting for a tunnel or a stream slot.", NULL, NULL, &bad);
    o->qtimeouts = fam(o, NW_METRIC_COUNTER, "natwrp_queue_timeouts_total",
                       "Requests that waited --queue-timeout for a tunnel and got 503.", NULL,
                       NULL, &bad);
    o->errors = fam(o, NW_METRIC_COUNTER, "natwrp_errors_total",
                    "Error responses (4xx, 5xx) serve produced itself, by reason.", "reason",
                    NULL, &bad);
    if (!bad) {
        o->s_streams = plain(o->streams, &bad);
        o->s_conns = plain(o->conns, &bad);
        o->s_waiting = plain(o->waiting, &bad);
        o->s_qtimeouts = plain(o->qtimeouts, &bad);
    }
    if (bad || (a && nw_admin_handle(a, "/api/status", page_status, srv) != 0)) {
        nw_free(o);
        return NW_ENOMEM;
    }
    srv->ops = o;
    nw_metrics_on_collect(m, on_collect, srv);
    if (a)
        nw_admin_set_ready(a, srv_ready, srv);
    return 0;
}

void srv_ops_free(serve_t *srv) {
    srv_ops_t *o = srv->ops;
    size_t i;
    if (!o)
        return;
    for (i = 0; i < RSTAT_BUCKETS; i++)
        while (o->buckets[i]) {
            srv_rstat_t *r = o->buckets[i];
            o->buckets[i] = r->next;
            nw_free(r);
        }
    nw_free(o->none);
    nw_free(o->other);
    nw_sbuf_free(&o->tun_pairs);
    nw_free(o);
    srv->ops = NULL;
}
