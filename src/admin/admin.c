/* admin.c: the admin listener (--admin ADDR), shared by both roles: plain
 * HTTP/1.1 on a socket of its own, never proxied. It owns the listener,
 * the connections (at most ADMIN_MAX_CONNS: a new one closes the oldest
 * idle one; one request at a time each,
 * keep-alive, a head/body timeout and an idle timeout), request parsing
 * (llhttp, bounded head, body up to NW_ADMIN_BODY_MAX), ADMIN_TOKEN, the
 * path table and the built-in /livez and /readyz.
 *
 * A request goes: read and parse (the parser pauses at the end of each
 * message, so pipelined bytes wait in `pending`) -> check the token ->
 * find the page -> check the method -> the page's handler, which answers
 * now or later (nw_admin_respond). Reading pauses while a request is with
 * its handler; conn.c's probe still notices a client that left, and then
 * the handler's on_abort runs instead of an answer. */
#include <arpa/inet.h>
#include <errno.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "admin.h"
#include "admin_guard.h"
#include "metrics.h"
#include "conn.h"
#include "http1.h"
#include "log.h"

#define ADMIN_MAX_CONNS 64
#define ADMIN_HEAD_MAX (16 * 1024)
#define ADMIN_HEAD_TIMEOUT_MS 10000 /* a request's head and body must arrive within */
#define ADMIN_IDLE_TIMEOUT_MS 10000 /* a keep-alive connection waits for the next */
#define ADMIN_WRITE_MAX (4u << 20)  /* unsent output past which no more is parsed */
#define ADMIN_PENDING_MAX (64 * 1024) /* pipelined bytes held while one is answered */

typedef struct aconn_s aconn_t;

typedef struct {
    char *path;
    size_t len;
    int prefix;
    unsigned methods;
    nw_admin_fn fn;
    void *ud;
} page_t;

enum { AC_READ, AC_HANDLER, AC_CLOSING };

struct aconn_s {
    nw_hfields_t hf; /* first: the nw_http_cb_* callbacks find it through parser.data */
    llhttp_t parser;
    nw_admin_t *a;
    nw_conn_t *conn;
    uv_timer_t timer;
    aconn_t *prev, *next;
    int state;
    int handles;       /* conn and timer, until their close callbacks ran */
    int started;       /* a request's first byte arrived */
    int complete;      /* the parser reached the end of a message */
    int too_big;       /* the body went past NW_ADMIN_BODY_MAX */
    int keep_alive;
    int head;          /* the request was HEAD: no body in the answer */
    int driving;       /* inside drive(): no re-entry */
    int write_wait;    /* parsing stopped until the output drains */
    int head_armed;    /* the timer runs the current request's deadline */
    nw_sbuf_t body;
    nw_sbuf_t pending; /* bytes read after the current request's end */
    char method[16];
    char *target;      /* path NUL query NUL */
    nw_admin_req_t req;
};

struct nw_admin_s {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int listening;     /* the listener handle is initialised and not closed */
    int handles;       /* listener (while open) */
    int port;
    int stopping;
    char token[NW_CFG_TOKEN_MAX + 1];
    size_t token_len;
    page_t *pages;
    size_t npages;
    nw_admin_ready_fn ready;
    void *ready_ud;
    aconn_t *conns;
    size_t nconns;
    unsigned long long evicted; /* connections closed for a newer one */
};

static const llhttp_settings_t ac_settings;
static void drive(aconn_t *ac);
static void arm(aconn_t *ac);
static void ac_close(aconn_t *ac);
static void admin_maybe_free(nw_admin_t *a);

/* ---- answers -------------------------------------------------------------- */

/* The answer to the current request, with extra header lines (each ending
 * in CRLF) when extra is set. Every answer forbids framing (a page of
 * another site could frame the dashboard and trick a click on Replay) and
 * any script or style not served from here. */
