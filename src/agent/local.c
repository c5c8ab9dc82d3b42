/* local.c: one stream's exchange with the local service: OPEN checks, the
 * request head and body to the service, the response parsed and framed
 * back, upgraded pipes. */
#include <stdio.h>
#include <string.h>

#include "accesslog.h"
#include "agent_int.h"
#include "path.h"
#include "redirect.h"

/* ------------------------------------------------------ tunnel streams */

/* Let go of r's stream (code 0: it ended; else it is reset with code). */
void lreq_detach(lreq_t *r, uint32_t code) {
    if (r->strm) {
        r->rst = code;
        nw_strm_detach(r->strm, code);
        r->strm = NULL;
    }
}

/* Abort r's local connection: never back to the pool, it is mid-exchange. */
static void lreq_abort_local(lreq_t *r) {
    if (r->lc) {
        r->lc->req = NULL;
        lc_abort(r->lc);
        r->lc = NULL;
    }
}

void lreq_fail(lreq_t *r, uint32_t code, const char *why) {
    if (!r->log_status) /* what serve answers for the reset (its code_status) */
        r->log_status = code == NW_RST_TIMEOUT ? 504 : code == NW_RST_REFUSED ? 503 : 502;
    ins_end(r, why);
    nw_warn("agent=%s strm=%u local request failed: %s", r->ag->cfg->agent_id,
            r->strm ? r->strm->sid : 0, why);
    lreq_detach(r, code);
    lreq_abort_local(r);
    lreq_free(r);
}

static int lc_write(lconn_t *lc, const void *p, size_t n, size_t credit) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int rc = nw_conn_write(lc->conn, &b, 1, credit);
    if (rc)
        ops_local_error(lc->ag, "write");
    else
        ops_bytes(lc->ag, 1, n);
    return rc;
}

/* Write body bytes to the local service, chunked when the length is
 * unknown; credit flows back to the server when the write completes. */
static int lreq_write_body(lreq_t *r, const void *p, size_t n, int end) {
    char hdr[NW_HTTP_CHUNK_LINE];
    uv_buf_t b[4];
    unsigned k = 0;
    if (n) {
        if (r->chunked)
            b[k++] = uv_buf_init(hdr, (unsigned)nw_http_chunk_line(hdr, n));
        b[k++] = uv_buf_init((char *)p, (unsigned)n);
        if (r->chunked)
            b[k++] = uv_buf_init("\r\n", 2);
        r->body_sent = 1;
    }
    if (end && r->chunked)
        b[k++] = uv_buf_init("0\r\n\r\n", 5);
    if (k && nw_conn_write(r->lc->conn, b, k, n) != 0) {
        ops_local_error(r->ag, "write");
        return NW_ECLOSED;
    }
    while (k)
        ops_bytes(r->ag, 1, b[--k].len);
    if (end && r->upgrade) {
        /* The client ended its side of the pipe: half-close ours. */
        r->in_eof = 1;
        nw_conn_shutdown(r->lc->conn);
    }
    return 0;
}

/* Write what q holds as body (or pipe) bytes, emptying it as it goes. */
static int lreq_write_queued(lreq_t *r, nw_bufq_t *q) {
    const char *p;
    size_t n;
    while ((n = nw_bufq_peek(q, &p, 65536)) > 0) {
        if (lreq_write_body(r, p, n, 0) != 0)
            return NW_ECLOSED;
        nw_bufq_drop(q, n);
    }
    return 0;
}

