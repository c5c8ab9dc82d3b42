/* fuzz_tun.c: libFuzzer target for the tunnel session (src/tunnel/tun.c,
 * its streams in strm.c, its WebSocket framing in src/wire/wsframe.c), fed
 * as a hand-made peer would feed it: bytes off the wire into a real nw_tun_t
 * on a real connection (one end of a socketpair), with owners that accept,
 * answer, consume and refuse streams the way serve and the agent do.
 *
 * Input layout:
 *   byte 0  bit 0: role (0 serve: the peer is an agent and must mask;
 *                  1 agent: the peer is a server and must not)
 *           bit 1: framing (0: the rest is raw wire bytes; 1: the rest is
 *                  records that this harness frames, masking as the role
 *                  requires, so the fuzzer reaches the session's logic
 *                  without having to learn RFC 6455 masking)
 *           bits 2-7: how the bytes are cut into reads (1..64 pieces)
 *   rest    raw bytes, or records: [b0: FIN 0x80 | RSV 0x70 | opcode]
 *           [2-byte big-endian length: top bit set = write the length in
 *           the 16-bit form even when it is short][payload], the length
 *           cut to what is left.
 *
 * The serve role first opens four streams (ids 1..4) so that HEAD, DATA,
 * WINDOW and RST from the peer have streams to land on. Between reads the
 * loop runs once (flushes, write credit) and what the session wrote is
 * drained from the other end. At the end the tunnel is closed and the loop
 * run until every handle is gone: ASan's leak check then covers every
 * path that frees a stream or the tunnel. What the session writes is
 * parsed as WebSocket frames (check_out): a frame that breaks RFC 6455
 * (a control frame over 125 bytes or not in the 7-bit length form, a
 * wrong mask bit, reserved bits) aborts, like any crash, sanitizer report
 * or leak. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "log.h"
#include "tun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "fuzz_tun: check failed at line %d: %s\n", __LINE__, #c); \
            abort();                                                           \
        }                                                                      \
    } while (0)

static uv_loop_t *loop;

typedef struct {
    int closed;    /* on_close ran */
    size_t owned;  /* streams an owner holds */
    uint8_t body[300];
} fz_t;

static fz_t fz;

/* ----------------------------------------------------------- owners */

/* agent: answer some streams at once, refuse some, keep the rest (their
 * request bodies are consumed as they come). */
static void fz_on_open(nw_tun_t *t, nw_strm_t *s, const nw_mux_frame_t *f) {
    nw_hdr_t h = {"Content-Length", 14, "3", 1};
    (void)t;
    (void)f;
    switch (s->sid % 4) {
    case 0: nw_strm_detach(s, NW_RST_REFUSED); return;
    case 1:
        if (nw_strm_head(s, 200, "OK", 2, &h, 1, 0) == 0)
            nw_strm_send(s, "abc", 3, 1);
        nw_strm_detach(s, 0);
        return;
    case 2:
        if (nw_strm_head(s, 200, "OK", 2, NULL, 0, 0) == 0)
            nw_strm_send(s, fz.body, sizeof(fz.body), 0);
        break;
    default: break;
    }
    s->data = &fz;
    fz.owned++;
}

/* serve: a response head; answer with some request body. */
static void fz_on_head(nw_strm_t *s, const nw_mux_frame_t *f) {
    if (!(f->flags & NW_MUX_F_END) && s->sid == 2)
        nw_strm_send(s, fz.body, sizeof(fz.body), 1);
}

static void fz_on_data(nw_strm_t *s, const uint8_t *p, size_t len, int end) {
    (void)p;
    nw_strm_consumed(s, len);
    if (end && s->data && s->sid % 2) {
        s->data = NULL;
        fz.owned--;
        nw_strm_detach(s, 0);
    }
}

static void fz_on_reset(nw_strm_t *s, uint32_t code) {
    (void)code;
    if (s->data) {
        s->data = NULL;
        fz.owned--;
    }
}

static void fz_on_drain(nw_strm_t *s) { (void)s; }
static void fz_on_goaway(nw_tun_t *t, uint32_t last, uint32_t code) {
    (void)last;
    (void)code;
    nw_tun_goaway(t, NW_RST_CANCEL);
}
static void fz_on_close(nw_tun_t *t, int err) {
    (void)t;
    (void)err;
    fz.closed = 1;
}

static const nw_tun_cbs_t fz_cbs = {
    .on_open = fz_on_open,
    .on_head = fz_on_head,
    .on_data = fz_on_data,
    .on_reset = fz_on_reset,
    .on_drain = fz_on_drain,
    .on_goaway = fz_on_goaway,
    .on_close = fz_on_close,
};

/* ------------------------------------------------------------ driver */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    /* A hostile peer makes the session log a lot; FUZZ_TUN_LOG=1 shows it
     * (to see what a reproducer does). */
    nw_log_level = getenv("FUZZ_TUN_LOG") ? NW_LOG_DEBUG : -1;
    loop = uv_default_loop();
    memset(fz.body, 'b', sizeof(fz.body));
    return 0;
}

/* Records into wire frames, masked when the peer is an agent. Returns the
 * number of bytes written to out (sized by the caller: 14 bytes of header
 * per 3 bytes of record at worst, plus the payloads). */