static void ac_send(aconn_t *ac, int status, const char *ctype, const void *body, size_t len,
                   const char *extra) {
    nw_sbuf_t out = {0};
    const char *reason = nw_http_reason(status);
    int rc;
    char *p;
    size_t plen;
    ac->req.on_abort = NULL; /* answered: nothing to abort any more */
    rc = nw_sbuf_appendf(&out,
                         "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                         "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                         "Content-Security-Policy: default-src 'self'; frame-ancestors 'none'\r\n"
                         "X-Frame-Options: DENY\r\n%s%s\r\n",
                         status, reason[0] ? reason : "Unknown",
                         ctype ? ctype : "text/plain; charset=utf-8", len, extra ? extra : "",
                         ac->keep_alive ? "" : "Connection: close\r\n");
    if (rc == 0 && !ac->head && len)
        rc = nw_sbuf_append(&out, body, len);
    if (rc != 0) {
        nw_sbuf_free(&out);
        ac_close(ac);
        return;
    }
    p = nw_sbuf_take(&out, &plen);
    if (nw_conn_write_owned(ac->conn, p, plen, 0) != 0) {
        ac_close(ac);
        return;
    }
    if (!ac->keep_alive) {
        ac->state = AC_CLOSING;
        uv_timer_stop(&ac->timer);
        nw_conn_close_after_flush(ac->conn);
        return;
    }
    /* Ready for the next request. */
    ac->state = AC_READ;
    ac->started = ac->complete = ac->too_big = ac->head = 0;
    ac->body.len = 0;
    nw_hf_reset(&ac->hf);
    nw_free(ac->target);
    ac->target = NULL;
    memset(&ac->req, 0, sizeof(ac->req));
    llhttp_resume(&ac->parser);
    drive(ac);
    arm(ac);
}

static void ac_text(aconn_t *ac, int status, const char *text, const char *extra) {
    ac_send(ac, status, NULL, text, strlen(text), extra);
}

void nw_admin_respond(nw_admin_req_t *req, int status, const char *ctype, const void *body,
                      size_t len) {
    aconn_t *ac = nw_container_of(req, aconn_t, req);
    if (ac->state != AC_HANDLER)
        return; /* answered already, or aborted: a handler's bug, but harmless */
    ac_send(ac, status, ctype, body, len, NULL);
}

/* ---- dispatch ------------------------------------------------------------- */

static const page_t *find_page(const nw_admin_t *a, const char *path) {
    const page_t *best = NULL;
    size_t i, n = strlen(path);
    for (i = 0; i < a->npages; i++) {
        const page_t *p = &a->pages[i];
        if (!p->prefix) {
            if (p->len == n && memcmp(p->path, path, n) == 0)
                return p;
        } else if (n >= p->len && memcmp(p->path, path, p->len) == 0 &&
                   (!best || p->len > best->len)) {
            best = p;
        }
    }
    return best;
}

static unsigned method_bit(const char *m) {
    if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0)
        return NW_ADMIN_GET;
    if (strcmp(m, "POST") == 0)
        return NW_ADMIN_POST;
    return 0;
}