void ag_on_data(nw_strm_t *s, const uint8_t *p, size_t len, int end) {
    lreq_t *r = s->data;
    size_t n = len; /* bytes of the request body (or of the pipe) */
    int wend = end;
    r->log_in += len;
    if (!r->piped && (r->has_cl || r->upgrade)) {
        /* The body is exactly Content-Length bytes: what a server sends
         * beyond it would reach the service as the start of another
         * request, one serve never checked. */
        if (len > r->body_left) {
            if (!r->upgrade) {
                lreq_fail(r, NW_RST_PROTOCOL, "server sent DATA beyond the request's "
                                              "Content-Length");
                return;
            }
            n = (size_t)r->body_left;
        }
        r->body_left -= n;
        if (end && r->body_left) {
            lreq_fail(r, NW_RST_PROTOCOL, "server ended the request body before its "
                                          "Content-Length");
            return;
        }
        if (r->upgrade) {
            /* After an upgrade request's head and body come the client's
             * pipe bytes: they wait for the service's 101 and are dropped
             * if it answers anything else, so they are never read as a
             * request. Its window bounds them. */
            if (n < len && nw_bufq_push(&r->held, p + n, len - n) != 0) {
                lreq_fail(r, NW_RST_INTERNAL, "out of memory");
                return;
            }
            wend = 0; /* a half-close waits for the 101 too */
        }
    }
    if (!r->piped)
        ins_req_body(r, p, n);
    if (end && !r->piped && !r->req_end)
        ins_req_end(r);
    if (end)
        r->req_end = 1;
    if (!r->head_out) {
        if (nw_bufq_push(&r->early, p, n) != 0)
            lreq_fail(r, NW_RST_INTERNAL, "out of memory");
        return;
    }
    if ((n || wend) && lreq_write_body(r, p, n, wend) != 0) {
        lreq_fail(r, NW_RST_UPSTREAM, "write to the local service failed");
        return;
    }
    if (end && r->piped && r->resp_end)
        lreq_done(r); /* both sides of the pipe ended */
}

void ag_on_reset(nw_strm_t *s, uint32_t code) {
    lreq_t *r = s->data;
    if (s->reset_by_peer)
        nw_info("agent=%s strm=%u reset by server (%s): aborting the local request",
                r->ag->cfg->agent_id, s->sid, nw_mux_code_name(code));
    else /* our own reset (the tunnel logged why) or the tunnel went away */
        nw_info("agent=%s strm=%u %s: aborting the local request", r->ag->cfg->agent_id, s->sid,
                code >= NW_RST_TUNNEL_LOST ? "tunnel lost" : nw_mux_code_name(code));
    r->strm = NULL;
    if (!r->log_status)
        r->log_status = 499; /* the client (or serve) gave up first, as nginx logs it */
    r->rst = code, r->peer_reset = s->reset_by_peer; /* the status its client sees (agent_ops.c) */
    ins_end(r, s->reset_by_peer ? "reset by the server" : "reset (tunnel lost or refused)");
    lreq_abort_local(r);
    lreq_free(r);
}

void ag_on_drain(nw_strm_t *s) {
    lreq_t *r = s->data;
    if (r->lc)
        nw_conn_resume(r->lc->conn, NW_PAUSE_CREDIT);
}

/* Would the target's dot segments (encoded or not) climb above the root,
 * out of LOCAL_URL's base path? serve refuses such a target; the agent
 * checks again, as a hostile server could send one. */
static int path_climbs(const char *t, size_t n) {
    char small[512], *buf = n + 2 <= sizeof(small) ? small : nw_malloc(n + 2);
    size_t len;
    int rc;
    if (!buf)
        return 1;
    rc = nw_path_normalize(t, n, 0, buf, n + 2, &len);
    if (buf != small)
        nw_free(buf);
    return rc != NW_PATH_OK;
}

static int target_ok(const char *t, size_t n) {
    size_t i;
    if (n == 0 || (t[0] != '/' && !(n == 1 && t[0] == '*')))
        return 0;
    for (i = 0; i < n; i++)
        if ((unsigned char)t[i] <= 0x20 || t[i] == 0x7f)
            return 0;
    return t[0] == '*' || !path_climbs(t, n);
}

/* A request for stream s, in the agent's list of requests. */
static lreq_t *lreq_new(agent_t *ag, nw_strm_t *s, const nw_mux_frame_t *f) {
    lreq_t *r = nw_calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->ag = ag;
    r->strm = s;
    r->t_open = uv_hrtime();
    s->data = r;
    r->next = ag->reqs;
    if (ag->reqs)
        ag->reqs->prev = r;
    ag->reqs = r;
    nw_trimmer_load(&ag->trim, ++ag->nreqs);
    r->req_end = (f->flags & NW_MUX_F_END) != 0;
    r->log_t0 = r->t_open; /* one clock read per request */
    r->log_tun = s->tun->id;
    r->is_head = nw_strieq(f->method, f->method_len, "HEAD");
    return r;
}

