/* requests.c: the agent's request inspector at work: the hooks local.c
 * calls as an exchange goes (into the ring of inspect.c), the admin pages
 * /api/requests, /api/requests/ID and POST /api/requests/ID/replay, and
 * Replay itself: the captured request sent again to LOCAL_URL (only
 * there) on a fresh connection, its response read whole (the first
 * NW_INSPECT_BODY_MAX bytes kept) and shown beside the captured one. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "agent_int.h"
#include "inspect.h"
#include "json.h"
#include "ui.h"

#define REPLAY_TIMEOUT_MS 30000 /* for the response, once connected */

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --------------------------------------------------------------- hooks */

static nw_icap_t *cap_of(lreq_t *r) {
    return r->cap ? nw_inspect_get(r->ag->ins, r->cap) : NULL;
}

void ins_begin(lreq_t *r, const nw_mux_frame_t *f) {
    agent_t *ag = r->ag;
    if (!ag->ins)
        return;
    r->cap = nw_inspect_begin(ag->ins, wall_now(), uv_now(ag->loop), f->method, f->method_len,
                              f->target, f->target_len, f->hdrs, f->nhdrs);
    if (r->req_end)
        ins_req_end(r);
}

void ins_req_end(lreq_t *r) {
    nw_icap_t *c = cap_of(r);
    if (c)
        nw_icap_req_end(c);
}

void ins_req_body(lreq_t *r, const void *p, size_t n) {
    nw_icap_t *c = cap_of(r);
    if (c && n)
        nw_icap_req_body(c, p, n);
}

void ins_resp_head(lreq_t *r, int status, const nw_hdr_t *h, size_t n) {
    nw_icap_t *c = cap_of(r);
    if (c)
        nw_icap_resp_head(c, status, h, n);
}

void ins_resp_body(lreq_t *r, const void *p, size_t n) {
    nw_icap_t *c = cap_of(r);
    if (c && n)
        nw_icap_resp_body(c, p, n);
}

void ins_end(lreq_t *r, const char *why) {
    nw_icap_t *c = cap_of(r);
    if (c)
        nw_icap_end(c, uv_now(r->ag->loop), why);
    r->cap = 0;
}

/* -------------------------------------------------------------- replay */

#define REPLAY_MAX 8 /* replays in flight at once; more get 429 */

typedef struct replay_s {
    nw_hfields_t hf; /* first: the shared llhttp head callbacks find it here */
    agent_t *ag;
    nw_admin_req_t *req; /* NULL once answered or aborted */
    nw_dial_t *dial;
    nw_conn_t *conn;
    llhttp_t parser;
    uv_timer_t timer;
    uint64_t id;         /* the capture replayed */
    uint64_t t0;
    int status;
    nw_sbuf_t body;      /* the first NW_INSPECT_BODY_MAX bytes */
    uint64_t body_total;
    unsigned done : 1, head_only : 1, timer_on : 1;
} replay_t;

static void rp_noop_read(nw_conn_t *c, ssize_t n, const char *b) {
    (void)c, (void)n, (void)b;
}
static void rp_noop_written(nw_conn_t *c, size_t credit) {
    (void)c, (void)credit;
}
static void rp_noop_close(nw_conn_t *c) {
    (void)c;
}

static void rp_on_timer_close(uv_handle_t *h) {
    replay_t *rp = h->data;
    rp->ag->nreplays--;
    nw_hf_free(&rp->hf);
    nw_sbuf_free(&rp->body);
    nw_free(rp);
}

/* Let go of everything; rp is freed once its timer is closed. */
static void rp_free(replay_t *rp) {
    if (rp->dial)
        nw_dial_cancel(rp->dial);
    rp->dial = NULL;
    if (rp->conn) {
        nw_conn_set_owner(rp->conn, NULL, rp_noop_read, rp_noop_written, rp_noop_close);
        nw_conn_close(rp->conn);
        rp->conn = NULL;
    }
    if (rp->req)
        rp->req->on_abort = NULL;
    rp->req = NULL;
    uv_close((uv_handle_t *)&rp->timer, rp_on_timer_close);
}

static void rp_answer_error(replay_t *rp, int status, const char *why) {
    nw_sbuf_t b = {0};
    nw_admin_req_t *req = rp->req;
    rp->req = NULL;
    if (req) {
        nw_sbuf_appendf(&b, "{\"id\":%llu,\"error\":", (unsigned long long)rp->id);
        nw_json_cstr(&b, why);
        nw_sbuf_appends(&b, "}");
        req->on_abort = NULL;
        nw_admin_respond(req, status, "application/json", b.p ? b.p : "", b.len);
        nw_sbuf_free(&b);
    }
    nw_warn("agent=%s replay of request %llu failed: %s", rp->ag->cfg->agent_id,
            (unsigned long long)rp->id, why);
    rp_free(rp);
}