/* A whole request has arrived: answer it or hand it to its page. */
static void dispatch(aconn_t *ac) {
    nw_admin_t *a = ac->a;
    const char *url = ac->hf.raw.p, *path, *q;
    size_t ulen = ac->hf.first_len, plen;
    const page_t *pg;
    char allow[40];
    int rc;

    ac->state = AC_HANDLER;
    uv_timer_stop(&ac->timer);
    ac->head_armed = 0;
    nw_conn_pause(ac->conn, NW_PAUSE_PIPELINE);
    /* An Upgrade request is answered, never switched: then closed, as
     * what follows its head is not HTTP/1.1 for certain. */
    ac->keep_alive =
        llhttp_should_keep_alive(&ac->parser) && !ac->parser.upgrade && !a->stopping;
    if (ac->too_big) {
        ac->keep_alive = 0;
        ac_text(ac, 413, "request body too large\n", NULL);
        return;
    }
    rc = nw_http_origin_form(url ? url : "", ulen, &path, &plen);
    if (rc < 0 || (rc == 0 && (plen == 0 || path[0] != '/'))) {
        ac_text(ac, 400, "bad request target\n", NULL);
        return;
    }
    ac->target = nw_malloc(plen + 3);
    if (!ac->target) {
        ac_close(ac);
        return;
    }
    if (rc == 1) { /* "http://h?q": the path is "/" */
        ac->target[0] = '/';
        memcpy(ac->target + 1, path, plen);
        plen++;
    } else {
        memcpy(ac->target, path, plen);
    }
    ac->target[plen] = '\0';
    q = memchr(ac->target, '?', plen);
    if (q) {
        ac->target[q - ac->target] = '\0';
        ac->req.query = q + 1;
    } else {
        ac->target[plen + 1] = '\0';
        ac->req.query = ac->target + plen + 1;
    }
    ac->req.path = ac->target;
    ac->req.method = ac->head ? "GET" : ac->method;
    ac->req.body = ac->body.p ? ac->body.p : "";
    ac->req.body_len = ac->body.len;

    if (!a->token_len && strcmp(ac->req.path, "/livez") != 0) {
        size_t hl;
        const char *h = nw_admin_field(&ac->hf, "host", &hl);
        if (h && !nw_admin_host_local(h, hl)) {
            ac_text(ac, 403, "forbidden: without ADMIN_TOKEN the admin listener answers only "
                             "a Host that is an IP address or a name without a dot "
                             "(localhost); set ADMIN_TOKEN to reach it by a DNS name\n", NULL);
            return;
        }
    }
    if (strcmp(ac->method, "GET") != 0 && strcmp(ac->method, "HEAD") != 0 &&
        nw_admin_cross_origin(&ac->hf)) {
        ac_text(ac, 403, "forbidden: cross-origin request\n", NULL);
        return;
    }
    if (a->token_len && strcmp(ac->req.path, "/livez") != 0 && !nw_admin_authorized(a->token, a->token_len, &ac->hf)) {
        ac_text(ac, 401, "unauthorized: this admin listener needs ADMIN_TOKEN\n",
                "WWW-Authenticate: Basic realm=\"natwrp admin\", charset=\"UTF-8\"\r\n");
        return;
    }
    pg = find_page(a, ac->req.path);
    if (!pg) {
        ac_text(ac, 404, "not found\n", NULL);
        return;
    }
    if (!(method_bit(ac->method) & pg->methods)) {
        snprintf(allow, sizeof(allow), "Allow: %s%s\r\n",
                 pg->methods & NW_ADMIN_GET ? "GET, HEAD" : "",
                 pg->methods & NW_ADMIN_POST ? (pg->methods & NW_ADMIN_GET ? ", POST" : "POST")
                                             : "");
        ac_text(ac, 405, "method not allowed\n", allow);
        return;
    }
    pg->fn(&ac->req, pg->ud);
}

/* ---- built-in pages ------------------------------------------------------- */

static void page_livez(nw_admin_req_t *req, void *ud) {
    (void)ud;
    nw_admin_respond(req, 200, NULL, "ok\n", 3);
}

static void page_readyz(nw_admin_req_t *req, void *ud) {
    nw_admin_t *a = ud;
    nw_sbuf_t b = {0};
    int ok = !a->ready || a->ready(a->ready_ud, req->query, &b);
    if (!b.len) {
        nw_sbuf_free(&b);
        nw_admin_respond(req, ok ? 200 : 503, NULL, ok ? "ready\n" : "not ready\n",
                         ok ? 6 : 10);
        return;
    }
    nw_admin_respond(req, ok ? 200 : 503, NULL, b.p, b.len);
    nw_sbuf_free(&b);
}

static void page_metrics(nw_admin_req_t *req, void *ud) {
    nw_sbuf_t out = {0};
    if (nw_metrics_render(ud, &out) != 0) {
        nw_sbuf_free(&out);
        nw_admin_respond(req, 500, NULL, "out of memory\n", 14);
        return;
    }
    nw_admin_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", out.p, out.len);
    nw_sbuf_free(&out);
}

int nw_admin_metrics(nw_admin_t *a, struct nw_metrics *m) {
    return nw_admin_handle(a, "/metrics", page_metrics, m);
}

