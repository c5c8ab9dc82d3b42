/* tun.c: the tunnel session over a WebSocket: the frames in and out, the
 * output batch and its bound, the read pause, pings, the stall timer, GOAWAY and close.
 * Its streams (table, credit windows, send queues, the natwrp frames that
 * name them) are strm.c's; the frame bytes are wire/wsframe.c's.
 *
 * WebSocket framing is split for speed: natwrp's own data messages (one
 * binary frame each, 8-byte masking, one copy) and pongs are framed here;
 * every frame that arrives is parsed here too. wslay only sends our pings
 * and runs the close handshake (it is fed the pongs and closes that
 * arrive). The two never interleave on the wire.
 *
 * Output path: frames queue in a batch that an idle handle flushes at the
 * next loop turn, so every frame produced in one turn leaves in one write.
 * (An idle handle, not a check handle: it also keeps the next poll from
 * blocking, so frames queued from a timer, e.g. a ping or a reset after a
 * timeout, leave at once instead of at the next I/O event.) A batch goes
 * to the connection only once it has written the one before; DATA that
 * cannot join the batch waits, unframed, in its stream's queue, and the
 * streams take turns filling the next batch (sched.c), so a small stream
 * never waits behind another's backlog. The kernel is kept from hiding a
 * backlog of its own: TCP_NOTSENT_LOWAT makes the socket take little more
 * than TUN_LOWAT unsent bytes, so the rest stays here, in turn order. A
 * stream with bytes queued tells its owner to stop reading its source
 * (nw_strm_send returns 1) until its queue empties (on_drain).
 *
 * Every other frame (pongs, close, RST, WINDOW, heads) is answering input,
 * so input is what has to stop: above TUN_MAX the tunnel stops reading its
 * peer until the output is back under TUN_HIGH. (OPENs are not answers:
 * rx_update leaves them out until the peer names their stream.) DATA never
 * fills the batch past TUN_BATCH, so two peers moving bulk data both ways
 * never both stop reading. Pings are answered here, one pong in the connection's queue at a
 * time, the newest ping's payload waiting behind it. A peer that reads
 * nothing while output waits for two ping intervals is cut off (on_ping). */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <wslay/wslay.h>

#include "log.h"
#include "tun_int.h"
#include "ws.h"
#include "wsframe.h"

#define TUN_HIGH (1024 * 1024)
#define TUN_LOWAT (64 * 1024) /* TCP_NOTSENT_LOWAT on the tunnel's socket */
#define TUN_MAX (2 * TUN_HIGH)
#define TUN_WBUF (64 * 1024)
#define TUN_TURNS 8 /* batches one flush may write when the kernel takes each whole */

static void tun_do_close(nw_tun_t *t);

/* ------------------------------------------------------------ helpers */

/* What the tunnel holds unwritten. The connection's part is libuv's exact
 * write queue, not its wbytes (which drops only when a whole write has
 * completed): with TCP_NOTSENT_LOWAT a batch of big OPENs is mostly queued
 * in one write, and the peer answers its first OPENs (releasing _open_q)
 * long before that write completes; counted whole, the rest looked like
 * answers, this side stopped reading the peer, the peer stopped reading us
 * (its HEADs unread), and the stall timer cut the tunnel (test_a8). */
static size_t conn_queued(nw_tun_t *t) {
    return uv_stream_get_write_queue_size((const uv_stream_t *)&t->_conn->tcp);
}

static size_t tun_outq(nw_tun_t *t) {
    return wslay_event_get_queued_msg_length(t->_ws) + t->_wlen + t->_olen + conn_queued(t) +
           (t->_pong_pending ? t->_pong_len + 6 : 0);
}

/* Stop reading the peer while our output is over TUN_MAX (what we would
 * read could only add to it); resume below TUN_HIGH. The OPENs we sent
 * are not counted: they are not answers the peer forced on us, and the
 * peer's answers to them are what our reading drains. Counting them stopped
 * serve and agent at once (OPENs with big heads one way, HEADs the other),
 * neither output could drain, and the stall timer cut the tunnel. */