static size_t frame_records(const uint8_t *p, size_t n, int mask, uint8_t *out) {
    size_t o = 0;
    uint32_t k = 0x9e3779b9u;
    while (n >= 3) {
        uint8_t b0 = p[0];
        size_t len = ((size_t)(p[1] & 0x7f) << 8) | p[2], i;
        int long_form = (p[1] & 0x80) != 0;
        p += 3, n -= 3;
        if (len > n)
            len = n;
        out[o++] = b0;
        if (len < 126 && !long_form) {
            out[o++] = (uint8_t)((mask ? 0x80 : 0) | len);
        } else {
            out[o++] = (uint8_t)((mask ? 0x80 : 0) | 126);
            out[o++] = (uint8_t)(len >> 8);
            out[o++] = (uint8_t)len;
        }
        if (mask) {
            uint8_t key[4];
            k = k * 1103515245u + 12345u;
            memcpy(key, &k, 4);
            memcpy(out + o, key, 4);
            o += 4;
            for (i = 0; i < len; i++)
                out[o + i] = p[i] ^ key[i & 3];
        } else {
            memcpy(out + o, p, len);
        }
        o += len;
        p += len, n -= len;
    }
    return o;
}

/* The session's output, parsed frame by frame across reads: only headers
 * are checked, payloads are skipped. */
static struct {
    uint8_t hdr[14];
    size_t hlen;
    uint64_t skip;
    int is_client;
} wout;

static void check_out(const uint8_t *p, size_t n) {
    while (n) {
        size_t need;
        if (wout.skip) {
            size_t k = n < wout.skip ? n : (size_t)wout.skip;
            wout.skip -= k;
            p += k, n -= k;
            continue;
        }
        wout.hdr[wout.hlen++] = *p++;
        n--;
        if (wout.hlen < 2)
            continue;
        need = 2 + ((wout.hdr[1] & 0x7f) == 126 ? 2 : (wout.hdr[1] & 0x7f) == 127 ? 8 : 0) +
               ((wout.hdr[1] & 0x80) ? 4 : 0);
        if (wout.hlen < need)
            continue;
        {
            uint8_t op = wout.hdr[0] & 0x0f, l7 = wout.hdr[1] & 0x7f;
            uint64_t len = l7;
            size_t i;
            if (l7 == 126)
                len = ((uint64_t)wout.hdr[2] << 8) | wout.hdr[3];
            else if (l7 == 127)
                for (len = 0, i = 2; i < 10; i++)
                    len = (len << 8) | wout.hdr[i];
            CHECK((wout.hdr[0] & 0x70) == 0);                      /* no reserved bits */
            CHECK(((wout.hdr[1] & 0x80) != 0) == wout.is_client);   /* agents mask */
            CHECK(op == 0 || op == 2 || op == 8 || op == 9 || op == 10);
            if (op >= 8)
                CHECK((wout.hdr[0] & 0x80) && l7 <= 125); /* whole, short form */
            wout.skip = len;
            wout.hlen = 0;
        }
    }
}

static void drain_peer(int fd) {
    uint8_t b[65536];
    ssize_t n;
    while ((n = recv(fd, b, sizeof(b), MSG_DONTWAIT)) > 0)
        check_out(b, (size_t)n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nw_tun_cfg_t cfg = {.my_window = 65536, .peer_window = 65536, .ping_interval_ms = 60000};
    int sv[2], is_client, err;
    uint8_t *wire;
    size_t wlen, pieces, off, i;
    nw_conn_t *c;
    nw_tun_t *t;

    if (size < 1)
        return 0;
    is_client = data[0] & 1;
    pieces = (size_t)(data[0] >> 2) + 1;
    if (data[0] & 2) {
        wire = malloc((size - 1) * 5 + 16);
        CHECK(wire);
        wlen = frame_records(data + 1, size - 1, !is_client, wire);
    } else {
        wire = malloc(size);
        CHECK(wire);
        memcpy(wire, data + 1, size - 1);
        wlen = size - 1;
    }

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    c = nw_conn_new(loop);
    CHECK(c);
    CHECK(uv_tcp_open(&c->tcp, sv[0]) == 0);
    fz.closed = 0;
    fz.owned = 0;
    memset(&wout, 0, sizeof(wout));
    wout.is_client = is_client;
    t = nw_tun_new(loop, c, is_client, &cfg, &fz_cbs, &fz);
    CHECK(t);
    t->id = 1;
    CHECK(nw_tun_start(t, NULL, 0) == 0);
    if (!is_client) {
        for (i = 0; i < 4; i++) {
            nw_hdr_t h = {"Host", 4, "x", 1};
            nw_strm_t *s = nw_tun_open(t, i == 1 ? "POST" : "GET", i == 1 ? 4 : 3, "/", 1, &h,
                                       1, i != 1, &err);
            CHECK(s);
            s->data = &fz;
            fz.owned++;
        }
    }

    /* Feed the wire in pieces, as reads would deliver it. */
    for (off = 0, i = 0; off < wlen && !fz.closed; i++) {
        size_t n = wlen / pieces + 1;
        if (n > wlen - off)
            n = wlen - off;
        c->on_read(c, (ssize_t)n, (const char *)wire + off);
        off += n;
        if (fz.closed)
            break;
        uv_run(loop, UV_RUN_NOWAIT);
        drain_peer(sv[1]);
    }
    if (!fz.closed)
        nw_tun_close(t, NW_ECLOSED);
    CHECK(fz.owned == 0); /* every held stream was reset */
    while (uv_run(loop, UV_RUN_NOWAIT) != 0)
        drain_peer(sv[1]);
    close(sv[1]);
    free(wire);
    return 0;
}