/* ---- parsing -------------------------------------------------------------- */

static aconn_t *ac_of(llhttp_t *p) {
    return (aconn_t *)p->data;
}

static int on_message_begin(llhttp_t *p) {
    ac_of(p)->started = 1;
    return 0;
}

static int on_headers_complete(llhttp_t *p) {
    aconn_t *ac = ac_of(p);
    const char *m = llhttp_method_name((llhttp_method_t)p->method);
    snprintf(ac->method, sizeof(ac->method), "%s", m ? m : "");
    ac->head = p->method == HTTP_HEAD;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > NW_ADMIN_BODY_MAX) {
        /* Answer 413 now, without reading a body we would not keep. */
        ac->too_big = 1;
        return -1;
    }
    if (nw_http_has_token(&ac->hf, "expect", "100-continue") &&
        ((p->flags & F_CHUNKED) || p->content_length > 0)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        nw_conn_write(ac->conn, &b, 1, 0);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
    aconn_t *ac = ac_of(p);
    if (ac->body.len + n > NW_ADMIN_BODY_MAX) {
        ac->too_big = 1;
        return -1;
    }
    return nw_sbuf_append(&ac->body, at, n) == 0 ? 0 : -1;
}

static int on_message_complete(llhttp_t *p) {
    ac_of(p)->complete = 1;
    return HPE_PAUSED; /* one request at a time: the rest waits */
}