static void rx_update(nw_tun_t *t) {
    size_t q;
    if (t->_closing)
        return;
    q = tun_outq(t);
    q = q > t->_open_q ? q - t->_open_q : 0;
    if (!t->_rx_full && q > TUN_MAX) {
        t->_rx_full = 1;
        nw_debug("tun=%llu agent=%s %zu bytes of output unread by the peer: reading paused",
                 (unsigned long long)t->id, t->agent, q);
        nw_conn_pause(t->_conn, NW_PAUSE_WRITEQ);
    } else if (t->_rx_full && q < TUN_HIGH) {
        t->_rx_full = 0;
        t->_last_rx = uv_now(t->_conn->tcp.loop); /* we were not listening meanwhile */
        nw_conn_resume(t->_conn, NW_PAUSE_WRITEQ);
    }
}

static void arm_flush(nw_tun_t *t);

/* The agent masks what it sends: a fresh key per frame, drawn in bulk.
 * NULL when the random source fails. */
static const uint8_t *mask_key(nw_tun_t *t) {
    const uint8_t *key;
    if (t->_rnd_left < 4) {
        if (nw_random(t->_rnd, sizeof(t->_rnd)) != 0)
            return NULL;
        t->_rnd_left = sizeof(t->_rnd);
    }
    key = t->_rnd + sizeof(t->_rnd) - t->_rnd_left;
    t->_rnd_left -= 4;
    return key;
}

/* Data messages bypass wslay's send side: one binary frame each, framed
 * (and, from the agent, masked) straight into _obuf from its parts (a and
 * b, e.g. a DATA header and its body). wslay only sends pings and the
 * close; flush_out never writes _obuf while wslay is in the middle of one,
 * so frames never interleave. Saves wslay's copy, its byte-by-byte
 * masking loop and its per-message allocation. */
int nw__tun_queue_frame2(nw_tun_t *t, const uint8_t *a, size_t alen, const uint8_t *b,
                        size_t blen) {
    size_t len = alen + blen, need = len + NW_WSFRAME_MAX_HDR, h;
    uint8_t *o;
    if (t->_closing || t->_close_queued || wslay_event_get_close_sent(t->_ws))
        return NW_ECLOSED;
    if (t->_ocap - t->_olen < need) {
        size_t cap = t->_ocap ? t->_ocap : 16384;
        char *q;
        while (cap - t->_olen < need)
            cap *= 2;
        if (!(q = nw_realloc(t->_obuf, cap)))
            return NW_ENOMEM;
        t->_obuf = q;
        t->_ocap = cap;
    }
    o = (uint8_t *)t->_obuf + t->_olen;
    if (t->is_client) {
        const uint8_t *key = mask_key(t);
        if (!key)
            return NW_ENOMEM;
        h = nw_wsframe_put_hdr(o, NW_WSFRAME_FIN | NW_WSFRAME_BINARY, len, key);
        nw_wsframe_mask(o + h, a, alen, key, 0);
        if (blen)
            nw_wsframe_mask(o + h + alen, b, blen, key, alen);
    } else {
        h = nw_wsframe_put_hdr(o, NW_WSFRAME_FIN | NW_WSFRAME_BINARY, len, NULL);
        memcpy(o + h, a, alen);
        if (blen)
            memcpy(o + h + alen, b, blen);
    }
    t->_olen += h + len;
    t->_msgs++;
    arm_flush(t);
    return 0;
}

int nw__tun_queue_frame(nw_tun_t *t, const uint8_t *p, size_t len) {
    return nw__tun_queue_frame2(t, p, len, NULL, 0);
}

void nw_tun_goaway(nw_tun_t *t, uint32_t code) {
    uint8_t b[16];
    int n;
    if (t->_closing || t->goaway_sent)
        return;
    n = nw_mux_pack_goaway(b, sizeof(b), t->_last_sid, code);
    if (n > 0 && nw__tun_queue_frame(t, b, (size_t)n) == 0)
        t->goaway_sent = 1;
}

/* wslay sends control frames ahead of queued messages, so the close must
 * wait until every data message has left, or the peer would lose them. */
static void tun_send_close(nw_tun_t *t) {
    static const char why[] = "going away";
    t->_shutdown = 0;
    t->_close_queued = 1; /* nothing may be queued behind the close now */
    wslay_event_queue_close(t->_ws, 1001, (const uint8_t *)why, sizeof(why) - 1);
    arm_flush(t);
}

void nw_tun_shutdown(nw_tun_t *t) {
    if (t->_closing || t->_shutdown || wslay_event_get_close_sent(t->_ws))
        return;
    t->_shutdown = 1;
    if (t->_olen == 0 && !t->_ready && wslay_event_get_queued_msg_count(t->_ws) == 0)
        tun_send_close(t);
    else
        arm_flush(t);
}