/* The request head for the local service from the OPEN's, into r->head;
 * on a bad head, fails r and returns -1. */
static int lreq_build_head(lreq_t *r, const nw_mux_frame_t *f) {
    agent_t *ag = r->ag;
    size_t i, room = f->method_len + strlen(ag->cfg->local.path) + f->target_len +
                     strlen(ag->host_hdr) + 96; /* + request line, framing lines */
    const char *url;
    int has_cl = 0;
    uint64_t cl;

    for (i = 0; i < f->nhdrs; i++)
        room += f->hdrs[i].name_len + f->hdrs[i].value_len + 4;
    if (lreq_public(r, f) != 0 || lreq_req_urls(r, f) != 0 ||
        nw_sbuf_reserve(&r->head, room + r->sent.len + r->rw.len) != 0) {
        lreq_fail(r, NW_RST_INTERNAL, "out of memory");
        return -1;
    }
    url = r->rw.p;
    /* Only LOCAL_URL's host and port are ever dialled; the target is
     * appended to its base path. */
    nw_sbuf_append(&r->head, f->method, f->method_len);
    nw_sbuf_append(&r->head, " ", 1);
    nw_sbuf_appends(&r->head, ag->cfg->local.path);
    if (f->target_len == 1 && f->target[0] == '*' && ag->cfg->local.path[0])
        nw_sbuf_append(&r->head, "/", 1);
    else
        nw_sbuf_append(&r->head, f->target, f->target_len);
    nw_sbuf_appends(&r->head, " HTTP/1.1\r\nHost: ");
    if (r->sent.len) /* PRESERVE_HOST */
        nw_sbuf_append(&r->head, r->sent.p, r->sent.len);
    else
        nw_sbuf_appends(&r->head, ag->host_hdr);
    nw_sbuf_append(&r->head, "\r\n", 2);
    for (i = 0; i < f->nhdrs; i++) {
        const nw_hdr_t *h = &f->hdrs[i];
        if (NAME_IS(h, "upgrade") && !r->req_end && !r->upgrade) {
            /* An upgrade (WebSocket, h2c): ask the local service for it. */
            r->upgrade = 1;
            nw_sbuf_appends(&r->head, "Connection: Upgrade\r\n");
            nw_http_put_field(&r->head, "Upgrade", 7, h->value, h->value_len);
            continue;
        }
        if (NAME_IS(h, "host") || nw_http_is_hop(h->name, h->name_len))
            continue;
        if (NAME_IS(h, "content-length")) {
            if (nw_http_take_cl(&has_cl, h->value, h->value_len, &cl) != 0) {
                lreq_fail(r, NW_RST_PROTOCOL, "bad Content-Length from server");
                return -1;
            }
            r->has_cl = 1;
            r->body_left = cl;
        }
        if (r->rw.len && nw_redirect_req_field(h->name, h->name_len)) {
            nw_http_put_field(&r->head, h->name, h->name_len, url, strlen(url));
            url += strlen(url) + 1;
            continue;
        }
        nw_http_put_field(&r->head, h->name, h->name_len, h->value, h->value_len);
    }
    if (r->req_end && r->body_left) {
        /* END with a body announced: the service would wait for bytes that
         * never come and, on a reused connection, read the next request's
         * head as them. */
        lreq_fail(r, NW_RST_PROTOCOL, "server ended a request whose Content-Length "
                                      "announces a body");
        return -1;
    }
    if (!has_cl && !r->req_end && !r->upgrade) {
        r->chunked = 1;
        nw_sbuf_appends(&r->head, "Transfer-Encoding: chunked\r\n");
    }
    if (nw_sbuf_append(&r->head, "\r\n", 2) != 0) {
        lreq_fail(r, NW_RST_INTERNAL, "out of memory");
        return -1;
    }
    return 0;
}

/* The server opened a stream: check its head, build the local request,
 * and admit it (or queue or refuse it). */
