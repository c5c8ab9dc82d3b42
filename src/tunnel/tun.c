/* tun.c: tunnel session over a WebSocket; maps messages to natwrp frames
 * (mux.c) and keeps per-stream state.
 *
 * WebSocket framing is split for speed: natwrp's own data messages (one
 * binary frame each) are framed here on the way out (rx/tx: 8-byte masking,
 * one copy) and parsed here on the way in; control frames (ping, pong,
 * close) are wslay's, in both directions: it answers pings and runs the
 * close handshake. The two never interleave on the wire.
 *
 * Output path: frames queue in buffers that an idle handle flushes at the
 * next loop turn, so every frame produced in one turn leaves in one write.
 * (An idle handle, not a check handle: it also keeps the next poll from
 * blocking, so frames queued from a timer, e.g. a ping or a reset after a
 * timeout, leave at once instead of at the next I/O event.) What the tunnel
 * holds (queued frames + unwritten bytes) is bounded: above TUN_HIGH,
 * streams stop sending DATA and their owners stop reading their sources;
 * below TUN_LOW they resume.
 *
 * Every other frame (pongs, close, RST, WINDOW, heads) is answering input,
 * so input is what has to stop: above TUN_MAX the tunnel stops reading its
 * peer until the output is back under TUN_HIGH. (OPENs are not answers:
 * rx_update leaves them out until the peer names their stream.) DATA alone stops at
 * TUN_HIGH, so two peers moving bulk data both ways never both stop
 * reading. Pings are answered here, one pong in the connection's queue at a
 * time, the newest ping's payload waiting behind it. A peer that reads
 * nothing while output waits for two ping intervals is cut off (on_ping). */
#include <stdlib.h>
#include <wslay/wslay.h>

#include "log.h"
#include "tun.h"
#include "ws.h"

#define TUN_HIGH (1024 * 1024)
#define TUN_LOW (256 * 1024)
#define TUN_MAX (2 * TUN_HIGH)
#define TUN_SMALL_END 4096 /* see nw_strm_send */
#define TUN_WBUF (64 * 1024)

static _Thread_local uint8_t scratch[NW_MUX_MAX_FRAME];

static void tun_do_close(nw_tun_t *t);
static void strm_flush(nw_strm_t *s);

/* ------------------------------------------------------------ helpers */

