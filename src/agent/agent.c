/* agent.c: `natwrp agent`. Keeps MAX_CONN tunnel slots, each dialling
 * REMOTE_URL and upgrading to a natwrp tunnel, and turns every stream the
 * server opens into one HTTP/1.1 exchange with LOCAL_URL over a bounded
 * pool of keep-alive connections. A slot reconnects with exponential
 * backoff and jitter after any loss, and at once when the server says
 * GOAWAY (the old tunnel finishes its streams meanwhile). */
#include <arpa/inet.h>
#include <errno.h>
#include <llhttp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>

#include "agent.h"
#include "cfg.h"
#include "conn.h"
#include "http1.h"
#include "log.h"
#include "path.h"
#include "tun.h"
#include "ws.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define HEALTHY_MS 60000
#define REFUSAL_BODY_MAX 512
#define REFUSAL_QUOTE_MAX 160 /* body bytes quoted in the refusal log line */
#define MAX_TUNS 256            /* live tunnels: current ones plus retiring ones */

typedef struct agent_s agent_t;
typedef struct lreq_s lreq_t;

/* One tunnel slot: the dial, the handshake, the tunnel, its backoff. */
typedef struct slot_s {
    nw_hfields_t hs_hf; /* first: the shared llhttp head callbacks find it here */
    agent_t *ag;
    char name[140];     /* the tunnel's id: AGENT_ID, or AGENT_ID-k with MAX_CONN > 1 */
    nw_tun_t *tun;
    nw_dial_t *dial;
    nw_conn_t *hs;      /* connection while the handshake runs */
    llhttp_t hs_parser;
    nw_sbuf_t hs_body;
    char hs_key[25];
    int hs_done;
    uv_timer_t timer;   /* backoff, then handshake deadline */
    unsigned attempt;
    uint64_t up_since;
} slot_t;

/* One connection to the local service. */
typedef struct lconn_s {
    nw_hfields_t hf; /* first: the shared llhttp head callbacks find it here */
    agent_t *ag;
    nw_conn_t *conn;
    llhttp_t parser;
    lreq_t *req;
    const char *parse_end; /* end of the bytes being parsed */
    struct lconn_s *next; /* idle pool */
    unsigned reused : 1, got_bytes : 1, interim : 1, idle : 1, done : 1, piped : 1,
        stray : 1; /* bytes followed the response: never pooled */
} lconn_t;

/* One stream's exchange with the local service. */
struct lreq_s {
    agent_t *ag;
    nw_strm_t *strm;
    lconn_t *lc;
    nw_dial_t *dial;
    nw_sbuf_t head;   /* serialized request head, kept for one retry */
    nw_bufq_t early;  /* body that arrived before a connection was ready */
    nw_bufq_t held;   /* upgrade: the client's bytes, held until the service says 101 */
    uint64_t body_left; /* Content-Length (0 for an upgrade without one) not yet received */
    uint64_t wait_since; /* when it joined the wait queue (LOCAL_QUEUE_TIMEOUT) */
    lreq_t *prev, *next;
    lreq_t *wnext;    /* waiting for a local connection slot */
    unsigned req_end : 1, chunked : 1, body_sent : 1, is_head : 1, head_out : 1, resp_head : 1,
        resp_end : 1, retried : 1, admitted : 1, waiting : 1,
        upgrade : 1,  /* the request carries Upgrade: its bytes after the head are raw */
        piped : 1,    /* the local service answered 101: a raw pipe both ways */
        in_eof : 1,   /* piped: the server's side (the client) ended */
        has_cl : 1,   /* OPEN carried Content-Length: body_left bounds the body */
        pipe_slot : 1; /* counted in npipes (an upgrade request or a pipe) */
};

struct agent_s {
    uv_loop_t *loop;
    nw_agent_cfg_t *cfg;
    char remote_str[1400];
    char local_str[1400];
    char host_hdr[300]; /* LOCAL_URL's authority for Host */
    slot_t *slots;
    unsigned nslots;
    nw_tun_t *tuns[MAX_TUNS]; /* every live tunnel, current or retiring */
    size_t ntuns;
    uint64_t tun_seq;
    lconn_t *idle;
    size_t nidle;
    lreq_t *reqs;
    size_t nreqs;
    nw_trimmer_t trim;        /* returns memory after a burst of requests */
    size_t nlocal;            /* requests holding or dialling a local connection */
    size_t npipes;            /* upgrade requests and pipes (MAX_LOCAL_PIPES) */
    lreq_t *wait_head, *wait_tail; /* requests waiting for one, oldest first */
    size_t nwait;
    uv_timer_t qtimer;        /* LOCAL_QUEUE_TIMEOUT of the oldest waiting request */
    int admitting;
    uv_signal_t sig[2];
    uv_timer_t grace;         /* SIGTERM: the deadline for in-flight requests */
    uv_check_t drain;         /* SIGTERM: checks after each I/O whether all is done */
    int stopping;             /* 1 draining, 2 closing everything */
    int drained;              /* draining: every request done, tunnels closing */
    nw_tls_conf_t *remote_tls; /* NULL for http:// */
    nw_tls_conf_t *local_tls;
};

static llhttp_settings_t hs_settings, lc_settings;

static void lreq_free(lreq_t *r);
static void lc_close(lconn_t *lc);
static void lc_abort(lconn_t *lc);
static void lreq_start(lreq_t *r);
static void lreq_admit(lreq_t *r);
static void lreq_done(lreq_t *r);
static void lreq_refuse(lreq_t *r, const char *body, size_t len);
static void admit_waiters(agent_t *ag);

/* ------------------------------------------------------------ backoff */

static void slot_connect(slot_t *sl);
static void agent_check_done(agent_t *ag);

static void on_backoff(uv_timer_t *h) { slot_connect(h->data); }

/* slow: the server refused us for a reason a retry will not fix soon
 * (401/403): wait the full cap, never a tight loop. */