void ag_on_open(nw_tun_t *t, nw_strm_t *s, const nw_mux_frame_t *f) {
    agent_t *ag = t->data;
    lreq_t *r;

    if (!nw_http_token_ok(f->method, f->method_len) || !target_ok(f->target, f->target_len) ||
        !nw_http_fields_ok(f->hdrs, f->nhdrs)) {
        nw_warn("agent=%s strm=%u malformed request head from server", ag->cfg->agent_id, s->sid);
        nw_strm_detach(s, NW_RST_PROTOCOL);
        ops_unparsed(ag);
        return;
    }
    r = lreq_new(ag, s, f);
    if (!r) {
        nw_strm_detach(s, NW_RST_INTERNAL);
        ops_unparsed(ag);
        return;
    }
    ins_begin(r, f);
    if (lreq_build_head(r, f) != 0)
        return;
    if (r->upgrade && admit_pipe(r) != 0)
        return;
    lreq_admit(r);
}

/* ---------------------------------------------------- local connections */

static void lc_on_conn_close(nw_conn_t *c) {
    lconn_t *lc = c->data;
    nw_hf_free(&lc->hf);
    nw_free(lc);
}

static int lc_on_message_begin(llhttp_t *p) {
    lconn_t *lc = p->data;
    nw_hf_reset(&lc->hf);
    return 0;
}

/* Interim heads forwarded per request at most: a service that sends
 * 103s forever cannot fill the tunnel's output with them. */
#define MAX_INTERIMS 8

/* An interim response (102 Processing, 103 Early Hints, ...) goes on to
 * the client ahead of the final one, as RFC 9110 15.2 asks of a proxy:
 * only to a serve that takes it (its 101 said NW_HS_INTERIM; an older one
 * resets the stream), and never 100 Continue, which serve sends itself. */
static int lc_interim(lconn_t *lc, lreq_t *r, unsigned st) {
    nw_hdr_t hdrs[NW_HTTP_MAX_FIELDS];
    const char *drop[] = {NULL};
    int n;
    lc->interim = 1; /* its end is not the response's (lc_on_message_complete) */
    if (st == 100 || !NW_MUX_INTERIM(st) || !r->strm || !r->strm->tun->interim ||
        r->interims >= MAX_INTERIMS)
        return 0;
    r->interims++;
    n = nw_http_filter(&lc->hf, hdrs, NW_ARRAY_LEN(hdrs), drop);
    return nw_strm_head(r->strm, (uint16_t)st, lc->hf.raw.p ? lc->hf.raw.p : "", lc->hf.first_len,
                        hdrs, (size_t)(n < 0 ? 0 : n), 0) == 0 ? 0 : -1;
}