/* The captured exchange as "old", the replayed one as "new". */
static void rp_answer(replay_t *rp) {
    agent_t *ag = rp->ag;
    nw_icap_t *c = nw_inspect_get(ag->ins, rp->id);
    nw_admin_req_t *req = rp->req;
    nw_sbuf_t b = {0}, packed = {0};
    size_t i;
    int rc = 0;
    for (i = 0; i < rp->hf.n && rc == 0; i++) {
        nw_hdr_t h;
        nw_hf_get(&rp->hf, i, &h);
        rc |= nw_sbuf_append(&packed, h.name, h.name_len);
        rc |= nw_sbuf_append(&packed, "", 1);
        rc |= nw_sbuf_append(&packed, h.value, h.value_len);
        rc |= nw_sbuf_append(&packed, "", 1);
    }
    rc |= nw_sbuf_appendf(&b, "{\"id\":%llu,\"old\":", (unsigned long long)rp->id);
    if (c) {
        rc |= nw_inspect_one_json(ag->ins, c, &b);
    } else {
        rc |= nw_sbuf_appends(&b, "null"); /* it left the ring meanwhile */
    }
    rc |= nw_sbuf_appendf(&b, ",\"new\":{\"status\":%d,\"duration_seconds\":%.6f,\"headers\":",
                          rp->status, (double)(uv_now(ag->loop) - rp->t0) / 1000.0);
    rc |= nw_inspect_hdrs_json(&b, &packed, rp->hf.n, ag->cfg->inspect_secrets);
    rc |= nw_sbuf_appends(&b, ",\"body\":");
    rc |= nw_inspect_body_json(&b, rp->body.p ? rp->body.p : "", rp->body.len, rp->body_total);
    rc |= nw_sbuf_appends(&b, "}}");
    nw_sbuf_free(&packed);
    rp->req = NULL;
    if (req) {
        req->on_abort = NULL;
        if (rc)
            nw_admin_respond(req, 500, NULL, "out of memory\n", 14);
        else
            nw_admin_respond(req, 200, "application/json", b.p, b.len);
    }
    nw_sbuf_free(&b);
    rp_free(rp);
}

static int rp_on_message_begin(llhttp_t *p) {
    replay_t *rp = p->data;
    nw_hf_reset(&rp->hf);
    return 0;
}

static int rp_on_headers_complete(llhttp_t *p) {
    replay_t *rp = p->data;
    if (p->status_code < 200)
        return 0; /* interim: its fields are dropped at the next message */
    rp->status = p->status_code;
    return rp->head_only ? 1 : 0;
}

static int rp_on_body(llhttp_t *p, const char *at, size_t n) {
    replay_t *rp = p->data;
    size_t room = NW_INSPECT_BODY_MAX - rp->body.len;
    rp->body_total += n;
    if (room && nw_sbuf_append(&rp->body, at, n < room ? n : room) != 0)
        return -1;
    if (n > room) {
        /* Enough to show: the rest (a stream may never end) is not read. */
        rp->done = 1;
        return HPE_PAUSED;
    }
    return 0;
}