static const llhttp_settings_t ac_settings = {
    .on_message_begin = on_message_begin,
    .on_url = nw_http_cb_first,
    .on_header_field = nw_http_cb_name,
    .on_header_value = nw_http_cb_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Feed the pending bytes to the parser while requests can be taken, and
 * dispatch each complete one. Loops rather than recursing: a handler that
 * answers at once comes back here through ac_send. */
static void drive(aconn_t *ac) {
    if (ac->driving)
        return;
    ac->driving = 1;
    while (ac->state == AC_READ && ac->pending.len) {
        llhttp_errno_t e;
        size_t used;
        if (ac->conn->wbytes > ADMIN_WRITE_MAX) {
            ac->write_wait = 1; /* on_written resumes */
            nw_conn_pause(ac->conn, NW_PAUSE_WRITEQ);
            break;
        }
        e = llhttp_execute(&ac->parser, ac->pending.p, ac->pending.len);
        if (e == HPE_OK) {
            used = ac->pending.len;
        } else if (e == HPE_PAUSED) {
            used = (size_t)(llhttp_get_error_pos(&ac->parser) - ac->pending.p);
        } else if (ac->too_big) {
            /* The body is over NW_ADMIN_BODY_MAX: 413, and the rest of
             * it is not read. */
            ac->pending.len = 0;
            nw_conn_pause(ac->conn, NW_PAUSE_DONE);
            dispatch(ac);
            break;
        } else {
            int status = e == HPE_USER ? 431 : 400;
            ac->state = AC_HANDLER;
            ac->keep_alive = 0;
            ac->pending.len = 0;
            nw_conn_pause(ac->conn, NW_PAUSE_DONE);
            ac_text(ac, status, status == 431 ? "request header fields too large\n"
                                              : "bad request\n", NULL);
            break;
        }
        memmove(ac->pending.p, ac->pending.p + used, ac->pending.len - used);
        ac->pending.len -= used;
        if (ac->complete) {
            dispatch(ac);
        } else if (e == HPE_PAUSED) {
            llhttp_resume(&ac->parser); /* paused by nothing of ours: go on */
        }
    }
    if (ac->state == AC_READ && ac->pending.len == 0)
        nw_conn_resume(ac->conn, NW_PAUSE_PIPELINE);
    ac->driving = 0;
}

/* ---- connection lifecycle ------------------------------------------------- */

static void on_timer(uv_timer_t *h) {
    aconn_t *ac = h->data;
    ac_close(ac); /* no request (or not all of it) within the timeout */
}

/* Arm the timeout that fits where the connection is: a request under way
 * must arrive whole within the head timeout from its first byte (more
 * bytes do not extend it: no slowloris), an idle connection gets the idle
 * timeout, and so does a client that reads none of our output. */
static void arm(aconn_t *ac) {
    if (ac->state != AC_READ)
        return;
    if (ac->write_wait) {
        ac->head_armed = 0;
        uv_timer_start(&ac->timer, on_timer, ADMIN_IDLE_TIMEOUT_MS, 0);
    } else if (ac->started || ac->pending.len) {
        if (!ac->head_armed)
            uv_timer_start(&ac->timer, on_timer, ADMIN_HEAD_TIMEOUT_MS, 0);
        ac->head_armed = 1;
    } else {
        ac->head_armed = 0;
        uv_timer_start(&ac->timer, on_timer, ADMIN_IDLE_TIMEOUT_MS, 0);
    }
}

static void on_read(nw_conn_t *c, ssize_t nread, const char *buf) {
    aconn_t *ac = c->data;
    if (ac->state == AC_CLOSING)
        return; /* the last answer is flushing; conn.c closes after it */
    if (nread < 0) {
        ac_close(ac);
        return;
    }
    if (ac->state != AC_READ)
        return;
    if (ac->pending.len + (size_t)nread > ADMIN_PENDING_MAX + NW_ADMIN_BODY_MAX ||
        nw_sbuf_append(&ac->pending, buf, (size_t)nread) != 0) {
        ac_close(ac);
        return;
    }
    drive(ac);
    arm(ac);
}

static void on_written(nw_conn_t *c, size_t credit) {
    aconn_t *ac = c->data;
    (void)credit;
    if (!ac->write_wait || ac->state != AC_READ)
        return;
    if (ac->conn->wbytes > ADMIN_WRITE_MAX / 2) {
        arm(ac); /* it reads: give it another idle timeout */
        return;
    }
    ac->write_wait = 0;
    nw_conn_resume(ac->conn, NW_PAUSE_WRITEQ);
    drive(ac);
    arm(ac);
}

static void ac_free_if_done(aconn_t *ac) {
    nw_admin_t *a = ac->a;
    if (ac->handles > 0)
        return;
    if (ac->prev)
        ac->prev->next = ac->next;
    else
        a->conns = ac->next;
    if (ac->next)
        ac->next->prev = ac->prev;
    a->nconns--;
    nw_hf_free(&ac->hf);
    nw_sbuf_free(&ac->body);
    nw_sbuf_free(&ac->pending);
    nw_free(ac->target);
    nw_free(ac);
    admin_maybe_free(a);
}

static void on_timer_close(uv_handle_t *h);

static void on_conn_close(nw_conn_t *c) {
    aconn_t *ac = c->data;
    if (ac->state == AC_HANDLER && ac->req.on_abort) {
        void (*fn)(nw_admin_req_t *) = ac->req.on_abort;
        ac->req.on_abort = NULL;
        fn(&ac->req);
    }
    ac->state = AC_CLOSING;
    ac->conn = NULL;
    ac->handles--;
    if (!uv_is_closing((uv_handle_t *)&ac->timer)) /* closed after a flush */
        uv_close((uv_handle_t *)&ac->timer, on_timer_close);
    ac_free_if_done(ac);
}

static void on_timer_close(uv_handle_t *h) {
    aconn_t *ac = h->data;
    ac->handles--;
    ac_free_if_done(ac);
}

/* Close now (idempotent). A request still with its handler is aborted. */
static void ac_close(aconn_t *ac) {
    int was = ac->state;
    if (ac->state == AC_CLOSING && uv_is_closing((uv_handle_t *)&ac->timer))
        return;
    ac->state = AC_CLOSING;
    if (was == AC_HANDLER && ac->req.on_abort) {
        void (*fn)(nw_admin_req_t *) = ac->req.on_abort;
        ac->req.on_abort = NULL;
        fn(&ac->req);
    }
    if (!uv_is_closing((uv_handle_t *)&ac->timer))
        uv_close((uv_handle_t *)&ac->timer, on_timer_close);
    if (ac->conn)
        nw_conn_close(ac->conn);
}

/* At ADMIN_MAX_CONNS open connections, a new one takes the place of the
 * oldest that is not with a handler (idle, or still sending its request):
 * so clients that merely hold connections open cannot keep a health probe
 * from /livez. Is there room for one more (after closing one if need be)?
 * Closing ones are not counted, but past twice the limit with them a new
 * connection is refused all the same. */
static int make_room(nw_admin_t *a) {
    aconn_t *ac, *old = NULL;
    size_t open = 0;
    for (ac = a->conns; ac; ac = ac->next) {
        if (ac->state == AC_CLOSING)
            continue;
        open++;
        if (ac->state == AC_READ)
            old = ac; /* the list is newest first: the last one is the oldest */
    }
    if (open < ADMIN_MAX_CONNS)
        return a->nconns < 2 * ADMIN_MAX_CONNS;
    if (!old || a->nconns >= 2 * ADMIN_MAX_CONNS)
        return 0; /* every one is with its handler (Replays waiting) */
    if (a->evicted++ % 1000 == 0)
        nw_warn("admin: %d connections open: closing the oldest idle one for a new one "
                "(%llu so far)", ADMIN_MAX_CONNS, (unsigned long long)a->evicted);
    ac_close(old);
    return 1;
}

static void on_connection(uv_stream_t *server, int status) {
    nw_admin_t *a = server->data;
    nw_conn_t *c;
    aconn_t *ac;
    int room;
    if (status < 0)
        return;
    c = nw_conn_new(a->loop);
    if (!c)
        return;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        nw_conn_close(c);
        return;
    }
    room = !a->stopping && make_room(a);
    ac = room ? nw_calloc(1, sizeof(*ac)) : NULL;
    if (!ac) { /* over the limit (or no memory): accepted, then closed */
        if (!room && !a->stopping)
            nw_warn("admin: %d connections busy already: closing a new one", ADMIN_MAX_CONNS);
        nw_conn_close(c);
        return;
    }
    ac->a = a;
    ac->conn = c;
    ac->handles = 2;
    ac->state = AC_READ;
    nw_hf_init(&ac->hf, ADMIN_HEAD_MAX);
    llhttp_init(&ac->parser, HTTP_REQUEST, &ac_settings);
    ac->parser.data = ac;
    uv_timer_init(a->loop, &ac->timer);
    ac->timer.data = ac;
    ac->next = a->conns;
    if (a->conns)
        a->conns->prev = ac;
    a->conns = ac;
    a->nconns++;
    nw_conn_set_owner(c, ac, on_read, on_written, on_conn_close);
    nw_conn_ready(c);
    arm(ac);
    nw_conn_resume(c, NW_PAUSE_OWNER);
}

