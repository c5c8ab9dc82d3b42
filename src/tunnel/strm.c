/* strm.c: the stream side of a tunnel session: the stream table, per-stream
 * credit windows and send queues, and the natwrp frames (mux.c) that name a
 * stream, as they arrive. tun.c runs the WebSocket and the output bound. */
#include "log.h"
#include "tun_int.h"

#define TUN_SMALL_END 4096 /* see nw_strm_send */

static _Thread_local uint8_t scratch[NW_MUX_MAX_FRAME];

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

/* The owner loses s (once): s stops counting as held (t->active) and,
 * with tell, the owner hears why through on_reset. The stream itself lives
 * on until nw__strm_free. */
void nw__strm_orphan(nw_strm_t *s, int tell, uint32_t code) {
    nw_tun_t *t = s->tun;
    if (s->_detached)
        return;
    s->_detached = 1;
    t->active--;
    if (tell && t->_cbs.on_reset)
        t->_cbs.on_reset(s, code);
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

void nw__strm_free(nw_strm_t *s) {
    nw_tun_t *t = s->tun;
    nw_strm_t **pp = &t->_buckets[s->sid & (t->_nbuckets - 1)];
    while (*pp != s)
        pp = &(*pp)->_hnext;
    *pp = s->_hnext;
    open_release(s);
    nw__sched_del(t, s);
    nw_bufq_clear(&s->_pending);
    if (!s->_detached)
        t->active--;
    t->nstreams--;
    nw_free(s);
}

static void queue_rst(nw_tun_t *t, uint32_t sid, uint32_t code) {
    uint8_t b[16];
    int n = nw_mux_pack_rst(b, sizeof(b), sid, code);
    if (n > 0)
        nw__tun_queue_frame(t, b, (size_t)n);
}

static void send_rst(nw_strm_t *s, uint32_t code) { queue_rst(s->tun, s->sid, code); }

/* A detached stream is freed once nothing is left to send; a peer that
 * has not finished is told to stop. */
static void strm_settle(nw_strm_t *s) {
    if (s->_pending.bytes || (s->_pending_end && !s->_local_end))
        return;
    if (!s->_reset && !(s->_local_end && s->_remote_end))
        send_rst(s, NW_RST_CANCEL);
    nw__strm_free(s);
}

/* Stream-level failure seen by the tunnel: tell the peer and the owner. */
static void strm_abort(nw_strm_t *s, uint32_t code) {
    nw_tun_t *t = s->tun;
    send_rst(s, code);
    s->_reset = 1;
    nw_warn("tun=%llu agent=%s strm=%u reset sent: %s", (unsigned long long)t->id, t->agent,
            s->sid, nw_mux_code_name(code));
    nw__strm_orphan(s, 1, code);
    nw__strm_free(s);
}

static int send_data(nw_strm_t *s, const void *p, size_t n, int end) {
    nw_tun_t *t = s->tun;
    uint8_t hdr[16];
    int hl = nw_mux_pack_data_hdr(hdr, sizeof(hdr), s->sid, end ? NW_MUX_F_END : 0);
    if (hl < 0)
        return hl;
    s->_send_credit -= (int64_t)n;
    if (end)
        s->_local_end = 1;
    return nw__tun_queue_frame2(t, hdr, (size_t)hl, p, n);
}

/* ---------------------------------------------------------- send side */

/* Frame up to max of s's queued bytes (as far as its credit goes); END
 * rides on the last DATA. 0 or a negative error. */
int nw__strm_pull(nw_strm_t *s, size_t max) {
    while (s->_pending.bytes && s->_send_credit > 0 && max) {
        const char *p;
        size_t n = nw_bufq_peek(&s->_pending, &p, NW_MIN(max, NW_MUX_MAX_DATA));
        int last, rc;
        if ((int64_t)n > s->_send_credit)
            n = (size_t)s->_send_credit;
        last = s->_pending_end && n == s->_pending.bytes;
        if ((rc = send_data(s, p, n, last)) != 0)
            return rc;
        nw_bufq_drop(&s->_pending, n);
        max -= n;
    }
    return 0;
}

/* s's queue is empty: its END if it was waiting, then a detached stream
 * is settled and an owned one's owner resumes reading its source. */
void nw__strm_drained(nw_strm_t *s) {
    nw_tun_t *t = s->tun;
    if (s->_pending_end && !s->_local_end && send_data(s, "", 0, 1) != 0) {
        nw_tun_close(t, NW_ENOMEM);
        return;
    }
    if (s->_detached)
        strm_settle(s);
    else if (t->_cbs.on_drain)
        t->_cbs.on_drain(s);
}

/* Credit arrived for s (WINDOW): queued bytes wait for their turn
 * (sched.c); with none, the owner hears on_drain. */
void nw__strm_flush(nw_strm_t *s) {
    if (!s->_pending.bytes) {
        nw__strm_drained(s);
        return;
    }
    if (s->_send_credit > 0) {
        nw__sched_add(s->tun, s);
        nw__tun_arm_flush(s->tun);
    }
}

int nw_strm_send(nw_strm_t *s, const void *p, size_t len, int end) {
    nw_tun_t *t = s->tun;
    const char *b = p;
    int small_end = end && len <= TUN_SMALL_END && (int64_t)len <= s->_send_credit;
    if (s->_local_end || s->_pending_end || s->_reset || t->_closing)
        return NW_ECLOSED;
    /* Straight out, one copy, when nothing of ours is queued and the tunnel
     * is hungry (no other stream waits for its turn, the connection has
     * taken all it was given). A short last piece (an error page, a small
     * response) goes even when it is not: it is next to the HEAD just
     * queued, and costs the streams waiting no more than a frame. */
    while (!s->_pending.bytes && (small_end || nw__tun_hungry(t)) && len &&
           s->_send_credit > 0) {
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
        if (s->_send_credit > 0) {
            nw__sched_add(t, s);
            nw__tun_arm_flush(t);
        }
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
    if (k > 0 && nw__tun_queue_frame(s->tun, b, (size_t)k) == 0) {
        s->_recv_credit += (int64_t)s->_unacked;
        s->_unacked = 0;
    }
}

void nw_strm_detach(nw_strm_t *s, uint32_t code) {
    nw_tun_t *t = s->tun;
    if (s->_detached)
        return;
    nw__strm_orphan(s, 0, 0);
    s->data = NULL;
    if (t->_closing)
        return; /* tun_do_close frees it */
    if (code) {
        if (!s->_reset && !(s->_local_end && s->_remote_end))
            send_rst(s, code);
        s->_reset = 1;
        nw__strm_free(s);
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
    if (!s || (*err = nw__tun_queue_frame(t, scratch, (size_t)n)) != 0) {
        if (s)
            nw__strm_free(s);
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
    return nw__tun_queue_frame(s->tun, scratch, (size_t)n);
}

/* ------------------------------------------------------- receive side */

/* Look a stream up; ids that were never opened are fatal, closed ones are
 * ignored (a frame may cross a RST in flight). */
static nw_strm_t *lookup(nw_tun_t *t, const nw_mux_frame_t *f) {
    nw_strm_t *s = strm_find(t, f->sid);
    if (!s && f->sid > t->_last_sid)
        nw__tun_violation(t, "frame for a stream never opened", f->sid);
    if (s)
        open_release(s);
    return s;
}

static void on_open_frame(nw_tun_t *t, const nw_mux_frame_t *f) {
    nw_strm_t *s;
    if (!t->is_client) {
        nw__tun_violation(t, "OPEN sent to the server", f->sid);
        return;
    }
    if (f->sid <= t->_last_sid) {
        nw__tun_violation(t, "stream id not increasing", f->sid);
        return;
    }
    t->_last_sid = f->sid;
    s = strm_new(t, f->sid);
    if (!s) {
        queue_rst(t, f->sid, NW_RST_INTERNAL);
        return;
    }
    s->_remote_end = (f->flags & NW_MUX_F_END) ? 1 : 0;
    if (t->goaway_sent) {
        nw__strm_orphan(s, 0, 0);
        send_rst(s, NW_RST_REFUSED);
        s->_reset = 1;
        nw__strm_free(s);
        return;
    }
    t->_cbs.on_open(t, s, f);
}

static void on_head_frame(nw_tun_t *t, const nw_mux_frame_t *f) {
    nw_strm_t *s;
    if (t->is_client) {
        nw__tun_violation(t, "HEAD sent to the agent", f->sid);
        return;
    }
    if (!(s = lookup(t, f)) || s->_detached)
        return;
    if (s->_head_recv || s->_remote_end) {
        strm_abort(s, NW_RST_PROTOCOL);
        return;
    }
    if (NW_MUX_INTERIM(f->status)) {
        /* 102, 103, ...: a head before the response's own, never its end */
        if (f->flags & NW_MUX_F_END)
            strm_abort(s, NW_RST_PROTOCOL);
        else
            t->_cbs.on_head(s, f);
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
    nw__strm_flush(s);
}

static void on_rst_frame(nw_tun_t *t, const nw_mux_frame_t *f) {
    nw_strm_t *s = lookup(t, f);
    if (!s)
        return;
    s->_reset = 1;
    s->reset_by_peer = 1;
    nw_debug("tun=%llu strm=%u reset by peer: %s", (unsigned long long)t->id, s->sid,
             nw_mux_code_name(f->value));
    nw__strm_orphan(s, 1, f->value);
    nw__strm_free(s);
}

void nw__tun_dispatch(nw_tun_t *t, const uint8_t *msg, size_t len) {
    nw_hdr_t hdrs[NW_MUX_MAX_HDRS];
    nw_mux_frame_t f;
    int rc = nw_mux_decode(msg, len, &f, hdrs, NW_ARRAY_LEN(hdrs));
    if (rc != 0) {
        nw__tun_violation(t, nw_strerror(rc), 0);
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
    default: nw__tun_violation(t, "unknown frame type", f.sid); break;
    }
}

/* Did the stream's OPEN never leave this process? Data messages reach the
 * connection in order, all of _obuf at once, so any message numbered
 * above what has been handed over is still in _obuf. */
int nw__strm_unsent(const nw_strm_t *s) {
    return s->_open_seq > s->tun->_msgs_out;
}
