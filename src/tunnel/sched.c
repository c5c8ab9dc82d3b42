/* sched.c: which stream's DATA leaves next on a tunnel.
 *
 * Body bytes that cannot go out at once (the connection still has bytes
 * it has not handed to the kernel, or other streams are waiting) stay
 * unframed in their stream's queue (s->_pending), and a stream with such
 * bytes and send credit waits on the tunnel's ready list. Each time the
 * connection has taken everything handed to it, the tunnel's writer
 * (tun.c) asks for the next batch: streams take turns, each framing up to
 * TUN_QUANTUM bytes per turn (round-robin by bytes), until the batch is
 * full. So a new stream's first frames wait behind at most one batch and
 * what the kernel holds (TCP_NOTSENT_LOWAT bounds that), not behind every
 * byte another stream has queued; OPEN, HEAD, WINDOW and RST frames never
 * wait here at all (they go into the batch being built, ahead of the
 * DATA pulled into it). Frame order within a stream is kept: a stream's
 * bytes are framed in order, and its END rides on its last DATA. */
#include "tun_int.h"

#define TUN_QUANTUM (16 * 1024)

void nw__sched_add(nw_tun_t *t, nw_strm_t *s) {
    if (s->_ready)
        return;
    s->_ready = 1;
    s->_rnext = NULL;
    s->_rprev = t->_ready_tail;
    if (t->_ready_tail)
        t->_ready_tail->_rnext = s;
    else
        t->_ready = s;
    t->_ready_tail = s;
}

void nw__sched_del(nw_tun_t *t, nw_strm_t *s) {
    if (!s->_ready)
        return;
    s->_ready = 0;
    if (s->_rprev)
        s->_rprev->_rnext = s->_rnext;
    else
        t->_ready = s->_rnext;
    if (s->_rnext)
        s->_rnext->_rprev = s->_rprev;
    else
        t->_ready_tail = s->_rprev;
    s->_rprev = s->_rnext = NULL;
}

/* Frame DATA from the ready streams, in turn, until the tunnel's batch
 * holds limit bytes or no stream has both bytes and credit. A stream
 * alone on the list takes the whole batch (big frames, no rotation). A
 * stream whose queue empties hears on_drain (or, detached, is settled);
 * one still holding bytes goes to the back, or, out of credit, waits for
 * the peer's WINDOW (nw__strm_flush). Stops if the tunnel closes. */
void nw__sched_fill(nw_tun_t *t, size_t limit) {
    while (t->_ready && t->_olen < limit && !t->_closing) {
        nw_strm_t *s = t->_ready;
        size_t room = limit - t->_olen;
        nw__sched_del(t, s);
        if (t->_ready && room > TUN_QUANTUM)
            room = TUN_QUANTUM;
        if (nw__strm_pull(s, room) != 0) {
            nw_tun_close(t, NW_ENOMEM);
            return;
        }
        if (s->_pending.bytes) {
            if (s->_send_credit > 0)
                nw__sched_add(t, s);
            continue;
        }
        nw__strm_drained(s); /* may free s or close the tunnel */
    }
}
