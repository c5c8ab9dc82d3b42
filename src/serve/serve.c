/* serve.c: `natwrp serve`. Public HTTP/1.x connections (pconn) are parsed
 * with llhttp in strict mode; each request becomes one stream on the
 * least-loaded agent tunnel. The tunnel upgrade arrives on the same port,
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

#include "cfg.h"
#include "conn.h"
#include "http1.h"
#include "log.h"
#include "path.h"
#include "serve.h"
#include "tun.h"
#include "ws.h"

#define LINGER_MS 2000          /* drain input this long after an error reply */
#define MAX_TUNNELS 1024        /* the array bound; --max-tunnels is at most this */
#define MAX_TRIES 3             /* dispatch attempts for a request never sent */
#define FRESH_DRAIN_MS 2000     /* draining: a connection with no request yet gets this long */
#define PIPELINE_MAX (64 * 1024) /* pipelined bytes held while a response runs */
#define DISCARD_MAX (1024 * 1024) /* request body read and dropped to keep a connection after an error */
#define OUT_MAX (64 * 1024)     /* unsent response bytes above which no next request is parsed */

typedef struct serve_s serve_t;

/* PC_QUEUED: the head is parsed, every tunnel is at --max-streams; the
 * parser is paused until a slot frees or --queue-timeout passes. */
enum pc_state { PC_IDLE, PC_HEAD, PC_QUEUED, PC_WAIT, PC_STREAM, PC_LINGER, PC_CLOSED };

typedef struct pconn_s {
    serve_t *srv;
    nw_conn_t *conn;
    uv_timer_t timer;
    int handles;
    enum pc_state state;
    uint64_t id;
    llhttp_t parser;
    nw_hfields_t hf;
    nw_strm_t *strm;
    nw_sbuf_t pipeline;      /* bytes after a paused request */
    size_t body_inflight;    /* response body bytes queued to the client */
    size_t stale_credit;     /* of those, bytes that belong to a finished stream */
    uint64_t cl_left;        /* response Content-Length still to come */
    int err_status;          /* status chosen by a parser callback */
    const char *err_why;     /* its reason for the log, or NULL (see pc_parse_error) */
    int defer_status;        /* error to answer once the request body is read */
    struct pconn_s *prev, *next;
    struct pconn_s *qprev, *qnext; /* wait queue for a stream slot */
    struct pconn_s *hprev, *hnext; /* response heads not yet written */
    nw_sbuf_t head_out;      /* a response head held for its first body bytes */
    nw_sbuf_t out_pend;      /* body bytes held while a write is queued (pc_hold_body) */
    nw_sbuf_t body_acc;      /* request body bytes of this read, sent at once (pc_send_body) */
    nw_headscan_t scan;      /* checks each request head before llhttp does */
    const char *feed_end;    /* end of the bytes llhttp is parsing now */
    uint64_t chunk_left;     /* request chunk data still to come */
    unsigned crlf_check;     /* bytes of the CRLF after chunk data in the next read */
    unsigned tries;          /* dispatch attempts for this request */
    unsigned req_done : 1, head_sent : 1, keep_alive : 1, is_head : 1, chunked_out : 1,
        has_cl : 1, tunnel : 1, upgrade : 1, minor : 1, in_feed : 1, paused : 1,
        again : 1, https : 1, used : 1, scanning : 1, head_pending : 1, end_at_open : 1, queued : 1, counted : 1, hold_parser : 1,
        body_started : 1,
        piped : 1,   /* 101 answered: the stream is a raw byte pipe both ways */
        held_eof : 1, /* upgrade: the client ended before the 101; held with its bytes */
        req_body : 1, /* the request has a body (Content-Length or chunked) */
        out_wait : 1, /* the next request waits for the client to read what we sent */
        in_eof : 1,  /* piped: the client ended its side */
        out_eof : 1, /* piped: the local service ended its side */
        trailers : 1; /* past the last chunk: the trailer section is scanned */
} pconn_t;

struct serve_s {
    uv_loop_t *loop;
    nw_serve_cfg_t *cfg;
    uv_tcp_t listeners[NW_CFG_MAX_LISTEN];
    int listener_tls[NW_CFG_MAX_LISTEN];
    int nlisteners;
    uv_signal_t sig[3];
    nw_tls_conf_t *tls; /* current server certificate; swapped by SIGHUP */
    nw_tun_t *tuns[MAX_TUNNELS];
    size_t ntuns;
    size_t rr;
    uint64_t next_tun_id, next_pc_id;
    pconn_t *pconns;
    size_t npconns;               /* public connections counted against --max-conns */
    pconn_t *wq_head, *wq_tail;   /* requests waiting for a stream slot, oldest first */
    int in_wq;
    regex_t allow_re, auth_re;
    int has_allow, has_auth_rule;
    uv_timer_t grace;             /* SIGTERM: the drain deadline */
    uv_check_t wq_check;          /* runs the wait queue while it is not empty */
    pconn_t *heads;               /* pconns holding a response head (see pc_hold_head) */
    uv_idle_t heads_idle;         /* writes those heads at the next loop turn */
    nw_trimmer_t trim;            /* returns memory after a burst of connections */
    int draining;
    int stopping;
};

static llhttp_settings_t pc_settings;

static void pc_feed(pconn_t *pc, const char *data, size_t len);
static void pc_pipe_in(pconn_t *pc, const char *p, size_t n);
static void pc_up_in(pconn_t *pc, const char *p, size_t n);
static void pc_pipe_done(pconn_t *pc);
static void pc_on_timer_close(uv_handle_t *h);
static void pc_close(pconn_t *pc);
static void pc_send_timer(pconn_t *pc);
static const char *status_msg(int status);

/* ------------------------------------------------------------ registry */

static void reg_remove(serve_t *srv, nw_tun_t *t) {
    size_t i;
    for (i = 0; i < srv->ntuns; i++)
        if (srv->tuns[i] == t) {
            srv->tuns[i] = srv->tuns[--srv->ntuns];
            return;
        }
}

/* FNV-1a over the client address and the tunnel's name: rendezvous
 * hashing, so a client keeps its tunnel while others come and go, and a
 * reconnecting agent (same name) gets its clients back. */
static uint64_t hrw(const char *ip, size_t iplen, const char *name) {
    uint64_t h = 1469598103934665603ull;
    size_t i;
    for (i = 0; i < iplen; i++)
        h = (h ^ (unsigned char)ip[i]) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

/* A tunnel with a free stream slot by --balance, or NULL: *any says
 * whether any usable tunnel exists at all (then the caller may wait). */
static nw_tun_t *reg_pick(serve_t *srv, const char *ip, size_t iplen, int *any) {
    nw_tun_t *best = NULL;
    uint64_t best_score = 0;
    size_t i, bi = 0;
    *any = 0;
    for (i = 0; i < srv->ntuns; i++) {
        size_t k = (srv->rr + i) % srv->ntuns;
        nw_tun_t *t = srv->tuns[k];
        if (t->goaway_recv || nw_tun_closing(t))
            continue;
        *any = 1;
        if (t->active >= srv->cfg->max_streams)
            continue;
        if (srv->cfg->balance == NW_BALANCE_HASH_IP) {
            uint64_t sc = hrw(ip, iplen, t->agent);
            if (!best || sc > best_score)
                best = t, best_score = sc, bi = k;
        } else if (srv->cfg->balance == NW_BALANCE_ROUND_ROBIN) {
            best = t, bi = k;
            break;
        } else if (!best || t->active < best->active) {
            best = t, bi = k; /* fewest in flight; ties rotate */
        }
    }
    if (best)
        srv->rr = bi + 1;
    return best;
}

/* Whether any tunnel may take new streams (full or not). */
static int reg_usable(serve_t *srv) {
    size_t i;
    for (i = 0; i < srv->ntuns; i++)
        if (!srv->tuns[i]->goaway_recv && !nw_tun_closing(srv->tuns[i]))
            return 1;
    return 0;
}

static size_t reg_count_group(serve_t *srv, const char *group) {
    size_t i, n = 0;
    for (i = 0; i < srv->ntuns; i++)
        n += strcmp(srv->tuns[i]->group, group) == 0;
    return n;
}

/* ------------------------------------------------------------- writing */

static int pc_write(pconn_t *pc, const void *p, size_t n, size_t credit) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    if (!pc->conn)
        return NW_ECLOSED;
    return nw_conn_write(pc->conn, &b, 1, credit);
}

/* A response head usually arrives in the same read as the first body
 * bytes (often all of the body): holding it until the end of this loop
 * turn lets head and body leave in one write, one syscall instead of two.
 * Whatever is still held when the turn ends is written on its own. */