static void schedule_reconnect(slot_t *sl, const char *reason, int slow) {
    agent_t *ag = sl->ag;
    uint64_t now = uv_now(ag->loop), delay;
    unsigned r = 0;
    if (ag->stopping)
        return;
    if (sl->up_since && now - sl->up_since >= HEALTHY_MS)
        sl->attempt = 0; /* it was healthy: start over from the short delay */
    sl->up_since = 0;
    delay = slow ? BACKOFF_MAX_MS : BACKOFF_MIN_MS << NW_MIN(sl->attempt, 6u);
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    nw_random(&r, sizeof(r));
    delay = delay * (80 + r % 41) / 100; /* +-20% so agents do not march in step */
    sl->attempt++;
    nw_warn("tunnel down agent=%s reason=%s; reconnecting in %.2fs (attempt %u)", sl->name,
            reason, (double)delay / 1000.0, sl->attempt);
    uv_timer_start(&sl->timer, on_backoff, delay, 0);
}

/* ------------------------------------------------------ tunnel streams */

static void lreq_fail(lreq_t *r, uint32_t code, const char *why) {
    nw_warn("agent=%s strm=%u local request failed: %s", r->ag->cfg->agent_id,
            r->strm ? r->strm->sid : 0, why);
    if (r->strm) {
        nw_strm_detach(r->strm, code);
        r->strm = NULL;
    }
    if (r->lc) {
        r->lc->req = NULL;
        lc_abort(r->lc);
        r->lc = NULL;
    }
    lreq_free(r);
}

static int lc_write(lconn_t *lc, const void *p, size_t n, size_t credit) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    return nw_conn_write(lc->conn, &b, 1, credit);
}

/* Write body bytes to the local service, chunked when the length is
 * unknown; credit flows back to the server when the write completes. */
