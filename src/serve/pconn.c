/* pconn.c: the public connection's lifecycle: read, feed the parser, timers, 101 pipes, close. */
#include <assert.h>
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
#include "serve_int.h"
#include "tun.h"
#include "ws.h"

static void pc_on_timer(uv_timer_t *h);

int pc_write(pconn_t *pc, const void *p, size_t n, size_t credit) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    if (!pc->conn)
        return NW_ECLOSED;
    return nw_conn_write(pc->conn, &b, 1, credit);
}

/* A request moves its deadline four or five times (head, response,
 * idle...), and every uv_timer_start or _stop is a remove and an insert in
 * the loop's timer heap: that was 9 % of serve's CPU at 1 KiB requests.
 * So the deadline lives in pc->due, and the uv timer is restarted only
 * when the deadline comes earlier than it fires; otherwise it fires early
 * and pc_on_timer re-arms it for the rest. Disarming only clears due. */
void pc_arm(pconn_t *pc, uint64_t ms) {
    uint64_t now = uv_now(pc->srv->loop);
    pc->due = now + ms;
    if (uv_is_active((uv_handle_t *)&pc->timer) && pc->timer_due <= pc->due)
        return;
    pc->timer_due = pc->due;
    uv_timer_start(&pc->timer, pc_on_timer, ms, 0);
}

void pc_disarm(pconn_t *pc) { pc->due = 0; }

/* A request body is still to come on an open stream: the timer is then
 * --body-timeout, re-armed on every step forward (bytes from the client,
 * credit from the service). */
int pc_body_waiting(const pconn_t *pc) {
    return pc->req_body && !pc->req_done && pc->strm && !pc->piped &&
           (pc->state == PC_WAIT || pc->state == PC_STREAM);
}

/* A response (or a pipe) in progress has bytes queued that the client has
 * not taken: a client that stops reading would otherwise hold its stream
 * slot, with no timer, for as long as it likes. The wait is then bounded
 * by --body-timeout too, counted from the last bytes the client took
 * (pc_on_written), never re-armed by our own writes. With nothing queued
 * the wait is on the service (a stream may be slow): no timer. */
void pc_send_timer(pconn_t *pc) {
    if (pc->state != PC_STREAM || !pc->conn)
        return;
    if (pc->conn->wbytes) {
        if (!pc->due)
            pc_arm(pc, pc->srv->cfg->body_timeout_ms);
    } else if (!pc_body_waiting(pc)) {
        pc_disarm(pc);
    }
}

/* Let go of the request's stream, if any: reset it with code (0: it
 * ended); the tunnel forgets it. */
void pc_drop_strm(pconn_t *pc, uint32_t code) {
    if (pc->strm) {
        nw_strm_detach(pc->strm, code);
        pc->strm = NULL;
        wq_kick(pc->srv); /* a slot is free */
    }
}

/* The transitions of pc->state the code makes (from -> to); anything
 * else is a bug, caught by the assert:
 *   IDLE   -> IDLE (accepted), HEAD (a request begins), LINGER, CLOSED
 *   HEAD   -> QUEUED (no free slot), WAIT (sent on a stream), IDLE (serve
 *             answered it and keeps the connection), LINGER, CLOSED (also:
 *             taken over as a tunnel)
 *   QUEUED -> QUEUED (still no slot), WAIT, IDLE, LINGER, CLOSED
 *   WAIT   -> QUEUED, WAIT (a stream refused before use is retried),
 *             STREAM (the response head came), IDLE, LINGER, CLOSED
 *   STREAM -> IDLE (response done, kept alive), LINGER, CLOSED
 *   LINGER -> CLOSED
 *   CLOSED -> nothing */
#define PC_TO(s) (1u << (s))
#define PC_TO_END (PC_TO(PC_LINGER) | PC_TO(PC_CLOSED))
static const unsigned pc_next[] = {
    [PC_IDLE] = PC_TO(PC_IDLE) | PC_TO(PC_HEAD) | PC_TO_END,
    [PC_HEAD] = PC_TO(PC_QUEUED) | PC_TO(PC_WAIT) | PC_TO(PC_IDLE) | PC_TO_END,
    [PC_QUEUED] = PC_TO(PC_QUEUED) | PC_TO(PC_WAIT) | PC_TO(PC_IDLE) | PC_TO_END,
    [PC_WAIT] = PC_TO(PC_QUEUED) | PC_TO(PC_WAIT) | PC_TO(PC_STREAM) | PC_TO(PC_IDLE) | PC_TO_END,
    [PC_STREAM] = PC_TO(PC_IDLE) | PC_TO_END,
    [PC_LINGER] = PC_TO(PC_CLOSED),
    [PC_CLOSED] = 0,
};