static int rp_on_message_complete(llhttp_t *p) {
    replay_t *rp = p->data;
    if (p->status_code < 200)
        return 0;
    rp->done = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t rp_settings = {
    .on_message_begin = rp_on_message_begin,
    .on_status = nw_http_cb_first,
    .on_header_field = nw_http_cb_name,
    .on_header_value = nw_http_cb_value,
    .on_headers_complete = rp_on_headers_complete,
    .on_body = rp_on_body,
    .on_message_complete = rp_on_message_complete,
};

static void rp_on_read(nw_conn_t *conn, ssize_t nread, const char *buf) {
    replay_t *rp = conn->data;
    llhttp_errno_t e;
    if (nread < 0) {
        if (llhttp_message_needs_eof(&rp->parser) && rp->status &&
            llhttp_finish(&rp->parser) == HPE_OK) {
            rp->done = 1;
            rp_answer(rp);
            return;
        }
        rp_answer_error(rp, 502, "the local service closed the connection before its "
                                 "response ended");
        return;
    }
    e = llhttp_execute(&rp->parser, buf, (size_t)nread);
    if (rp->done) {
        rp_answer(rp);
        return;
    }
    if (e != HPE_OK)
        rp_answer_error(rp, 502, "bad response from the local service");
}

static void rp_on_timer(uv_timer_t *t) {
    replay_t *rp = t->data;
    if (rp->status) /* a head and part of a body: show what came */
        rp_answer(rp);
    else
        rp_answer_error(rp, 504, "the local service did not answer within 30 s");
}

/* The request as the agent sends any: LOCAL_URL's base path before the
 * target, its Host, the captured end-to-end fields, the captured body. */
static int rp_request(replay_t *rp, const nw_icap_t *c, nw_sbuf_t *out) {
    agent_t *ag = rp->ag;
    const char *p = c->req_hdrs.p;
    size_t i;
    int m = strcmp(c->method, "POST") == 0 || strcmp(c->method, "PUT") == 0 ||
            strcmp(c->method, "PATCH") == 0;
    nw_sbuf_appends(out, c->method);
    nw_sbuf_appends(out, " ");
    nw_sbuf_appends(out, ag->cfg->local.path);
    if (strcmp(c->target, "*") == 0 && ag->cfg->local.path[0])
        nw_sbuf_appends(out, "/");
    else
        nw_sbuf_appends(out, c->target);
    nw_sbuf_appends(out, " HTTP/1.1\r\nHost: ");
    nw_sbuf_appends(out, ag->host_hdr);
    nw_sbuf_appends(out, "\r\n");
    for (i = 0; i < c->nreq_hdrs && p; i++) {
        size_t nl = strlen(p), vl = strlen(p + nl + 1);
        if (!nw_strieq(p, nl, "host") && !nw_http_is_hop(p, nl) &&
            !nw_strieq(p, nl, "content-length") && !nw_strieq(p, nl, "upgrade"))
            nw_http_put_field(out, p, nl, p + nl + 1, vl);
        p += nl + 1 + vl + 1;
    }
    if (c->req_body.len || m)
        nw_sbuf_appendf(out, "Content-Length: %zu\r\n", c->req_body.len);
    nw_sbuf_appends(out, "Connection: close\r\n\r\n");
    return nw_sbuf_append(out, c->req_body.p ? c->req_body.p : "", c->req_body.len);
}

static void rp_on_dial(nw_dial_t *d, nw_conn_t *conn, int err, void *ud) {
    replay_t *rp = ud;
    nw_icap_t *c = nw_inspect_get(rp->ag->ins, rp->id);
    nw_sbuf_t out = {0};
    size_t len;
    char msg[1600];
    rp->dial = NULL;
    if (!conn) {
        snprintf(msg, sizeof(msg), "cannot connect to local service %s: %s",
                 rp->ag->local_str, nw_dial_strerror(d));
        rp_answer_error(rp, 502, msg);
        return;
    }
    rp->conn = conn;
    nw_conn_set_owner(conn, rp, rp_on_read, rp_noop_written, rp_noop_close);
    if (!c) {
        rp_answer_error(rp, 410, "the capture left the inspector's ring");
        return;
    }
    if (rp_request(rp, c, &out) != 0) {
        nw_sbuf_free(&out);
        rp_answer_error(rp, 500, "out of memory");
        return;
    }
    len = out.len;
    if (nw_conn_write_owned(conn, nw_sbuf_take(&out, &len), len, 0) != 0) {
        rp_answer_error(rp, 502, "write to the local service failed");
        return;
    }
    nw_conn_resume(conn, NW_PAUSE_OWNER);
    uv_timer_start(&rp->timer, rp_on_timer, REPLAY_TIMEOUT_MS, 0);
}

static void rp_on_abort(nw_admin_req_t *req) {
    replay_t *rp = req->data;
    rp->req = NULL;
    rp_free(rp);
}

static void replay_start(agent_t *ag, nw_admin_req_t *req, const nw_icap_t *c) {
    replay_t *rp;
    if (ag->nreplays >= REPLAY_MAX) {
        /* Each one holds an admin connection for up to 30 s: a burst must
         * not take all 64 (and /livez with them). */
        static const char why[] = "{\"error\":\"too many replays at once; try again\"}";
        nw_admin_respond(req, 429, "application/json", why, sizeof(why) - 1);
        return;
    }
    if (!(rp = nw_calloc(1, sizeof(*rp)))) {
        nw_admin_respond(req, 500, NULL, "out of memory\n", 14);
        return;
    }
    ag->nreplays++;
    rp->ag = ag;
    rp->req = req;
    rp->id = c->id;
    rp->t0 = uv_now(ag->loop);
    rp->head_only = strcmp(c->method, "HEAD") == 0;
    nw_hf_init(&rp->hf, ag->cfg->max_head);
    llhttp_init(&rp->parser, HTTP_RESPONSE, &rp_settings);
    rp->parser.data = rp;
    uv_timer_init(ag->loop, &rp->timer);
    rp->timer.data = rp;
    rp->dial = nw_dial_start(ag->loop, ag->cfg->local.host, ag->cfg->local.port,
                             ag->cfg->connect_timeout_ms, ag->local_tls, rp_on_dial, rp);
    if (!rp->dial) {
        rp_answer_error(rp, 500, "cannot start a connection");
        return;
    }
    req->data = rp;
    req->on_abort = rp_on_abort;
    nw_info("agent=%s replaying request %llu (%s %s) to the local service",
            ag->cfg->agent_id, (unsigned long long)c->id, c->method, c->target);
}

/* --------------------------------------------------------------- pages */

static void respond_sbuf(nw_admin_req_t *req, int status, nw_sbuf_t *b, int rc) {
    if (rc)
        nw_admin_respond(req, 500, NULL, "out of memory\n", 14);
    else
        nw_admin_respond(req, status, "application/json", b->p ? b->p : "", b->len);
    nw_sbuf_free(b);
}

static int is_get(const nw_admin_req_t *req) {
    return strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
}

/* after=N from the query, 0 when absent or not a number. */
static uint64_t query_after(const char *q) {
    const char *p = q;
    while (p && *p) {
        if (strncmp(p, "after=", 6) == 0) {
            char *end;
            unsigned long long v = strtoull(p + 6, &end, 10);
            return (*end == 0 || *end == '&') ? (uint64_t)v : 0;
        }
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return 0;
}

/* GET /api/requests[?after=ID]: the captures after ID, newest last. */
static void page_list(nw_admin_req_t *req, void *ud) {
    agent_t *ag = ud;
    nw_sbuf_t b = {0};
    int rc;
    if (!is_get(req)) {
        nw_admin_respond(req, 405, NULL, "method not allowed\n", 19);
        return;
    }
    if (!ag->ins) {
        static const char off[] = "{\"inspect\":false,\"last\":0,\"requests\":[]}";
        nw_admin_respond(req, 200, "application/json", off, sizeof(off) - 1);
        return;
    }
    nw_inspect_touch(ag->ins, uv_now(ag->loop));
    rc = nw_inspect_list_json(ag->ins, query_after(req->query), &b);
    respond_sbuf(req, 200, &b, rc);
}

/* /api/requests/ID (GET) and /api/requests/ID/replay (POST). */
static void page_one(nw_admin_req_t *req, void *ud) {
    agent_t *ag = ud;
    const char *p = req->path + strlen("/api/requests/");
    char *end;
    unsigned long long id;
    nw_icap_t *c;
    int replay;
    nw_sbuf_t b = {0};
    if (*p < '0' || *p > '9') {
        nw_admin_respond(req, 404, NULL, "not found\n", 10);
        return;
    }
    id = strtoull(p, &end, 10);
    replay = strcmp(end, "/replay") == 0;
    if (*end && !replay) {
        nw_admin_respond(req, 404, NULL, "not found\n", 10);
        return;
    }
    if (replay ? strcmp(req->method, "POST") != 0 : !is_get(req)) {
        nw_admin_respond(req, 405, NULL, "method not allowed\n", 19);
        return;
    }
    c = nw_inspect_get(ag->ins, (uint64_t)id);
    if (!c) {
        nw_admin_respond(req, 404, NULL, "no such request in the inspector\n", 33);
        return;
    }
    if (!replay) {
        nw_inspect_touch(ag->ins, uv_now(ag->loop));
        respond_sbuf(req, 200, &b, nw_inspect_one_json(ag->ins, c, &b));
        return;
    }
    if (!nw_icap_replayable(c)) {
        static const char why[] =
            "{\"error\":\"its body was not captured whole (over 64 KiB, not all of it "
            "arrived, or no dashboard was open): it cannot be replayed\"}";
        nw_admin_respond(req, 409, "application/json", why, sizeof(why) - 1);
        return;
    }
    replay_start(ag, req, c);
}

int ag_inspect_start(agent_t *ag, nw_admin_t *a) {
    nw_admin_ui(a);
    if (ag->cfg->inspect && !ag->ins && !(ag->ins = nw_inspect_new(ag->cfg->inspect_secrets)))
        return NW_ENOMEM;
    if (nw_admin_handle(a, "/api/requests", page_list, ag) != 0 ||
        nw_admin_handle_methods(a, "/api/requests/", NW_ADMIN_GET | NW_ADMIN_POST, page_one,
                                ag) != 0)
        return NW_ENOMEM;
    return 0;
}

void ag_inspect_free(agent_t *ag) {
    nw_inspect_free(ag->ins);
    ag->ins = NULL;
}
