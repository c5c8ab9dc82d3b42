/* response.c: stream callbacks: the response head and body to the client, resets, error replies. */
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
#include "path.h"
#include "serve.h"
#include "serve_int.h"
#include "tun.h"
#include "ws.h"

static void heads_on_idle(uv_idle_t *h);

/* A response head usually arrives in the same read as the first body
 * bytes (often all of the body): holding it until the end of this loop
 * turn lets head and body leave in one write, one syscall instead of two.
 * Whatever is still held when the turn ends is written on its own. */
void pc_heads_unlink(pconn_t *pc) {
    serve_t *srv = pc->srv;
    if (!pc->head_pending)
        return;
    if (pc->hprev)
        pc->hprev->hnext = pc->hnext;
    else
        srv->heads = pc->hnext;
    if (pc->hnext)
        pc->hnext->hprev = pc->hprev;
    pc->hprev = pc->hnext = NULL;
    pc->head_pending = 0;
}

static void pc_hold_head(pconn_t *pc, nw_sbuf_t *out) {
    serve_t *srv = pc->srv;
    pc->head_out = *out;
    memset(out, 0, sizeof(*out));
    pc->head_pending = 1;
    pc->hprev = NULL;
    pc->hnext = srv->heads;
    if (srv->heads)
        srv->heads->hprev = pc;
    srv->heads = pc;
    uv_idle_start(&srv->heads_idle, heads_on_idle);
}

/* Write a held head now (alone). 0, or an error (the caller closes). */
int pc_flush_head(pconn_t *pc) {
    int rc = 0;
    if (!pc->head_pending)
        return 0;
    pc_heads_unlink(pc);
    if (pc->conn)
        rc = pc_write(pc, pc->head_out.p, pc->head_out.len, 0);
    if (rc == 0)
        srv_ops_head(pc, pc->resp_status, 0);
    nw_sbuf_free(&pc->head_out);
    if (rc == 0)
        pc_send_timer(pc);
    return rc;
}

static void heads_on_idle(uv_idle_t *h) {
    serve_t *srv = h->data;
    uv_idle_stop(h);
    while (srv->heads) {
        pconn_t *pc = srv->heads;
        if (pc_flush_head(pc) != 0)
            pc_close(pc);
    }
}

/* One access-log line for pc's request, once (alog.t0 is cleared). cut:
 * the connection is closing; a request is logged only if it reached a
 * tunnel or a response (a client gone before its answer: 499, as nginx
 * logs it), not a request head cut short. */
void pc_alog(pconn_t *pc, int cut) {
    nw_alog_rec_t r = {0};
    char ip[64], proto[16];
    const char *c;
    nw_hdr_t f;
    int i;
    if (!pc->alog.t0 || !nw_alog_on())
        return;
    if (cut && !pc->head_sent && pc->state != PC_QUEUED && pc->state != PC_WAIT)
        return;
    if (pc->conn && (c = strrchr(pc->conn->peer, ':')) != NULL) {
        const char *p = pc->conn->peer + (pc->conn->peer[0] == '[');
        snprintf(ip, sizeof(ip), "%.*s", (int)(c - p - (p != pc->conn->peer)), p);
        r.client = ip;
    }
    if (pc->hf.first_len) { /* on_url ran: the method is known */
        r.method = llhttp_method_name((llhttp_method_t)pc->parser.method);
        r.method_len = strlen(r.method);
        r.target = pc->hf.raw.p;
        r.target_len = pc->hf.first_len;
        if (pc->parser.http_major) {
            snprintf(proto, sizeof(proto), "HTTP/%d.%d", pc->parser.http_major,
                     pc->parser.http_minor);
            r.proto = proto;
        }
    }
    if ((i = nw_hf_find(&pc->hf, "referer", 0)) >= 0) {
        nw_hf_get(&pc->hf, (size_t)i, &f);
        r.referer = f.value, r.referer_len = f.value_len;
    }
    if ((i = nw_hf_find(&pc->hf, "user-agent", 0)) >= 0) {
        nw_hf_get(&pc->hf, (size_t)i, &f);
        r.user_agent = f.value, r.user_agent_len = f.value_len;
    }
    r.status = pc->head_sent ? pc->alog.status : 499;
    r.bytes_out = pc->alog.out;
    r.bytes_in = pc->alog.in;
    r.duration = (double)(uv_hrtime() - pc->alog.t0) / 1e9;
    r.upstream_status = pc->alog.upstream;
    r.route = pc->alog.route;
    r.tunnel = pc->alog.tun;
    pc->alog.t0 = 0;
    nw_alog_write(&r);
}