static int lc_on_headers_complete(llhttp_t *p) {
    lconn_t *lc = p->data;
    lreq_t *r = lc->req;
    nw_hdr_t hdrs[NW_HTTP_MAX_FIELDS];
    const char *drop[] = {NULL, NULL};
    int n, end, rc;
    unsigned st = p->status_code;

    if (!r)
        return -1;
    if (st == 101 && r->upgrade) {
        /* Switching protocols: pass the head with Upgrade and Connection,
         * then everything after it is raw (llhttp stops with
         * HPE_PAUSED_UPGRADE; lc_after_parse sends the rest). */
        size_t k, m = 0;
        n = nw_http_filter(&lc->hf, hdrs, NW_ARRAY_LEN(hdrs) - 2, drop);
        for (k = 0; k < lc->hf.n && n >= 0; k++) {
            nw_hdr_t f;
            nw_hf_get(&lc->hf, k, &f);
            if (nw_strieq(f.name, f.name_len, "upgrade") ||
                nw_strieq(f.name, f.name_len, "connection"))
                hdrs[n + (int)m++] = f;
            if (m == 2)
                break;
        }
        r->log_status = r->log_upstream = 101;
        rc = nw_strm_head(r->strm, 101, lc->hf.raw.p ? lc->hf.raw.p : "", lc->hf.first_len, hdrs,
                          (size_t)(n < 0 ? 0 : n + (int)m), 0);
        if (rc != 0)
            return -1;
        r->resp_head = 1;
        r->piped = 1;
        lc->piped = 1;
        ins_resp_head(r, 101, hdrs, (size_t)(n < 0 ? 0 : n + (int)m));
        ops_response(r, 101);
        return 0;
    }
    /* A 1xx has no body, whatever its fields say (RFC 9110 15.2): 1 tells
     * llhttp so, which would otherwise read a 150's Content-Length or
     * chunked body (it knows only 100, 102 and 103 as bodiless) and send
     * it on as DATA before the final head, or eat the final response.
     * Nor does it end the connection: the final response follows on it
     * (a 1xx's "Connection: close", or HTTP/1.0, made llhttp skip every
     * byte after it, and the request hung until serve's timeout). */
    if (st < 200 && st != 101) {
        p->flags = (uint16_t)((p->flags & ~F_CONNECTION_CLOSE) | F_CONNECTION_KEEP_ALIVE);
        return lc_interim(lc, r, st) != 0 ? -1 : 1;
    }
    if (st < 200)
        return -1;
    lreq_hint_refusal(r, st);
    if (p->flags & F_CHUNKED)
        drop[0] = "content-length";
    n = nw_http_filter(&lc->hf, hdrs, NW_ARRAY_LEN(hdrs), drop);
    if (n > 0 && lreq_redirects(r, hdrs, (size_t)n) != 0) {
        llhttp_set_error_reason(p, "out of memory");
        return -1;
    }
    end = r->is_head || st == 204 || st == 304 ||
          ((p->flags & F_CONTENT_LENGTH) && p->content_length == 0 && !(p->flags & F_CHUNKED));
    r->log_status = r->log_upstream = (int)st;
    rc = nw_strm_head(r->strm, (uint16_t)st, lc->hf.raw.p ? lc->hf.raw.p : "", lc->hf.first_len,
                      hdrs, (size_t)(n < 0 ? 0 : n), end);
    if (rc != 0) {
        llhttp_set_error_reason(p, rc == NW_ETOOBIG ? "response head too large" : "tunnel");
        return -1;
    }
    r->resp_head = 1;
    r->resp_end = end ? 1 : 0;
    ins_resp_head(r, (int)st, hdrs, (size_t)(n < 0 ? 0 : n));
    ops_response(r, st);
    return r->is_head ? 1 : 0;
}

static int lc_on_body(llhttp_t *p, const char *at, size_t n) {
    lconn_t *lc = p->data;
    lreq_t *r = lc->req;
    int rc;
    int last;
    if (!r || !r->strm)
        return -1;
    /* llhttp has already counted this span off Content-Length: when
     * nothing is left, END rides on this DATA frame (one frame, not two). */
    last = (p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED) && p->content_length == 0;
    rc = nw_strm_send(r->strm, at, n, last);
    if (rc < 0)
        return -1;
    r->log_out += n;
    ins_resp_body(r, at, n);
    if (last)
        r->resp_end = 1;
    if (rc == 1)
        nw_conn_pause(lc->conn, NW_PAUSE_CREDIT);
    return 0;
}

static int lc_on_message_complete(llhttp_t *p) {
    lconn_t *lc = p->data;
    lreq_t *r = lc->req;
    if (lc->piped)
        return 0; /* llhttp goes on to HPE_PAUSED_UPGRADE */
    if (lc->interim) {
        lc->interim = 0;
        return 0;
    }
    if (!r)
        return -1;
    if (!r->resp_end && r->strm && nw_strm_send(r->strm, NULL, 0, 1) < 0)
        return -1;
    r->resp_end = 1;
    lc->done = 1;
    return HPE_PAUSED; /* one response per request: nothing after it is ours */
}

static const llhttp_settings_t lc_settings = {
    .on_message_begin = lc_on_message_begin,
    .on_status = nw_http_cb_first,
    .on_header_field = nw_http_cb_name,
    .on_header_value = nw_http_cb_value,
    .on_headers_complete = lc_on_headers_complete,
    .on_body = lc_on_body,
    .on_message_complete = lc_on_message_complete,
};

/* A fresh response parser: a new connection, or one going back to the pool. */
void lc_parser_init(lconn_t *lc) {
    llhttp_init(&lc->parser, HTTP_RESPONSE, &lc_settings);
    lc->parser.data = lc;
}