static size_t tun_outq(nw_tun_t *t) {
    return wslay_event_get_queued_msg_length(t->_ws) + t->_wlen + t->_olen + t->_conn->wbytes +
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

/* XOR-copy with a 4-byte key, eight bytes at a time (RFC 6455 5.3). */
static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4],
                      size_t phase) {
    uint8_t k8[8];
    uint64_t k, v;
    size_t i = 0, j;
    for (j = 0; j < 8; j++)
        k8[j] = key[(phase + j) & 3];
    memcpy(&k, k8, 8);
    for (; i + 8 <= n; i += 8) {
        memcpy(&v, src + i, 8);
        v ^= k;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ key[(phase + i) & 3];
}

/* Data messages bypass wslay's send side: one binary frame each, framed
 * (and, from the agent, masked) straight into _obuf from its parts. wslay,
 * which still parses what arrives, only sends control frames (pongs,
 * pings, close); flush_out never writes _obuf while wslay is in the middle
 * of one, so frames never interleave. Saves wslay's copy, its byte-by-byte
 * masking loop and its per-message allocation. */
static int queue_frame2(nw_tun_t *t, const uint8_t *a, size_t alen, const uint8_t *b,
                        size_t blen) {
    size_t len = alen + blen, need = len + 14, h = 0;
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
    o[h++] = 0x82; /* FIN, binary */
    if (len < 126) {
        o[h++] = (uint8_t)len;
    } else if (len <= 0xffff) {
        o[h++] = 126;
        nw_put16(o + h, (uint16_t)len);
        h += 2;
    } else {
        o[h++] = 127;
        nw_put32(o + h, 0);
        nw_put32(o + h + 4, (uint32_t)len);
        h += 8;
    }
    if (t->is_client) {
        const uint8_t *key;
        if (t->_rnd_left < 4) {
            if (nw_random(t->_rnd, sizeof(t->_rnd)) != 0)
                return NW_ENOMEM;
            t->_rnd_left = sizeof(t->_rnd);
        }
        key = t->_rnd + sizeof(t->_rnd) - t->_rnd_left;
        t->_rnd_left -= 4;
        o[1] |= 0x80;
        memcpy(o + h, key, 4);
        h += 4;
        mask_copy(o + h, a, alen, key, 0);
        if (blen)
            mask_copy(o + h + alen, b, blen, key, alen);
    } else {
        memcpy(o + h, a, alen);
        if (blen)
            memcpy(o + h + alen, b, blen);
    }
    t->_olen += h + len;
    t->_msgs++;
    if (!t->_congested && tun_outq(t) > TUN_HIGH)
        t->_congested = 1;
    arm_flush(t);
    return 0;
}

static int queue_frame(nw_tun_t *t, const uint8_t *p, size_t len) {
    return queue_frame2(t, p, len, NULL, 0);
}

/* ------------------------------------------------------- stream table */

static nw_strm_t *strm_find(nw_tun_t *t, uint32_t sid) {
    nw_strm_t *s;
    if (!t->_nbuckets)
        return NULL;
    for (s = t->_buckets[sid & (t->_nbuckets - 1)]; s; s = s->_hnext)
        if (s->sid == sid)
            return s;
    return NULL;
}

/* The peer named s (any frame for it): it has read s's OPEN. */
static void open_release(nw_strm_t *s) {
    s->tun->_open_q -= s->_open_len;
    s->_open_len = 0;
}

static int strm_insert(nw_tun_t *t, nw_strm_t *s) {
    if (t->nstreams + 1 > t->_nbuckets) {
        size_t n = t->_nbuckets ? t->_nbuckets * 2 : 16, i;
        nw_strm_t **b = nw_calloc(n, sizeof(*b));
        if (!b)
            return NW_ENOMEM;
        for (i = 0; i < t->_nbuckets; i++) {
            nw_strm_t *x = t->_buckets[i], *next;
            for (; x; x = next) {
                next = x->_hnext;
                x->_hnext = b[x->sid & (n - 1)];
                b[x->sid & (n - 1)] = x;
            }
        }
        nw_free(t->_buckets);
        t->_buckets = b;
        t->_nbuckets = n;
    }
    s->_hnext = t->_buckets[s->sid & (t->_nbuckets - 1)];
    t->_buckets[s->sid & (t->_nbuckets - 1)] = s;
    t->nstreams++;
    return 0;
}

static void blocked_add(nw_tun_t *t, nw_strm_t *s) {
    if (s->_blocked)
        return;
    s->_blocked = 1;
    s->_bprev = NULL;
    s->_bnext = t->_blocked;
    if (t->_blocked)
        t->_blocked->_bprev = s;
    t->_blocked = s;
}

static void blocked_del(nw_tun_t *t, nw_strm_t *s) {
    if (!s->_blocked)
        return;
    s->_blocked = 0;
    if (s->_bprev)
        s->_bprev->_bnext = s->_bnext;
    else
        t->_blocked = s->_bnext;
    if (s->_bnext)
        s->_bnext->_bprev = s->_bprev;
}

static nw_strm_t *strm_new(nw_tun_t *t, uint32_t sid) {
    nw_strm_t *s = nw_calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->tun = t;
    s->sid = sid;
    s->_send_credit = t->_cfg.peer_window;
    s->_recv_credit = t->_cfg.my_window;
    if (strm_insert(t, s) != 0) {
        nw_free(s);
        return NULL;
    }
    t->active++;
    return s;
}

static void strm_free(nw_strm_t *s) {
    nw_tun_t *t = s->tun;
    nw_strm_t **pp = &t->_buckets[s->sid & (t->_nbuckets - 1)];
    while (*pp != s)
        pp = &(*pp)->_hnext;
    *pp = s->_hnext;
    open_release(s);
    blocked_del(t, s);
    nw_bufq_clear(&s->_pending);
    if (!s->_detached)
        t->active--;
    t->nstreams--;
    nw_free(s);
}

static void send_rst(nw_strm_t *s, uint32_t code) {
    uint8_t b[16];
    int n = nw_mux_pack_rst(b, sizeof(b), s->sid, code);
    if (n > 0)
        queue_frame(s->tun, b, (size_t)n);
}

/* A detached stream is freed once nothing is left to send; a peer that
 * has not finished is told to stop. */
static void strm_settle(nw_strm_t *s) {
    if (s->_pending.bytes || (s->_pending_end && !s->_local_end))
        return;
    if (!s->_reset && !(s->_local_end && s->_remote_end))
        send_rst(s, NW_RST_CANCEL);
    strm_free(s);
}

/* Stream-level failure seen by the tunnel: tell the peer and the owner. */
static void strm_abort(nw_strm_t *s, uint32_t code) {
    nw_tun_t *t = s->tun;
    send_rst(s, code);
    s->_reset = 1;
    nw_warn("tun=%llu agent=%s strm=%u reset sent: %s", (unsigned long long)t->id, t->agent,
            s->sid, nw_mux_code_name(code));
    if (!s->_detached && t->_cbs.on_reset) {
        s->_detached = 1;
        t->active--;
        t->_cbs.on_reset(s, code);
    }
    strm_free(s);
}

/* ---------------------------------------------------------- send side */

static int send_data(nw_strm_t *s, const void *p, size_t n, int end) {
    nw_tun_t *t = s->tun;
    uint8_t hdr[16];
    int hl = nw_mux_pack_data_hdr(hdr, sizeof(hdr), s->sid, end ? NW_MUX_F_END : 0);
    if (hl < 0)
        return hl;
    s->_send_credit -= (int64_t)n;
    if (end)
        s->_local_end = 1;
    return queue_frame2(t, hdr, (size_t)hl, p, n);
}

/* Move queued bytes out while there is credit and tunnel room. */
static void strm_flush(nw_strm_t *s) {
    nw_tun_t *t = s->tun;
    while (s->_pending.bytes && s->_send_credit > 0 && !t->_congested) {
        const char *p;
        size_t n = nw_bufq_peek(&s->_pending, &p, NW_MUX_MAX_DATA);
        int last;
        if ((int64_t)n > s->_send_credit)
            n = (size_t)s->_send_credit;
        last = s->_pending_end && n == s->_pending.bytes;
        if (send_data(s, p, n, last) != 0) {
            nw_tun_close(t, NW_ENOMEM);
            return;
        }
        nw_bufq_drop(&s->_pending, n);
    }
    if (s->_pending.bytes) {
        blocked_add(t, s);
        return;
    }
    blocked_del(t, s);
    if (s->_pending_end && !s->_local_end && send_data(s, "", 0, 1) != 0) {
        nw_tun_close(t, NW_ENOMEM);
        return;
    }
    if (s->_detached)
        strm_settle(s);
    else if (t->_cbs.on_drain)
        t->_cbs.on_drain(s);
}

int nw_strm_send(nw_strm_t *s, const void *p, size_t len, int end) {
    nw_tun_t *t = s->tun;
    const char *b = p;
    int small_end = end && len <= TUN_SMALL_END && (int64_t)len <= s->_send_credit;
    if (s->_local_end || s->_pending_end || s->_reset || t->_closing)
        return NW_ECLOSED;
    /* Fast path: nothing queued before us, so bytes go straight out. A short
     * last piece (an error page, a refusal) goes even when the tunnel is
     * congested: queued, it counts in the output bound, which stops our
     * reading; held, it would keep the stream alive where nothing counts. */
    while (!s->_pending.bytes && (!t->_congested || small_end) && len && s->_send_credit > 0) {
        size_t n = NW_MIN(len, NW_MUX_MAX_DATA);
        if ((int64_t)n > s->_send_credit)
            n = (size_t)s->_send_credit;
        if (send_data(s, b, n, end && n == len) != 0)
            return NW_ENOMEM;
        b += n;
        len -= n;
    }
    if (len && nw_bufq_push(&s->_pending, b, len) != 0)
        return NW_ENOMEM;
    if (s->_pending.bytes) {
        if (end)
            s->_pending_end = 1;
        blocked_add(t, s);
        return 1;
    }
    if (end && !s->_local_end && send_data(s, "", 0, 1) != 0)
        return NW_ENOMEM;
    return 0;
}

void nw_strm_consumed(nw_strm_t *s, size_t n) {
    uint8_t b[16];
    int k;
    if (s->_remote_end || s->_reset || s->tun->_closing)
        return;
    s->_unacked += n;
    if (s->_unacked < s->tun->_cfg.my_window / 2)
        return;
    k = nw_mux_pack_window(b, sizeof(b), s->sid, (uint32_t)s->_unacked);
    if (k > 0 && queue_frame(s->tun, b, (size_t)k) == 0) {
        s->_recv_credit += (int64_t)s->_unacked;
        s->_unacked = 0;
    }
}

void nw_strm_detach(nw_strm_t *s, uint32_t code) {
    nw_tun_t *t = s->tun;
    if (s->_detached)
        return;
    s->_detached = 1;
    s->data = NULL;
    t->active--;
    if (t->_closing)
        return; /* tun_do_close frees it */
    if (code) {
        if (!s->_reset && !(s->_local_end && s->_remote_end))
            send_rst(s, code);
        s->_reset = 1;
        strm_free(s);
        return;
    }
    strm_settle(s);
}

nw_strm_t *nw_tun_open(nw_tun_t *t, const char *method, size_t method_len, const char *target,
                       size_t target_len, const nw_hdr_t *hdrs, size_t nhdrs, int end,
                       int *err) {
    nw_strm_t *s;
    int n;
    *err = NW_ECLOSED;
    if (t->_closing || t->goaway_recv || t->_last_sid == 0xffffffffu)
        return NULL;
    n = nw_mux_pack_open(scratch, sizeof(scratch), t->_last_sid + 1, end ? NW_MUX_F_END : 0,
                         method, method_len, target, target_len, hdrs, nhdrs);
    if (n < 0) {
        *err = n == NW_ENOSPC ? NW_ETOOBIG : n;
        return NULL;
    }
    s = strm_new(t, t->_last_sid + 1);
    if (!s || (*err = queue_frame(t, scratch, (size_t)n)) != 0) {
        if (s)
            strm_free(s);
        *err = NW_ENOMEM;
        return NULL;
    }
    t->_last_sid++;
    s->_open_seq = t->_msgs;
    s->_open_len = (size_t)n;
    t->_open_q += (size_t)n;
    s->_local_end = end ? 1 : 0;
    *err = 0;
    return s;
}

int nw_strm_head(nw_strm_t *s, uint16_t status, const char *reason, size_t reason_len,
                 const nw_hdr_t *hdrs, size_t nhdrs, int end) {
    int n = nw_mux_pack_head(scratch, sizeof(scratch), s->sid, end ? NW_MUX_F_END : 0, status,
                             reason, reason_len, hdrs, nhdrs);
    if (n < 0)
        return n == NW_ENOSPC ? NW_ETOOBIG : n;
    if (end)
        s->_local_end = 1;
    return queue_frame(s->tun, scratch, (size_t)n);
}

void nw_tun_goaway(nw_tun_t *t, uint32_t code) {
    uint8_t b[16];
    int n;
    if (t->_closing || t->goaway_sent)
        return;
    n = nw_mux_pack_goaway(b, sizeof(b), t->_last_sid, code);
    if (n > 0 && queue_frame(t, b, (size_t)n) == 0)
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
    if (t->_olen == 0 && wslay_event_get_queued_msg_count(t->_ws) == 0)
        tun_send_close(t);
    else
        arm_flush(t);
}

/* ------------------------------------------------------- receive side */

/* Tunnel-fatal: the peer broke the protocol. */
static void tun_violation(nw_tun_t *t, const char *what, uint32_t sid) {
    nw_warn("tun=%llu agent=%s protocol violation: %s (strm=%u); closing tunnel",
            (unsigned long long)t->id, t->agent, what, sid);
    if (wslay_event_queue_close(t->_ws, 1002, (const uint8_t *)what, strlen(what)) == 0)
        t->_say_close = 1;
    nw_tun_close(t, NW_EPROTO);
}

/* Look a stream up; ids that were never opened are fatal, closed ones are
 * ignored (a frame may cross a RST in flight). */
static nw_strm_t *lookup(nw_tun_t *t, const nw_mux_frame_t *f) {
    nw_strm_t *s = strm_find(t, f->sid);
    if (!s && f->sid > t->_last_sid)
        tun_violation(t, "frame for a stream never opened", f->sid);
    if (s)
        open_release(s);
    return s;
}

static void on_open_frame(nw_tun_t *t, const nw_mux_frame_t *f) {
    nw_strm_t *s;
    if (!t->is_client) {
        tun_violation(t, "OPEN sent to the server", f->sid);
        return;
    }
    if (f->sid <= t->_last_sid) {
        tun_violation(t, "stream id not increasing", f->sid);
        return;
    }
    t->_last_sid = f->sid;
    s = strm_new(t, f->sid);
    if (!s) {
        uint8_t b[16];
        int n = nw_mux_pack_rst(b, sizeof(b), f->sid, NW_RST_INTERNAL);
        if (n > 0)
            queue_frame(t, b, (size_t)n);
        return;
    }
    s->_remote_end = (f->flags & NW_MUX_F_END) ? 1 : 0;
    if (t->goaway_sent) {
        s->_detached = 1;
        t->active--;
        send_rst(s, NW_RST_REFUSED);
        s->_reset = 1;
        strm_free(s);
        return;
    }
    t->_cbs.on_open(t, s, f);
}

static void on_head_frame(nw_tun_t *t, const nw_mux_frame_t *f) {
    nw_strm_t *s;
    if (t->is_client) {
        tun_violation(t, "HEAD sent to the agent", f->sid);
        return;
    }
    if (!(s = lookup(t, f)) || s->_detached)
        return;
    if (s->_head_recv || s->_remote_end) {
        strm_abort(s, NW_RST_PROTOCOL);
        return;
    }
    s->_head_recv = 1;
    if (f->flags & NW_MUX_F_END)
        s->_remote_end = 1;
    t->_cbs.on_head(s, f);
}

static void on_data_frame(nw_tun_t *t, const nw_mux_frame_t *f) {
    nw_strm_t *s = lookup(t, f);
    int end = (f->flags & NW_MUX_F_END) ? 1 : 0;
    if (!s)
        return;
    if (s->_remote_end || (!t->is_client && !s->_head_recv)) {
        if (!s->_detached || !s->_remote_end)
            strm_abort(s, NW_RST_PROTOCOL);
        return;
    }
    if ((int64_t)f->data_len > s->_recv_credit) {
        strm_abort(s, NW_RST_FLOW);
        return;
    }
    s->_recv_credit -= (int64_t)f->data_len;
    if (end)
        s->_remote_end = 1;
    if (s->_detached) {
        if (end)
            strm_settle(s);
        return;
    }
    t->_cbs.on_data(s, f->data, f->data_len, end);
}

static void on_window_frame(nw_tun_t *t, const nw_mux_frame_t *f) {
    nw_strm_t *s = lookup(t, f);
    if (!s || s->_reset)
        return;
    s->_send_credit += f->value;
    if (s->_send_credit > (int64_t)NW_MUX_MAX_WINDOW) {
        strm_abort(s, NW_RST_FLOW);
        return;
    }
    strm_flush(s);
}

static void on_rst_frame(nw_tun_t *t, const nw_mux_frame_t *f) {
    nw_strm_t *s = lookup(t, f);
    if (!s)
        return;
    s->_reset = 1;
    s->reset_by_peer = 1;
    nw_debug("tun=%llu strm=%u reset by peer: %s", (unsigned long long)t->id, s->sid,
             nw_mux_code_name(f->value));
    if (!s->_detached) {
        s->_detached = 1;
        t->active--;
        t->_cbs.on_reset(s, f->value);
    }
    strm_free(s);
}

static void dispatch(nw_tun_t *t, const uint8_t *msg, size_t len) {
    nw_hdr_t hdrs[NW_MUX_MAX_HDRS];
    nw_mux_frame_t f;
    int rc = nw_mux_decode(msg, len, &f, hdrs, NW_ARRAY_LEN(hdrs));
    if (rc != 0) {
        tun_violation(t, nw_strerror(rc), 0);
        return;
    }
    switch (f.type) {
    case NW_MUX_OPEN: on_open_frame(t, &f); break;
    case NW_MUX_HEAD: on_head_frame(t, &f); break;
    case NW_MUX_DATA: on_data_frame(t, &f); break;
    case NW_MUX_WINDOW: on_window_frame(t, &f); break;
    case NW_MUX_RST: on_rst_frame(t, &f); break;
    case NW_MUX_GOAWAY:
        t->goaway_recv = 1;
        if (t->_cbs.on_goaway)
            t->_cbs.on_goaway(t, f.last_sid, f.value);
        break;
    default: tun_violation(t, "unknown frame type", f.sid); break;
    }
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
        dispatch(t, a->msg, a->msg_length);
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
    size_t n = t->_pong_len, h = 2;
    uint8_t *p = nw_malloc(n + 6);
    if (!p)
        return NW_ENOMEM;
    p[0] = 0x8a; /* FIN, pong */
    p[1] = (uint8_t)n;
    if (t->is_client) {
        uint8_t key[4];
        if (nw_random(key, sizeof(key)) != 0) {
            nw_free(p);
            return NW_ENOMEM;
        }
        p[1] |= 0x80;
        memcpy(p + 2, key, 4);
        h = 6;
        mask_copy(p + h, t->_pong, n, key, 0);
    } else if (n) {
        memcpy(p + h, t->_pong, n);
    }
    t->_pong_pending = 0;
    t->_pong_inflight = 1;
    return nw_conn_write_owned(t->_conn, (char *)p, h + n, 1);
}

static void flush_out(nw_tun_t *t) {
    if (t->_closing)
        return;
    while (t->_conn->wbytes < TUN_HIGH) {
        int moved = 0;
        if (wslay_event_want_write(t->_ws) && wslay_event_send(t->_ws) != 0) {
            nw_tun_close(t, NW_EPROTO);
            return;
        }
        if (t->_wlen) {
            char *p = t->_wbuf;
            size_t n = t->_wlen;
            t->_wbuf = NULL;
            t->_wlen = 0;
            if (nw_conn_write_owned(t->_conn, p, n, 0) != 0) {
                nw_tun_close(t, NW_ECLOSED);
                return;
            }
            moved = 1;
        }
        if (t->_pong_pending && !t->_pong_inflight && !wslay_event_want_write(t->_ws) &&
            !wslay_event_get_close_sent(t->_ws)) {
            if (send_pong(t) != 0) {
                nw_tun_close(t, NW_ECLOSED);
                return;
            }
            moved = 1;
        }
        if (wslay_event_get_close_sent(t->_ws))
            t->_olen = 0; /* nothing may follow a close frame */
        if (t->_olen && !wslay_event_want_write(t->_ws)) {
            /* wslay is between frames: the data frames can go. */
            char *p = t->_obuf;
            size_t n = t->_olen;
            t->_obuf = NULL;
            t->_olen = t->_ocap = 0;
            t->_msgs_out = t->_msgs;
            if (nw_conn_write_owned(t->_conn, p, n, 0) != 0) {
                nw_tun_close(t, NW_ECLOSED);
                return;
            }
            moved = 1;
        }
        if (!moved)
            break;
    }
    if (t->_congested && tun_outq(t) < TUN_LOW) {
        /* Every blocked stream gets its turn: take the whole list, flush
         * each one; one still short of credit goes back on the list without
         * stopping the others. If the tunnel fills up again, the rest go
         * back unflushed. (Owners' on_drain only resumes reads, so no other
         * stream is freed meanwhile.) */
        nw_strm_t *s = t->_blocked, *next, *x;
        t->_congested = 0;
        t->_blocked = NULL;
        for (x = s; x; x = x->_bnext)
            x->_blocked = 0;
        for (; s; s = next) {
            next = s->_bnext;
            s->_bprev = s->_bnext = NULL;
            if (t->_congested) {
                blocked_add(t, s);
                continue;
            }
            strm_flush(s);
            if (t->_closing)
                return;
        }
    }
    rx_update(t);
    if (t->_shutdown && t->_olen == 0 && wslay_event_get_queued_msg_count(t->_ws) == 0) {
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

enum { RX_HDR, RX_DATA, RX_CTRL };

static void ws_fail(nw_tun_t *t, uint16_t code, const char *what);

/* A whole ping is in _cbuf: keep its payload for the pong (a newer ping
 * replaces an older one whose pong has not left yet). */
static void rx_ping(nw_tun_t *t) {
    uint8_t b0 = t->_cbuf[0], b1 = t->_cbuf[1], l7 = b1 & 0x7f;
    int masked = (b1 & 0x80) != 0;
    /* The length may be written in the 16- or 64-bit form (its value is
     * at most 125, rx_header checked): the payload follows the header. */
    size_t h = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + (masked ? 4 : 0);
    size_t len = t->_clen - h;
    if (b0 & 0x70) {
        ws_fail(t, 1002, "reserved bits set");
        return;
    }
    if (masked == t->is_client) {
        ws_fail(t, 1002, t->is_client ? "masked frame from the server"
                                      : "unmasked frame from the agent");
        return;
    }
    if (t->_close_queued || wslay_event_get_close_sent(t->_ws))
        return; /* nothing may follow our close */
    if (masked)
        mask_copy(t->_pong, t->_cbuf + h, len, t->_cbuf + h - 4, 0);
    else if (len)
        memcpy(t->_pong, t->_cbuf + h, len);
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
    uint8_t b0 = t->_hbuf[0], b1 = t->_hbuf[1];
    int op = b0 & 0x0f, masked = (b1 & 0x80) != 0;
    uint64_t len = b1 & 0x7f;
    size_t h = 2;
    if (len == 126) {
        len = nw_get16(t->_hbuf + 2);
        h = 4;
    } else if (len == 127) {
        len = ((uint64_t)nw_get32(t->_hbuf + 2) << 32) | nw_get32(t->_hbuf + 6);
        h = 10;
    }
    if (masked)
        memcpy(t->_fkey, t->_hbuf + h, 4);
    t->_fleft = len;
    t->_fpos = 0;
    t->_ffin = (b0 & 0x80) != 0;
    if (op >= 8) { /* control: wslay answers pings and closes */
        memcpy(t->_cbuf, t->_hbuf, t->_hlen);
        t->_clen = t->_hlen;
        if (!t->_ffin || len > 125)
            ws_fail(t, 1002, "invalid control frame");
        t->_rstate = RX_CTRL;
        return;
    }
    if (b0 & 0x70)
        ws_fail(t, 1002, "reserved bits set");
    else if (masked == t->is_client)
        ws_fail(t, 1002, t->is_client ? "masked frame from the server"
                                       : "unmasked frame from the agent");
    else if (op == 1)
        ws_fail(t, 1003, "text message on the tunnel");
    else if (op != 0 && op != 2)
        ws_fail(t, 1002, "unknown opcode");
    else if ((op == 2) == (t->_in_msg != 0))
        ws_fail(t, 1002, op == 2 ? "new message inside a fragmented one"
                                 : "continuation without a message");
    else if (len > (uint64_t)(NW_MUX_MAX_FRAME - (op == 2 ? 0 : t->_mlen)))
        ws_fail(t, 1009, "message too big");
    if (t->_closing)
        return;
    if (op == 2) {
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
 * collected whole and fed to wslay, which answers pings with pongs and
 * runs the close handshake. (wslay's own receive path unmasks byte by byte
 * and was most of serve's CPU time on a download.) */
static void rx_bytes(nw_tun_t *t, const uint8_t *p, size_t n) {
    while (n && !t->_closing && !wslay_event_get_close_received(t->_ws)) {
        size_t k;
        if (t->_rstate == RX_HDR) {
            size_t need;
            uint8_t l7;
            if (t->_hlen < 2) {
                k = NW_MIN(n, 2 - t->_hlen);
                memcpy(t->_hbuf + t->_hlen, p, k);
                t->_hlen += k;
                p += k, n -= k;
                if (t->_hlen < 2)
                    continue;
            }
            /* The first two bytes say how long the whole header is. */
            l7 = t->_hbuf[1] & 0x7f;
            need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((t->_hbuf[1] & 0x80) ? 4 : 0);
            k = NW_MIN(n, need - t->_hlen);
            memcpy(t->_hbuf + t->_hlen, p, k);
            t->_hlen += k;
            p += k, n -= k;
            if (t->_hlen < need)
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
                mask_copy(t->_msg + t->_mlen, p, k, t->_fkey, (size_t)(t->_fpos & 3));
            t->_mlen += k;
            t->_fpos += k;
            t->_fleft -= k;
            p += k, n -= k;
        }
        if (t->_rstate == RX_HDR || t->_fleft || t->_closing)
            continue;
        if (t->_rstate == RX_CTRL && (t->_cbuf[0] & 0x0f) == 0x9) {
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
            dispatch(t, t->_msg, t->_mlen);
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
                tun_outq(t) - t->_conn->wbytes);
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

/* Did the stream's OPEN never leave this process? Data messages reach the
 * connection in order, all of _obuf at once, so any message numbered
 * above what has been handed over is still in _obuf. */
static int strm_unsent(const nw_strm_t *s) {
    return s->_open_seq > s->tun->_msgs_out;
}

nw_tun_t *nw_tun_new(uv_loop_t *loop, nw_conn_t *c, int is_client, const nw_tun_cfg_t *cfg,
                     const nw_tun_cbs_t *cbs, void *owner) {
    static const struct wslay_event_callbacks wcb = {ws_recv, ws_send, ws_genmask, NULL,
                                                     NULL,    NULL,    ws_on_msg};
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
    /* Collect first: owners' callbacks must not see a half-walked table. */
    for (i = 0; i < t->_nbuckets; i++)
        for (s = t->_buckets[i]; s; s = s->_hnext) {
            s->_bnext = list;
            list = s;
        }
    while (list) {
        s = list;
        list = s->_bnext;
        s->_blocked = 0;
        s->_reset = 1;
        if (!s->_detached) {
            s->_detached = 1;
            t->active--;
            t->_cbs.on_reset(s, strm_unsent(s) ? NW_RST_UNSENT : NW_RST_TUNNEL_LOST);
        }
        strm_free(s);
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