/* Answer with a short text error. The connection stays open when the
 * request was read completely and the client wants keep-alive; otherwise
 * it is closed (lingering). */
void pc_reply(pconn_t *pc, int status, const char *msg) {
    char buf[1024];
    char body[384], extra[256];
    int keep = pc->keep_alive && pc->req_done && !pc->err_status;
    int bl = snprintf(body, sizeof(body), "natwrp: %s\n", msg);
    bl = bl < 0 ? 0 : NW_MIN(bl, (int)sizeof(body) - 1); /* the Content-Length is what goes */
    /* A visitor's 401 offers Basic first (RFC 9110 11.6.1: a browser
     * prompts for it; the token is the password), then Bearer; a tunnel
     * handshake takes only Bearer. A route's own credentials (AUTH_BASIC)
     * are asked for in the route's realm. */
    if (status == 401 && pc->realm[0] && !pc->tunnel)
        snprintf(extra, sizeof(extra), "WWW-Authenticate: Basic realm=\"%s\"\r\n", pc->realm);
    else
        snprintf(extra, sizeof(extra), "%s",
                 status == 401 && !pc->tunnel
                     ? "WWW-Authenticate: Basic realm=\"natwrp\"\r\n"
                       "WWW-Authenticate: Bearer realm=\"natwrp\"\r\n"
                 : status == 401 ? "WWW-Authenticate: Bearer realm=\"natwrp\"\r\n"
                 : status == 503 ? "Retry-After: 1\r\n"
                                 : "");
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "%sContent-Length: %d\r\n%s\r\n%s",
                     status, nw_http_reason(status), extra, bl,
                     !keep ? "Connection: close\r\n"
                     : pc->minor ? ""
                                 : "Connection: keep-alive\r\n",
                     pc->is_head ? "" : body);
    if (n > 0)
        pc_write(pc, buf, (size_t)NW_MIN((size_t)n, sizeof(buf) - 1), 0);
    srv_ops_head(pc, status, 1);
    pc->head_sent = 1;
    pc->alog.status = status;
    pc->alog.out = pc->is_head ? 0 : (uint64_t)bl;
    pc_alog(pc, 0);
    if (keep) {
        pc->keep_alive = 1;
        pc_response_done(pc);
    } else {
        pc->keep_alive = 0;
        pc_linger(pc);
    }
}

void pc_response_done(pconn_t *pc) {
    pc_alog(pc, 0);
    pc->stale_credit = pc->body_inflight;
    pc_drop_strm(pc, 0);
    if (!pc->req_done || !pc->keep_alive || pc->srv->draining) {
        pc_linger(pc); /* draining: the client's next request goes elsewhere */
        return;
    }
    /* Next request: take what the client pipelined, then read again. */
    pc_set_state(pc, PC_IDLE);
    srv_ops_begin(pc, 0);
    pc_arm(pc, pc->srv->cfg->idle_timeout_ms);
    if (pc->conn && pc->conn->wbytes > OUT_MAX) {
        /* A client that pipelines and does not read would have every answer
         * queued here: parse nothing more (and read nothing) until it has
         * taken most of what is queued (pc_on_written). */
        pc->out_wait = 1;
        nw_conn_pause(pc->conn, NW_PAUSE_PIPELINE);
        return;
    }
    pc_unpause(pc);
}

/* Let the parser go on with what the client sent after the point where
 * it was paused (a finished request, or a head waiting for a slot). */
void pc_unpause(pconn_t *pc) {
    llhttp_resume(&pc->parser);
    pc->paused = 0;
    if (pc->in_feed) {
        pc->again = 1; /* pc_feed's loop picks the pipeline up */
        return;
    }
    if (pc->conn)
        nw_conn_resume(pc->conn, NW_PAUSE_PIPELINE);
    if (pc->pipeline.len)
        pc_feed(pc, NULL, 0);
}