static int lreq_write_body(lreq_t *r, const void *p, size_t n, int end) {
    char hdr[32];
    uv_buf_t b[4];
    unsigned k = 0;
    if (n) {
        if (r->chunked) {
            int l = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
            b[k++] = uv_buf_init(hdr, (unsigned)l);
        }
        b[k++] = uv_buf_init((char *)p, (unsigned)n);
        if (r->chunked)
            b[k++] = uv_buf_init("\r\n", 2);
        r->body_sent = 1;
    }
    if (end && r->chunked)
        b[k++] = uv_buf_init("0\r\n\r\n", 5);
    if (k && nw_conn_write(r->lc->conn, b, k, n) != 0)
        return NW_ECLOSED;
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

static void ag_on_data(nw_strm_t *s, const uint8_t *p, size_t len, int end) {
    lreq_t *r = s->data;
    size_t n = len; /* bytes of the request body (or of the pipe) */
    int wend = end;
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

static void ag_on_reset(nw_strm_t *s, uint32_t code) {
    lreq_t *r = s->data;
    if (s->reset_by_peer)
        nw_info("agent=%s strm=%u reset by server (%s): aborting the local request",
                r->ag->cfg->agent_id, s->sid, nw_mux_code_name(code));
    else /* our own reset (the tunnel logged why) or the tunnel went away */
        nw_info("agent=%s strm=%u %s: aborting the local request", r->ag->cfg->agent_id, s->sid,
                code >= NW_RST_TUNNEL_LOST ? "tunnel lost" : nw_mux_code_name(code));
    r->strm = NULL;
    if (r->lc) {
        r->lc->req = NULL;
        lc_abort(r->lc); /* never back to the pool: it is mid-exchange */
        r->lc = NULL;
    }
    lreq_free(r);
}

static void ag_on_drain(nw_strm_t *s) {
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

static void ag_on_open(nw_tun_t *t, nw_strm_t *s, const nw_mux_frame_t *f) {
    agent_t *ag = t->data;
    lreq_t *r;
    size_t i;
    int has_cl = 0;
    uint64_t cl;

    if (!nw_http_token_ok(f->method, f->method_len) || !target_ok(f->target, f->target_len) ||
        !nw_http_fields_ok(f->hdrs, f->nhdrs)) {
        nw_warn("agent=%s strm=%u malformed request head from server", ag->cfg->agent_id, s->sid);
        nw_strm_detach(s, NW_RST_PROTOCOL);
        return;
    }
    r = nw_calloc(1, sizeof(*r));
    if (!r) {
        nw_strm_detach(s, NW_RST_INTERNAL);
        return;
    }
    r->ag = ag;
    r->strm = s;
    s->data = r;
    r->next = ag->reqs;
    if (ag->reqs)
        ag->reqs->prev = r;
    ag->reqs = r;
    nw_trimmer_load(&ag->trim, ++ag->nreqs);
    r->req_end = (f->flags & NW_MUX_F_END) != 0;
    r->is_head = nw_strieq(f->method, f->method_len, "HEAD");
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
    nw_sbuf_appends(&r->head, ag->host_hdr);
    nw_sbuf_append(&r->head, "\r\n", 2);
    for (i = 0; i < f->nhdrs; i++) {
        const nw_hdr_t *h = &f->hdrs[i];
        if (nw_strieq(h->name, h->name_len, "upgrade") && !r->req_end && !r->upgrade) {
            /* An upgrade (WebSocket, h2c): ask the local service for it. */
            r->upgrade = 1;
            nw_sbuf_appends(&r->head, "Connection: Upgrade\r\n");
            nw_sbuf_append(&r->head, "Upgrade: ", 9);
            nw_sbuf_append(&r->head, h->value, h->value_len);
            nw_sbuf_append(&r->head, "\r\n", 2);
            continue;
        }
        if (nw_strieq(h->name, h->name_len, "host") || nw_http_is_hop(h->name, h->name_len))
            continue;
        if (nw_strieq(h->name, h->name_len, "content-length")) {
            if (has_cl || nw_http_parse_cl(h->value, h->value_len, &cl) != 0) {
                lreq_fail(r, NW_RST_PROTOCOL, "bad Content-Length from server");
                return;
            }
            has_cl = 1;
            r->has_cl = 1;
            r->body_left = cl;
        }
        nw_sbuf_append(&r->head, h->name, h->name_len);
        nw_sbuf_append(&r->head, ": ", 2);
        nw_sbuf_append(&r->head, h->value, h->value_len);
        nw_sbuf_append(&r->head, "\r\n", 2);
    }
    if (r->req_end && r->body_left) {
        /* END with a body announced: the service would wait for bytes that
         * never come and, on a reused connection, read the next request's
         * head as them. */
        lreq_fail(r, NW_RST_PROTOCOL, "server ended a request whose Content-Length "
                                      "announces a body");
        return;
    }
    if (!has_cl && !r->req_end && !r->upgrade) {
        r->chunked = 1;
        nw_sbuf_appends(&r->head, "Transfer-Encoding: chunked\r\n");
    }
    if (nw_sbuf_append(&r->head, "\r\n", 2) != 0) {
        lreq_fail(r, NW_RST_INTERNAL, "out of memory");
        return;
    }
    if (r->upgrade) {
        /* Pipes have their own bound and, once up, take no request slot:
         * idle WebSockets never starve plain requests. */
        static const char body[] = "natwrp agent: too many upgraded connections (WebSockets) "
                                   "to the local service; try again\n";
        if (ag->npipes >= ag->cfg->max_pipes) {
            nw_warn("agent=%s strm=%u %zu upgraded connections open (MAX_LOCAL_PIPES): 503",
                    ag->cfg->agent_id, s->sid, ag->npipes);
            lreq_refuse(r, body, sizeof(body) - 1);
            return;
        }
        r->pipe_slot = 1;
        ag->npipes++;
    }
    lreq_admit(r);
}

/* ---------------------------------------------------- local connections */

static void lc_on_conn_close(nw_conn_t *c) {
    lconn_t *lc = c->data;
    nw_hf_free(&lc->hf);
    nw_free(lc);
}

static void pool_remove(agent_t *ag, lconn_t *lc) {
    lconn_t **pp = &ag->idle;
    while (*pp && *pp != lc)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = lc->next;
        ag->nidle--;
    }
    lc->idle = 0;
}

static void lc_close(lconn_t *lc) {
    if (lc->idle)
        pool_remove(lc->ag, lc);
    nw_conn_close(lc->conn);
}

/* Abort mid-exchange: a reset reaches the service even when the request
 * body it never read is still queued in front of a FIN. */
static void lc_abort(lconn_t *lc) {
    if (lc->idle)
        pool_remove(lc->ag, lc);
    nw_conn_abort(lc->conn);
}

/* The exchange finished cleanly: pool the connection if it can be reused. */
static void lreq_done(lreq_t *r) {
    lconn_t *lc = r->lc;
    agent_t *ag = r->ag;
    int reuse = lc && !r->upgrade && llhttp_should_keep_alive(&lc->parser) && r->req_end &&
                !r->early.bytes && lc->conn->wbytes == 0 && !ag->stopping && !lc->stray &&
                !lc->conn->closing;
    if (r->strm) {
        nw_strm_detach(r->strm, 0);
        r->strm = NULL;
    }
    if (lc) {
        lc->req = NULL;
        r->lc = NULL;
        if (r->piped) {
            /* Let the client's last bytes and the half-close reach the
             * service before the connection goes. */
            lc->idle = 0;
            nw_conn_close_after_flush(lc->conn);
        } else if (reuse && ag->nidle < ag->cfg->pool_size) {
            llhttp_init(&lc->parser, HTTP_RESPONSE, &lc_settings);
            lc->parser.data = lc;
            lc->idle = 1;
            lc->reused = 1;
            lc->next = ag->idle;
            ag->idle = lc;
            ag->nidle++;
            nw_conn_resume(lc->conn, NW_PAUSE_CREDIT | NW_PAUSE_DONE);
        } else {
            lc_close(lc);
        }
    }
    lreq_free(r);
}

static int lc_on_message_begin(llhttp_t *p) {
    lconn_t *lc = p->data;
    nw_hf_reset(&lc->hf);
    return 0;
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
        rc = nw_strm_head(r->strm, 101, lc->hf.raw.p ? lc->hf.raw.p : "", lc->hf.first_len, hdrs,
                          (size_t)(n < 0 ? 0 : n + (int)m), 0);
        if (rc != 0)
            return -1;
        r->resp_head = 1;
        r->piped = 1;
        lc->piped = 1;
        return 0;
    }
    if (st < 200) {
        lc->interim = 1; /* 100 Continue and friends stay here */
        return st == 101 ? -1 : 0;
    }
    if (p->flags & F_CHUNKED)
        drop[0] = "content-length";
    n = nw_http_filter(&lc->hf, hdrs, NW_ARRAY_LEN(hdrs), drop);
    end = r->is_head || st == 204 || st == 304 ||
          ((p->flags & F_CONTENT_LENGTH) && p->content_length == 0 && !(p->flags & F_CHUNKED));
    rc = nw_strm_head(r->strm, (uint16_t)st, lc->hf.raw.p ? lc->hf.raw.p : "", lc->hf.first_len,
                      hdrs, (size_t)(n < 0 ? 0 : n), end);
    if (rc != 0) {
        llhttp_set_error_reason(p, rc == NW_ETOOBIG ? "response head too large" : "tunnel");
        return -1;
    }
    r->resp_head = 1;
    r->resp_end = end ? 1 : 0;
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
        lreq_fail(r, strstr(msg, "too large") ? NW_RST_TOOBIG : NW_RST_UPSTREAM, msg);
    }
}