/* Raw bytes from the local service into a piped stream (NULL: its EOF). */
static void lc_pipe_out(lconn_t *lc, const char *p, size_t n) {
    lreq_t *r = lc->req;
    int rc;
    if (!r || !r->strm)
        return;
    rc = nw_strm_send(r->strm, p, n, p == NULL);
    if (rc < 0) {
        lreq_fail(r, NW_RST_UPSTREAM, "tunnel stream closed");
        return;
    }
    r->log_out += n;
    if (rc == 1)
        nw_conn_pause(lc->conn, NW_PAUSE_CREDIT);
    if (!p) {
        /* The service ended its side. The pipe is done when the client's
         * side has ended too; until then its bytes may still flow. */
        r->resp_end = 1;
        nw_conn_pause(lc->conn, NW_PAUSE_DONE);
        if (r->in_eof)
            lreq_done(r);
    }
}

/* The service said 101: the stream is a pipe now. The client's bytes held
 * until now go to the service, and the pipe leaves its request slot. */
static void pipe_up(lreq_t *r) {
    agent_t *ag = r->ag;
    if (lreq_write_queued(r, &r->held) != 0 ||
        (r->req_end && !r->in_eof && lreq_write_body(r, NULL, 0, 1) != 0)) {
        lreq_fail(r, NW_RST_UPSTREAM, "write to the local service failed");
        return;
    }
    if (r->admitted) {
        r->admitted = 0;
        ag->nlocal--;
        admit_waiters(ag);
    }
}

static void lc_after_parse(lconn_t *lc, llhttp_errno_t e) {
    lreq_t *r = lc->req;
    if (e == HPE_PAUSED_UPGRADE && lc->piped && r) {
        const char *pos = llhttp_get_error_pos(&lc->parser);
        if (pos && pos < lc->parse_end)
            lc_pipe_out(lc, pos, (size_t)(lc->parse_end - pos));
        if (lc->req == r)
            pipe_up(r);
        return;
    }
    if (lc->done) {
        const char *pos = llhttp_get_error_pos(&lc->parser);
        /* Bytes after a complete response belong to no request: a
         * connection that carries them is never reused. */
        if (e == HPE_PAUSED && pos && pos < lc->parse_end)
            lc->stray = 1;
        lc->done = 0;
        if (r)
            lreq_done(r);
        return;
    }
    if (e == HPE_OK || !r)
        return;
    {
        const char *why = llhttp_get_error_reason(&lc->parser);
        char msg[160];
        snprintf(msg, sizeof(msg), "bad response from the local service: %s",
                 why ? why : llhttp_errno_name(e));
        ops_local_error(r->ag, "bad_response");
        lreq_fail(r, strstr(msg, "too large") ? NW_RST_TOOBIG : NW_RST_UPSTREAM, msg);
    }
}

void lc_on_read(nw_conn_t *c, ssize_t nread, const char *buf) {
    lconn_t *lc = c->data;
    lreq_t *r = lc->req;
    llhttp_errno_t e;

    if (!r) { /* idle in the pool: EOF or stray bytes end it */
        if (nread > 0)
            nw_warn("agent=%s local service sent %zd byte(s) on an idle keep-alive "
                    "connection: closed", lc->ag->cfg->agent_id, nread);
        lc_close(lc);
        return;
    }
    if (lc->piped) {
        if (nread < 0 && nread != UV_EOF) {
            ops_read_error(lc->ag, nread);
            lreq_fail(r, NW_RST_UPSTREAM, "local service connection failed mid-pipe");
        } else {
            ops_bytes(lc->ag, 0, nread < 0 ? 0 : (size_t)nread);
            lc_pipe_out(lc, nread < 0 ? NULL : buf, nread < 0 ? 0 : (size_t)nread);
        }
        return;
    }
    if (nread < 0) {
        if (!lc->got_bytes && lc->reused && !r->body_sent && !r->retried) {
            /* The pooled connection was closed by the service while idle
             * (a race every keep-alive client has): retry once, fresh. */
            r->retried = 1;
            lc->req = NULL;
            r->lc = NULL;
            r->head_out = 0;
            lc_close(lc);
            lreq_start(r);
            return;
        }
        if (lc->got_bytes && llhttp_message_needs_eof(&lc->parser)) {
            e = llhttp_finish(&lc->parser);
            lc_after_parse(lc, e);
            if (lc->req == NULL)
                return;
        }
        ops_read_error(lc->ag, nread);
        lreq_fail(r, NW_RST_UPSTREAM,
                  r->resp_head ? "local service closed mid-response"
                               : "local service closed the connection before responding");
        return;
    }
    lc->got_bytes = 1;
    ops_bytes(lc->ag, 0, (size_t)nread);
    lc->parse_end = buf + nread;
    e = llhttp_execute(&lc->parser, buf, (size_t)nread);
    lc_after_parse(lc, e);
}