/* 101 Switching Protocols: pass the head (Upgrade and Connection
 * included), then the stream is a raw pipe with no timeout of its own:
 * an idle WebSocket stays open as long as the tunnel does. */
static void pc_switch(pconn_t *pc, nw_strm_t *s, const nw_mux_frame_t *f) {
    nw_sbuf_t out = {0};
    size_t i;
    pc_disarm(pc);
    pc_set_state(pc, PC_STREAM);
    pc->piped = 1;
    nw_sbuf_appendf(&out, "HTTP/1.1 101 %.*s\r\n", (int)f->reason_len, f->reason);
    for (i = 0; i < f->nhdrs; i++) {
        const nw_hdr_t *h = &f->hdrs[i];
        if (nw_http_is_hop(h->name, h->name_len) && !nw_strieq(h->name, h->name_len, "upgrade") &&
            !nw_strieq(h->name, h->name_len, "connection"))
            continue;
        nw_http_put_field(&out, h->name, h->name_len, h->value, h->value_len);
    }
    nw_sbuf_append(&out, "\r\n", 2);
    if (!out.p || pc_write(pc, out.p, out.len, 0) != 0) {
        nw_sbuf_free(&out);
        pc_close(pc);
        return;
    }
    nw_sbuf_free(&out);
    pc->head_sent = 1;
    srv_ops_head(pc, 101, 0);
    nw_debug("conn=%llu client=%s strm=%u switched protocols: piping", (unsigned long long)pc->id,
             pc->conn ? pc->conn->peer : "-", s->sid);
    /* Accepted: what the client sent after its request (held until now,
     * see pc_up_in) goes first, in order; then reading resumes. */
    out = pc->pipeline;
    memset(&pc->pipeline, 0, sizeof(pc->pipeline));
    if (out.len)
        pc_pipe_in(pc, out.p, out.len);
    nw_sbuf_free(&out);
    if (pc->held_eof && pc->state != PC_CLOSED) {
        pc->held_eof = 0;
        pc_pipe_in(pc, NULL, 0);
    }
    if (pc->conn && pc->state != PC_CLOSED)
        nw_conn_resume(pc->conn, NW_PAUSE_PIPELINE);
}

/* The client's response head from the agent's HEAD frame into out: the
 * status line, the end-to-end fields, the framing (Content-Length as
 * given, else chunked on HTTP/1.1, else close-delimited) and Connection.
 * 0, or -1 after a 502 for an invalid Content-Length. */
static int build_head(pconn_t *pc, nw_strm_t *s, const nw_mux_frame_t *f, int nobody,
                      nw_sbuf_t *out) {
    size_t i, room = 13 + f->reason_len + 2 + 64; /* + framing lines and the blank line */
    int has_cl = 0;
    for (i = 0; i < f->nhdrs; i++)
        room += f->hdrs[i].name_len + f->hdrs[i].value_len + 4;
    nw_sbuf_reserve(out, room); /* one allocation per head; a failure shows at the end */
    {
        /* No printf on the per-request path: status is 200..999 here. */
        char st[13] = "HTTP/1.1 000 ";
        st[9] = (char)('0' + f->status / 100 % 10);
        st[10] = (char)('0' + f->status / 10 % 10);
        st[11] = (char)('0' + f->status % 10);
        nw_sbuf_append(out, st, 13);
        nw_sbuf_append(out, f->reason, f->reason_len);
        nw_sbuf_append(out, "\r\n", 2);
    }
    for (i = 0; i < f->nhdrs; i++) {
        const nw_hdr_t *h = &f->hdrs[i];
        if (nw_http_is_hop(h->name, h->name_len))
            continue;
        if (h->name_len == 14 && nw_strieq(h->name, h->name_len, "content-length")) {
            if (f->status == 204)
                continue; /* RFC 9110 8.6: never on a 204; a proxy before us would wait for it */
            if (nw_http_take_cl(&has_cl, h->value, h->value_len, &pc->cl_left) != 0) {
                nw_sbuf_free(out);
                srv_ops_strm_error(s, "invalid Content-Length from the local service");
                nw_strm_detach(s, NW_RST_PROTOCOL);
                pc->strm = NULL;
                pc_reply(pc, 502, "invalid Content-Length from the local service");
                return -1;
            }
            pc->has_cl = 1;
        }
        nw_http_put_field(out, h->name, h->name_len, h->value, h->value_len);
    }
    if (nobody) {
        /* Framed as an empty body: any DATA byte after it is beyond the
         * framing (srv_on_data), never bytes for the client. */
        pc->has_cl = 1;
        pc->cl_left = 0;
        pc->chunked_out = 0;
    } else if (!pc->has_cl) {
        if (pc->minor >= 1)
            pc->chunked_out = 1, nw_sbuf_appends(out, "Transfer-Encoding: chunked\r\n");
        else
            pc->keep_alive = 0; /* close-delimited body */
    }
    if (!pc->req_done || pc->srv->draining)
        pc->keep_alive = 0; /* the rest of the request body would be unread */
    if (!pc->keep_alive)
        nw_sbuf_appends(out, "Connection: close\r\n");
    else if (pc->minor == 0)
        nw_sbuf_appends(out, "Connection: keep-alive\r\n");
    nw_sbuf_append(out, "\r\n", 2);
    return 0;
}

