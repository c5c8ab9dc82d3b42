/* test_sched.c: the tunnel's DATA scheduler (sched.c) on a real tunnel
 * object whose connection is never connected: the test holds the
 * connection "busy" (wbytes) while streams queue, then asks for a batch and
 * reads the frames it holds, in wire order. */
#include <string.h>
#include <uv.h>

#include "tun_int.h"
#include "unit.h"

static int drains[8];

static void on_drain(nw_strm_t *s) { drains[s->sid & 7]++; }
static void on_reset(nw_strm_t *s, uint32_t code) { (void)s, (void)code; }

typedef struct {
    uv_loop_t loop;
    nw_conn_t *c;
    nw_tun_t *t;
} fx_t;

static void fx_init(fx_t *fx) {
    static const nw_tun_cbs_t cbs = {.on_drain = on_drain, .on_reset = on_reset};
    nw_tun_cfg_t cfg = {.my_window = 1u << 20, .peer_window = 1u << 20,
                        .ping_interval_ms = 60000};
    memset(drains, 0, sizeof(drains));
    uv_loop_init(&fx->loop);
    fx->c = nw_conn_new(&fx->loop);
    fx->t = nw_tun_new(&fx->loop, fx->c, 0, &cfg, &cbs, NULL);
}

static void fx_free(fx_t *fx) {
    fx->c->wbytes = 0;
    nw_tun_close(fx->t, 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    uv_loop_close(&fx->loop);
}

static nw_strm_t *open_strm(nw_tun_t *t) {
    int err;
    nw_strm_t *s = nw_tun_open(t, "GET", 3, "/", 1, NULL, 0, 0, &err);
    return s;
}

/* The DATA frames in the batch from offset off: their stream ids and sizes. */
static size_t frames(nw_tun_t *t, size_t off, uint32_t *sid, size_t *len, size_t max) {
    size_t n = 0;
    const uint8_t *p = (const uint8_t *)t->_obuf + off, *end = (const uint8_t *)t->_obuf + t->_olen;
    while (p < end && n < max) {
        size_t h = 2, plen = p[1] & 0x7f;
        if (plen == 126) {
            plen = ((size_t)p[2] << 8) | p[3];
            h = 4;
        } else if (plen == 127) {
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | p[2 + i];
            h = 10;
        }
        if (p[h] == NW_MUX_DATA) {
            sid[n] = (uint32_t)p[h + 2] << 24 | (uint32_t)p[h + 3] << 16 |
                     (uint32_t)p[h + 4] << 8 | p[h + 5];
            len[n++] = plen - 6;
        }
        p += h + plen;
    }
    return n;
}

static char blob[256 * 1024];

/* Three streams queue while the connection is busy; the batch gives each
 * a quantum in turn, so the small one's bytes are in the first round. */
UNIT_TEST(streams_take_turns) {
    fx_t fx;
    nw_strm_t *a, *b, *c;
    uint32_t sid[64];
    size_t len[64], n, off, i, total = 0;
    fx_init(&fx);
    CHECK(fx.t);
    a = open_strm(fx.t), b = open_strm(fx.t), c = open_strm(fx.t);
    CHECK(a && b && c);
    fx.c->wbytes = 1; /* busy: nothing is framed straight away */
    CHECK(!nw__tun_hungry(fx.t));
    CHECK_EQ(nw_strm_send(a, blob, 200000, 0), 1);
    CHECK_EQ(nw_strm_send(b, blob, 200000, 0), 1);
    CHECK_EQ(nw_strm_send(c, blob, 5000, 0), 1);
    off = fx.t->_olen; /* the three OPENs */
    fx.c->wbytes = 0;
    nw__sched_fill(fx.t, TUN_BATCH);
    n = frames(fx.t, off, sid, len, 64);
    CHECK(n >= 3);
    CHECK_EQ(sid[0], a->sid);
    CHECK_EQ(sid[1], b->sid);
    CHECK_EQ(sid[2], c->sid);
    CHECK_EQ(len[0], 16384);
    CHECK_EQ(len[2], 5000);
    CHECK_EQ(drains[c->sid], 1); /* its queue emptied */
    for (i = 0; i < n; i++) {
        total += len[i];
        if (i > 0)
            CHECK(sid[i] != sid[i - 1]); /* no stream twice in a row while others wait */
    }
    CHECK(total >= TUN_BATCH - 16384 && total <= TUN_BATCH + 16384);
    CHECK_EQ(a->_pending.bytes + b->_pending.bytes + total, 400000 + 5000);
    fx_free(&fx);
}

/* A stream alone takes the whole batch, in frames as big as DATA allows;
 * out of credit it leaves the ready list until WINDOW. */
UNIT_TEST(alone_takes_the_batch) {
    fx_t fx;
    nw_strm_t *a;
    uint32_t sid[16];
    size_t len[16], n, off;
    fx_init(&fx);
    a = open_strm(fx.t);
    CHECK(a);
    fx.c->wbytes = 1;
    CHECK_EQ(nw_strm_send(a, blob, sizeof(blob), 0), 1);
    off = fx.t->_olen;
    fx.c->wbytes = 0;
    nw__sched_fill(fx.t, TUN_BATCH);
    n = frames(fx.t, off, sid, len, 16);
    CHECK_EQ(n, TUN_BATCH / NW_MUX_MAX_DATA);
    CHECK_EQ(len[0], NW_MUX_MAX_DATA);
    CHECK(fx.t->_ready == a);
    a->_send_credit = 0;
    nw__sched_del(fx.t, a);
    nw__sched_fill(fx.t, 2 * TUN_BATCH);
    CHECK(fx.t->_ready == NULL);
    CHECK_EQ(drains[a->sid], 0);
    fx_free(&fx);
}

UNIT_MAIN(UNIT_CASE(streams_take_turns), UNIT_CASE(alone_takes_the_batch))