void pc_set_state(pconn_t *pc, enum pc_state to) {
    assert((size_t)pc->state < sizeof(pc_next) / sizeof(pc_next[0]) &&
           (pc_next[pc->state] & PC_TO(to)));
    pc->state = to;
}

void pc_linger(pconn_t *pc) {
    if (pc->state == PC_LINGER || pc->state == PC_CLOSED || !pc->conn)
        return;
    wq_remove(pc);
    pc_flush_head(pc);
    pc_set_state(pc, PC_LINGER);
    pc_drop_strm(pc, NW_RST_CANCEL);
    nw_conn_shutdown(pc->conn);
    nw_conn_resume(pc->conn, NW_PAUSE_CREDIT | NW_PAUSE_PIPELINE | NW_PAUSE_DONE);
    pc_arm(pc, LINGER_MS);
}

/* A parse error: answer it (if no response has started) and close. */
void pc_parse_error(pconn_t *pc) {
    char mb[320];
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
    if (status == 400)
        pc->err_reason = srv_ops_why_reason(why);
    pc_reply(pc, status,
             pc->strm ? "malformed request body" : pc_status_msg(pc, status, mb, sizeof(mb)));
}

/* Checks on client bytes before llhttp sees them: the head scanner (also
 * over the trailer section) and the CRLF after chunk data. 0 to parse
 * them, -1 once the request was refused or the connection closed. */
