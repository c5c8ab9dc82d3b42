/* request.c: llhttp callbacks for a public request and its dispatch to a tunnel stream. */
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
#include "fwd.h"
#include "tun.h"
#include "ws.h"

/* Stop the parser with status; pc_parse_error answers it and logs one line
 * with why (NULL: the status's reason phrase). A why of "" means the line
 * was already logged by the caller, which decided with more to say. */
int pc_refuse(llhttp_t *p, int status, const char *why) {
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
    pc->realm[0] = pc->nohost[0] = 0;
    pc->route_auth = 0;
    pc->alog.t0 = uv_hrtime();
    pc->alog.in = pc->alog.out = pc->alog.tun = 0;
    pc->alog.status = pc->alog.upstream = 0;
    pc->alog.route[0] = 0;
    srv_ops_begin(pc, 1);
    pc_set_state(pc, PC_HEAD);
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

/* The client's address without the port ("ip:port" or "[ip]:port"). */
static const char *pc_ip(const pconn_t *pc, size_t *len) {
    const char *ip = pc->conn->peer;
    *len = (size_t)(strrchr(ip, ':') - ip);
    if (ip[0] == '[')
        ip++, *len -= 2;
    return ip;
}

/* No tunnel with a free slot (t NULL from reg_pick): 1 when the request
 * now waits in the queue, else 503.
 * No free slot, or no tunnel at all (just started, the agent is
 * restarting, or its only tunnel drains after GOAWAY): wait up to
 * --queue-timeout for one. The queue holds at most one request per
 * public connection, so --max-conns bounds it. A draining server takes
 * no new tunnel, so there it waits only for a slot. An upgrade waits
 * like any request: its parser, held after the head, parses a
 * Content-Length body when it resumes and then reaches the upgrade,
 * and what the client sent after that stays held until a 101. */
static int pc_wait_for_slot(pconn_t *pc, int any) {
    serve_t *srv = pc->srv;
    if (any || !srv->draining) {
        pc->wait_busy = any != 0;
        if (pc->state != PC_QUEUED) {
            if (any)
                nw_info("conn=%llu client=%s every tunnel is at --max-streams (%u): waiting",
                        (unsigned long long)pc->id, pc->conn->peer, srv->cfg->max_streams);
            else
                nw_info("conn=%llu client=%s no tunnel serves %s now: waiting up to %llu ms "
                        "for one", (unsigned long long)pc->id, pc->conn->peer,
                        pc->nohost[0] ? pc->nohost : "this host",
                        (unsigned long long)srv->cfg->queue_timeout_ms);
            pc_arm(pc, srv->cfg->queue_timeout_ms);
        }
        pc->wait_busy = any != 0;
        pc_set_state(pc, PC_QUEUED);
        wq_append(pc);
        return 1;
    }
    nw_warn("conn=%llu client=%s %s: 503", (unsigned long long)pc->id, pc->conn->peer,
            !any ? "no agent connected"
                 : "every tunnel is at --max-streams and an upgrade with a body cannot wait");
    return 503;
}

/* The tunnel for the request: its route (routing.c), then one of the
 * route's tunnels with a free slot. NULL with *status: 404 (no route),
 * 401 (the route's Basic credential missing), or 503 (out of memory);
 * NULL with *status 0: no slot or no tunnel now, *any says which. */
static nw_tun_t *pc_tunnel(pconn_t *pc, const char *ip, size_t iplen, int *any, int *status) {
    nw_route_hit_t hit;
    nw_tun_t *t;
    int rc;
    *status = 0;
    *any = 0;
    if ((rc = rt_route_of(pc, &hit, pc->nohost, sizeof(pc->nohost))) != 0) {
        if (rc == NW_EINVAL)
            nw_warn("conn=%llu client=%s its path with dot segments is another route's than "
                    "without them: 400", (unsigned long long)pc->id, pc->conn->peer);
        *status = rc == NW_EINVAL ? 400 : 503;
        return NULL;
    }
    if (hit.route && nw_alog_on())
        nw_route_format(hit.route, pc->alog.route, sizeof(pc->alog.route));
    if (!hit.route) {
        nw_info("conn=%llu client=%s no service for %s: 404", (unsigned long long)pc->id,
                pc->conn->peer, pc->nohost);
        *status = 404;
        return NULL;
    }
    srv_ops_route(pc, hit.route);
    t = rt_pick(pc, &hit, ip, iplen, any);
    if (!t && pc->realm[0]) {
        nw_info("conn=%llu client=%s route %s: no matching Basic credential: 401",
                (unsigned long long)pc->id, pc->conn->peer, pc->realm);
        *status = 401;
    }
    return t;
}

/* Build the forwarded head from pc->hf (fwd.c) and open a stream for it on
 * a tunnel with a free slot. 0 when open; 1 when every tunnel is full and
 * the request now waits in the queue; else an HTTP status. */
int pc_dispatch(pconn_t *pc) {
    serve_t *srv = pc->srv;
    const char *method = llhttp_method_name((llhttp_method_t)pc->parser.method);
    nw_fwd_in_t in = {0};
    nw_fwd_head_t fh;
    nw_tun_t *t;
    int any, err = 0, status;

    in.ip = pc_ip(pc, &in.iplen);
    t = pc_tunnel(pc, in.ip, in.iplen, &any, &status);
    if (status)
        return status;
    if (!t)
        return pc_wait_for_slot(pc, any);
    pc->tries++;
    in.trust = srv->cfg->trust_proxy;
    in.auth_token = srv->cfg->auth_token[0] != 0;
    in.https = pc->https;
    in.upgrade = pc->upgrade;
    in.auth_field = pc->auth_field;
    in.route_auth = pc->route_auth;
    if (nw_fwd_build(&pc->hf, &in, &fh) != 0) { /* on_headers_complete refused these */
        nw_fwd_free(&fh);
        return 400;
    }
    pc->strm = nw_tun_open(t, method, strlen(method), fh.target, fh.tlen, fh.hdrs, fh.n,
                           pc->end_at_open, &err);
    if (pc->strm) {
        pc->strm->data = pc;
        pc->alog.tun = t->id;
        nw_debug("conn=%llu client=%s tun=%llu agent=%s strm=%u %s %.*s",
                 (unsigned long long)pc->id, pc->conn->peer, (unsigned long long)t->id, t->agent,
                 pc->strm->sid, method, (int)fh.tlen, fh.target);
    }
    nw_fwd_free(&fh);
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
void pc_sent(pconn_t *pc) {
    pc_set_state(pc, PC_WAIT);
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

/* Does serve pass this upgrade on (1), or answer it as a plain request
 * (0, p->upgrade cleared)? */
static int take_upgrade(pconn_t *pc, llhttp_t *p) {
    if (!p->upgrade)
        return 0;
    if ((p->flags & F_CHUNKED) || srv_upgrade_to_http(&pc->hf)) {
        /* The agent forwards an upgrade's body unframed, by its
         * Content-Length; a chunked one would reach the service with no
         * length, its bytes read as whatever follows. An upgrade to HTTP
         * (h2c) would carry requests serve never checks. RFC 9110 7.8 lets
         * a server ignore Upgrade: this is a plain request. */
        p->upgrade = 0;
        return 0;
    }
    /* WebSocket, h2c, ...: forwarded with its Upgrade header and its
     * body (Content-Length). What the client sends after that goes raw
     * into the stream once the service answers 101 (pc_up_in); any
     * other answer is relayed and ends the connection. */
    pc->upgrade = 1;
    pc->keep_alive = 0;
    return 1;
}

/* The screening and access checks on the target (access.c): 0 to go on,
 * 401, or -1 when out of memory; *why is set for a 400.
 * The target goes on as the client sent it: its escapes and slashes
 * may mean something to the service (a%2Fb is not a/b). The access rule
 * sees both readings, and a target that climbs never leaves. */
static int pc_access(pconn_t *pc, const char *target, size_t tlen, const char **why) {
    char small[3 * 512], *pathbuf;
    int status;
    pathbuf = 3 * (tlen + 2) <= sizeof(small) ? small : nw_malloc(3 * (tlen + 2));
    if (!pathbuf)
        return -1;
    *why = pc_screen(pc, target, tlen, pathbuf);
    status = !*why && !pc_auth(pc, target, tlen, pathbuf, pathbuf + tlen + 2) ? 401 : 0;
    if (pathbuf != small)
        nw_free(pathbuf);
    return status;
}

static int on_headers_complete(llhttp_t *p) {
    pconn_t *pc = p->data;
    nw_hfields_t *h = &pc->hf;
    const char *target, *auth;
    size_t tlen, plen, alen;
    int form, has_body, status, end;
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
    if ((auth = nw_http_authority(h->raw.p, h->first_len, &alen)) != NULL &&
        !nw_http_host_ok(auth, alen))
        /* Userinfo ("http://user:pw@h/", an error by RFC 9110 4.2.4) or no
         * host[:port]: it would reach the service as its Host. */
        return pc_refuse(p, 400, "invalid authority in the request target");
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
    if (take_upgrade(pc, p))
        end = 0;
    pc->end_at_open = end;
    pc->tries = 0;
    if ((status = pc_access(pc, target, tlen, &why)) < 0)
        return pc_fail(p, 503);
    if (why)
        return pc_refuse(p, 400, why);
    if (status == 0)
        status = pc_dispatch(pc);
    if (status == 1) {
        /* Queued: hold the parser (and the body) until a slot frees. */
        pc->hold_parser = 1;
        return HPE_PAUSED;
    }
    if (!pc->upgrade && (status == 503 || status == 502 || status == 401 || status == 404)) {
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
int pc_crlf_after_chunk(pconn_t *pc, const char *q, size_t avail) {
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
    return pc_crlf_after_chunk(pc, at + n, (size_t)(pc->feed_end - (at + n)));
}

/* Send the request body bytes gathered from this read (and the end, with
 * end) as one piece. llhttp hands a chunked body over chunk by chunk: a
 * client sending 1-byte chunks made a DATA frame, and while the tunnel was
 * congested a queue entry, per byte (32 such uploads on one tunnel whose
 * agent did not read: +49 MB). A read that holds one piece (any body that
 * is not chunked) is sent from the read buffer itself: nw_strm_send copies
 * it once, into a frame or the stream's queue; staging it first cost a
 * copy and, in a fresh process, a 128 KiB malloc and free per 64 KiB read.
 * 0, or a negative error. */
int pc_send_body(pconn_t *pc, int end) {
    const char *p = pc->body_n ? pc->body_at : pc->body_acc.p;
    size_t n = pc->body_n ? pc->body_n : pc->body_acc.len;
    int rc = 0;
    if (pc->strm && (n || end)) {
        srv_ops_bytes(pc, pc->strm, n, 0);
        rc = nw_strm_send(pc->strm, p, n, end);
        if (rc == 1 && pc->conn)
            nw_conn_pause(pc->conn, NW_PAUSE_CREDIT);
    }
    pc_body_drop(pc);
    return rc < 0 ? rc : 0;
}

void pc_body_drop(pconn_t *pc) {
    pc->body_at = NULL;
    pc->body_n = 0;
    pc->body_acc.len = 0;
    if (pc->body_acc.cap > 65536)
        nw_sbuf_free(&pc->body_acc); /* at most one read is ever held */
}

/* The first piece of a read is only pointed at; a second one (the next
 * chunk) gathers both into body_acc. */
static int pc_body_add(pconn_t *pc, const char *at, size_t n) {
    if (!pc->body_n && !pc->body_acc.len) {
        pc->body_at = at;
        pc->body_n = n;
        return 0;
    }
    if (pc->body_n) {
        if (nw_sbuf_append(&pc->body_acc, pc->body_at, pc->body_n) != 0)
            return -1;
        pc->body_at = NULL;
        pc->body_n = 0;
    }
    return nw_sbuf_append(&pc->body_acc, at, n);
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
    pconn_t *pc = p->data;
    if ((p->flags & F_CHUNKED) && pc_chunk_data(pc, at, n) != 0)
        return pc_refuse(p, 400, "no CRLF after chunk data");
    pc->alog.in += n;
    if (!pc->strm)
        return 0; /* the response already ended or failed: drop */
    pc->body_started = 1;
    if (n && pc_body_add(pc, at, n) != 0)
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
        pc_disarm(pc);
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
    pc_body_drop(pc);
    return HPE_PAUSED; /* hold pipelined requests until this one is answered */
}

/* The public request parser's callbacks (llhttp_init in pc_accept). */
const llhttp_settings_t pc_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_hname,
    .on_header_value = on_hvalue,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};