static void heads_unlink(pconn_t *pc) {
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

static void heads_on_idle(uv_idle_t *h);

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
static int pc_flush_head(pconn_t *pc) {
    int rc = 0;
    if (!pc->head_pending)
        return 0;
    heads_unlink(pc);
    if (pc->conn)
        rc = pc_write(pc, pc->head_out.p, pc->head_out.len, 0);
    nw_sbuf_free(&pc->head_out);
    if (rc == 0)
        pc_send_timer(pc);
    return rc;
}

static void pc_close(pconn_t *pc);

static void heads_on_idle(uv_idle_t *h) {
    serve_t *srv = h->data;
    uv_idle_stop(h);
    while (srv->heads) {
        pconn_t *pc = srv->heads;
        if (pc_flush_head(pc) != 0)
            pc_close(pc);
    }
}

static void pc_on_timer(uv_timer_t *h);

static void pc_arm(pconn_t *pc, uint64_t ms) {
    uv_timer_start(&pc->timer, pc_on_timer, ms, 0);
}

/* A request body is still to come on an open stream: the timer is then
 * --body-timeout, re-armed on every step forward (bytes from the client,
 * credit from the service). */
static int pc_body_waiting(const pconn_t *pc) {
    return pc->req_body && !pc->req_done && pc->strm && !pc->piped &&
           (pc->state == PC_WAIT || pc->state == PC_STREAM);
}

/* A response (or a pipe) in progress has bytes queued that the client has
 * not taken: a client that stops reading would otherwise hold its stream
 * slot, with no timer, for as long as it likes. The wait is then bounded
 * by --body-timeout too, counted from the last bytes the client took
 * (pc_on_written), never re-armed by our own writes. With nothing queued
 * the wait is on the service (a stream may be slow): no timer. */
static void pc_send_timer(pconn_t *pc) {
    if (pc->state != PC_STREAM || !pc->conn)
        return;
    if (pc->conn->wbytes) {
        if (!uv_is_active((uv_handle_t *)&pc->timer))
            pc_arm(pc, pc->srv->cfg->body_timeout_ms);
    } else if (!pc_body_waiting(pc)) {
        uv_timer_stop(&pc->timer);
    }
}

/* After an error reply: half-close, then read and drop whatever the client
 * still sends until it closes or LINGER_MS passes, so the reply is not lost
 * to a TCP reset caused by unread input. */
static void wq_remove(pconn_t *pc) {
    serve_t *srv = pc->srv;
    if (!pc->queued)
        return;
    if (pc->qprev)
        pc->qprev->qnext = pc->qnext;
    else
        srv->wq_head = pc->qnext;
    if (pc->qnext)
        pc->qnext->qprev = pc->qprev;
    else
        srv->wq_tail = pc->qprev;
    pc->qprev = pc->qnext = NULL;
    pc->queued = 0;
}

static void pc_linger(pconn_t *pc) {
    if (pc->state == PC_LINGER || pc->state == PC_CLOSED || !pc->conn)
        return;
    wq_remove(pc);
    pc_flush_head(pc);
    pc->state = PC_LINGER;
    if (pc->strm) {
        nw_strm_detach(pc->strm, NW_RST_CANCEL);
        pc->strm = NULL;
    }
    nw_conn_shutdown(pc->conn);
    nw_conn_resume(pc->conn, NW_PAUSE_CREDIT | NW_PAUSE_PIPELINE | NW_PAUSE_DONE);
    pc_arm(pc, LINGER_MS);
}

static void pc_response_done(pconn_t *pc);
static void pc_unpause(pconn_t *pc);
static int pc_dispatch(pconn_t *pc);
static void pc_sent(pconn_t *pc);

/* Answer with a short text error. The connection stays open when the
 * request was read completely and the client wants keep-alive; otherwise
 * it is closed (lingering). */
static void pc_reply(pconn_t *pc, int status, const char *msg) {
    char buf[512];
    char body[256];
    int keep = pc->keep_alive && pc->req_done && !pc->err_status;
    int bl = snprintf(body, sizeof(body), "natwrp: %s\n", msg);
    const char *extra = status == 401 ? "WWW-Authenticate: Bearer realm=\"natwrp\"\r\n"
                        : status == 503 ? "Retry-After: 1\r\n"
                                        : "";
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
    pc->head_sent = 1;
    if (keep) {
        pc->keep_alive = 1;
        pc_response_done(pc);
    } else {
        pc->keep_alive = 0;
        pc_linger(pc);
    }
}

/* ------------------------------------------------------ stream callbacks */

static void pc_response_done(pconn_t *pc) {
    pc->stale_credit = pc->body_inflight;
    if (pc->strm) {
        nw_strm_detach(pc->strm, 0);
        pc->strm = NULL;
    }
    if (!pc->req_done || !pc->keep_alive || pc->srv->draining) {
        pc_linger(pc); /* draining: the client's next request goes elsewhere */
        return;
    }
    /* Next request: take what the client pipelined, then read again. */
    pc->state = PC_IDLE;
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
static void pc_unpause(pconn_t *pc) {
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

static void put_field(nw_sbuf_t *out, const nw_hdr_t *h) {
    nw_sbuf_append(out, h->name, h->name_len);
    nw_sbuf_append(out, ": ", 2);
    nw_sbuf_append(out, h->value, h->value_len);
    nw_sbuf_append(out, "\r\n", 2);
}

/* 101 Switching Protocols: pass the head (Upgrade and Connection
 * included), then the stream is a raw pipe with no timeout of its own:
 * an idle WebSocket stays open as long as the tunnel does. */
static void pc_switch(pconn_t *pc, nw_strm_t *s, const nw_mux_frame_t *f) {
    nw_sbuf_t out = {0};
    size_t i;
    uv_timer_stop(&pc->timer);
    pc->state = PC_STREAM;
    pc->piped = 1;
    nw_sbuf_appendf(&out, "HTTP/1.1 101 %.*s\r\n", (int)f->reason_len, f->reason);
    for (i = 0; i < f->nhdrs; i++) {
        const nw_hdr_t *h = &f->hdrs[i];
        if (nw_http_is_hop(h->name, h->name_len) && !nw_strieq(h->name, h->name_len, "upgrade") &&
            !nw_strieq(h->name, h->name_len, "connection"))
            continue;
        put_field(&out, h);
    }
    nw_sbuf_append(&out, "\r\n", 2);
    if (!out.p || pc_write(pc, out.p, out.len, 0) != 0) {
        nw_sbuf_free(&out);
        pc_close(pc);
        return;
    }
    nw_sbuf_free(&out);
    pc->head_sent = 1;
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

static void srv_on_head(nw_strm_t *s, const nw_mux_frame_t *f) {
    pconn_t *pc = s->data;
    nw_sbuf_t out = {0};
    size_t i;
    int end = (f->flags & NW_MUX_F_END) != 0;
    int nobody = pc->is_head || f->status == 204 || f->status == 304 || f->status < 200;
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
        nw_strm_detach(s, NW_RST_PROTOCOL);
        pc->strm = NULL;
        pc_reply(pc, 502, "invalid response from the agent");
        return;
    }
    if (pc->req_body && !pc->req_done)
        pc_arm(pc, pc->srv->cfg->body_timeout_ms); /* the body still has its own timer */
    else
        uv_timer_stop(&pc->timer);
    pc->state = PC_STREAM;
    pc->has_cl = 0;
    if (pc->upgrade) {
        /* Not accepted: what the client sent after the request was never
         * for the service. Dropped; the connection closes after this
         * response (keep_alive is 0 for an upgrade). */
        nw_sbuf_free(&pc->pipeline);
        pc->held_eof = 0;
    }
    {
        /* No printf on the per-request path: status is 200..999 here. */
        char st[13] = "HTTP/1.1 000 ";
        st[9] = (char)('0' + f->status / 100 % 10);
        st[10] = (char)('0' + f->status / 10 % 10);
        st[11] = (char)('0' + f->status % 10);
        nw_sbuf_append(&out, st, 13);
        nw_sbuf_append(&out, f->reason, f->reason_len);
        nw_sbuf_append(&out, "\r\n", 2);
    }
    for (i = 0; i < f->nhdrs; i++) {
        const nw_hdr_t *h = &f->hdrs[i];
        if (nw_http_is_hop(h->name, h->name_len))
            continue;
        if (nw_strieq(h->name, h->name_len, "content-length")) {
            if (f->status == 204)
                continue; /* RFC 9110 8.6: never on a 204; a proxy before us would wait for it */
            if (pc->has_cl || nw_http_parse_cl(h->value, h->value_len, &pc->cl_left) != 0) {
                nw_sbuf_free(&out);
                nw_strm_detach(s, NW_RST_PROTOCOL);
                pc->strm = NULL;
                pc_reply(pc, 502, "invalid Content-Length from the local service");
                return;
            }
            pc->has_cl = 1;
        }
        put_field(&out, h);
    }
    if (nobody) {
        /* Framed as an empty body: any DATA byte after it is beyond the
         * framing (srv_on_data), never bytes for the client. */
        pc->has_cl = 1;
        pc->cl_left = 0;
        pc->chunked_out = 0;
    } else if (!pc->has_cl) {
        if (pc->minor >= 1)
            pc->chunked_out = 1, nw_sbuf_appends(&out, "Transfer-Encoding: chunked\r\n");
        else
            pc->keep_alive = 0; /* close-delimited body */
    }
    if (!pc->req_done || pc->srv->draining)
        pc->keep_alive = 0; /* the rest of the request body would be unread */
    if (!pc->keep_alive)
        nw_sbuf_appends(&out, "Connection: close\r\n");
    else if (pc->minor == 0)
        nw_sbuf_appends(&out, "Connection: keep-alive\r\n");
    nw_sbuf_append(&out, "\r\n", 2);
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
static int pc_flush_body(pconn_t *pc) {
    char hdr[32];
    uv_buf_t b[3];
    unsigned n = 0;
    size_t len = pc->out_pend.len;
    int rc;
    if (!len)
        return 0;
    if (pc->chunked_out)
        b[n++] = uv_buf_init(hdr, (unsigned)snprintf(hdr, sizeof(hdr), "%zx\r\n", len));
    b[n++] = uv_buf_init(pc->out_pend.p, (unsigned)len);
    if (pc->chunked_out)
        b[n++] = uv_buf_init("\r\n", 2);
    rc = pc->conn ? nw_conn_write(pc->conn, b, n, len) : NW_ECLOSED;
    nw_sbuf_free(&pc->out_pend);
    if (rc == 0)
        pc_send_timer(pc);
    return rc;
}

static void srv_on_data(nw_strm_t *s, const uint8_t *p, size_t len, int end) {
    pconn_t *pc = s->data;
    char hdr[32];
    uv_buf_t b[5];
    unsigned n = 0;
    int skip = pc->is_head, rc;
    size_t extra = 0;

    if (pc->piped) {
        uv_buf_t pb = uv_buf_init((char *)p, (unsigned)len);
        rc = pc_hold_body(pc, p, len);
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
        heads_unlink(pc);
        b[n++] = uv_buf_init(pc->head_out.p, (unsigned)pc->head_out.len);
    }
    if (len && !skip) {
        if (pc->chunked_out) {
            int k = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
            b[n++] = uv_buf_init(hdr, (unsigned)k);
        }
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

static void srv_on_reset(nw_strm_t *s, uint32_t code) {
    pconn_t *pc = s->data;
    const char *msg;
    int status = code_status(code, &msg);
    pc->strm = NULL;
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
        msg = status_msg(st);
    }
    if (code == NW_RST_UNSENT)
        code = NW_RST_TUNNEL_LOST;
    if (pc->head_pending) {
        /* The head was only held for its first body bytes: nothing has
         * reached the client, so it still gets a proper 502, not zero bytes. */
        heads_unlink(pc);
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

static void srv_on_drain(nw_strm_t *s) {
    pconn_t *pc = s->data;
    if (pc_body_waiting(pc))
        pc_arm(pc, pc->srv->cfg->body_timeout_ms);
    if (pc->conn)
        nw_conn_resume(pc->conn, NW_PAUSE_CREDIT);
}

/* Draining with no tunnel left that takes streams: none can come (the
 * handshake is refused while draining), so the requests that wait for one
 * are answered now instead of at --queue-timeout. */
static void wq_fail_if_hopeless(serve_t *srv) {
    if (!srv->draining || srv->stopping || reg_usable(srv))
        return;
    while (srv->wq_head) {
        pconn_t *pc = srv->wq_head;
        wq_remove(pc);
        nw_warn("conn=%llu client=%s no agent connected and draining: 503",
                (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-");
        pc->keep_alive = 0;
        pc_reply(pc, 503, "no agent is connected to this server");
    }
}

static void srv_on_tun_close(nw_tun_t *t, int err) {
    serve_t *srv = t->data;
    reg_remove(srv, t);
    nw_info("tunnel closed tun=%llu agent=%s reason=%s", (unsigned long long)t->id, t->agent,
            nw_strerror(err));
    wq_fail_if_hopeless(srv);
}

static void srv_on_goaway(nw_tun_t *t, uint32_t last, uint32_t code) {
    nw_info("tunnel draining tun=%llu agent=%s (GOAWAY %s)", (unsigned long long)t->id, t->agent,
            nw_mux_code_name(code));
    (void)last;
    wq_fail_if_hopeless(t->data);
}

static const nw_tun_cbs_t srv_tun_cbs = {NULL,         srv_on_head,   srv_on_data,
                                         srv_on_reset, srv_on_drain,  srv_on_goaway,
                                         srv_on_tun_close};

/* -------------------------------------------------------- tunnel upgrade */

/* AGENT_ID's syntax; a MAX_CONN tunnel's id adds "-k" (max_len 139). */
static int agent_id_ok(const char *p, size_t n, size_t max_len) {
    size_t i;
    if (n == 0 || n > max_len)
        return 0;
    for (i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("._@:+-", c)))
            return 0;
    }
    return 1;
}

/* Validate the upgrade; on success write the 101 and return 0, else write
 * the refusal and return -1. */
/* got == want, in time that depends only on want's length (the secret's
 * bytes are never the cause of an early exit). */
static int token_eq(const char *got, size_t glen, const char *want, size_t wlen) {
    unsigned char d = glen != wlen;
    size_t i;
    for (i = 0; i < wlen; i++)
        d |= (unsigned char)(want[i] ^ (i < glen ? got[i] : 0));
    return d == 0;
}

/* The credential in an Authorization value: after "Bearer " (any case)
 * when bearer_only, else that or the whole value. */
static int auth_value(const nw_hdr_t *f, int bearer_only, const char **tok, size_t *len) {
    if (f->value_len > 7 && nw_strieq(f->value, 7, "bearer ")) {
        *tok = f->value + 7;
        *len = f->value_len - 7;
        while (*len && **tok == ' ')
            (*tok)++, (*len)--;
        return 1;
    }
    if (bearer_only)
        return 0;
    *tok = f->value;
    *len = f->value_len;
    return 1;
}

/* Refuse a tunnel upgrade with a status and a one-line reason. */
static void tunnel_refuse(pconn_t *pc, int status, const char *agent, const char *why) {
    nw_warn("tunnel refused from %s agent=%s: %d %s", pc->conn->peer, agent && *agent ? agent : "-",
            status, why);
    pc->keep_alive = 0;
    pc_reply(pc, status, why);
}

static int tunnel_handshake(pconn_t *pc, char *agent, char *group, uint32_t *peer_window) {
    const nw_serve_cfg_t *cfg = pc->srv->cfg;
    nw_hfields_t *h = &pc->hf;
    nw_hdr_t f;
    char accept[29], msg[256], resp[512];
    int i, n;
    uint64_t win = 262144;

    if (pc->parser.method != HTTP_GET || !nw_http_has_token(h, "upgrade", "websocket") ||
        !nw_http_has_token(h, "connection", "upgrade")) {
        tunnel_refuse(pc, 426, NULL, "this path is reserved for agent tunnels (WebSocket upgrade)");
        return -1;
    }
    i = nw_hf_find(h, "sec-websocket-version", 0);
    if (i < 0 || (nw_hf_get(h, (size_t)i, &f), !nw_strieq(f.value, f.value_len, "13"))) {
        const char r[] = "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n";
        nw_warn("tunnel refused from %s agent=-: 426 Sec-WebSocket-Version is not 13",
                pc->conn->peer);
        pc_write(pc, r, sizeof(r) - 1, 0);
        pc_linger(pc);
        return -1;
    }
    i = nw_hf_find(h, "sec-websocket-key", 0);
    if (i < 0 || (nw_hf_get(h, (size_t)i, &f), !nw_ws_key_valid(f.value, f.value_len)) ||
        nw_ws_accept(f.value, f.value_len, accept) != 0) {
        tunnel_refuse(pc, 400, NULL, "missing or invalid Sec-WebSocket-Key");
        return -1;
    }
    if (!nw_http_has_token(h, "sec-websocket-protocol", NW_WS_SUBPROTO)) {
        i = nw_hf_find(h, "sec-websocket-protocol", 0);
        if (i >= 0)
            nw_hf_get(h, (size_t)i, &f);
        snprintf(msg, sizeof(msg),
                 "protocol version mismatch: agent offered '%.*s', server speaks " NW_WS_SUBPROTO,
                 i >= 0 ? (int)NW_MIN(f.value_len, 100) : 4, i >= 0 ? f.value : "none");
        nw_warn("tunnel refused from %s: %s", pc->conn->peer, msg);
        n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 400 Bad Request\r\nX-Natwrp-Version: %d\r\n"
                     "Content-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n"
                     "natwrp: %s\n",
                     NW_PROTO_VERSION, strlen(msg) + 9, msg);
        pc_write(pc, resp, (size_t)n, 0);
        pc->head_sent = 1;
        pc_linger(pc);
        return -1;
    }
    i = nw_hf_find(h, "x-natwrp-agent", 0);
    if (i < 0 || (nw_hf_get(h, (size_t)i, &f),
                  !agent_id_ok(f.value, f.value_len,
                               nw_hf_find(h, "x-natwrp-group", 0) >= 0 ? 139 : 128))) {
        tunnel_refuse(pc, 400, NULL,
                      "missing or invalid X-Natwrp-Agent (1-128 of A-Z a-z 0-9 . _ @ : + -)");
        return -1;
    }
    memcpy(agent, f.value, f.value_len);
    agent[f.value_len] = 0;
    /* MAX_CONN agents name each tunnel AGENT_ID-k and send AGENT_ID here. */
    i = nw_hf_find(h, "x-natwrp-group", 0);
    if (i >= 0 && (nw_hf_get(h, (size_t)i, &f), !agent_id_ok(f.value, f.value_len, 128))) {
        tunnel_refuse(pc, 400, agent, "invalid X-Natwrp-Group");
        return -1;
    }
    if (i >= 0) {
        memcpy(group, f.value, f.value_len);
        group[f.value_len] = 0;
    } else {
        memcpy(group, agent, strlen(agent) + 1);
    }
    if (cfg->conn_token[0]) {
        const char *tok = NULL;
        size_t tlen = 0;
        i = nw_hf_find(h, "authorization", 0);
        if (i >= 0)
            nw_hf_get(h, (size_t)i, &f);
        if (i < 0 || !auth_value(&f, 1, &tok, &tlen) ||
            !token_eq(tok, tlen, cfg->conn_token, strlen(cfg->conn_token))) {
            tunnel_refuse(pc, 401, agent,
                          i < 0 ? "unauthorized: no CONN_TOKEN presented (Authorization: Bearer)"
                                : "unauthorized: wrong CONN_TOKEN");
            return -1;
        }
    }
    if (pc->srv->has_allow && regexec(&pc->srv->allow_re, group, 0, NULL, 0) != 0) {
        tunnel_refuse(pc, 403, agent, "forbidden: AGENT_ID not allowed by --allow-agent");
        return -1;
    }
    {
        /* A same-name tunnel is replaced, so it does not count; one that
         * drains after GOAWAY is not replaced (pc_take_over), so it does:
         * the tunnel table stays within --max-tunnels. */
        size_t k, total = pc->srv->ntuns, mine = reg_count_group(pc->srv, group);
        for (k = 0; k < pc->srv->ntuns; k++)
            if (strcmp(pc->srv->tuns[k]->agent, agent) == 0 && !pc->srv->tuns[k]->goaway_recv)
                total--, mine -= strcmp(pc->srv->tuns[k]->group, group) == 0;
        if (total >= cfg->max_tunnels) {
            tunnel_refuse(pc, 503, agent, "too many tunnels on this server (--max-tunnels)");
            return -1;
        }
        if (mine >= cfg->max_agent_tunnels) {
            tunnel_refuse(pc, 429, agent, "too many tunnels for this AGENT_ID (--max-agent-tunnels)");
            return -1;
        }
    }
    if (pc->srv->draining) {
        tunnel_refuse(pc, 503, agent, "server is shutting down");
        return -1;
    }
    i = nw_hf_find(h, "x-natwrp-window", 0);
    if (i >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        if (nw_http_parse_cl(f.value, f.value_len, &win) != 0 || win < 1024 ||
            win > NW_MUX_MAX_WINDOW) {
            tunnel_refuse(pc, 400, agent, "invalid X-Natwrp-Window");
            return -1;
        }
    }
    *peer_window = (uint32_t)win;
    n = snprintf(resp, sizeof(resp),
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                 "Sec-WebSocket-Protocol: " NW_WS_SUBPROTO "\r\nX-Natwrp-Window: %u\r\n\r\n",
                 accept, pc->srv->cfg->window);
    return pc_write(pc, resp, (size_t)n, 0) == 0 ? 0 : -1;
}

static void pc_maybe_free(pconn_t *pc);
static void pc_on_timer_close(uv_handle_t *h);

/* The connection becomes a tunnel; the pconn shell goes away. */
static void pc_take_over(pconn_t *pc, const char *rest, size_t rest_len) {
    serve_t *srv = pc->srv;
    char agent[140], group[140];
    uint32_t peer_window = 0;
    nw_tun_cfg_t tc;
    nw_tun_t *t;
    nw_conn_t *c = pc->conn;
    size_t i;

    if (tunnel_handshake(pc, agent, group, &peer_window) != 0)
        return;
    tc.my_window = srv->cfg->window;
    tc.peer_window = peer_window;
    tc.ping_interval_ms = srv->cfg->ping_interval_ms;
    pc->conn = NULL;
    pc->state = PC_CLOSED;
    uv_close((uv_handle_t *)&pc->timer, pc_on_timer_close);
    pc_maybe_free(pc); /* drops the conn's share */
    nw_conn_set_owner(c, NULL, NULL, NULL, NULL); /* the pconn is gone */
    t = nw_tun_new(srv->loop, c, 0, &tc, &srv_tun_cbs, srv);
    if (!t)
        return;
    t->id = ++srv->next_tun_id;
    snprintf(t->agent, sizeof(t->agent), "%s", agent);
    snprintf(t->group, sizeof(t->group), "%s", group);
    /* One that sent GOAWAY is left alone: it finishes its streams and
     * closes by itself (an agent restarting under the same id). */
    for (i = 0; i < srv->ntuns; i++)
        if (strcmp(srv->tuns[i]->agent, agent) == 0 && !srv->tuns[i]->goaway_recv) {
            nw_info("tunnel replaced tun=%llu agent=%s by tun=%llu",
                    (unsigned long long)srv->tuns[i]->id, agent, (unsigned long long)t->id);
            nw_tun_close(srv->tuns[i], NW_ECLOSED);
            break;
        }
    if (srv->ntuns >= MAX_TUNNELS) {
        /* Only when a replaced tunnel is still closing: never past the table. */
        nw_warn("tunnel refused tun=%llu agent=%s: the tunnel table is full",
                (unsigned long long)t->id, agent);
        nw_tun_close(t, NW_ECLOSED);
        return;
    }
    srv->tuns[srv->ntuns++] = t;
    nw_info("tunnel open tun=%llu agent=%s peer=%s", (unsigned long long)t->id, agent, c->peer);
    nw_tun_start(t, rest, rest_len);
}

/* ----------------------------------------------------- request parsing */

/* Stop the parser with status; pc_parse_error answers it and logs one line
 * with why (NULL: the status's reason phrase). A why of "" means the line
 * was already logged by the caller, which decided with more to say. */
static int pc_refuse(llhttp_t *p, int status, const char *why) {
    pconn_t *pc = p->data;
    pc->err_status = status;
    pc->err_why = why;
    return -1;
}

static int pc_fail(llhttp_t *p, int status) { return pc_refuse(p, status, NULL); }

static int on_message_begin(llhttp_t *p) {
    pconn_t *pc = p->data;
    nw_hf_reset(&pc->hf);
    pc->req_done = pc->head_sent = pc->is_head = pc->chunked_out = pc->has_cl = 0;
    pc->tunnel = pc->upgrade = 0;
    pc->body_started = pc->hold_parser = 0;
    pc->held_eof = pc->req_body = pc->trailers = 0;
    pc->err_status = pc->defer_status = 0;
    pc->err_why = NULL;
    pc->state = PC_HEAD;
    pc->used = 1;
    pc_arm(pc, pc->srv->cfg->head_timeout_ms);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n) {
    pconn_t *pc = p->data;
    int rc = nw_hf_first(&pc->hf, at, n);
    if (rc == 0 && pc->hf.first_len > pc->srv->cfg->max_url)
        return pc_fail(p, 414);
    return rc == 0 ? 0 : pc_fail(p, rc == NW_HF_TOOBIG ? 414 : 500);
}

static int on_hname(llhttp_t *p, const char *at, size_t n) {
    pconn_t *pc = p->data;
    int rc = nw_hf_name(&pc->hf, at, n);
    if (rc == 0 && pc->hf.n > pc->srv->cfg->max_headers)
        return pc_fail(p, 431);
    return rc == 0 ? 0 : pc_fail(p, rc == NW_HF_NOMEM ? 500 : 431);
}

static int on_hvalue(llhttp_t *p, const char *at, size_t n) {
    int rc = nw_hf_value(&((pconn_t *)p->data)->hf, at, n);
    return rc == 0 ? 0 : pc_fail(p, rc == NW_HF_NOMEM ? 500 : 431);
}

static void wq_on_check(uv_check_t *h);

static void wq_append(pconn_t *pc) {
    serve_t *srv = pc->srv;
    pc->queued = 1;
    pc->qnext = NULL;
    pc->qprev = srv->wq_tail;
    if (srv->wq_tail)
        srv->wq_tail->qnext = pc;
    else
        srv->wq_head = pc;
    srv->wq_tail = pc;
    uv_check_start(&srv->wq_check, wq_on_check);
}

/* The client's address without the port ("ip:port" or "[ip]:port"). */
static const char *pc_ip(const pconn_t *pc, size_t *len) {
    const char *ip = pc->conn->peer;
    *len = (size_t)(strrchr(ip, ':') - ip);
    if (ip[0] == '[')
        ip++, *len -= 2;
    return ip;
}

/* Build the forwarded head from pc->hf and open a stream for it on a
 * tunnel with a free slot. 0 when open; 1 when every tunnel is full and
 * the request now waits in the queue; else an HTTP status. */
static int pc_dispatch(pconn_t *pc) {
    serve_t *srv = pc->srv;
    int trust = srv->cfg->trust_proxy, end = pc->end_at_open, slash, any;
    /* X-Auth-Token is ours when AUTH_TOKEN is set, else the local service's.
     * Forwarded and X-Real-IP name the client as X-Forwarded-For does, and
     * X-Original-URL and X-Rewrite-URL replace the path for services behind
     * IIS (Symfony, Laminas): a path AUTH_RULE never saw. Only a trusted
     * proxy may send them on. */
    const char *drop[] = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "expect",
                          NULL, NULL, NULL, NULL, NULL, NULL};
    size_t nd = 4;
    nw_hdr_t hdrs[NW_HTTP_MAX_FIELDS + 5];
    nw_hfields_t *h = &pc->hf;
    nw_sbuf_t xff = {0}, tgt = {0};
    nw_hdr_t f;
    nw_tun_t *t;
    const char *ip, *target;
    size_t iplen, tlen;
    int n, i = -1, err = 0;

    ip = pc_ip(pc, &iplen);
    t = reg_pick(srv, ip, iplen, &any);
    /* No free slot, or no tunnel at all (just started, the agent is
     * restarting, or its only tunnel drains after GOAWAY): wait up to
     * --queue-timeout for one. The queue holds at most one request per
     * public connection, so --max-conns bounds it. A draining server takes
     * no new tunnel, so there it waits only for a slot. An upgrade waits
     * like any request: its parser, held after the head, parses a
     * Content-Length body when it resumes and then reaches the upgrade,
     * and what the client sent after that stays held until a 101. */
    if (!t && (any || !srv->draining)) {
        if (pc->state != PC_QUEUED) {
            if (any)
                nw_info("conn=%llu client=%s every tunnel is at --max-streams (%u): waiting",
                        (unsigned long long)pc->id, pc->conn->peer, srv->cfg->max_streams);
            else
                nw_info("conn=%llu client=%s no agent connected: waiting up to %llu ms for one",
                        (unsigned long long)pc->id, pc->conn->peer,
                        (unsigned long long)srv->cfg->queue_timeout_ms);
            pc_arm(pc, srv->cfg->queue_timeout_ms);
        }
        pc->state = PC_QUEUED;
        wq_append(pc);
        return 1;
    }
    if (!t) {
        nw_warn("conn=%llu client=%s %s: 503", (unsigned long long)pc->id, pc->conn->peer,
                !any ? "no agent connected"
                     : "every tunnel is at --max-streams and an upgrade with a body cannot wait");
        return 503;
    }
    pc->tries++;
    slash = nw_http_origin_form(h->raw.p ? h->raw.p : "", h->first_len, &target, &tlen) == 1;
    if (srv->cfg->auth_token[0])
        drop[nd++] = "x-auth-token";
    if (!trust) {
        drop[nd++] = "forwarded", drop[nd++] = "x-real-ip";
        drop[nd++] = "x-original-url", drop[nd++] = "x-rewrite-url";
    }
    n = nw_http_filter(h, hdrs, NW_HTTP_MAX_FIELDS, drop);
    /* Only a proxy we were told to trust may speak for the client; from
     * anyone else, X-Forwarded-* values are dropped, not extended. */
    while (trust && (i = nw_hf_find(h, "x-forwarded-for", (size_t)(i + 1))) >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        nw_sbuf_append(&xff, f.value, f.value_len);
        nw_sbuf_append(&xff, ", ", 2);
    }
    nw_sbuf_append(&xff, ip, iplen);
    hdrs[n++] = (nw_hdr_t){"X-Forwarded-For", 15, xff.p ? xff.p : "", xff.len};
    if (trust && (i = nw_hf_find(h, "x-forwarded-proto", 0)) >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        hdrs[n++] = (nw_hdr_t){"X-Forwarded-Proto", 17, f.value, f.value_len};
    } else {
        hdrs[n++] = (nw_hdr_t){"X-Forwarded-Proto", 17, pc->https ? "https" : "http",
                               pc->https ? 5u : 4u};
    }
    if ((trust && (i = nw_hf_find(h, "x-forwarded-host", 0)) >= 0) ||
        (i = nw_hf_find(h, "host", 0)) >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        hdrs[n++] = (nw_hdr_t){"X-Forwarded-Host", 16, f.value, f.value_len};
    }
    if (pc->upgrade && (i = nw_hf_find(h, "upgrade", 0)) >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        hdrs[n++] = (nw_hdr_t){"Connection", 10, "Upgrade", 7};
        hdrs[n++] = (nw_hdr_t){"Upgrade", 7, f.value, f.value_len};
    }
    if (slash) {
        nw_sbuf_append(&tgt, "/", 1);
        nw_sbuf_append(&tgt, target, tlen);
        target = tgt.p;
        tlen = tgt.len;
    }
    pc->strm = nw_tun_open(t, llhttp_method_name((llhttp_method_t)pc->parser.method),
                           strlen(llhttp_method_name((llhttp_method_t)pc->parser.method)),
                           target, tlen, hdrs, (size_t)n, end, &err);
    if (pc->strm) {
        pc->strm->data = pc;
        nw_debug("conn=%llu client=%s tun=%llu agent=%s strm=%u %s %.*s",
                 (unsigned long long)pc->id, pc->conn->peer, (unsigned long long)t->id, t->agent,
                 pc->strm->sid, llhttp_method_name((llhttp_method_t)pc->parser.method),
                 (int)tlen, target);
    }
    nw_sbuf_free(&xff);
    nw_sbuf_free(&tgt);
    if (!pc->strm) {
        nw_warn("conn=%llu client=%s tun=%llu agent=%s could not open a stream: %s: %d",
                (unsigned long long)pc->id, pc->conn->peer, (unsigned long long)t->id, t->agent,
                err == NW_ETOOBIG ? "the forwarded head is too large for a frame"
                                  : nw_strerror(err),
                err == NW_ETOOBIG ? 431 : 502);
        return err == NW_ETOOBIG ? 431 : 502;
    }
    return 0;
}

/* The request went out on a stream: wait for the response head. */
static void pc_sent(pconn_t *pc) {
    pc->state = PC_WAIT;
    /* The response timeout counts from the end of the request: a slow
     * upload is not the local service being slow. Until then the body has
     * its own timer, re-armed on each progress (pc_body_timeout). */
    if (pc->req_body && !pc->req_done)
        pc_arm(pc, pc->srv->cfg->body_timeout_ms);
    else
        pc_arm(pc, pc->srv->cfg->response_timeout_ms);
    if (!pc->end_at_open && pc->minor && !pc->body_started &&
        nw_http_has_token(&pc->hf, "expect", "100-continue"))
        pc_write(pc, "HTTP/1.1 100 Continue\r\n\r\n", 25, 0);
}

/* Requests waiting for a slot, oldest first, while tunnels have room. A
 * uv_check runs this after each loop iteration in which the queue is not
 * empty, so slots freed in any callback are used without re-entering it. */
static void wq_on_check(uv_check_t *h) {
    serve_t *srv = h->data;
    while (srv->wq_head) {
        pconn_t *pc = srv->wq_head;
        int st;
        wq_remove(pc);
        st = pc_dispatch(pc);
        if (st == 1) {
            /* Still no room: it went back to the tail; put it first again. */
            wq_remove(pc);
            pc->queued = 1;
            pc->qprev = NULL;
            pc->qnext = srv->wq_head;
            if (srv->wq_head)
                srv->wq_head->qprev = pc;
            else
                srv->wq_tail = pc;
            srv->wq_head = pc;
            return;
        }
        if (st != 0) {
            pc->keep_alive = 0;
            pc_reply(pc, st, status_msg(st));
            continue;
        }
        pc_sent(pc);
        if (pc->hold_parser) {
            pc->hold_parser = 0;
            pc_unpause(pc); /* the body, if any, flows to the stream now */
            /* With nothing buffered, run the parser once anyway: it was held
             * right after the head and still has to end the message. */
            if (!pc->pipeline.len && pc->state == PC_WAIT && pc->conn)
                pc_feed(pc, "", 0);
        }
    }
    uv_check_stop(&srv->wq_check);
}

/* Equal under the CGI mapping (RFC 3875 4.1.18): any case, '_' as '-'.
 * With prefix, name only has to start with b. */
static int cgi_eq(const char *a, size_t alen, const char *b, int prefix) {
    size_t i, blen = strlen(b);
    if (prefix ? alen < blen : alen != blen)
        return 0;
    for (i = 0; i < blen; i++) {
        int c = a[i] == '_' ? '-' : (a[i] >= 'A' && a[i] <= 'Z' ? a[i] + 32 : a[i]);
        if (c != b[i])
            return 0;
    }
    return 1;
}

/* A field name with '_' that a CGI, WSGI or Rack service reads as one
 * that serve frames the request with or vouches for: that service would
 * see a second, unchecked Content-Length or X-Forwarded-For. */
static const char *cgi_alias(const char *name, size_t len) {
    static const char *const fields[] = {"content-length", "transfer-encoding", "keep-alive",
                                         "x-forwarded-for", "x-forwarded-proto",
                                         "x-forwarded-host", "x-real-ip", "x-original-url",
                                         "x-rewrite-url", NULL};
    size_t i;
    if (!memchr(name, '_', len))
        return NULL;
    for (i = 0; fields[i]; i++)
        if (cgi_eq(name, len, fields[i], 0))
            return fields[i];
    return NULL;
}

/* What llhttp 8 lets through and a front-end must refuse (the reason, or
 * NULL when the fields are fine): field names that
 * are not tokens, control bytes in values, a Host that is not a host, and
 * any Transfer-Encoding but a single "chunked" on HTTP/1.1 (RFC 9112 6.1:
 * an unknown coding cannot be framed; on 1.0 it invites smuggling). */
static const char *pc_fields_why(pconn_t *pc) {
    nw_hfields_t *h = &pc->hf;
    const char *why = NULL;
    size_t i, te = 0;
    nw_hdr_t f;
    for (i = 0; i < h->n && !why; i++) {
        nw_hf_get(h, i, &f);
        if (!nw_http_token_ok(f.name, f.name_len))
            why = "invalid header field name";
        else if (!nw_http_value_ok(f.value, f.value_len))
            why = "control character in a header value";
        else if (nw_strieq(f.name, f.name_len, "host") && !nw_http_host_ok(f.value, f.value_len))
            why = "invalid Host";
        else if (cgi_alias(f.name, f.name_len))
            why = "a field name with '_' that CGI reads as a framing or forwarding field";
        else if (nw_strieq(f.name, f.name_len, "transfer-encoding") &&
                 (te++ || !pc->minor || !nw_strieq(f.value, f.value_len, "chunked")))
            why = "unsupported Transfer-Encoding (only a single 'chunked' on HTTP/1.1)";
    }
    return why;
}

/* AUTH_TOKEN: 1 when the request may pass. The token comes in
 * X-Auth-Token, or in Authorization with or without "Bearer ". With
 * AUTH_RULE only paths it matches (a search, like grep -E; the query is
 * not part of the path) need it. The rule is tried on every reading of the
 * whole path a service may act on: as sent, normalised (norm, "" for "*"),
 * and normalised but for dot segments (a framework that decodes and routes
 * "/private/../x" without resolving it); a match on any needs the token.
 * buf has room for 2 * (tlen + 2) bytes. */
static int pc_auth(pconn_t *pc, const char *target, size_t tlen, const char *norm, char *buf) {
    serve_t *srv = pc->srv;
    const char *want = srv->cfg->auth_token, *tok;
    size_t wlen = strlen(want), len, plen = nw_path_len(target, tlen);
    char *raw = buf, *dots = buf + tlen + 2;
    nw_hdr_t f;
    int i;
    if (!wlen)
        return 1;
    if (srv->has_auth_rule) {
        if (plen == 0 || target[0] != '/')
            raw[0] = '/', memcpy(raw + 1, target, plen), plen++;
        else
            memcpy(raw, target, plen);
        raw[plen] = 0;
        if (nw_path_normalize(target, tlen, NW_PATH_KEEP_DOTS, dots, tlen + 2, &len) < 0)
            dots[0] = 0;
        if (regexec(&srv->auth_re, raw, 0, NULL, 0) != 0 &&
            (!norm[0] || regexec(&srv->auth_re, norm, 0, NULL, 0) != 0) &&
            (!dots[0] || regexec(&srv->auth_re, dots, 0, NULL, 0) != 0))
            return 1;
    }
    if ((i = nw_hf_find(&pc->hf, "x-auth-token", 0)) >= 0) {
        nw_hf_get(&pc->hf, (size_t)i, &f);
        if (token_eq(f.value, f.value_len, want, wlen))
            return 1;
    }
    if ((i = nw_hf_find(&pc->hf, "authorization", 0)) >= 0) {
        nw_hf_get(&pc->hf, (size_t)i, &f);
        if (auth_value(&f, 0, &tok, &len) && token_eq(tok, len, want, wlen))
            return 1;
    }
    nw_info("conn=%llu client=%s unauthorized: %s: 401", (unsigned long long)pc->id,
            pc->conn->peer, nw_hf_find(&pc->hf, "x-auth-token", 0) >= 0 ||
                                    nw_hf_find(&pc->hf, "authorization", 0) >= 0
                                ? "wrong token"
                                : "no token");
    return 0;
}

/* Does any Upgrade field offer HTTP itself (h2c, HTTP/2.0, ...)? Once a
 * service switched, the client would send it requests that serve never
 * sees: any path, past AUTH_RULE, with no X-Forwarded-For (the h2c
 * smuggling of proxies that pass such upgrades on). */
static int upgrade_to_http(const nw_hfields_t *h) {
    int i = -1;
    nw_hdr_t f;
    while ((i = nw_hf_find(h, "upgrade", (size_t)(i + 1))) >= 0) {
        size_t k = 0, e;
        nw_hf_get(h, (size_t)i, &f);
        while (k < f.value_len) {
            while (k < f.value_len && (f.value[k] == ' ' || f.value[k] == '\t' ||
                                       f.value[k] == ','))
                k++;
            for (e = k; e < f.value_len && f.value[e] != ','; e++)
                ;
            while (e > k && (f.value[e - 1] == ' ' || f.value[e - 1] == '\t'))
                e--;
            if (nw_strieq(f.value + k, e - k, "h2c") || nw_strieq(f.value + k, e - k, "http") ||
                (e - k > 5 && nw_strieq(f.value + k, 5, "http/")))
                return 1;
            k = e;
            while (k < f.value_len && f.value[k] != ',')
                k++;
        }
    }
    return 0;
}

/* Does any Sec-WebSocket-Protocol field offer a natwrp.* subprotocol? */
static int offers_natwrp(const nw_hfields_t *h) {
    int i = -1;
    nw_hdr_t f;
    while ((i = nw_hf_find(h, "sec-websocket-protocol", (size_t)(i + 1))) >= 0) {
        size_t k = 0;
        nw_hf_get(h, (size_t)i, &f);
        while (k < f.value_len) {
            while (k < f.value_len && (f.value[k] == ' ' || f.value[k] == '\t' ||
                                       f.value[k] == ','))
                k++;
            if (cgi_eq(f.value + k, f.value_len - k, "natwrp.", 1))
                return 1;
            while (k < f.value_len && f.value[k] != ',')
                k++;
        }
    }
    return 0;
}

/* Checks on the target and head of a request for the local service, before
 * the token: NULL to go on, else why it gets 400. norm gets the
 * normalised path (room for tlen + 2), or "" for "*". */
static const char *pc_screen(pconn_t *pc, const char *target, size_t tlen, char *norm) {
    nw_hfields_t *h = &pc->hf;
    const char *why = NULL;
    size_t nlen, i;
    int rc;
    nw_hdr_t f;

    rc = nw_path_normalize(target, tlen, 0, norm, tlen + 2, &nlen);
    if (rc < 0)
        norm[0] = 0; /* "*": no path to normalise */
    if (memchr(h->raw.p, '#', h->first_len))
        /* No request target has a fragment (RFC 9112 3.2). The checks here
         * end the path at '#', but a service may not: Go's net/http takes
         * "/public#/../private" as a path and cleans it to "/private". */
        why = "a fragment ('#') in the request target";
    else if (rc == NW_PATH_CLIMBS)
        /* "/../x" would leave LOCAL_URL's base path at the service. */
        why = "the path climbs above the root";
    else if (rc >= 0 && nw_strieq(norm, nlen, NW_TUNNEL_PATH))
        why = "the reserved tunnel path in another spelling";
    else if (offers_natwrp(h))
        /* A tunnel handshake (an agent whose REMOTE_URL has a path) must
         * never reach a local service: it carries the agent's CONN_TOKEN. */
        why = "a natwrp.* subprotocol outside the tunnel path";
    for (i = 0; i < h->n && !why; i++) {
        nw_hf_get(h, i, &f);
        if (cgi_eq(f.name, f.name_len, "x-natwrp-", 1))
            why = "an X-Natwrp-* field outside the tunnel path";
    }
    return why;
}

static int on_headers_complete(llhttp_t *p) {
    pconn_t *pc = p->data;
    nw_hfields_t *h = &pc->hf;
    const char *target;
    size_t tlen, plen;
    int form, has_body, status, end;
    char small[3 * 512], *pathbuf;
    const char *why;

    pc->minor = p->http_major == 1 && p->http_minor >= 1;
    pc->keep_alive = llhttp_should_keep_alive(p) ? 1 : 0;
    pc->is_head = p->method == HTTP_HEAD;
    /* CONNECT asks for a raw tunnel to a host of the client's choice, in
     * any target form: never ours to give. */
    if (p->method == HTTP_CONNECT)
        return pc_fail(p, 501);
    /* llhttp also takes "HTTP/0.9" and "HTTP/2.0" in an HTTP/1 request
     * line; their framing and Host rules are not 1.x's (RFC 9112 2.3). */
    if (p->http_major != 1 || p->http_minor > 1)
        return pc_refuse(p, 505, "HTTP version other than 1.0 and 1.1");
    form = nw_http_origin_form(h->raw.p ? h->raw.p : "", h->first_len, &target, &tlen);
    if (form < 0)
        return pc_refuse(p, 400, "request target neither origin nor absolute form");
    if (tlen == 1 && target[0] == '*' && p->method != HTTP_OPTIONS) /* RFC 9112 3.2.4 */
        return pc_refuse(p, 400, "asterisk-form target with a method other than OPTIONS");
    if (pc->minor && nw_hf_find(h, "host", 0) < 0) /* RFC 9112 3.2 */
        return pc_refuse(p, 400, "HTTP/1.1 request without Host");
    if (nw_hf_find(h, "host", (size_t)nw_hf_find(h, "host", 0) + 1) >= 0)
        return pc_refuse(p, 400, "more than one Host");
    if ((why = pc_fields_why(pc)) != NULL)
        return pc_refuse(p, 400, why);
    for (plen = 0; plen < tlen && target[plen] != '?'; plen++)
        ;
    if (form == 0 && nw_strieq(target, plen, NW_TUNNEL_PATH)) {
        pc->tunnel = 1;
        return 2; /* no body; execute returns HPE_PAUSED_UPGRADE */
    }
    has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
    end = !has_body;
    if (pc->srv->draining)
        pc->keep_alive = 0; /* answer this one, then close */
    pc->req_body = has_body != 0;
    if (p->upgrade && ((p->flags & F_CHUNKED) || upgrade_to_http(h))) {
        /* The agent forwards an upgrade's body unframed, by its
         * Content-Length; a chunked one would reach the service with no
         * length, its bytes read as whatever follows. An upgrade to HTTP
         * (h2c) would carry requests serve never checks. RFC 9110 7.8 lets
         * a server ignore Upgrade: this is a plain request. */
        p->upgrade = 0;
    } else if (p->upgrade) {
        /* WebSocket, h2c, ...: forwarded with its Upgrade header and its
         * body (Content-Length). What the client sends after that goes raw
         * into the stream once the service answers 101 (pc_up_in); any
         * other answer is relayed and ends the connection. */
        pc->upgrade = 1;
        pc->keep_alive = 0;
        end = 0;
    }
    pc->end_at_open = end;
    pc->tries = 0;
    /* The target goes on as the client sent it: its escapes and slashes
     * may mean something to the service (a%2Fb is not a/b). The access rule
     * sees both readings, and a target that climbs never leaves. */
    pathbuf = 3 * (tlen + 2) <= sizeof(small) ? small : nw_malloc(3 * (tlen + 2));
    if (!pathbuf)
        return pc_fail(p, 503);
    why = pc_screen(pc, target, tlen, pathbuf);
    status = !why && !pc_auth(pc, target, tlen, pathbuf, pathbuf + tlen + 2) ? 401 : 0;
    if (pathbuf != small)
        nw_free(pathbuf);
    if (why)
        return pc_refuse(p, 400, why);
    if (status == 0)
        status = pc_dispatch(pc);
    if (status == 1) {
        /* Queued: hold the parser (and the body) until a slot frees. */
        pc->hold_parser = 1;
        return HPE_PAUSED;
    }
    if (!pc->upgrade && (status == 503 || status == 502 || status == 401)) {
        /* Read and drop a small body so the connection can be kept. (An
         * upgrade request is answered at once: what follows it is not
         * HTTP.) */
        if (!has_body || (!(p->flags & F_CHUNKED) && p->content_length <= DISCARD_MAX)) {
            pc->defer_status = status;
            return 0;
        }
    }
    if (status) /* logged where it was decided (pc_auth, pc_dispatch) */
        return pc_refuse(p, status, "");
    pc_sent(pc);
    return pc->upgrade && !has_body ? 2 : 0; /* a body is parsed, then HPE_PAUSED_UPGRADE */
}

/* At the last chunk, pause: pc_feed scans the trailer section as it does a
 * head (llhttp takes a bare LF or an obs-fold there as well), since it
 * decides where the message ends. */
static int on_chunk_header(llhttp_t *p) {
    pconn_t *pc = p->data;
    pc->chunk_left = p->content_length;
    if (p->content_length)
        return 0;
    pc->trailers = 1;
    return HPE_PAUSED;
}

/* llhttp 8 takes any two bytes after chunk data as its CRLF: check them. */
static int crlf_after_chunk(pconn_t *pc, const char *q, size_t avail) {
    static const char crlf[] = "\r\n";
    while (pc->crlf_check && avail) {
        if (*q != crlf[2 - pc->crlf_check])
            return -1;
        q++, avail--, pc->crlf_check--;
    }
    return 0;
}

static int pc_chunk_data(pconn_t *pc, const char *at, size_t n) {
    pc->chunk_left -= NW_MIN(pc->chunk_left, n);
    if (pc->chunk_left)
        return 0;
    pc->crlf_check = 2;
    return crlf_after_chunk(pc, at + n, (size_t)(pc->feed_end - (at + n)));
}

/* Send the request body bytes gathered from this read (and the end, with
 * end) as one piece. llhttp hands a chunked body over chunk by chunk: a
 * client sending 1-byte chunks made a DATA frame, and while the tunnel was
 * congested a queue entry, per byte (32 such uploads on one tunnel whose
 * agent did not read: +49 MB). 0, or a negative error. */
static int pc_send_body(pconn_t *pc, int end) {
    int rc = 0;
    if (pc->strm && (pc->body_acc.len || end)) {
        rc = nw_strm_send(pc->strm, pc->body_acc.p, pc->body_acc.len, end);
        if (rc == 1 && pc->conn)
            nw_conn_pause(pc->conn, NW_PAUSE_CREDIT);
    }
    pc->body_acc.len = 0;
    if (pc->body_acc.cap > 65536)
        nw_sbuf_free(&pc->body_acc); /* at most one read is ever held */
    return rc < 0 ? rc : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
    pconn_t *pc = p->data;
    if ((p->flags & F_CHUNKED) && pc_chunk_data(pc, at, n) != 0)
        return pc_refuse(p, 400, "no CRLF after chunk data");
    if (!pc->strm)
        return 0; /* the response already ended or failed: drop */
    pc->body_started = 1;
    if (nw_sbuf_append(&pc->body_acc, at, n) != 0)
        return pc_refuse(p, 502, "the request body could not go into its stream");
    return 0;
}

static int on_message_complete(llhttp_t *p) {
    pconn_t *pc = p->data;
    pc->req_done = 1;
    pc->trailers = 0;
    pc->scanning = 1; /* what follows is the next request's head */
    nw_headscan_init(&pc->scan);
    /* The body's timer (if any) ends here; the response's starts. */
    if (pc->strm && pc->state == PC_WAIT)
        pc_arm(pc, pc->srv->cfg->response_timeout_ms);
    else if (pc->strm && pc->state == PC_STREAM && !pc->piped)
        uv_timer_stop(&pc->timer);
    if (pc->tunnel || pc->upgrade) {
        /* llhttp goes on to HPE_PAUSED_UPGRADE; the body goes first. */
        if (pc_send_body(pc, 0) < 0)
            return pc_refuse(p, 502, "the request body could not go into its stream");
        return 0;
    }
    if (pc->strm) {
        int rc = pc_send_body(pc, 1);
        if (rc < 0 && rc != NW_ECLOSED)
            return pc_refuse(p, 502, "the request body could not go into its stream");
    }
    pc->body_acc.len = 0;
    return HPE_PAUSED; /* hold pipelined requests until this one is answered */
}

static const char *status_msg(int status) {
    switch (status) {
    case 431: return "request header fields too large";
    case 414: return "request target too long";
    case 501: return "method not implemented";
    case 505: return "HTTP version not supported (use HTTP/1.1)";
    case 503: return "no agent is connected to this server";
    case 401: return "unauthorized: this path needs the access token (X-Auth-Token)";
    case 502: return "could not forward the request";
    default: return "malformed request";
    }
}

/* A parse error: answer it (if no response has started) and close. */
static void pc_parse_error(pconn_t *pc) {
    int status = pc->err_status ? pc->err_status : 400;
    const char *why = pc->err_status ? pc->err_why : llhttp_get_error_reason(&pc->parser);
    if (!why || *why) /* "": the caller logged it (pc_refuse) */
        nw_info("conn=%llu client=%s %s: %d (%s)", (unsigned long long)pc->id,
                pc->conn ? pc->conn->peer : "-", status < 500 ? "bad request" : "refused",
                status, why ? why : nw_http_reason(status));
    pc->err_status = status;
    if (pc->head_sent) {
        pc_close(pc);
        return;
    }
    if (pc->strm) /* the request body broke mid-stream */
        status = 400;
    pc_reply(pc, status, pc->strm ? "malformed request body" : status_msg(status));
}

/* Parse client bytes. data == NULL means: parse the pipeline buffer. The
 * loop (not recursion) handles many pipelined requests answered at once. */
static void pc_feed(pconn_t *pc, const char *data, size_t len) {
    nw_sbuf_t cur = {0};
    llhttp_errno_t e;
    const char *pos;
    size_t off;

    if (!data) {
        cur = pc->pipeline;
        memset(&pc->pipeline, 0, sizeof(pc->pipeline));
        data = cur.p;
        len = cur.len;
    }
    for (;;) {
        size_t used;
        if (pc->scanning && nw_headscan(&pc->scan, data, len, &used) != 0) {
            if (pc->scan.why) {
                nw_info("conn=%llu client=%s bad request: 400 (%s%s)", (unsigned long long)pc->id,
                        pc->conn ? pc->conn->peer : "-", pc->scan.why,
                        pc->trailers ? ", in the trailer section" : "");
                pc->err_status = 400;
                if (pc->trailers && pc->strm) {
                    nw_strm_detach(pc->strm, NW_RST_CANCEL);
                    pc->strm = NULL;
                }
                if (pc->trailers && pc->head_sent)
                    pc_close(pc);
                else
                    pc_reply(pc, 400, pc->trailers ? "malformed request body" : "malformed request");
                break;
            }
            pc->scanning = 0; /* the head ends in these bytes */
        }
        if (pc->crlf_check && crlf_after_chunk(pc, data, len) != 0) {
            nw_info("conn=%llu client=%s bad request: 400 (no CRLF after chunk data)",
                    (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-");
            pc->err_status = 400;
            if (pc->strm) {
                nw_strm_detach(pc->strm, NW_RST_CANCEL);
                pc->strm = NULL;
            }
            if (pc->head_sent)
                pc_close(pc);
            else
                pc_reply(pc, 400, "malformed request body");
            break;
        }
        pc->feed_end = data + len;
        pc->in_feed = 1;
        e = llhttp_execute(&pc->parser, data, len);
        pc->in_feed = 0;
        if (pc->body_acc.len && pc_send_body(pc, 0) < 0) {
            pc_close(pc);
            break;
        }
        if (pc->state == PC_CLOSED || pc->state == PC_LINGER || e == HPE_OK)
            break;
        pos = llhttp_get_error_pos(&pc->parser);
        off = pos && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
        if (e == HPE_PAUSED && pc->trailers && !pc->req_done) {
            llhttp_resume(&pc->parser);
            pc->scanning = 1;
            nw_headscan_init(&pc->scan);
            pc->scan.line = 1; /* no request line: an empty line ends it */
            data += off;
            len -= off;
            continue;
        }
        if (pc->tunnel && (e == HPE_PAUSED_UPGRADE || e == HPE_PAUSED)) {
            pc_take_over(pc, data + off, len - off);
            break;
        }
        if (e == HPE_PAUSED_UPGRADE) {
            /* From here on the client's bytes are the pipe's, once the
             * service has accepted the upgrade (see pc_up_in). */
            pc->req_done = 1;
            pc->scanning = 0;
            if (off < len)
                pc_up_in(pc, data + off, len - off);
            break;
        }
        if (e != HPE_PAUSED) {
            pc_parse_error(pc);
            break;
        }
        /* A request is complete; hold what follows until it is answered. */
        pc->paused = 1;
        if (off < len && nw_sbuf_append(&pc->pipeline, data + off, len - off) != 0) {
            pc_close(pc);
            break;
        }
        if (pc->defer_status) {
            int st = pc->defer_status;
            pc->defer_status = 0;
            pc->in_feed = 1; /* pc_response_done must not re-enter */
            pc_reply(pc, st, status_msg(st));
            pc->in_feed = 0;
        }
        if (!pc->again)
            break;
        pc->again = 0;
        if (pc->state == PC_CLOSED || pc->state == PC_LINGER)
            break;
        nw_sbuf_free(&cur);
        cur = pc->pipeline;
        memset(&pc->pipeline, 0, sizeof(pc->pipeline));
        data = cur.p ? cur.p : "";
        len = cur.len;
        if (pc->conn)
            nw_conn_resume(pc->conn, NW_PAUSE_PIPELINE);
    }
    nw_sbuf_free(&cur);
    if (pc->conn && pc->pipeline.len > PIPELINE_MAX)
        nw_conn_pause(pc->conn, NW_PAUSE_PIPELINE);
}

/* ------------------------------------------------------ pconn lifecycle */

static void srv_check_drained(serve_t *srv);

static void pc_maybe_free(pconn_t *pc) {
    serve_t *srv = pc->srv;
    if (--pc->handles > 0)
        return;
    if (pc->counted) {
        srv->npconns--;
        nw_trimmer_load(&srv->trim, srv->npconns);
    }
    if (pc->prev)
        pc->prev->next = pc->next;
    else
        pc->srv->pconns = pc->next;
    if (pc->next)
        pc->next->prev = pc->prev;
    nw_hf_free(&pc->hf);
    nw_sbuf_free(&pc->pipeline);
    nw_sbuf_free(&pc->out_pend);
    nw_sbuf_free(&pc->body_acc);
    nw_free(pc);
    srv_check_drained(srv);
}

static void pc_on_conn_close(nw_conn_t *c) {
    pconn_t *pc = c->data;
    pc->conn = NULL;
    if (pc->state != PC_CLOSED)
        pc_close(pc); /* closed from below (a finished pipe): close the timer too */
    pc_maybe_free(pc);
}

static void pc_on_timer_close(uv_handle_t *h) { pc_maybe_free(h->data); }

/* Close now (cuts any response in progress). */
static void pc_close(pconn_t *pc) {
    if (pc->state == PC_CLOSED)
        return;
    wq_remove(pc);
    heads_unlink(pc);
    nw_sbuf_free(&pc->head_out);
    pc->state = PC_CLOSED;
    if (pc->strm) {
        nw_strm_detach(pc->strm, NW_RST_CANCEL);
        pc->strm = NULL;
    }
    uv_close((uv_handle_t *)&pc->timer, pc_on_timer_close);
    if (pc->conn)
        nw_conn_close(pc->conn);
}

/* No step forward on a request body for --body-timeout: the stream holds
 * a slot (and the service a connection) for nothing. Reset it end to end
 * (the agent drops its local connection) and close. Reading paused for
 * credit means the service, not the client, stopped. */
static void pc_body_timeout(pconn_t *pc) {
    int svc = pc->conn && (pc->conn->pause & NW_PAUSE_CREDIT);
    int status = svc ? 504 : 408;
    nw_warn("conn=%llu client=%s agent=%s strm=%u request body made no progress for %llu ms "
            "(%s): %s",
            (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-", pc->strm->tun->agent,
            pc->strm->sid, (unsigned long long)pc->srv->cfg->body_timeout_ms,
            svc ? "the local service stopped reading it" : "the client stopped sending it",
            pc->head_sent ? "reset, closing" : svc ? "reset, 504" : "reset, 408");
    nw_strm_detach(pc->strm, NW_RST_TIMEOUT);
    pc->strm = NULL;
    pc->keep_alive = 0;
    if (pc->head_sent)
        pc_close(pc);
    else
        pc_reply(pc, status, svc ? "the local service stopped reading the request body"
                                 : "request body not received in time");
}

static void pc_on_timer(uv_timer_t *h) {
    pconn_t *pc = h->data;
    if (pc_body_waiting(pc)) {
        pc_body_timeout(pc);
        return;
    }
    switch (pc->state) {
    case PC_HEAD:
        nw_info("conn=%llu client=%s request head not received in time: 408",
                (unsigned long long)pc->id, pc->conn->peer);
        pc_reply(pc, 408, "request head not received in time");
        break;
    case PC_QUEUED:
        wq_remove(pc);
        pc->keep_alive = 0;
        if (reg_usable(pc->srv)) {
            nw_warn("conn=%llu client=%s every tunnel stayed at --max-streams (%u) for %llu ms: "
                    "503",
                    (unsigned long long)pc->id, pc->conn->peer, pc->srv->cfg->max_streams,
                    (unsigned long long)pc->srv->cfg->queue_timeout_ms);
            pc_reply(pc, 503, "every tunnel is busy; try again");
        } else {
            nw_warn("conn=%llu client=%s no agent connected within %llu ms: 503",
                    (unsigned long long)pc->id, pc->conn->peer,
                    (unsigned long long)pc->srv->cfg->queue_timeout_ms);
            pc_reply(pc, 503, "no agent is connected to this server");
        }
        break;
    case PC_WAIT:
        nw_warn("conn=%llu client=%s agent=%s strm=%u no response head within %llu ms: 504",
                (unsigned long long)pc->id, pc->conn->peer, pc->strm ? pc->strm->tun->agent : "-",
                pc->strm ? pc->strm->sid : 0,
                (unsigned long long)pc->srv->cfg->response_timeout_ms);
        if (pc->strm) {
            nw_strm_detach(pc->strm, NW_RST_TIMEOUT);
            pc->strm = NULL;
        }
        pc_reply(pc, 504, "no response from the local service in time");
        break;
    case PC_STREAM: /* pc_send_timer */
        nw_warn("conn=%llu client=%s agent=%s strm=%u the client took none of the response for "
                "%llu ms: closing",
                (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-",
                pc->strm ? pc->strm->tun->agent : "-", pc->strm ? pc->strm->sid : 0,
                (unsigned long long)pc->srv->cfg->body_timeout_ms);
        pc_close(pc);
        break;
    default: /* idle keep-alive or lingering: just close */
        pc_close(pc);
        break;
    }
}

static void pc_on_read(nw_conn_t *c, ssize_t nread, const char *buf) {
    pconn_t *pc = c->data;
    if (pc->upgrade && pc->req_done && pc->state != PC_LINGER && pc->state != PC_CLOSED) {
        if (nread < 0 && nread != UV_EOF) {
            pc_close(pc);
            return;
        }
        pc_up_in(pc, nread < 0 ? NULL : buf, nread < 0 ? 0 : (size_t)nread);
        return;
    }
    if (nread < 0) {
        if (nread == NW_ETLS)
            nw_info("conn=%llu client=%s tls: handshake failed: %s", (unsigned long long)pc->id,
                    c->peer, nw_conn_tls_error(c));
        if (pc->strm)
            nw_info("conn=%llu client=%s strm=%u client went away: %s", (unsigned long long)pc->id,
                    c->peer, pc->strm->sid, nw_strerror((int)nread));
        pc_close(pc);
        return;
    }
    if (pc->state == PC_LINGER)
        return; /* discard */
    if (pc_body_waiting(pc))
        pc_arm(pc, pc->srv->cfg->body_timeout_ms); /* the body moves */
    if (pc->paused) {
        /* Still answering the previous request: keep reading (so a client
         * that leaves is noticed) but only hold a bounded amount. */
        if (nw_sbuf_append(&pc->pipeline, buf, (size_t)nread) != 0) {
            pc_close(pc);
            return;
        }
        if (pc->pipeline.len > PIPELINE_MAX)
            nw_conn_pause(c, NW_PAUSE_PIPELINE);
        return;
    }
    pc_feed(pc, buf, (size_t)nread);
}

/* An upgrade request's bytes after its head and body (NULL: the client's
 * EOF). They leave serve only once the local service has accepted the
 * upgrade with 101: a service that answers normally and keeps reading
 * would otherwise run them as a request we never checked. Until then they
 * are held (reading stops past PIPELINE_MAX); after another answer they are
 * dropped and the connection closes after it. */
static void pc_up_in(pconn_t *pc, const char *p, size_t n) {
    if (pc->piped) {
        pc_pipe_in(pc, p, n);
        return;
    }
    if (!pc->strm && !pc->head_sent) {
        if (!p)
            pc_close(pc); /* nothing will answer it */
        return;
    }
    if (pc->head_sent) {
        if (!p) /* refused: let the response finish */
            nw_conn_pause(pc->conn, NW_PAUSE_DONE);
        return;
    }
    if (!p) {
        pc->held_eof = 1;
        nw_conn_pause(pc->conn, NW_PAUSE_DONE);
        return;
    }
    if (nw_sbuf_append(&pc->pipeline, p, n) != 0) {
        pc_close(pc);
        return;
    }
    if (pc->pipeline.len > PIPELINE_MAX)
        nw_conn_pause(pc->conn, NW_PAUSE_PIPELINE);
}

/* A switched stream's raw bytes from the client (NULL: its EOF) go into
 * the stream as they come; flow control pauses reading as for bodies. */
static void pc_pipe_in(pconn_t *pc, const char *p, size_t n) {
    int rc;
    if (!pc->strm) {
        if (!p)
            pc_close(pc); /* nothing to carry it any more */
        return;
    }
    if (!p) {
        pc->in_eof = 1;
        nw_conn_pause(pc->conn, NW_PAUSE_DONE);
    }
    rc = nw_strm_send(pc->strm, p, n, p == NULL);
    if (rc < 0) {
        pc_close(pc);
        return;
    }
    if (rc == 1)
        nw_conn_pause(pc->conn, NW_PAUSE_CREDIT);
    if (!p)
        pc_pipe_done(pc);
}

/* Both sides of a pipe ended: let the last bytes out, then close. */
static void pc_pipe_done(pconn_t *pc) {
    if (!pc->in_eof || !pc->out_eof || pc->state == PC_CLOSED || pc->state == PC_LINGER)
        return;
    wq_remove(pc);
    pc->state = PC_LINGER; /* the timer bounds a client that stopped reading */
    if (pc->strm) {
        nw_strm_detach(pc->strm, 0);
        pc->strm = NULL;
    }
    pc_arm(pc, LINGER_MS);
    if (pc->conn)
        nw_conn_close_after_flush(pc->conn); /* pc_on_conn_close ends the pconn */
}

static void pc_on_written(nw_conn_t *c, size_t credit) {
    pconn_t *pc = c->data;
    pc->body_inflight -= credit;
    if (pc->stale_credit >= credit) {
        pc->stale_credit -= credit; /* belonged to a finished stream */
    } else {
        credit -= pc->stale_credit;
        pc->stale_credit = 0;
        if (pc->strm)
            nw_strm_consumed(pc->strm, credit);
    }
    if (pc->out_pend.len && !c->wbytes && pc_flush_body(pc) != 0) {
        pc_close(pc);
        return;
    }
    if (pc->state == PC_STREAM) {
        /* The client took bytes: a step forward for the send timer. */
        if (c->wbytes)
            pc_arm(pc, pc->srv->cfg->body_timeout_ms);
        else
            pc_send_timer(pc);
    }
    if (pc->out_wait && pc->state == PC_IDLE) {
        pc_arm(pc, pc->srv->cfg->idle_timeout_ms); /* the client reads: not idle */
        if (c->wbytes <= OUT_MAX / 2) {
            pc->out_wait = 0;
            pc_unpause(pc);
        }
    }
}

/* A new public connection: from the listener (server) or, while a drain
 * starts, a socket already accepted by hand (fd >= 0). */
static void pc_accept(serve_t *srv, uv_stream_t *server, int fd, int tls) {
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
            pc->state = PC_IDLE;
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
    pc->state = PC_IDLE;
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

/* ---------------------------------------------------------------- main */

/* Bind with SO_REUSEPORT so that a new serve process can listen on the
 * same port before this one drains away (rolling restart; Linux allows it
 * only between processes of the same user). libuv 1.44 has no flag for
 * it, so the socket is made here and handed over with uv_tcp_open. */
static int bind_reuseport(uv_tcp_t *h, const struct sockaddr *sa) {
    int one = 1, fd, rc;
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, sa, len) != 0) {
        rc = uv_translate_sys_error(errno);
        close(fd);
        return rc;
    }
    rc = uv_tcp_open(h, fd);
    if (rc != 0)
        close(fd);
    return rc;
}

static int listen_on(serve_t *srv, uv_tcp_t *h, const struct sockaddr *sa) {
    int rc;
    uv_tcp_init(srv->loop, h);
    h->data = srv;
    rc = bind_reuseport(h, sa);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)h, 1024, on_connection);
    if (rc != 0)
        uv_close((uv_handle_t *)h, NULL);
    return rc;
}

static int listen_one(serve_t *srv, const nw_listen_t *l) {
    uv_tcp_t *h = &srv->listeners[srv->nlisteners];
    struct sockaddr_storage ss;
    char name[INET6_ADDRSTRLEN];
    int len = sizeof(ss), rc;

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
    rc = listen_on(srv, h, (struct sockaddr *)&ss);
    if (rc != 0 && !l->host[0]) {
        /* No IPv6 here: fall back to every IPv4 interface. */
        uv_ip4_addr("0.0.0.0", l->port, (struct sockaddr_in *)&ss);
        rc = listen_on(srv, h, (struct sockaddr *)&ss);
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

static void on_walk_close(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* SIGHUP: load the pair again. New handshakes use the new one; live
 * sessions keep theirs (the configuration is reference-counted). */
static void on_sighup(uv_signal_t *h, int signum) {
    serve_t *srv = h->data;
    char err[NW_TLS_ERRLEN];
    nw_tls_conf_t *c;
    (void)signum;
    if (!srv->cfg->tls_cert[0]) {
        nw_info("received SIGHUP: no certificate configured, nothing to reload");
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

/* Close everything now: listeners, tunnels (their streams are cut),
 * public connections, then the handles that keep the loop alive. */
static void srv_stop(serve_t *srv) {
    pconn_t *pc;
    int i;
    if (srv->stopping)
        return;
    srv->stopping = 1;
    for (i = 0; i < srv->nlisteners; i++)
        uv_close((uv_handle_t *)&srv->listeners[i], NULL);
    srv->nlisteners = 0;
    for (pc = srv->pconns; pc; pc = pc->next) {
        /* A request that has had no answer yet gets one, not zero bytes. */
        if (!pc->head_sent && (pc->state == PC_QUEUED || pc->state == PC_WAIT) && pc->conn) {
            nw_warn("conn=%llu client=%s no response before the server stopped: 503",
                    (unsigned long long)pc->id, pc->conn->peer);
            pc->keep_alive = 0;
            pc_reply(pc, 503, "the server is shutting down");
        }
    }
    while (srv->ntuns)
        nw_tun_close(srv->tuns[0], NW_ECLOSED); /* removes itself */
    for (pc = srv->pconns; pc; pc = pc->next)
        pc_close(pc);
    for (i = 0; i < 3; i++)
        uv_close((uv_handle_t *)&srv->sig[i], NULL);
    uv_close((uv_handle_t *)&srv->grace, NULL);
    uv_close((uv_handle_t *)&srv->wq_check, NULL);
    uv_close((uv_handle_t *)&srv->heads_idle, NULL);
}

/* Draining ends when the last public connection is gone. */
static void srv_check_drained(serve_t *srv) {
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

int nw_serve_main(int argc, char **argv) {
    nw_serve_cfg_t cfg;
    char err[NW_CFG_ERRLEN];
    serve_t *srv;
    uv_loop_t loop;
    int rc, i;

    rc = nw_cfg_serve(argc, argv, &cfg, err, sizeof(err));
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "natwrp serve: %s\n", err);
        return 2;
    }
    nw_log_level = cfg.log_level;
    llhttp_settings_init(&pc_settings);
    pc_settings.on_message_begin = on_message_begin;
    pc_settings.on_url = on_url;
    pc_settings.on_header_field = on_hname;
    pc_settings.on_header_value = on_hvalue;
    pc_settings.on_headers_complete = on_headers_complete;
    pc_settings.on_body = on_body;
    pc_settings.on_chunk_header = on_chunk_header;
    pc_settings.on_message_complete = on_message_complete;

    srv = nw_calloc(1, sizeof(*srv));
    if (!srv)
        return 1;
    /* cfg checked that both compile. */
    if (cfg.allow_agent[0] && regcomp(&srv->allow_re, cfg.allow_agent, REG_EXTENDED | REG_NOSUB) == 0)
        srv->has_allow = 1;
    /* AUTH_RULE matches in any case: Express and ASP.NET route /PRIVATE as
     * /private by default, so a case-sensitive rule would let it through.
     * (Wider matching only ever asks for the token more often.) */
    if (cfg.auth_rule[0] &&
        regcomp(&srv->auth_re, cfg.auth_rule, REG_EXTENDED | REG_NOSUB | REG_ICASE) == 0)
        srv->has_auth_rule = 1;
    uv_loop_init(&loop);
    srv->loop = &loop;
    srv->cfg = &cfg;
    rc = 0;
    if (cfg.tls_cert[0]) {
        char terr[NW_TLS_ERRLEN];
        srv->tls = nw_tls_conf_server(cfg.tls_cert, cfg.tls_key, terr, sizeof(terr));
        if (!srv->tls) {
            fprintf(stderr, "natwrp serve: %s\n", terr);
            uv_loop_close(&loop);
            if (srv->has_allow)
                regfree(&srv->allow_re);
            if (srv->has_auth_rule)
                regfree(&srv->auth_re);
            nw_free(srv);
            return 2;
        }
    }
    uv_timer_init(&loop, &srv->grace);
    srv->grace.data = srv;
    uv_check_init(&loop, &srv->wq_check);
    srv->wq_check.data = srv;
    uv_idle_init(&loop, &srv->heads_idle);
    srv->heads_idle.data = srv;
    nw_trimmer_start(&loop, &srv->trim);
    for (i = 0; i < cfg.nlisten && rc == 0; i++)
        rc = listen_one(srv, &cfg.listen[i]);
    if (rc == 0 && !cfg.conn_token[0])
        nw_warn("no CONN_TOKEN: any agent may register a tunnel and receive requests; "
                "set CONN_TOKEN (or --conn-token) here and on your agents to stop it");
    if (rc == 0) {
        for (i = 0; i < 3; i++) {
            uv_signal_init(&loop, &srv->sig[i]);
            srv->sig[i].data = srv;
        }
        uv_signal_start(&srv->sig[0], on_signal, SIGINT);
        uv_signal_start(&srv->sig[1], on_signal, SIGTERM);
        uv_signal_start(&srv->sig[2], on_sighup, SIGHUP);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_walk(&loop, on_walk_close, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        nw_err("event loop closed with handles still open");
    if (srv->tls)
        nw_tls_conf_unref(srv->tls);
    if (srv->has_allow)
        regfree(&srv->allow_re);
    if (srv->has_auth_rule)
        regfree(&srv->auth_re);
    nw_free(srv);
    return rc == 0 ? 0 : 2; /* only a listener that could not be set up fails here */
}