static int pc_prescan(pconn_t *pc, const char *data, size_t len) {
    size_t used;
    if (pc->scanning && nw_headscan(&pc->scan, data, len, &used) != 0) {
        if (pc->scan.why) {
            nw_info("conn=%llu client=%s bad request: 400 (%s%s)", (unsigned long long)pc->id,
                    pc->conn ? pc->conn->peer : "-", pc->scan.why,
                    pc->trailers ? ", in the trailer section" : "");
            pc->err_status = 400;
            pc->err_reason = srv_ops_why_reason(pc->scan.why);
            if (pc->trailers && pc->strm) {
                pc_drop_strm(pc, NW_RST_CANCEL);
            }
            if (pc->trailers && pc->head_sent)
                pc_close(pc);
            else
                pc_reply(pc, 400, pc->trailers ? "malformed request body" : "malformed request");
            return -1;
        }
        pc->scanning = 0; /* the head ends in these bytes */
    }
    if (pc->crlf_check && pc_crlf_after_chunk(pc, data, len) != 0) {
        nw_info("conn=%llu client=%s bad request: 400 (no CRLF after chunk data)",
                (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-");
        pc->err_status = 400;
        pc->err_reason = "smuggling";
        pc_drop_strm(pc, NW_RST_CANCEL);
        if (pc->head_sent)
            pc_close(pc);
        else
            pc_reply(pc, 400, "malformed request body");
        return -1;
    }
    return 0;
}

/* A request is complete: hold what follows (rest) until it is answered,
 * and answer one whose error waited for its body. -1 once closed. */
static int pc_complete(pconn_t *pc, const char *rest, size_t n) {
    pc->paused = 1;
    if (n && nw_sbuf_append(&pc->pipeline, rest, n) != 0) {
        pc_close(pc);
        return -1;
    }
    if (pc->defer_status) {
        char mb[320];
        int st = pc->defer_status;
        pc->defer_status = 0;
        pc->in_feed = 1; /* pc_response_done must not re-enter */
        pc_reply(pc, st, pc_status_msg(pc, st, mb, sizeof(mb)));
        pc->in_feed = 0;
    }
    return 0;
}

/* Parse client bytes. data == NULL means: parse the pipeline buffer. The
 * loop (not recursion) handles many pipelined requests answered at once. */
void pc_feed(pconn_t *pc, const char *data, size_t len) {
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
        if (pc_prescan(pc, data, len) != 0)
            break;
        pc->feed_end = data + len;
        pc->in_feed = 1;
        e = llhttp_execute(&pc->parser, data, len);
        pc->in_feed = 0;
        if (pc_body_pending(pc) && pc_send_body(pc, 0) < 0) {
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
        if (pc_complete(pc, data + off, len - off) != 0 || !pc->again)
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

void pc_maybe_free(pconn_t *pc) {
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

void pc_on_conn_close(nw_conn_t *c) {
    pconn_t *pc = c->data;
    pc_alog(pc, 1); /* while the client's address is known */
    pc->conn = NULL;
    if (pc->state != PC_CLOSED)
        pc_close(pc); /* closed from below (a finished pipe): close the timer too */
    pc_maybe_free(pc);
}

void pc_on_timer_close(uv_handle_t *h) { pc_maybe_free(h->data); }

/* Close now (cuts any response in progress). */
void pc_close(pconn_t *pc) {
    if (pc->state == PC_CLOSED)
        return;
    pc_alog(pc, 1);
    wq_remove(pc);
    pc_heads_unlink(pc);
    nw_sbuf_free(&pc->head_out);
    pc_set_state(pc, PC_CLOSED);
    pc_drop_strm(pc, NW_RST_CANCEL);
    uv_close((uv_handle_t *)&pc->timer, pc_on_timer_close);
    if (pc->conn)
        nw_conn_close(pc->conn);
}

/* No step forward on a request body for --body-timeout: the stream holds
 * a slot (and the service a connection) for nothing. Reset it end to end
 * (the agent drops its local connection) and close. Reading paused for
 * credit means the service, not the client, stopped. */
void pc_body_timeout(pconn_t *pc) {
    int svc = pc->conn && (pc->conn->pause & NW_PAUSE_CREDIT);
    int status = svc ? 504 : 408;
    nw_warn("conn=%llu client=%s agent=%s strm=%u request body made no progress for %llu ms "
            "(%s): %s",
            (unsigned long long)pc->id, pc->conn ? pc->conn->peer : "-", pc->strm->tun->agent,
            pc->strm->sid, (unsigned long long)pc->srv->cfg->body_timeout_ms,
            svc ? "the local service stopped reading it" : "the client stopped sending it",
            pc->head_sent ? "reset, closing" : svc ? "reset, 504" : "reset, 408");
    pc_drop_strm(pc, NW_RST_TIMEOUT);
    pc->keep_alive = 0;
    if (pc->head_sent)
        pc_close(pc);
    else
        pc_reply(pc, status, svc ? "the local service stopped reading the request body"
                                 : "request body not received in time");
}

static void pc_on_timer(uv_timer_t *h) {
    pconn_t *pc = h->data;
    uint64_t now = uv_now(pc->srv->loop);
    if (!pc->due)
        return; /* disarmed since it was started */
    if (pc->due > now) { /* the deadline moved later: wait for the rest */
        pc->timer_due = pc->due;
        uv_timer_start(&pc->timer, pc_on_timer, pc->due - now, 0);
        return;
    }
    pc->due = 0;
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
        srv_ops_queue_timeout(pc);
        if (pc->wait_busy) {
            nw_warn("conn=%llu client=%s every tunnel stayed at --max-streams (%u) for %llu ms: "
                    "503",
                    (unsigned long long)pc->id, pc->conn->peer, pc->srv->cfg->max_streams,
                    (unsigned long long)pc->srv->cfg->queue_timeout_ms);
            pc_reply(pc, 503, "every tunnel is busy; try again");
        } else {
            nw_warn("conn=%llu client=%s no tunnel for %s came within %llu ms: 503",
                    (unsigned long long)pc->id, pc->conn->peer,
                    pc->nohost[0] ? pc->nohost : "this host",
                    (unsigned long long)pc->srv->cfg->queue_timeout_ms);
            pc_reply(pc, 503, "no agent is connected to this server");
        }
        break;
    case PC_WAIT:
        if (pc->strm)
            srv_ops_strm_error(pc->strm, "timeout");
        nw_warn("conn=%llu client=%s agent=%s strm=%u no response head within %llu ms: 504",
                (unsigned long long)pc->id, pc->conn->peer, pc->strm ? pc->strm->tun->agent : "-",
                pc->strm ? pc->strm->sid : 0,
                (unsigned long long)pc->srv->cfg->response_timeout_ms);
        pc_drop_strm(pc, NW_RST_TIMEOUT);
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

void pc_on_read(nw_conn_t *c, ssize_t nread, const char *buf) {
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
void pc_up_in(pconn_t *pc, const char *p, size_t n) {
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
void pc_pipe_in(pconn_t *pc, const char *p, size_t n) {
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
    srv_ops_bytes(pc, pc->strm, n, 0);
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
void pc_pipe_done(pconn_t *pc) {
    if (!pc->in_eof || !pc->out_eof || pc->state == PC_CLOSED || pc->state == PC_LINGER)
        return;
    wq_remove(pc);
    pc_set_state(pc, PC_LINGER); /* the timer bounds a client that stopped reading */
    pc_drop_strm(pc, 0);
    pc_arm(pc, LINGER_MS);
    if (pc->conn)
        nw_conn_close_after_flush(pc->conn); /* pc_on_conn_close ends the pconn */
}

void pc_on_written(nw_conn_t *c, size_t credit) {
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