static void lc_on_read(nw_conn_t *c, ssize_t nread, const char *buf) {
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
        if (nread < 0 && nread != UV_EOF)
            lreq_fail(r, NW_RST_UPSTREAM, "local service connection failed mid-pipe");
        else
            lc_pipe_out(lc, nread < 0 ? NULL : buf, nread < 0 ? 0 : (size_t)nread);
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
        lreq_fail(r, NW_RST_UPSTREAM,
                  r->resp_head ? "local service closed mid-response"
                               : "local service closed the connection before responding");
        return;
    }
    lc->got_bytes = 1;
    lc->parse_end = buf + nread;
    e = llhttp_execute(&lc->parser, buf, (size_t)nread);
    lc_after_parse(lc, e);
}

static void lc_on_written(nw_conn_t *c, size_t credit) {
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

static lconn_t *lc_new(agent_t *ag, nw_conn_t *c) {
    lconn_t *lc = nw_calloc(1, sizeof(*lc));
    if (!lc) {
        nw_conn_close(c);
        return NULL;
    }
    lc->ag = ag;
    lc->conn = c;
    nw_hf_init(&lc->hf, ag->cfg->max_head);
    llhttp_init(&lc->parser, HTTP_RESPONSE, &lc_settings);
    lc->parser.data = lc;
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
        lreq_fail(r, NW_RST_CONNECT, msg);
        return;
    }
    if (!(lc = lc_new(r->ag, c))) {
        lreq_fail(r, NW_RST_INTERNAL, "out of memory");
        return;
    }
    lreq_attach(r, lc);
}

/* A pooled connection is usable only if nothing arrived on it since its
 * last response: bytes waiting there (or its EOF) would be read as the
 * next request's response. The read callback closes such connections as
 * soon as it runs, but the OPEN may be handled first in the same turn.
 * Over TLS, bytes can also wait in the TLS layer: part of a record (no
 * plaintext yet, so no read callback), whose rest would come later. */