void lc_on_written(nw_conn_t *c, size_t credit) {
    lconn_t *lc = c->data;
    if (credit && lc->req && lc->req->strm)
        nw_strm_consumed(lc->req->strm, credit);
}

/* Attach r to a ready connection: write the head and any early body. */
static void lreq_attach(lreq_t *r, lconn_t *lc) {
    r->lc = lc;
    lc->req = r;
    lc->got_bytes = 0;
    if (lc_write(lc, r->head.p, r->head.len, 0) != 0) {
        lreq_fail(r, NW_RST_UPSTREAM, "write to the local service failed");
        return;
    }
    r->head_out = 1;
    /* Then the body that came early; when it already ended, the last chunk.
     * (An upgrade's half-close waits for the 101: pipe_up.) */
    if (lreq_write_queued(r, &r->early) != 0 ||
        (r->req_end && r->chunked && lreq_write_body(r, NULL, 0, 1) != 0)) {
        lreq_fail(r, NW_RST_UPSTREAM, "write to the local service failed");
        return;
    }
    nw_conn_resume(lc->conn, NW_PAUSE_OWNER | NW_PAUSE_CREDIT | NW_PAUSE_DONE);
}

lconn_t *lc_new(agent_t *ag, nw_conn_t *c) {
    lconn_t *lc = nw_calloc(1, sizeof(*lc));
    if (!lc) {
        nw_conn_close(c);
        return NULL;
    }
    lc->ag = ag;
    lc->conn = c;
    nw_hf_init(&lc->hf, ag->cfg->max_head);
    lc_parser_init(lc);
    nw_conn_set_owner(c, lc, lc_on_read, lc_on_written, lc_on_conn_close);
    return lc;
}

static void lreq_on_dial(nw_dial_t *d, nw_conn_t *c, int err, void *ud) {
    lreq_t *r = ud;
    lconn_t *lc;
    char msg[1600];
    (void)d;
    r->dial = NULL;
    if (!c) {
        snprintf(msg, sizeof(msg), "cannot connect to local service %s: %s",
                 r->ag->local_str, nw_dial_strerror(d));
        ops_dial_error(r->ag, err);
        lreq_fail(r, NW_RST_CONNECT, msg);
        return;
    }
    if (!(lc = lc_new(r->ag, c))) {
        lreq_fail(r, NW_RST_INTERNAL, "out of memory");
        return;
    }
    lreq_attach(r, lc);
}

void lreq_start(lreq_t *r) {
    agent_t *ag = r->ag;
    lconn_t *lc = pool_take(ag);
    if (lc) {
        lreq_attach(r, lc);
        return;
    }
    r->dial = nw_dial_start(ag->loop, ag->cfg->local.host, ag->cfg->local.port,
                            ag->cfg->connect_timeout_ms, ag->local_tls, lreq_on_dial, r);
    if (!r->dial) {
        ops_local_error(ag, "connect_failed");
        lreq_fail(r, NW_RST_INTERNAL, "cannot start a connection");
    }
}

void lreq_free(lreq_t *r) {
    agent_t *ag = r->ag;
    lreq_alog(r);
    ins_end(r, NULL);
    ops_request_end(r);
    admit_release(r);
    if (r->dial)
        nw_dial_cancel(r->dial);
    nw_trimmer_load(&ag->trim, --ag->nreqs);
    if (r->prev)
        r->prev->next = r->next;
    else
        ag->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    nw_sbuf_free(&r->head);
    nw_sbuf_free(&r->pub);
    nw_sbuf_free(&r->sent);
    nw_sbuf_free(&r->rw);
    nw_bufq_clear(&r->early);
    nw_bufq_clear(&r->held);
    nw_free(r);
    admit_waiters(ag);
    agent_check_done(ag);
}