/* ---------------------------------------------------- protocol errors */

/* Tunnel-fatal: the peer broke the protocol. */
void nw__tun_violation(nw_tun_t *t, const char *what, uint32_t sid) {
    nw_warn("tun=%llu agent=%s protocol violation: %s (strm=%u); closing tunnel",
            (unsigned long long)t->id, t->agent, what, sid);
    if (wslay_event_queue_close(t->_ws, 1002, (const uint8_t *)what, strlen(what)) == 0)
        t->_say_close = 1;
    nw_tun_close(t, NW_EPROTO);
}

/* --------------------------------------------------------- wslay glue */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *ud) {
    nw_tun_t *t = ud;
    size_t n = NW_MIN(len, t->_rx_len);
    (void)flags;
    if (n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    memcpy(buf, t->_rx, n);
    t->_rx += n;
    t->_rx_len -= n;
    return (ssize_t)n;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud) {
    nw_tun_t *t = ud;
    size_t n;
    (void)flags;
    if (!t->_wbuf && !(t->_wbuf = nw_malloc(TUN_WBUF))) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    n = NW_MIN(len, TUN_WBUF - t->_wlen);
    if (n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    memcpy(t->_wbuf + t->_wlen, data, n);
    t->_wlen += n;
    return (ssize_t)n;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud) {
    (void)ctx;
    (void)ud;
    return nw_random(buf, len) == 0 ? 0 : -1;
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                      void *ud) {
    nw_tun_t *t = ud;
    (void)ctx;
    if (t->_closing)
        return;
    if (a->opcode == WSLAY_BINARY_FRAME)
        nw__tun_dispatch(t, a->msg, a->msg_length);
    else if (a->opcode == WSLAY_TEXT_FRAME) {
        nw_warn("tun=%llu agent=%s text message on the tunnel; closing",
                (unsigned long long)t->id, t->agent);
        if (wslay_event_queue_close(t->_ws, 1003, NULL, 0) == 0)
            t->_say_close = 1;
    } else if (a->opcode == WSLAY_CONNECTION_CLOSE) {
        nw_info("tun=%llu agent=%s peer closed the tunnel (code %u)", (unsigned long long)t->id,
                t->agent, a->status_code);
    }
}

/* ---------------------------------------------------------- I/O driver */

/* The pong for the newest ping, framed (and masked) here; its write carries
 * credit 1, so tun_on_written knows when it has left. */
static int send_pong(nw_tun_t *t) {
    size_t n = t->_pong_len, h;
    const uint8_t *key = NULL;
    uint8_t *p = nw_malloc(n + 6);
    if (!p)
        return NW_ENOMEM;
    if (t->is_client && !(key = mask_key(t))) {
        nw_free(p);
        return NW_ENOMEM;
    }
    h = nw_wsframe_put_hdr(p, NW_WSFRAME_FIN | NW_WSFRAME_PONG, n, key);
    if (key)
        nw_wsframe_mask(p + h, t->_pong, n, key, 0);
    else if (n)
        memcpy(p + h, t->_pong, n);
    t->_pong_pending = 0;
    t->_pong_inflight = 1;
    return nw_conn_write_owned(t->_conn, (char *)p, h + n, 1);
}

/* Hand the connection what may go, in wire order: wslay's control frames
 * and the pong at once; the batch (_obuf: frames queued since, then DATA
 * pulled from the ready streams in turn) only once the connection has
 * written everything it was given before, so that unsent DATA waits in
 * the streams' queues, where a new stream's frames can pass it, and not
 * in the connection's. A write the kernel takes whole lets the next batch
 * go at once (at most TUN_TURNS per call; then the next loop turn).
 * -1: the tunnel closed. */
static int write_out(nw_tun_t *t) {
    int turns = 0;
    for (;;) {
        int moved = 0;
        if (wslay_event_want_write(t->_ws) && wslay_event_send(t->_ws) != 0) {
            nw_tun_close(t, NW_EPROTO);
            return -1;
        }
        if (t->_wlen) {
            char *p = t->_wbuf;
            size_t n = t->_wlen;
            t->_wbuf = NULL;
            t->_wlen = 0;
            if (nw_conn_write_owned(t->_conn, p, n, 0) != 0) {
                nw_tun_close(t, NW_ECLOSED);
                return -1;
            }
            moved = 1;
        }
        if (t->_pong_pending && !t->_pong_inflight && !wslay_event_want_write(t->_ws) &&
            !wslay_event_get_close_sent(t->_ws)) {
            if (send_pong(t) != 0) {
                nw_tun_close(t, NW_ECLOSED);
                return -1;
            }
            moved = 1;
        }
        if (wslay_event_get_close_sent(t->_ws))
            t->_olen = 0; /* nothing may follow a close frame */
        else if (t->_conn->wbytes == 0 && !wslay_event_want_write(t->_ws) && turns < TUN_TURNS) {
            /* wslay is between frames and the connection is empty. */
            if (!t->_close_queued)
                nw__sched_fill(t, TUN_BATCH);
            if (t->_closing)
                return -1;
            if (t->_olen) {
                char *p = t->_obuf;
                size_t n = t->_olen;
                t->_obuf = NULL;
                t->_olen = t->_ocap = 0;
                t->_msgs_out = t->_msgs;
                turns++;
                if (nw_conn_write_owned(t->_conn, p, n, 0) != 0) {
                    nw_tun_close(t, NW_ECLOSED);
                    return -1;
                }
                moved = 1;
            }
        }
        if (!moved)
            break;
    }
    if (turns == TUN_TURNS && t->_conn->wbytes == 0 && (t->_olen || t->_ready))
        arm_flush(t);
    return 0;
}

/* Write what may go; then the read pause, a graceful close that was
 * waiting, and the end of a tunnel whose WebSocket is done both ways. */
static void flush_out(nw_tun_t *t) {
    if (t->_closing || write_out(t) != 0)
        return;
    rx_update(t);
    if (t->_shutdown && t->_olen == 0 && !t->_ready &&
        wslay_event_get_queued_msg_count(t->_ws) == 0) {
        tun_send_close(t);
        return;
    }
    if (!wslay_event_want_read(t->_ws) && !wslay_event_want_write(t->_ws) && t->_olen == 0 &&
        t->_conn->wbytes == 0)
        nw_tun_close(t, NW_ECLOSED);
}

static void on_flush(uv_idle_t *h) {
    nw_tun_t *t = h->data;
    uv_idle_stop(h);
    t->_flush_armed = 0;
    flush_out(t);
}

static void arm_flush(nw_tun_t *t) {
    if (t->_flush_armed || t->_closing)
        return;
    t->_flush_armed = 1;
    uv_idle_start(&t->_flush, on_flush);
}

void nw__tun_arm_flush(nw_tun_t *t) { arm_flush(t); }

int nw__tun_hungry(const nw_tun_t *t) {
    return !t->_ready && t->_conn->wbytes == 0 && t->_olen < TUN_BATCH;
}

enum { RX_HDR, RX_DATA, RX_CTRL };

static void ws_fail(nw_tun_t *t, uint16_t code, const char *what);

/* A whole ping is in _cbuf: keep its payload for the pong (a newer ping
 * replaces an older one whose pong has not left yet). */
static void rx_ping(nw_tun_t *t) {
    nw_wsframe_hdr_t f;
    size_t len;
    /* The length may be written in the 16- or 64-bit form (its value is
     * at most 125, rx_header checked): the payload follows the header. */
    nw_wsframe_parse_hdr(t->_cbuf, &f);
    len = t->_clen - f.hlen;
    if (f.rsv) {
        ws_fail(t, 1002, "reserved bits set");
        return;
    }
    if (f.masked == (unsigned)t->is_client) {
        ws_fail(t, 1002, t->is_client ? "masked frame from the server"
                                      : "unmasked frame from the agent");
        return;
    }
    if (t->_close_queued || wslay_event_get_close_sent(t->_ws))
        return; /* nothing may follow our close */
    if (f.masked)
        nw_wsframe_mask(t->_pong, t->_cbuf + f.hlen, len, f.key, 0);
    else if (len)
        memcpy(t->_pong, t->_cbuf + f.hlen, len);
    t->_pong_len = len;
    t->_pong_pending = 1;
}

/* The peer broke RFC 6455: close with code and say why. */
static void ws_fail(nw_tun_t *t, uint16_t code, const char *what) {
    nw_warn("tun=%llu agent=%s websocket error: %s; closing", (unsigned long long)t->id, t->agent,
            what);
    if (wslay_event_queue_close(t->_ws, code, (const uint8_t *)what, strlen(what)) == 0)
        t->_say_close = 1;
    nw_tun_close(t, NW_EPROTO);
}

/* A frame header is complete in _hbuf: check it and set up its payload. */
static void rx_header(nw_tun_t *t) {
    nw_wsframe_hdr_t f;
    unsigned op;
    uint64_t len;
    nw_wsframe_parse_hdr(t->_hbuf, &f);
    op = f.opcode;
    len = f.len;
    if (f.masked)
        memcpy(t->_fkey, f.key, 4);
    t->_fleft = len;
    t->_fpos = 0;
    t->_ffin = (int)f.fin;
    if (op >= NW_WSFRAME_CLOSE) { /* control: rx_ping answers pings, wslay the rest */
        memcpy(t->_cbuf, t->_hbuf, t->_hlen);
        t->_clen = t->_hlen;
        if (!t->_ffin || len > NW_WSFRAME_MAX_CTRL)
            ws_fail(t, 1002, "invalid control frame");
        t->_rstate = RX_CTRL;
        return;
    }
    if (f.rsv)
        ws_fail(t, 1002, "reserved bits set");
    else if (f.masked == (unsigned)t->is_client)
        ws_fail(t, 1002, t->is_client ? "masked frame from the server"
                                       : "unmasked frame from the agent");
    else if (op == NW_WSFRAME_TEXT)
        ws_fail(t, 1003, "text message on the tunnel");
    else if (op != NW_WSFRAME_CONT && op != NW_WSFRAME_BINARY)
        ws_fail(t, 1002, "unknown opcode");
    else if ((op == NW_WSFRAME_BINARY) == (t->_in_msg != 0))
        ws_fail(t, 1002, op == NW_WSFRAME_BINARY ? "new message inside a fragmented one"
                                                 : "continuation without a message");
    else if (len > (uint64_t)(NW_MUX_MAX_FRAME - (op == NW_WSFRAME_BINARY ? 0 : t->_mlen)))
        ws_fail(t, 1009, "message too big");
    if (t->_closing)
        return;
    if (op == NW_WSFRAME_BINARY) {
        t->_in_msg = 1;
        t->_mlen = 0;
    }
    if (t->_mcap < t->_mlen + len) {
        uint8_t *q = nw_realloc(t->_msg, NW_MUX_MAX_FRAME);
        if (!q) {
            nw_tun_close(t, NW_ENOMEM);
            return;
        }
        t->_msg = q;
        t->_mcap = NW_MUX_MAX_FRAME;
    }
    t->_rstate = RX_DATA;
}

/* Parse what arrived. Data frames (our messages) are unmasked eight bytes
 * at a time into one message buffer and dispatched; control frames are
 * collected whole: pings are answered here (rx_ping), pongs and closes are
 * fed to wslay, which runs the close handshake. (wslay's own receive path unmasks byte by byte
 * and was most of serve's CPU time on a download.) */
static void rx_bytes(nw_tun_t *t, const uint8_t *p, size_t n) {
    while (n && !t->_closing && !wslay_event_get_close_received(t->_ws)) {
        size_t k;
        if (t->_rstate == RX_HDR) {
            k = nw_wsframe_hdr_take(t->_hbuf, &t->_hlen, p, n);
            p += k, n -= k;
            if (!nw_wsframe_hdr_done(t->_hbuf, t->_hlen))
                continue;
            rx_header(t);
            t->_hlen = 0;
        } else if (t->_rstate == RX_CTRL) {
            k = (size_t)NW_MIN((uint64_t)n, t->_fleft);
            memcpy(t->_cbuf + t->_clen, p, k);
            t->_clen += k;
            t->_fleft -= k;
            p += k, n -= k;
        } else {
            k = (size_t)NW_MIN((uint64_t)n, t->_fleft);
            if (t->is_client)
                memcpy(t->_msg + t->_mlen, p, k);
            else
                nw_wsframe_mask(t->_msg + t->_mlen, p, k, t->_fkey, (size_t)(t->_fpos & 3));
            t->_mlen += k;
            t->_fpos += k;
            t->_fleft -= k;
            p += k, n -= k;
        }
        if (t->_rstate == RX_HDR || t->_fleft || t->_closing)
            continue;
        if (t->_rstate == RX_CTRL && (t->_cbuf[0] & 0x0f) == NW_WSFRAME_PING) {
            rx_ping(t);
        } else if (t->_rstate == RX_CTRL) {
            int rc;
            t->_rx = (const char *)t->_cbuf;
            t->_rx_len = t->_clen;
            rc = wslay_event_recv(t->_ws);
            if (rc != 0 && !t->_closing) {
                nw_warn("tun=%llu agent=%s websocket error %d; closing",
                        (unsigned long long)t->id, t->agent, rc);
                nw_tun_close(t, NW_EPROTO);
            }
        } else if (t->_ffin) {
            t->_in_msg = 0;
            nw__tun_dispatch(t, t->_msg, t->_mlen);
            t->_mlen = 0;
        }
        t->_rstate = RX_HDR;
    }
}

static void tun_on_read(nw_conn_t *c, ssize_t nread, const char *buf) {
    nw_tun_t *t = c->data;
    if (nread < 0) {
        nw_tun_close(t, (int)nread);
        return;
    }
    t->_last_rx = uv_now(c->tcp.loop);
    t->_depth++;
    rx_bytes(t, (const uint8_t *)buf, (size_t)nread);
    t->_depth--;
    if (t->_close_err || t->_closing) {
        tun_do_close(t);
        return;
    }
    arm_flush(t);
    rx_update(t);
}

static void tun_on_written(nw_conn_t *c, size_t credit) {
    nw_tun_t *t = c->data;
    if (credit)
        t->_pong_inflight = 0; /* only pongs carry credit */
    flush_out(t);
}

static void tun_maybe_free(nw_tun_t *t) {
    if (--t->_handles > 0)
        return;
    wslay_event_context_free(t->_ws);
    nw_free(t->_wbuf);
    nw_free(t->_obuf);
    nw_free(t->_msg);
    nw_free(t->_buckets);
    nw_free(t);
}

static void tun_on_conn_close(nw_conn_t *c) { tun_maybe_free(c->data); }
static void tun_on_handle_close(uv_handle_t *h) { tun_maybe_free(h->data); }

/* Has output waited for two ping intervals with the peer taking none of
 * it? (Kernel buffers hide a peer that does not read until they are full;
 * its TCP stops acknowledging as soon as its own receive buffer is.) */
static int tun_stalled(nw_tun_t *t, uint64_t now) {
    uint64_t d = nw_conn_delivered(t->_conn);
    if (d > t->_delivered || (d == t->_conn->wtotal && tun_outq(t) == 0))
        t->_stall_since = now;
    t->_delivered = d;
    return now - t->_stall_since >= 2 * t->_cfg.ping_interval_ms;
}

static void on_ping(uv_timer_t *h) {
    nw_tun_t *t = h->data;
    uint64_t now = uv_now(h->loop);
    struct wslay_event_msg m;
    /* While we are not reading (output full), the peer's silence is ours. */
    if (!t->_rx_full && now - t->_last_rx >= 2 * t->_cfg.ping_interval_ms) {
        nw_warn("tun=%llu agent=%s peer silent for %llu ms; dropping tunnel",
                (unsigned long long)t->id, t->agent, (unsigned long long)(now - t->_last_rx));
        nw_tun_close(t, NW_ETIMEOUT);
        return;
    }
    if (tun_stalled(t, now)) {
        nw_warn("tun=%llu agent=%s peer has read nothing for %llu ms (%llu bytes sent and "
                "not taken, %zu more queued); dropping tunnel",
                (unsigned long long)t->id, t->agent, (unsigned long long)(now - t->_stall_since),
                (unsigned long long)(t->_conn->wtotal - t->_delivered),
                tun_outq(t) - conn_queued(t));
        nw_tun_close(t, NW_ETIMEOUT);
        return;
    }
    if (wslay_event_get_queued_msg_count(t->_ws) != 0)
        return; /* the last ping has not even left */
    m.opcode = WSLAY_PING;
    m.msg = NULL;
    m.msg_length = 0;
    if (wslay_event_queue_msg(t->_ws, &m) == 0)
        arm_flush(t);
}

/* The kernel holds at most about TUN_LOWAT bytes it has not sent yet
 * (writes take no more; the socket is writable again below it): a
 * backlog there would sit ahead of every stream's next frame, out of the
 * scheduler's reach. Best effort: without it only latency suffers. */
static void set_notsent_lowat(nw_conn_t *c) {
#ifdef TCP_NOTSENT_LOWAT
    uv_os_fd_t fd;
    int v = TUN_LOWAT;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, sizeof(v));
#else
    (void)c;
#endif
}

nw_tun_t *nw_tun_new(uv_loop_t *loop, nw_conn_t *c, int is_client, const nw_tun_cfg_t *cfg,
                     const nw_tun_cbs_t *cbs, void *owner) {
    static const struct wslay_event_callbacks wcb = {
        .recv_callback = ws_recv,
        .send_callback = ws_send,
        .genmask_callback = ws_genmask,
        .on_msg_recv_callback = ws_on_msg,
    };
    nw_tun_t *t = nw_calloc(1, sizeof(*t));
    wslay_event_context_ptr ws = NULL;
    int rc;
    if (!t) {
        nw_conn_close(c);
        return NULL;
    }
    rc = is_client ? wslay_event_context_client_init(&ws, &wcb, t)
                   : wslay_event_context_server_init(&ws, &wcb, t);
    if (rc != 0) {
        nw_free(t);
        nw_conn_close(c);
        return NULL;
    }
    wslay_event_config_set_max_recv_msg_length(ws, NW_MUX_MAX_FRAME);
    t->data = owner;
    t->is_client = is_client;
    t->_ws = ws;
    t->_cbs = *cbs;
    t->_cfg = *cfg;
    t->_conn = c;
    t->_handles = 3;
    nw_conn_set_owner(c, t, tun_on_read, tun_on_written, tun_on_conn_close);
    set_notsent_lowat(c);
    uv_timer_init(loop, &t->_ping);
    t->_ping.data = t;
    uv_idle_init(loop, &t->_flush);
    t->_flush.data = t;
    return t;
}

int nw_tun_start(nw_tun_t *t, const char *leftover, size_t len) {
    uv_loop_t *loop = t->_conn->tcp.loop;
    t->_last_rx = t->_stall_since = uv_now(loop);
    uv_timer_start(&t->_ping, on_ping, t->_cfg.ping_interval_ms, t->_cfg.ping_interval_ms);
    nw_conn_resume(t->_conn, NW_PAUSE_OWNER);
    if (len)
        tun_on_read(t->_conn, (ssize_t)len, leftover);
    return 0;
}

static void tun_do_close(nw_tun_t *t) {
    size_t i;
    nw_strm_t *list = NULL, *s;
    int err = t->_close_err ? t->_close_err : NW_ECLOSED;

    if (t->_closing == 2)
        return;
    t->_closing = 2;
    while (t->_ready)
        nw__sched_del(t, t->_ready);
    /* Collect first: owners' callbacks must not see a half-walked table. */
    for (i = 0; i < t->_nbuckets; i++)
        for (s = t->_buckets[i]; s; s = s->_hnext) {
            s->_rnext = list;
            list = s;
        }
    while (list) {
        s = list;
        list = s->_rnext;
        s->_rnext = NULL;
        s->_reset = 1;
        nw__strm_orphan(s, 1, nw__strm_unsent(s) ? NW_RST_UNSENT : NW_RST_TUNNEL_LOST);
        nw__strm_free(s);
    }
    if (t->_cbs.on_close)
        t->_cbs.on_close(t, err);
    uv_timer_stop(&t->_ping);
    uv_idle_stop(&t->_flush);
    uv_close((uv_handle_t *)&t->_ping, tun_on_handle_close);
    uv_close((uv_handle_t *)&t->_flush, tun_on_handle_close);
    if (t->_say_close) {
        /* The peer broke the protocol: tell it why (the close frame wslay
         * holds), then close once that is written. Queued data is dropped. */
        if (wslay_event_want_write(t->_ws) && wslay_event_send(t->_ws) == 0 && t->_wlen) {
            nw_conn_write_owned(t->_conn, t->_wbuf, t->_wlen, 0);
            t->_wbuf = NULL;
            t->_wlen = 0;
        }
        nw_conn_close_after_flush(t->_conn);
        return;
    }
    nw_conn_close(t->_conn);
}

void nw_tun_close(nw_tun_t *t, int err) {
    if (t->_closing)
        return;
    if (!t->_close_err)
        t->_close_err = err ? err : NW_ECLOSED;
    t->_closing = 1;
    if (t->_depth == 0)
        tun_do_close(t);
}