/* ---- the listener --------------------------------------------------------- */

static int bind_listen(nw_admin_t *a, const struct sockaddr *sa) {
    int rc, fd = nw_listen_socket(sa, 0, 128);
    if (fd < 0)
        return fd;
    uv_tcp_init(a->loop, &a->listener);
    a->listener.data = a;
    a->listening = 1;
    a->handles = 1;
    rc = uv_tcp_open(&a->listener, fd);
    if (rc != 0)
        close(fd);
    else
        rc = uv_listen((uv_stream_t *)&a->listener, 128, on_connection);
    return rc;
}

static void on_listener_close(uv_handle_t *h) {
    nw_admin_t *a = h->data;
    a->handles = 0;
    admin_maybe_free(a);
}

static void admin_free(nw_admin_t *a) {
    size_t i;
    for (i = 0; i < a->npages; i++)
        nw_free(a->pages[i].path);
    nw_free(a->pages);
    nw_wipe(a->token, sizeof(a->token));
    nw_free(a);
}

static void admin_maybe_free(nw_admin_t *a) {
    if (a->stopping && a->handles == 0 && a->nconns == 0)
        admin_free(a);
}

int nw_admin_start(uv_loop_t *loop, const nw_ops_cfg_t *cfg, nw_admin_t **out) {
    nw_admin_t *a;
    struct sockaddr_storage ss;
    char name[INET6_ADDRSTRLEN];
    int len = sizeof(ss), rc;
    const nw_listen_t *l = &cfg->admin.addr;
    const char *host = l->host[0] ? l->host : "::";

    *out = NULL;
    a = nw_calloc(1, sizeof(*a));
    if (!a)
        return NW_ENOMEM;
    a->loop = loop;
    a->token_len = strlen(cfg->admin_token);
    memcpy(a->token, cfg->admin_token, a->token_len + 1);
    if (nw_admin_handle(a, "/livez", page_livez, a) != 0 ||
        nw_admin_handle(a, "/readyz", page_readyz, a) != 0) {
        admin_free(a);
        return NW_ENOMEM;
    }
    if (strchr(host, ':'))
        rc = uv_ip6_addr(host, l->port, (struct sockaddr_in6 *)&ss);
    else
        rc = uv_ip4_addr(strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, l->port,
                         (struct sockaddr_in *)&ss);
    if (rc == 0)
        rc = bind_listen(a, (struct sockaddr *)&ss);
    if (rc != 0 && !l->host[0] && !a->listening) {
        /* No IPv6 here: every IPv4 interface. */
        uv_ip4_addr("0.0.0.0", l->port, (struct sockaddr_in *)&ss);
        rc = bind_listen(a, (struct sockaddr *)&ss);
    }
    if (rc != 0) {
        a->stopping = 1;
        if (a->listening) {
            a->listening = 0;
            uv_close((uv_handle_t *)&a->listener, on_listener_close); /* frees a */
        } else {
            admin_free(a);
        }
        return rc;
    }
    uv_tcp_getsockname(&a->listener, (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, name, sizeof(name));
        a->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        nw_info("admin listening on http://[%s]:%d", name, a->port);
    } else {
        uv_ip4_name((struct sockaddr_in *)&ss, name, sizeof(name));
        a->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        nw_info("admin listening on http://%s:%d", name, a->port);
    }
    *out = a;
    return 0;
}