/* Unsent bytes to a client over which interim responses are dropped: an
 * agent sending 103s to a client that does not read must not grow them. */
#define INTERIM_MAX_QUEUED (64 * 1024)

/* An interim response (102, 103, ...: the stream's final HEAD still comes,
 * and the response timer keeps running for it). A proxy forwards 1xx
 * responses (RFC 9110 15.2), except to an HTTP/1.0 client, which knows
 * none, and except 100 Continue: serve answers Expect itself. Written at
 * once: the next pipelined request waits for this one's end, so no other
 * response can be in the way. */
static void pc_interim(pconn_t *pc, nw_strm_t *s, const nw_mux_frame_t *f) {
    nw_sbuf_t out = {0};
    size_t i, room = 13 + f->reason_len + 4;
    char st[13] = "HTTP/1.1 1xx ";
    if (!nw_http_fields_ok(f->hdrs, f->nhdrs) || !nw_http_value_ok(f->reason, f->reason_len)) {
        nw_warn("conn=%llu client=%s agent=%s strm=%u invalid interim response head from agent: "
                "502", (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-",
                s->tun->agent, s->sid);
        srv_ops_strm_error(s, "invalid response head from the agent");
        nw_strm_detach(s, NW_RST_PROTOCOL);
        pc->strm = NULL;
        pc_reply(pc, 502, "invalid response from the agent");
        return;
    }
    if (pc->minor == 0 || f->status == 100 || !pc->conn ||
        pc->conn->wbytes > INTERIM_MAX_QUEUED)
        return;
    for (i = 0; i < f->nhdrs; i++)
        room += f->hdrs[i].name_len + f->hdrs[i].value_len + 4;
    if (nw_sbuf_reserve(&out, room) != 0)
        return; /* only a hint: the final response still comes */
    st[10] = (char)('0' + f->status / 10 % 10);
    st[11] = (char)('0' + f->status % 10);
    nw_sbuf_append(&out, st, sizeof(st));
    nw_sbuf_append(&out, f->reason, f->reason_len);
    nw_sbuf_append(&out, "\r\n", 2);
    /* Nor Content-Length: a 1xx has no body (RFC 9110 8.6), and a client
     * that believed one would read the final response as it. */
    for (i = 0; i < f->nhdrs; i++)
        if (!nw_http_is_hop(f->hdrs[i].name, f->hdrs[i].name_len) &&
            !nw_strieq(f->hdrs[i].name, f->hdrs[i].name_len, "content-length"))
            nw_http_put_field(&out, f->hdrs[i].name, f->hdrs[i].name_len, f->hdrs[i].value,
                              f->hdrs[i].value_len);
    nw_sbuf_append(&out, "\r\n", 2);
    if (pc_write(pc, out.p, out.len, 0) != 0)
        pc_close(pc);
    nw_sbuf_free(&out);
}

void srv_on_head(nw_strm_t *s, const nw_mux_frame_t *f) {
    pconn_t *pc = s->data;
    nw_sbuf_t out = {0};
    int end = (f->flags & NW_MUX_F_END) != 0;
    int nobody = pc->is_head || f->status == 204 || f->status == 304 || f->status < 200;
    if (NW_MUX_INTERIM(f->status) && !end) {
        pc_interim(pc, s, f);
        return;
    }
    pc->alog.status = pc->alog.upstream = f->status;
    if (f->status == 101 && pc->upgrade && !end && nw_http_fields_ok(f->hdrs, f->nhdrs) &&
        nw_http_value_ok(f->reason, f->reason_len)) {
        pc_switch(pc, s, f);
        return;
    }
    if (f->status < 200 || !nw_http_fields_ok(f->hdrs, f->nhdrs) ||
        !nw_http_value_ok(f->reason, f->reason_len)) {
        nw_warn("conn=%llu client=%s agent=%s strm=%u invalid response head from agent: 502",
                (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-", s->tun->agent,
                s->sid);
        srv_ops_strm_error(s, "invalid response head from the agent");
        nw_strm_detach(s, NW_RST_PROTOCOL);
        pc->strm = NULL;
        pc_reply(pc, 502, "invalid response from the agent");
        return;
    }
    if (pc->req_body && !pc->req_done)
        pc_arm(pc, pc->srv->cfg->body_timeout_ms); /* the body still has its own timer */
    else
        pc_disarm(pc);
    pc_set_state(pc, PC_STREAM);
    pc->has_cl = 0;
    pc->resp_status = f->status;
    if (pc->upgrade) {
        /* Not accepted: what the client sent after the request was never
         * for the service. Dropped; the connection closes after this
         * response (keep_alive is 0 for an upgrade). */
        nw_sbuf_free(&pc->pipeline);
        pc->held_eof = 0;
    }
    if (build_head(pc, s, f, nobody, &out) != 0)
        return;
    if (!out.p) {
        pc_close(pc);
        return;
    }
    pc->head_sent = 1;
    if (!end) {
        pc_hold_head(pc, &out); /* goes out with the first body bytes */
        return;
    }
    if (pc_write(pc, out.p, out.len, 0) != 0) {
        nw_sbuf_free(&out);
        pc_close(pc);
        return;
    }
    srv_ops_head(pc, f->status, 0);
    nw_sbuf_free(&out);
    if (end) {
        if (pc->has_cl && pc->cl_left) {
            pc_close(pc); /* promised a body, sent none: cut */
            return;
        }
        pc_response_done(pc);
    }
}

/* The agent sent body bytes its response head does not allow (DATA after
 * a bodiless head, or beyond Content-Length): they could only be read by
 * the client as the start of its next response. Reset the stream, let what
 * was validly sent go out, then end the connection: it is never reused. */
static void pc_framing_violation(pconn_t *pc, nw_strm_t *s, size_t extra) {
    nw_warn("conn=%llu client=%s agent=%s strm=%u %zu body bytes beyond the response framing "
            "from the agent: reset, closing the connection",
            (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-", s->tun->agent, s->sid,
            extra);
    nw_strm_detach(s, NW_RST_PROTOCOL);
    pc->strm = NULL;
    pc->keep_alive = 0;
    pc_linger(pc); /* half-close after the valid part; pipelined input is dropped */
}

/* Body bytes that arrive while the client has not taken what was written
 * before wait in out_pend, raw, and leave as one write (one chunk) once it
 * has (pc_on_written). Written one by one, each DATA frame costs a write
 * request, a chunk header and, on TLS, a record: a hostile agent sending
 * 1-byte DATA frames to a client that does not read made serve hold some
 * 300 bytes per byte of window. 1 when p was held (counted in flight). */
static int pc_hold_body(pconn_t *pc, const uint8_t *p, size_t len) {
    if (!len || !pc->conn || pc->head_pending || (!pc->out_pend.len && !pc->conn->wbytes))
        return 0;
    if (nw_sbuf_append(&pc->out_pend, p, len) != 0)
        return -1;
    pc->body_inflight += len;
    return 1;
}

/* Write what pc_hold_body held (framed as one chunk when chunked). */
int pc_flush_body(pconn_t *pc) {
    char hdr[NW_HTTP_CHUNK_LINE];
    uv_buf_t b[3];
    unsigned n = 0;
    size_t len = pc->out_pend.len;
    int rc;
    if (!len)
        return 0;
    if (pc->chunked_out)
        b[n++] = uv_buf_init(hdr, (unsigned)nw_http_chunk_line(hdr, len));
    b[n++] = uv_buf_init(pc->out_pend.p, (unsigned)len);
    if (pc->chunked_out)
        b[n++] = uv_buf_init("\r\n", 2);
    rc = pc->conn ? nw_conn_write(pc->conn, b, n, len) : NW_ECLOSED;
    nw_sbuf_free(&pc->out_pend);
    if (rc == 0)
        pc_send_timer(pc);
    return rc;
}

/* After a 101: the service's bytes go to the client as they are. */
static void pipe_data(pconn_t *pc, const uint8_t *p, size_t len, int end) {
    uv_buf_t pb = uv_buf_init((char *)p, (unsigned)len);
    int rc = pc_hold_body(pc, p, len);
    pc->alog.out += len;
    if (rc < 0 || (rc == 0 && len && nw_conn_write(pc->conn, &pb, 1, len) != 0) ||
        (end && pc_flush_body(pc) != 0)) {
        pc_close(pc);
        return;
    }
    if (rc == 0)
        pc->body_inflight += len;
    pc_send_timer(pc);
    if (end) {
        /* The local side ended: half-close towards the client; the
         * pipe is done once the client has ended too. */
        pc->out_eof = 1;
        if (!pc->in_eof)
            nw_conn_shutdown(pc->conn);
        pc_pipe_done(pc);
    }
}

void srv_on_data(nw_strm_t *s, const uint8_t *p, size_t len, int end) {
    pconn_t *pc = s->data;
    char hdr[NW_HTTP_CHUNK_LINE];
    uv_buf_t b[5];
    unsigned n = 0;
    int skip = pc->is_head, rc;
    size_t extra = 0;

    if (pc->piped) {
        srv_ops_bytes(pc, s, 0, len);
        pipe_data(pc, p, len, end);
        return;
    }
    if (pc->has_cl) {
        if (len > pc->cl_left) {
            /* Only the bytes the framing allows are written. */
            extra = len - (size_t)pc->cl_left;
            len = (size_t)pc->cl_left;
            end = 0;
        }
        pc->cl_left -= len;
    }
    if (!skip) {
        pc->alog.out += len;
        srv_ops_bytes(pc, s, 0, len);
    }
    if (!skip && (rc = pc_hold_body(pc, p, len)) != 0) {
        if (rc < 0) {
            pc_close(pc);
            return;
        }
        len = 0; /* held: only the end (or the violation) is left to handle */
    }
    if ((end || extra) && pc_flush_body(pc) != 0) {
        pc_close(pc);
        return;
    }
    if (pc->head_pending) {
        pc_heads_unlink(pc);
        b[n++] = uv_buf_init(pc->head_out.p, (unsigned)pc->head_out.len);
        srv_ops_head(pc, pc->resp_status, 0); /* written just below */
    }
    if (len && !skip) {
        if (pc->chunked_out)
            b[n++] = uv_buf_init(hdr, (unsigned)nw_http_chunk_line(hdr, len));
        b[n++] = uv_buf_init((char *)p, (unsigned)len);
        if (pc->chunked_out)
            b[n++] = uv_buf_init("\r\n", 2);
    }
    if (end && pc->chunked_out)
        b[n++] = uv_buf_init("0\r\n\r\n", 5);
    if (n) {
        rc = nw_conn_write(pc->conn, b, n, skip ? 0 : len);
        nw_sbuf_free(&pc->head_out);
        if (rc != 0) {
            pc_close(pc);
            return;
        }
        if (!skip)
            pc->body_inflight += len;
        pc_send_timer(pc);
    }
    if (extra) {
        pc_framing_violation(pc, s, extra);
        return;
    }
    if (skip && len)
        nw_strm_consumed(s, len);
    if (end) {
        if (pc->has_cl && pc->cl_left) {
            nw_warn("conn=%llu strm=%u body shorter than Content-Length; cutting",
                    (unsigned long long)pc->id, s->sid);
            pc_close(pc);
            return;
        }
        pc_response_done(pc);
    }
}

static int code_status(uint32_t code, const char **msg) {
    switch (code) {
    case NW_RST_CONNECT: *msg = "the agent could not connect to the local service"; return 502;
    case NW_RST_REFUSED: *msg = "the agent refused the request"; return 503;
    case NW_RST_TIMEOUT: *msg = "the local service timed out"; return 504;
    case NW_RST_TUNNEL_LOST:
    case NW_RST_UNSENT: *msg = "the tunnel to the agent was lost"; return 502;
    case NW_RST_TOOBIG: *msg = "the response head was too large"; return 502;
    default: *msg = "the local service failed"; return 502;
    }
}

void srv_on_reset(nw_strm_t *s, uint32_t code) {
    pconn_t *pc = s->data;
    const char *msg;
    int status = code_status(code, &msg);
    pc->strm = NULL;
    wq_kick(pc->srv); /* its slot is free */
    if (code != NW_RST_CANCEL)
        srv_ops_strm_error(s, srv_ops_rst_reason(code));
    /* Never processed (refused by an agent that is going away, or still in
     * our queue when its tunnel died): a request that was wholly in its
     * OPEN frame can go to another tunnel. One with a body cannot, as the
     * body bytes already went to the lost stream. */
    if (!pc->head_sent && (code == NW_RST_UNSENT || code == NW_RST_REFUSED) && pc->end_at_open &&
        pc->tries < MAX_TRIES && pc->state == PC_WAIT) {
        int st;
        nw_info("conn=%llu client=%s strm=%u not processed by tun=%llu agent=%s (%s): "
                "retrying on another tunnel",
                (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-", s->sid,
                (unsigned long long)s->tun->id, s->tun->agent,
                code == NW_RST_UNSENT ? "tunnel lost before it was sent" : "refused");
        st = pc_dispatch(pc);
        if (st == 0)
            pc_sent(pc);
        if (st <= 1)
            return;
        status = st;
        msg = srv_status_msg(st);
    } else {
        pc->err_reason = srv_ops_rst_reason(code);
    }
    if (code == NW_RST_UNSENT)
        code = NW_RST_TUNNEL_LOST;
    if (pc->head_pending) {
        /* The head was only held for its first body bytes: nothing has
         * reached the client, so it still gets a proper 502, not zero bytes. */
        pc_heads_unlink(pc);
        nw_sbuf_free(&pc->head_out);
        pc->head_sent = 0;
    }
    if (!pc->head_sent) {
        nw_warn("conn=%llu client=%s agent=%s strm=%u failed before the response head: %s (%s): "
                "%d",
                (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-", s->tun->agent,
                s->sid, nw_mux_code_name(code), msg, status);
        pc_reply(pc, status, msg);
    } else {
        nw_warn("conn=%llu client=%s agent=%s strm=%u reset mid-response (%s); cutting the body",
                (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-", s->tun->agent,
                s->sid, nw_mux_code_name(code));
        pc_close(pc);
    }
}

void srv_on_drain(nw_strm_t *s) {
    pconn_t *pc = s->data;
    if (pc_body_waiting(pc))
        pc_arm(pc, pc->srv->cfg->body_timeout_ms);
    if (pc->conn)
        nw_conn_resume(pc->conn, NW_PAUSE_CREDIT);
}

/* The body line of an error reply to pc's request: what a 404 or a
 * route's 401 concerns, else the status's own line. */
const char *pc_status_msg(pconn_t *pc, int status, char *buf, size_t cap) {
    if (status == 404)
        snprintf(buf, cap, "no service for %s", pc->nohost[0] ? pc->nohost : "this host");
    else if (status == 401 && pc->realm[0])
        snprintf(buf, cap, "unauthorized: %s needs a user name and password", pc->realm);
    else
        return srv_status_msg(status);
    return buf;
}

const char *srv_status_msg(int status) {
    switch (status) {
    case 431: return "request header fields too large";
    case 414: return "request target too long";
    case 501: return "method not implemented";
    case 505: return "HTTP version not supported (use HTTP/1.1)";
    case 503: return "no agent is connected to this server";
    case 401: return "unauthorized: this path needs the access token (X-Auth-Token, or as the Basic password)";
    case 502: return "could not forward the request";
    default: return "malformed request";
    }
}