static int lc_reusable(lconn_t *lc) {
    uv_os_fd_t fd;
    char b;
    ssize_t n;
    if (lc->conn->closing || lc->stray)
        return 0;
    if (nw_conn_input_pending(lc->conn)) {
        nw_warn("agent=%s local service sent bytes on an idle keep-alive connection: closed",
                lc->ag->cfg->agent_id);
        return 0;
    }
    if (uv_fileno((uv_handle_t *)&lc->conn->tcp, &fd) != 0)
        return 0;
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        nw_warn("agent=%s local service sent bytes on an idle keep-alive connection: closed",
                lc->ag->cfg->agent_id);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void lreq_start(lreq_t *r) {
    agent_t *ag = r->ag;
    lconn_t *lc;
    while ((lc = ag->idle) != NULL) {
        pool_remove(ag, lc);
        if (lc_reusable(lc)) {
            lreq_attach(r, lc);
            return;
        }
        lc_close(lc);
    }
    r->dial = nw_dial_start(ag->loop, ag->cfg->local.host, ag->cfg->local.port,
                            ag->cfg->connect_timeout_ms, ag->local_tls, lreq_on_dial, r);
    if (!r->dial)
        lreq_fail(r, NW_RST_INTERNAL, "cannot start a connection");
}

/* Start waiting requests while local connection slots are free. */
static void admit_waiters(agent_t *ag) {
    if (ag->admitting)
        return;
    ag->admitting = 1;
    while (ag->wait_head && ag->nlocal < ag->cfg->max_local) {
        lreq_t *r = ag->wait_head;
        ag->wait_head = r->wnext;
        if (!ag->wait_head)
            ag->wait_tail = NULL;
        ag->nwait--;
        r->waiting = 0;
        r->admitted = 1;
        ag->nlocal++;
        if (!r->strm || nw_tun_closing(r->strm->tun)) {
            /* Its tunnel is going: its reset is on the way; start nothing. */
            continue;
        }
        lreq_start(r);
    }
    ag->admitting = 0;
}

/* Answer r 503 through the tunnel (an ordinary response, not a RST) and
 * free it. */
static void lreq_refuse(lreq_t *r, const char *body, size_t len) {
    char cl[24];
    nw_hdr_t h[3];
    if (r->strm && !nw_tun_closing(r->strm->tun)) {
        snprintf(cl, sizeof(cl), "%zu", len);
        h[0] = (nw_hdr_t){"Content-Type", 12, "text/plain; charset=utf-8", 25};
        h[1] = (nw_hdr_t){"Content-Length", 14, cl, strlen(cl)};
        h[2] = (nw_hdr_t){"Retry-After", 11, "1", 1};
        if (nw_strm_head(r->strm, 503, "Service Unavailable", 19, h, 3, 0) == 0)
            nw_strm_send(r->strm, body, len, 1);
    }
    if (r->strm) {
        nw_strm_detach(r->strm, 0);
        r->strm = NULL;
    }
    lreq_free(r);
}

/* LOCAL_QUEUE_TIMEOUT: requests still waiting for a local connection that
 * long get 503 (the queue is oldest first, so only its head is timed). */
static void on_queue_timeout(uv_timer_t *h) {
    agent_t *ag = h->data;
    static const char body[] = "natwrp agent: the local service is busy; try again\n";
    uint64_t now = uv_now(ag->loop), tmo = ag->cfg->local_queue_timeout_ms;
    while (ag->wait_head && now - ag->wait_head->wait_since >= tmo) {
        lreq_t *r = ag->wait_head;
        nw_warn("agent=%s strm=%u waited %llu ms for one of %zu busy local connections "
                "(LOCAL_QUEUE_TIMEOUT): 503",
                ag->cfg->agent_id, r->strm ? r->strm->sid : 0,
                (unsigned long long)(now - r->wait_since), ag->nlocal);
        lreq_refuse(r, body, sizeof(body) - 1); /* unlinks it from the queue */
    }
    if (ag->wait_head)
        uv_timer_start(&ag->qtimer, on_queue_timeout, ag->wait_head->wait_since + tmo - now, 0);
}

/* At most MAX_LOCAL_CONNS exchanges with the local service at once; up to
 * LOCAL_QUEUE more wait (their bodies are held by the stream's window) for
 * up to LOCAL_QUEUE_TIMEOUT; beyond that the request is answered 503
 * through the tunnel. */
static void lreq_admit(lreq_t *r) {
    agent_t *ag = r->ag;
    static const char body[] = "natwrp agent: too many requests for the local service; "
                               "try again\n";
    if (ag->nlocal < ag->cfg->max_local && !ag->wait_head) {
        r->admitted = 1;
        ag->nlocal++;
        lreq_start(r);
        return;
    }
    if (ag->nwait < ag->cfg->local_queue) {
        r->waiting = 1;
        r->wnext = NULL;
        r->wait_since = uv_now(ag->loop);
        if (ag->wait_tail)
            ag->wait_tail->wnext = r;
        else
            ag->wait_head = r;
        ag->wait_tail = r;
        ag->nwait++;
        if (!uv_is_active((uv_handle_t *)&ag->qtimer))
            uv_timer_start(&ag->qtimer, on_queue_timeout, ag->cfg->local_queue_timeout_ms, 0);
        return;
    }
    nw_warn("agent=%s strm=%u %zu local connections busy and %zu requests waiting: 503",
            ag->cfg->agent_id, r->strm->sid, ag->nlocal, ag->nwait);
    lreq_refuse(r, body, sizeof(body) - 1);
}

static void lreq_free(lreq_t *r) {
    agent_t *ag = r->ag;
    if (r->waiting) {
        lreq_t **pp = &ag->wait_head, *prev = NULL;
        while (*pp && *pp != r)
            prev = *pp, pp = &(*pp)->wnext;
        if (*pp) {
            *pp = r->wnext;
            if (ag->wait_tail == r)
                ag->wait_tail = prev;
            ag->nwait--;
        }
    }
    if (r->admitted)
        ag->nlocal--;
    if (r->pipe_slot)
        ag->npipes--;
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
    nw_bufq_clear(&r->early);
    nw_bufq_clear(&r->held);
    nw_free(r);
    admit_waiters(ag);
    agent_check_done(ag);
}

/* ---------------------------------------------------------- the tunnel */

static void tuns_remove(agent_t *ag, nw_tun_t *t) {
    size_t i;
    for (i = 0; i < ag->ntuns; i++)
        if (ag->tuns[i] == t) {
            ag->tuns[i] = ag->tuns[--ag->ntuns];
            return;
        }
}

static slot_t *slot_of(agent_t *ag, nw_tun_t *t) {
    unsigned i;
    for (i = 0; i < ag->nslots; i++)
        if (ag->slots[i].tun == t)
            return &ag->slots[i];
    return NULL;
}

static void ag_on_tun_close(nw_tun_t *t, int err) {
    agent_t *ag = t->data;
    slot_t *sl = slot_of(ag, t);
    tuns_remove(ag, t);
    if (sl) {
        sl->tun = NULL;
        schedule_reconnect(sl, nw_strerror(err), 0);
    } else {
        nw_info("agent=%s retired tun=%llu closed", t->agent, (unsigned long long)t->id);
    }
    agent_check_done(ag);
}

/* The server is going away (draining for a restart): connect a fresh
 * tunnel now, which lands on whichever process listens on the port,
 * while this one finishes the streams it carries. */
static void ag_on_goaway(nw_tun_t *t, uint32_t last, uint32_t code) {
    agent_t *ag = t->data;
    slot_t *sl = slot_of(ag, t);
    (void)last;
    nw_info("agent=%s server sent GOAWAY (%s) on tun=%llu%s", t->agent, nw_mux_code_name(code),
            (unsigned long long)t->id,
            sl && !ag->stopping ? ": connecting a new tunnel, this one finishes its streams" : "");
    if (!sl || ag->stopping)
        return;
    sl->tun = NULL; /* retiring: stays in ag->tuns until the server closes it */
    sl->attempt = 0;
    sl->up_since = 0;
    slot_connect(sl);
}

static const nw_tun_cbs_t ag_tun_cbs = {ag_on_open,  NULL,         ag_on_data,     ag_on_reset,
                                        ag_on_drain, ag_on_goaway, ag_on_tun_close};

static void hs_fail(slot_t *sl, const char *why, int slow) {
    uv_timer_stop(&sl->timer);
    if (sl->hs) {
        nw_conn_close(sl->hs);
        sl->hs = NULL;
    }
    schedule_reconnect(sl, why, slow);
    agent_check_done(sl->ag);
}

static int hs_on_headers_complete(llhttp_t *p) {
    return p->status_code == 101 ? 2 : 0;
}
static int hs_on_body(llhttp_t *p, const char *at, size_t n) {
    slot_t *sl = p->data;
    if (sl->hs_body.len < REFUSAL_BODY_MAX)
        nw_sbuf_append(&sl->hs_body, at, NW_MIN(n, REFUSAL_BODY_MAX - sl->hs_body.len));
    return 0;
}
static int hs_on_message_complete(llhttp_t *p) {
    if (p->status_code == 101)
        return 0; /* llhttp goes on to HPE_PAUSED_UPGRADE */
    ((slot_t *)p->data)->hs_done = 1;
    return HPE_PAUSED;
}

/* The server answered something other than 101: say what it said, as one
 * printable line. Only a short text/plain body is quoted (natwrp's own
 * refusals are one line); anything else, such as a proxy's HTML error page,
 * is named by its type and size, never pasted into the log. */
static void hs_refused(slot_t *sl) {
    char why[400], body[REFUSAL_QUOTE_MAX + 4];
    size_t i, k = 0, n = sl->hs_body.len;
    unsigned st = sl->hs_parser.status_code;
    const char *b = sl->hs_body.p ? sl->hs_body.p : "";
    nw_hdr_t ct = {0};
    int ci = nw_hf_find(&sl->hs_hf, "content-type", 0), plain;
    if (ci >= 0)
        nw_hf_get(&sl->hs_hf, (size_t)ci, &ct);
    plain = ci < 0 || (ct.value_len >= 10 && nw_strieq(ct.value, 10, "text/plain"));
    while (n && (b[n - 1] == '\n' || b[n - 1] == '\r'))
        n--;
    if (plain && n) {
        for (i = 0; i < n && k < REFUSAL_QUOTE_MAX; i++) {
            char ch = (b[i] > 0x20 && b[i] < 0x7f) ? b[i] : ' ';
            if (ch != ' ' || (k && body[k - 1] != ' '))
                body[k++] = ch; /* runs of blanks and control bytes: one space */
        }
        if (i < n)
            memcpy(body + k, "...", 3), k += 3;
        body[k] = 0;
    } else if (n) {
        snprintf(body, sizeof(body), "(%.*s body, not shown)",
                 (int)NW_MIN(ct.value_len, (size_t)40), ct.value);
    } else {
        body[0] = 0;
    }
    snprintf(why, sizeof(why), "server refused the tunnel: %u %.*s%s%s", st,
             (int)NW_MIN(sl->hs_hf.first_len, (size_t)80), sl->hs_hf.raw.p ? sl->hs_hf.raw.p : "",
             body[0] ? ": " : "", body);
    for (i = 0; why[i]; i++)
        if ((unsigned char)why[i] < 0x20 || (unsigned char)why[i] >= 0x7f)
            why[i] = ' ';
    if (nw_hf_find(&sl->hs_hf, "x-natwrp-version", 0) >= 0)
        nw_err("agent=%s protocol version mismatch with the server (agent speaks " NW_WS_SUBPROTO
               ")", sl->name);
    if (st == 401)
        nw_err("agent=%s unauthorized: check CONN_TOKEN (the server wants the same token; "
               "retrying every %ds)", sl->name, BACKOFF_MAX_MS / 1000);
    if (st == 403)
        nw_err("agent=%s forbidden: the server does not allow this AGENT_ID (--allow-agent)",
               sl->name);
    hs_fail(sl, why, st == 401 || st == 403);
}

static void hs_upgraded(slot_t *sl, const char *rest, size_t rest_len) {
    agent_t *ag = sl->ag;
    nw_hfields_t *h = &sl->hs_hf;
    char expect[29];
    nw_hdr_t f;
    nw_tun_cfg_t tc;
    nw_conn_t *c = sl->hs;
    uint64_t win = 262144;
    int i;

    nw_ws_accept(sl->hs_key, strlen(sl->hs_key), expect);
    i = nw_hf_find(h, "sec-websocket-accept", 0);
    if (i < 0 || (nw_hf_get(h, (size_t)i, &f), !nw_strieq(f.value, f.value_len, expect)) ||
        f.value_len != strlen(expect) || memcmp(f.value, expect, f.value_len) != 0) {
        hs_fail(sl, "bad Sec-WebSocket-Accept from server", 0);
        return;
    }
    i = nw_hf_find(h, "sec-websocket-protocol", 0);
    if (i < 0 || (nw_hf_get(h, (size_t)i, &f), !nw_strieq(f.value, f.value_len, NW_WS_SUBPROTO))) {
        nw_err("agent=%s protocol version mismatch: server did not select " NW_WS_SUBPROTO,
               sl->name);
        hs_fail(sl, "protocol version mismatch", 0);
        return;
    }
    i = nw_hf_find(h, "x-natwrp-window", 0);
    if (i >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        if (nw_http_parse_cl(f.value, f.value_len, &win) != 0 || win < 1024 ||
            win > NW_MUX_MAX_WINDOW) {
            hs_fail(sl, "invalid X-Natwrp-Window from server", 0);
            return;
        }
    }
    uv_timer_stop(&sl->timer);
    sl->hs = NULL;
    if (ag->ntuns == MAX_TUNS) {
        nw_conn_close(c);
        schedule_reconnect(sl, "too many retiring tunnels", 0);
        return;
    }
    tc.my_window = ag->cfg->window;
    tc.peer_window = (uint32_t)win;
    tc.ping_interval_ms = ag->cfg->ping_interval_ms;
    sl->tun = nw_tun_new(ag->loop, c, 1, &tc, &ag_tun_cbs, ag);
    if (!sl->tun) {
        schedule_reconnect(sl, "out of memory", 0);
        return;
    }
    ag->tuns[ag->ntuns++] = sl->tun;
    sl->tun->id = ++ag->tun_seq;
    snprintf(sl->tun->agent, sizeof(sl->tun->agent), "%s", sl->name);
    sl->up_since = uv_now(ag->loop);
    nw_info("tunnel up agent=%s remote=%s tun=%llu", sl->name, ag->remote_str,
            (unsigned long long)sl->tun->id);
    nw_tun_start(sl->tun, rest, rest_len);
}

static void hs_on_read(nw_conn_t *c, ssize_t nread, const char *buf) {
    slot_t *sl = c->data;
    llhttp_errno_t e;
    const char *pos;
    if (nread < 0) {
        if (sl->hs_parser.status_code && sl->hs_parser.status_code != 101 &&
            llhttp_finish(&sl->hs_parser) == HPE_OK) {
            hs_refused(sl);
            return;
        }
        hs_fail(sl, nread == UV_EOF ? "server closed the connection during the handshake"
                                    : nw_strerror((int)nread), 0);
        return;
    }
    e = llhttp_execute(&sl->hs_parser, buf, (size_t)nread);
    if (e == HPE_PAUSED_UPGRADE) {
        pos = llhttp_get_error_pos(&sl->hs_parser);
        hs_upgraded(sl, pos, (size_t)(buf + nread - pos));
    } else if (sl->hs_done) {
        hs_refused(sl);
    } else if (e != HPE_OK) {
        hs_fail(sl, "malformed handshake response from server", 0);
    }
}

static void hs_on_close(nw_conn_t *c) { (void)c; }

static void hs_on_timeout(uv_timer_t *h) { hs_fail(h->data, "handshake timed out", 0); }

static void on_remote_dial(nw_dial_t *d, nw_conn_t *c, int err, void *ud) {
    slot_t *sl = ud;
    agent_t *ag = sl->ag;
    const nw_agent_cfg_t *cfg = ag->cfg;
    nw_sbuf_t req = {0};
    uv_buf_t b;
    char reason[1600];
    int v6 = strchr(cfg->remote.host, ':') != NULL;
    sl->dial = NULL;
    if (!c) {
        snprintf(reason, sizeof(reason), "cannot connect to %s: %s", ag->remote_str,
                 nw_dial_strerror(d));
        schedule_reconnect(sl, reason, 0); /* logs the reason: once per attempt */
        return;
    }
    if (c->tls)
        nw_info("agent=%s tls: connected to %s with %s%s", sl->name, ag->remote_str,
                nw_tls_version(c->tls), cfg->insecure ? " (certificate NOT verified)" : "");
    sl->hs = c;
    nw_conn_set_owner(c, sl, hs_on_read, NULL, hs_on_close);
    nw_hf_reset(&sl->hs_hf);
    nw_sbuf_free(&sl->hs_body);
    sl->hs_done = 0;
    llhttp_init(&sl->hs_parser, HTTP_RESPONSE, &hs_settings);
    sl->hs_parser.data = sl;
    nw_ws_new_key(sl->hs_key);
    /* The token goes in a header, never the URL, to stay out of logs. */
    nw_sbuf_appendf(&req,
                    "GET %s" NW_TUNNEL_PATH " HTTP/1.1\r\nHost: %s%s%s:%u\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Protocol: " NW_WS_SUBPROTO "\r\n"
                    "X-Natwrp-Agent: %s\r\nX-Natwrp-Window: %u\r\n",
                    cfg->remote.path, v6 ? "[" : "", cfg->remote.host, v6 ? "]" : "",
                    cfg->remote.port, sl->hs_key, sl->name, cfg->window);
    if (ag->nslots > 1)
        nw_sbuf_appendf(&req, "X-Natwrp-Group: %s\r\n", cfg->agent_id);
    if (cfg->conn_token[0])
        nw_sbuf_appendf(&req, "Authorization: Bearer %s\r\n", cfg->conn_token);
    nw_sbuf_appends(&req, "User-Agent: natwrp/" NW_VERSION "\r\n\r\n");
    b = uv_buf_init(req.p, (unsigned)req.len);
    if (!req.p || nw_conn_write(c, &b, 1, 0) != 0) {
        nw_sbuf_free(&req);
        hs_fail(sl, "cannot send the handshake", 0);
        return;
    }
    nw_sbuf_free(&req);
    uv_timer_start(&sl->timer, hs_on_timeout, cfg->connect_timeout_ms, 0);
    nw_conn_resume(c, NW_PAUSE_OWNER);
}

static void slot_connect(slot_t *sl) {
    agent_t *ag = sl->ag;
    if (ag->stopping || sl->tun || sl->dial || sl->hs)
        return;
    nw_info("agent=%s connecting to %s", sl->name, ag->remote_str);
    if (ag->remote_tls && ag->cfg->insecure)
        nw_warn("agent=%s tls: TLS_INSECURE is set: the server's certificate is not verified "
                "(insecure; anyone on the path can impersonate the server)",
                sl->name);
    sl->dial = nw_dial_start(ag->loop, ag->cfg->remote.host, ag->cfg->remote.port,
                             ag->cfg->connect_timeout_ms, ag->remote_tls, on_remote_dial, sl);
    if (!sl->dial)
        schedule_reconnect(sl, "cannot start a connection", 0);
}

/* ---------------------------------------------------------------- main */

static void on_walk_close(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Stop a slot's backoff, dial or handshake (its tunnel is left alone). */
static void slot_cancel(slot_t *sl) {
    uv_timer_stop(&sl->timer);
    if (sl->dial) {
        nw_dial_cancel(sl->dial);
        sl->dial = NULL;
    }
    if (sl->hs) {
        nw_conn_close(sl->hs);
        sl->hs = NULL;
    }
}

/* Close everything now; in-flight requests are cut. */
static void agent_stop(agent_t *ag) {
    unsigned i;
    if (ag->stopping == 2)
        return;
    ag->stopping = 2;
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
    uv_close((uv_handle_t *)&ag->grace, NULL);
    uv_close((uv_handle_t *)&ag->drain, NULL);
    uv_close((uv_handle_t *)&ag->qtimer, NULL);
}

/* Draining: done when no request is in flight and every stream's last
 * bytes have left (a tunnel frees a stream once all of it is queued). */
static void agent_check_done(agent_t *ag) {
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
    size_t n = 0;
    lreq_t *r;
    for (r = ag->reqs; r; r = r->next)
        n++;
    nw_warn("agent=%s grace period (%llu ms) over: cutting %zu request(s) still running",
            ag->cfg->agent_id, (unsigned long long)ag->cfg->grace_ms, n);
    agent_stop(ag);
}

/* SIGTERM/SIGINT: stop taking streams (GOAWAY on every tunnel; the server
 * sends new requests elsewhere), finish the ones in flight within GRACE,
 * then exit 0. A second signal stops at once. */
static void on_signal(uv_signal_t *h, int signum) {
    agent_t *ag = h->data;
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    size_t i, n = 0;
    unsigned k;
    lreq_t *r;
    if (ag->stopping) {
        nw_info("agent=%s received %s again: stopping now", ag->cfg->agent_id, name);
        agent_stop(ag);
        return;
    }
    for (r = ag->reqs; r; r = r->next)
        n++;
    nw_info("agent=%s received %s: shutting down (%zu request(s) in flight, grace %llu ms)",
            ag->cfg->agent_id, name, n, (unsigned long long)ag->cfg->grace_ms);
    ag->stopping = 1;
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

int nw_agent_main(int argc, char **argv) {
    nw_agent_cfg_t cfg;
    char err[NW_CFG_ERRLEN];
    agent_t *ag;
    uv_loop_t loop;
    int rc, v6, dflt;
    unsigned k;

    rc = nw_cfg_agent(argc, argv, &cfg, err, sizeof(err));
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "natwrp agent: %s\n", err);
        return 2;
    }
    nw_log_level = cfg.log_level;
    llhttp_settings_init(&hs_settings);
    hs_settings.on_status = nw_http_cb_first;
    hs_settings.on_header_field = nw_http_cb_name;
    hs_settings.on_header_value = nw_http_cb_value;
    hs_settings.on_headers_complete = hs_on_headers_complete;
    hs_settings.on_body = hs_on_body;
    hs_settings.on_message_complete = hs_on_message_complete;
    llhttp_settings_init(&lc_settings);
    lc_settings.on_message_begin = lc_on_message_begin;
    lc_settings.on_status = nw_http_cb_first;
    lc_settings.on_header_field = nw_http_cb_name;
    lc_settings.on_header_value = nw_http_cb_value;
    lc_settings.on_headers_complete = lc_on_headers_complete;
    lc_settings.on_body = lc_on_body;
    lc_settings.on_message_complete = lc_on_message_complete;

    /* Lookups (a host name in REMOTE_URL or LOCAL_URL) are rare; libuv's
     * default of 4 pool threads costs memory for nothing. */
    setenv("UV_THREADPOOL_SIZE", "2", 0);
    ag = nw_calloc(1, sizeof(*ag));
    if (!ag)
        return 1;
    if (cfg.remote.tls &&
        !(ag->remote_tls = nw_tls_conf_client(cfg.ca_file[0] ? cfg.ca_file : NULL, cfg.insecure,
                                              err, sizeof(err)))) {
        fprintf(stderr, "natwrp agent: REMOTE_URL: %s\n", err);
        nw_free(ag);
        return 2;
    }
    if (cfg.local.tls &&
        !(ag->local_tls = nw_tls_conf_client(cfg.local_ca_file[0] ? cfg.local_ca_file : NULL,
                                             cfg.local_insecure, err, sizeof(err)))) {
        fprintf(stderr, "natwrp agent: LOCAL_URL: %s\n", err);
        if (ag->remote_tls)
            nw_tls_conf_unref(ag->remote_tls);
        nw_free(ag);
        return 2;
    }
    if (cfg.conn_token[0] && !cfg.remote.tls && !host_is_loopback(cfg.remote.host))
        nw_warn("agent=%s CONN_TOKEN goes to %s over plain ws://: the token travels in clear "
                "(anyone on the path can read it and open tunnels); use an https:// REMOTE_URL",
                cfg.agent_id, cfg.remote.host);
    if (ag->local_tls && cfg.local_insecure)
        nw_warn("agent=%s tls: LOCAL_INSECURE is set: the local service's certificate is not "
                "verified (insecure)", cfg.agent_id);
    ag->nslots = cfg.max_conn;
    ag->slots = nw_calloc(ag->nslots, sizeof(*ag->slots));
    if (!ag->slots) {
        nw_free(ag);
        return 1;
    }
    uv_loop_init(&loop);
    ag->loop = &loop;
    ag->cfg = &cfg;
    fmt_url(ag->remote_str, sizeof(ag->remote_str), &cfg.remote, cfg.remote.tls ? "wss" : "ws");
    fmt_url(ag->local_str, sizeof(ag->local_str), &cfg.local, cfg.local.tls ? "https" : "http");
    v6 = strchr(cfg.local.host, ':') != NULL;
    dflt = cfg.local.port == (cfg.local.tls ? 443 : 80);
    snprintf(ag->host_hdr, sizeof(ag->host_hdr), "%s%s%s", v6 ? "[" : "", cfg.local.host,
             v6 ? "]" : "");
    if (!dflt)
        snprintf(ag->host_hdr + strlen(ag->host_hdr), sizeof(ag->host_hdr) - strlen(ag->host_hdr),
                 ":%u", cfg.local.port);
    for (k = 0; k < ag->nslots; k++) {
        slot_t *sl = &ag->slots[k];
        sl->ag = ag;
        if (ag->nslots > 1)
            snprintf(sl->name, sizeof(sl->name), "%s-%u", cfg.agent_id, k + 1);
        else
            snprintf(sl->name, sizeof(sl->name), "%s", cfg.agent_id);
        nw_hf_init(&sl->hs_hf, 16384);
        uv_timer_init(&loop, &sl->timer);
        sl->timer.data = sl;
    }
    uv_timer_init(&loop, &ag->grace);
    ag->grace.data = ag;
    uv_check_init(&loop, &ag->drain);
    ag->drain.data = ag;
    uv_timer_init(&loop, &ag->qtimer);
    ag->qtimer.data = ag;
    nw_trimmer_start(&loop, &ag->trim);
    uv_signal_init(&loop, &ag->sig[0]);
    uv_signal_init(&loop, &ag->sig[1]);
    ag->sig[0].data = ag->sig[1].data = ag;
    uv_signal_start(&ag->sig[0], on_signal, SIGINT);
    uv_signal_start(&ag->sig[1], on_signal, SIGTERM);
    nw_info("agent=%s local=%s env=%s tunnels=%u", cfg.agent_id, ag->local_str,
            cfg.env_file[0] ? cfg.env_file : "(none)", ag->nslots);
    for (k = 0; k < ag->nslots; k++)
        slot_connect(&ag->slots[k]);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_walk(&loop, on_walk_close, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        nw_err("event loop closed with handles still open");
    for (k = 0; k < ag->nslots; k++) {
        nw_hf_free(&ag->slots[k].hs_hf);
        nw_sbuf_free(&ag->slots[k].hs_body);
    }
    nw_free(ag->slots);
    if (ag->remote_tls)
        nw_tls_conf_unref(ag->remote_tls);
    if (ag->local_tls)
        nw_tls_conf_unref(ag->local_tls);
    nw_free(ag);
    return 0;
}