int nw_admin_handle_methods(nw_admin_t *a, const char *path, unsigned methods, nw_admin_fn fn,
                            void *ud) {
    size_t i, n = strlen(path);
    page_t *p;
    for (i = 0; i < a->npages; i++) {
        if (a->pages[i].len == n && memcmp(a->pages[i].path, path, n) == 0) {
            a->pages[i].fn = fn;
            a->pages[i].ud = ud;
            a->pages[i].methods = methods;
            return 0;
        }
    }
    p = nw_realloc(a->pages, (a->npages + 1) * sizeof(*p));
    if (!p)
        return NW_ENOMEM;
    a->pages = p;
    p = &a->pages[a->npages];
    p->path = nw_strndup(path, n);
    if (!p->path)
        return NW_ENOMEM;
    p->len = n;
    p->prefix = n > 0 && path[n - 1] == '/' && n > 1;
    p->methods = methods;
    p->fn = fn;
    p->ud = ud;
    a->npages++;
    return 0;
}

int nw_admin_handle(nw_admin_t *a, const char *path, nw_admin_fn fn, void *ud) {
    return nw_admin_handle_methods(a, path, NW_ADMIN_GET, fn, ud);
}

void nw_admin_set_ready(nw_admin_t *a, nw_admin_ready_fn fn, void *ud) {
    a->ready = fn;
    a->ready_ud = ud;
}

int nw_admin_port(const nw_admin_t *a) {
    return a ? a->port : 0;
}

void nw_admin_stop(nw_admin_t *a) {
    aconn_t *ac, *next;
    if (!a || a->stopping)
        return;
    a->stopping = 1;
    a->nconns++; /* hold a while the connections close below */
    for (ac = a->conns; ac; ac = next) {
        next = ac->next;
        ac_close(ac);
    }
    a->nconns--;
    if (a->listening) {
        a->listening = 0;
        uv_close((uv_handle_t *)&a->listener, on_listener_close);
    }
    admin_maybe_free(a);
}
