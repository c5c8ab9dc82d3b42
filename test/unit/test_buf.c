/* test_buf.c: the growable string (nw_sbuf_*) and the chunk FIFO
 * (nw_bufq_*). The FIFO is also driven by a deterministic random script
 * and compared with a flat model of the bytes it should hold. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "unit.h"

/* ---- helpers ------------------------------------------------------------- */

static uint32_t rng_state;

static uint32_t rng(void) {
    /* xorshift32: deterministic, so a failure reproduces */
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

/* Pattern byte for absolute stream offset i. */
static char pat(size_t i) {
    return (char)('a' + (i * 7 + i / 26) % 26);
}

static size_t chunks(const nw_bufq_t *q) {
    size_t n = 0;
    const nw_chunk_t *c;
    for (c = q->head; c; c = c->next)
        n++;
    return n;
}

/* q->bytes equals the sum of the unread parts of its chunks, and tail is
 * the last chunk. */
static int bufq_consistent(const nw_bufq_t *q) {
    size_t sum = 0;
    const nw_chunk_t *c, *last = NULL;
    for (c = q->head; c; c = c->next) {
        if (c->off >= c->len)
            return 0; /* a spent chunk should have been freed */
        sum += c->len - c->off;
        last = c;
    }
    return sum == q->bytes && q->tail == last;
}

/* Read everything out of q through peek/drop into out; returns the count. */
static size_t drain(nw_bufq_t *q, char *out, size_t cap) {
    size_t got = 0, n;
    const char *p;
    while ((n = nw_bufq_peek(q, &p, cap - got)) > 0) {
        memcpy(out + got, p, n);
        got += n;
        nw_bufq_drop(q, n);
    }
    return got;
}

/* ---- nw_sbuf_* ----------------------------------------------------------- */

UNIT_TEST(test_sbuf_append) {
    nw_sbuf_t b = {0};
    CHECK_EQ(nw_sbuf_append(&b, "abc", 3), 0);
    CHECK_EQ(b.len, 3);
    CHECK(b.cap >= 4);
    CHECK_STR(b.p, "abc"); /* kept NUL-terminated */
    CHECK_EQ(nw_sbuf_append(&b, "defgh", 2), 0);
    CHECK_EQ(b.len, 5);
    CHECK_STR(b.p, "abcde");
    CHECK_EQ(nw_sbuf_append(&b, "x\0y", 3), 0); /* binary-safe */
    CHECK_EQ(b.len, 8);
    CHECK(memcmp(b.p, "abcdex\0y", 8) == 0);
    CHECK_EQ(b.p[8], 0);
    nw_sbuf_free(&b);
    CHECK(b.p == NULL);
    CHECK_EQ(b.len, 0);
    CHECK_EQ(b.cap, 0);
}

UNIT_TEST(test_sbuf_append_empty) {
    nw_sbuf_t b = {0};
    /* appending nothing still gives a valid empty C string */
    CHECK_EQ(nw_sbuf_append(&b, NULL, 0), 0);
    CHECK(b.p != NULL);
    CHECK_EQ(b.len, 0);
    CHECK_STR(b.p, "");
    CHECK_EQ(nw_sbuf_appends(&b, ""), 0);
    CHECK_EQ(b.len, 0);
    CHECK_EQ(nw_sbuf_append(&b, "q", 1), 0);
    CHECK_EQ(nw_sbuf_append(&b, "zzz", 0), 0);
    CHECK_STR(b.p, "q");
    nw_sbuf_free(&b);
}

UNIT_TEST(test_sbuf_appends) {
    nw_sbuf_t b = {0};
    CHECK_EQ(nw_sbuf_appends(&b, "GET "), 0);
    CHECK_EQ(nw_sbuf_appends(&b, "/ "), 0);
    CHECK_EQ(nw_sbuf_appends(&b, "HTTP/1.1\r\n"), 0);
    CHECK_STR(b.p, "GET / HTTP/1.1\r\n");
    CHECK_EQ(b.len, 16);
    nw_sbuf_free(&b);
}

UNIT_TEST(test_sbuf_appendf) {
    nw_sbuf_t b = {0};
    CHECK_EQ(nw_sbuf_appendf(&b, "%d %s", 200, "OK"), 0);
    CHECK_STR(b.p, "200 OK");
    CHECK_EQ(b.len, 6);
    CHECK_EQ(nw_sbuf_appendf(&b, "%s", ""), 0);
    CHECK_EQ(b.len, 6);
    CHECK_STR(b.p, "200 OK");
    CHECK_EQ(nw_sbuf_appends(&b, "\r\n"), 0);
    CHECK_EQ(nw_sbuf_appendf(&b, "Content-Length: %zu\r\n", (size_t)12345), 0);
    CHECK_EQ(nw_sbuf_appendf(&b, "%c%c", 'x', 'y'), 0);
    CHECK_STR(b.p, "200 OK\r\nContent-Length: 12345\r\nxy");
    CHECK_EQ(b.len, strlen("200 OK\r\nContent-Length: 12345\r\nxy"));
    nw_sbuf_free(&b);

    /* appendf as the very first call, producing nothing */
    CHECK_EQ(nw_sbuf_appendf(&b, "%s", ""), 0);
    CHECK(b.p != NULL);
    CHECK_STR(b.p, "");
    CHECK_EQ(b.len, 0);
    nw_sbuf_free(&b);
}

UNIT_TEST(test_sbuf_appendf_grows) {
    /* formatted output larger than the current capacity, written at an
     * offset: both the size probe and the second pass must be right */
    nw_sbuf_t b = {0};
    char big[3000];
    size_t i;
    for (i = 0; i + 1 < sizeof(big); i++)
        big[i] = pat(i);
    big[sizeof(big) - 1] = 0;
    CHECK_EQ(nw_sbuf_appends(&b, "head:"), 0);
    CHECK_EQ(nw_sbuf_appendf(&b, "[%s]%d", big, 7), 0);
    CHECK_EQ(b.len, 5 + 1 + strlen(big) + 2);
    CHECK(b.cap > b.len);
    CHECK(memcmp(b.p, "head:[", 6) == 0);
    CHECK(memcmp(b.p + 6, big, strlen(big)) == 0);
    CHECK_STR(b.p + 6 + strlen(big), "]7");
    /* exactly filling the capacity (len + n + 1 == cap) */
    {
        size_t room = b.cap - b.len - 1, cap = b.cap;
        CHECK_EQ(nw_sbuf_appendf(&b, "%.*s", (int)room, big), 0);
        CHECK_EQ(b.cap, cap);
        CHECK_EQ(b.len, cap - 1);
        CHECK_EQ(b.p[b.len], 0);
        CHECK_EQ(nw_sbuf_appendf(&b, "%s", "!"), 0);
        CHECK(b.cap > cap);
        CHECK_EQ(b.p[b.len - 1], '!');
        CHECK_EQ(b.p[b.len], 0);
    }
    nw_sbuf_free(&b);
}

UNIT_TEST(test_sbuf_growth_many_appends) {
    nw_sbuf_t b = {0};
    size_t i, total = 0, reallocs = 0, cap = 0;
    rng_state = 0x1234567u;
    for (i = 0; i < 20000; i++) {
        char piece[40];
        size_t k, n = rng() % sizeof(piece);
        for (k = 0; k < n; k++)
            piece[k] = pat(total + k);
        CHECK_EQ(nw_sbuf_append(&b, piece, n), 0);
        total += n;
        CHECK_EQ(b.len, total);
        CHECK(b.cap > b.len);
        CHECK_EQ(b.p[b.len], 0);
        if (b.cap != cap) {
            reallocs++;
            cap = b.cap;
        }
    }
    for (i = 0; i < total; i++)
        if (b.p[i] != pat(i)) {
            fprintf(stderr, "  byte %zu\n", i);
            CHECK(0);
        }
    /* geometric growth: a handful of reallocations, not one per append */
    CHECK(reallocs < 20);
    nw_sbuf_free(&b);
}

/* A reserved sbuf takes what was reserved without moving. */
UNIT_TEST(test_sbuf_reserve) {
    nw_sbuf_t b = {0};
    const char *p;
    int i;
    CHECK_EQ(nw_sbuf_reserve(&b, 1000), 0);
    CHECK(b.cap >= 1001);
    CHECK_EQ(b.len, 0);
    p = b.p;
    for (i = 0; i < 100; i++)
        CHECK_EQ(nw_sbuf_append(&b, "0123456789", 10), 0);
    CHECK(b.p == p);
    CHECK_EQ(b.len, 1000);
    CHECK_EQ(b.p[1000], 0);
    CHECK_EQ(nw_sbuf_reserve(&b, 0), 0); /* room for the NUL is there */
    CHECK(b.p == p);
    CHECK_EQ(nw_sbuf_reserve(&b, (size_t)-1), NW_ENOMEM);
    CHECK_EQ(b.len, 1000);
    nw_sbuf_free(&b);
}

UNIT_TEST(test_sbuf_take) {
    nw_sbuf_t b = {0};
    size_t len = 99;
    char *p;
    CHECK_EQ(nw_sbuf_appends(&b, "hello"), 0);
    CHECK_EQ(nw_sbuf_appendf(&b, ", %s", "world"), 0);
    p = nw_sbuf_take(&b, &len);
    CHECK(p != NULL);
    CHECK_EQ(len, 12);
    CHECK_STR(p, "hello, world");
    CHECK(b.p == NULL);
    CHECK_EQ(b.len, 0);
    CHECK_EQ(b.cap, 0);
    /* the buffer is reusable and independent of the taken bytes */
    CHECK_EQ(nw_sbuf_appends(&b, "again"), 0);
    CHECK(b.p != p);
    CHECK_STR(b.p, "again");
    CHECK_STR(p, "hello, world");
    nw_free(p);
    nw_sbuf_free(&b);

    /* taking from a never-used buffer */
    len = 99;
    p = nw_sbuf_take(&b, &len);
    CHECK(p == NULL);
    CHECK_EQ(len, 0);
    nw_free(p);
}

UNIT_TEST(test_sbuf_free_reuse) {
    nw_sbuf_t b = {0};
    nw_sbuf_free(&b); /* free of an empty buffer is fine */
    CHECK_EQ(nw_sbuf_appends(&b, "one"), 0);
    nw_sbuf_free(&b);
    nw_sbuf_free(&b); /* and twice */
    CHECK(b.p == NULL);
    CHECK_EQ(nw_sbuf_appends(&b, "two"), 0);
    CHECK_STR(b.p, "two");
    CHECK_EQ(b.len, 3);
    /* shrinking len by hand (as nw_hf_reset does) and appending again */
    b.len = 0;
    CHECK_EQ(nw_sbuf_appends(&b, "x"), 0);
    CHECK_STR(b.p, "x");
    nw_sbuf_free(&b);
}

/* ---- nw_bufq_* ----------------------------------------------------------- */

UNIT_TEST(test_bufq_empty) {
    nw_bufq_t q = {0};
    const char *p = "sentinel";
    CHECK_EQ(nw_bufq_peek(&q, &p, 100), 0);
    CHECK_EQ(nw_bufq_push(&q, "abc", 0), 0); /* empty push adds nothing */
    CHECK_EQ(nw_bufq_push(&q, NULL, 0), 0);
    CHECK(q.head == NULL && q.tail == NULL);
    CHECK_EQ(q.bytes, 0);
    CHECK_EQ(nw_bufq_peek(&q, &p, 100), 0);
    nw_bufq_drop(&q, 10); /* dropping from empty is harmless */
    nw_bufq_drop(&q, 0);
    nw_bufq_clear(&q);
    CHECK(q.head == NULL && q.tail == NULL);
    CHECK_EQ(q.bytes, 0);
}

UNIT_TEST(test_bufq_push_copies) {
    nw_bufq_t q = {0};
    char src[8];
    const char *p;
    memcpy(src, "abcdefgh", 8);
    CHECK_EQ(nw_bufq_push(&q, src, 8), 0);
    memset(src, 'X', sizeof(src));
    CHECK_EQ(nw_bufq_peek(&q, &p, 100), 8);
    CHECK(memcmp(p, "abcdefgh", 8) == 0);
    CHECK(p != src);
    nw_bufq_clear(&q);
}

UNIT_TEST(test_bufq_chunk_boundaries) {
    nw_bufq_t q = {0};
    const char *p;
    CHECK_EQ(nw_bufq_push(&q, "abc", 3), 0);
    CHECK_EQ(nw_bufq_push(&q, "defg", 4), 0);
    CHECK_EQ(nw_bufq_push(&q, "h", 1), 0);
    CHECK_EQ(q.bytes, 8);
    CHECK_EQ(chunks(&q), 3);
    CHECK(bufq_consistent(&q));

    /* peek never crosses a chunk */
    CHECK_EQ(nw_bufq_peek(&q, &p, 100), 3);
    CHECK(memcmp(p, "abc", 3) == 0);

    /* partial drop inside the first chunk */
    nw_bufq_drop(&q, 2);
    CHECK_EQ(q.bytes, 6);
    CHECK_EQ(chunks(&q), 3);
    CHECK_EQ(nw_bufq_peek(&q, &p, 100), 1);
    CHECK_EQ(*p, 'c');

    /* a drop that finishes one chunk and bites into the next */
    nw_bufq_drop(&q, 2);
    CHECK_EQ(q.bytes, 4);
    CHECK_EQ(chunks(&q), 2);
    CHECK(bufq_consistent(&q));
    CHECK_EQ(nw_bufq_peek(&q, &p, 100), 3);
    CHECK(memcmp(p, "efg", 3) == 0);

    /* exactly to the end of a chunk */
    nw_bufq_drop(&q, 3);
    CHECK_EQ(q.bytes, 1);
    CHECK_EQ(chunks(&q), 1);
    CHECK(q.head == q.tail);
    CHECK_EQ(nw_bufq_peek(&q, &p, 100), 1);
    CHECK_EQ(*p, 'h');

    /* push after partial consumption keeps order */
    CHECK_EQ(nw_bufq_push(&q, "ij", 2), 0);
    CHECK_EQ(q.bytes, 3);
    CHECK(bufq_consistent(&q));
    nw_bufq_drop(&q, 1);
    CHECK_EQ(nw_bufq_peek(&q, &p, 100), 2);
    CHECK(memcmp(p, "ij", 2) == 0);

    /* the last byte: queue empty, tail reset, push works again */
    nw_bufq_drop(&q, 2);
    CHECK(q.head == NULL && q.tail == NULL);
    CHECK_EQ(q.bytes, 0);
    CHECK_EQ(nw_bufq_push(&q, "k", 1), 0);
    CHECK(q.head != NULL && q.head == q.tail);
    CHECK_EQ(nw_bufq_peek(&q, &p, 100), 1);
    CHECK_EQ(*p, 'k');
    nw_bufq_clear(&q);
}

UNIT_TEST(test_bufq_drop_spanning_many) {
    nw_bufq_t q = {0};
    static const char digits[] = "0123456789";
    const char *p;
    size_t i;
    for (i = 0; i < 10; i++)
        CHECK_EQ(nw_bufq_push(&q, &digits[i], 1), 0);
    CHECK_EQ(chunks(&q), 10);
    nw_bufq_drop(&q, 7); /* frees seven chunks in one call */
    CHECK_EQ(q.bytes, 3);
    CHECK_EQ(chunks(&q), 3);
    CHECK(bufq_consistent(&q));
    CHECK_EQ(nw_bufq_peek(&q, &p, 100), 1);
    CHECK_EQ(*p, '7');
    /* more than is queued: empties it and stops */
    nw_bufq_drop(&q, 1000);
    CHECK(q.head == NULL && q.tail == NULL);
    CHECK_EQ(q.bytes, 0);
}

UNIT_TEST(test_bufq_peek_max) {
    nw_bufq_t q = {0};
    const char *p = NULL;
    CHECK_EQ(nw_bufq_push(&q, "abcdef", 6), 0);
    CHECK_EQ(nw_bufq_push(&q, "gh", 2), 0);
    CHECK_EQ(nw_bufq_peek(&q, &p, 4), 4);
    CHECK(memcmp(p, "abcd", 4) == 0);
    CHECK_EQ(nw_bufq_peek(&q, &p, 6), 6);
    CHECK_EQ(nw_bufq_peek(&q, &p, 7), 6); /* still one chunk only */
    CHECK_EQ(nw_bufq_peek(&q, &p, 1), 1);
    CHECK_EQ(*p, 'a');
    CHECK_EQ(nw_bufq_peek(&q, &p, 0), 0);
    /* peeking does not consume */
    CHECK_EQ(q.bytes, 8);
    nw_bufq_drop(&q, 5);
    CHECK_EQ(nw_bufq_peek(&q, &p, 4), 1);
    CHECK_EQ(*p, 'f');
    nw_bufq_drop(&q, 1);
    CHECK_EQ(nw_bufq_peek(&q, &p, 1), 1);
    CHECK_EQ(*p, 'g');
    CHECK_EQ(nw_bufq_peek(&q, &p, (size_t)-1), 2);
    nw_bufq_clear(&q);
}

UNIT_TEST(test_bufq_clear) {
    nw_bufq_t q = {0};
    const char *p;
    size_t i, total = 0;
    for (i = 0; i < 100; i++) {
        CHECK_EQ(nw_bufq_push(&q, "xyz", 1 + i % 3), 0);
        total += 1 + i % 3;
    }
    CHECK_EQ(total, 199);
    nw_bufq_drop(&q, 5); /* partially consumed head */
    CHECK_EQ(q.bytes, total - 5);
    nw_bufq_clear(&q);
    CHECK(q.head == NULL && q.tail == NULL);
    CHECK_EQ(q.bytes, 0);
    CHECK_EQ(nw_bufq_peek(&q, &p, 10), 0);
    nw_bufq_clear(&q); /* twice */
    CHECK_EQ(nw_bufq_push(&q, "again", 5), 0);
    CHECK_EQ(q.bytes, 5);
    CHECK_EQ(nw_bufq_peek(&q, &p, 10), 5);
    CHECK(memcmp(p, "again", 5) == 0);
    nw_bufq_clear(&q);
    CHECK(q.head == NULL && q.tail == NULL);
}

UNIT_TEST(test_bufq_large_chunk) {
    nw_bufq_t q = {0};
    static char big[1 << 20], out[1 << 20];
    size_t i;
    for (i = 0; i < sizeof(big); i++)
        big[i] = pat(i);
    CHECK_EQ(nw_bufq_push(&q, big, sizeof(big)), 0);
    CHECK_EQ(q.bytes, sizeof(big));
    /* drain in odd-sized bites */
    {
        size_t got = 0, n;
        const char *p;
        while ((n = nw_bufq_peek(&q, &p, 4093)) > 0) {
            memcpy(out + got, p, n);
            got += n;
            nw_bufq_drop(&q, n);
            CHECK_EQ(q.bytes, sizeof(big) - got);
        }
        CHECK_EQ(got, sizeof(big));
    }
    CHECK(memcmp(out, big, sizeof(big)) == 0);
    CHECK(q.head == NULL && q.tail == NULL);
}

UNIT_TEST(test_bufq_scripted_model) {
    /* random pushes, partial drops and peeks against a flat model */
    enum { CAP = 1 << 16 };
    static char model[CAP], got[CAP];
    nw_bufq_t q = {0};
    size_t wr = 0, rd = 0; /* stream offsets pushed and dropped */
    int step;
    rng_state = 0xC0FFEEu;
    for (step = 0; step < 20000; step++) {
        uint32_t op = rng() % 10;
        if (op < 5 && wr - rd < CAP - 600) {
            char piece[600];
            size_t k, n = rng() % sizeof(piece);
            for (k = 0; k < n; k++)
                piece[k] = pat(wr + k);
            CHECK_EQ(nw_bufq_push(&q, piece, n), 0);
            wr += n;
        } else if (op < 9) {
            size_t n = rng() % 700, want = n < wr - rd ? n : wr - rd;
            nw_bufq_drop(&q, n);
            rd += want;
        } else {
            const char *p;
            size_t max = rng() % 800, n = nw_bufq_peek(&q, &p, max), k;
            CHECK(n <= max && n <= wr - rd);
            CHECK(wr == rd || max == 0 || n > 0);
            for (k = 0; k < n; k++)
                CHECK_EQ(p[k], pat(rd + k));
        }
        CHECK_EQ(q.bytes, wr - rd);
        CHECK(bufq_consistent(&q));
        CHECK((q.head == NULL) == (q.bytes == 0));
    }
    /* whatever is left drains as the exact remaining stream */
    {
        size_t left = wr - rd, n, k;
        for (k = 0; k < left; k++)
            model[k] = pat(rd + k);
        n = drain(&q, got, CAP);
        CHECK_EQ(n, left);
        CHECK(memcmp(got, model, n) == 0);
    }
    CHECK(q.head == NULL && q.tail == NULL);
    CHECK_EQ(q.bytes, 0);
}

UNIT_MAIN(UNIT_CASE(test_sbuf_append), UNIT_CASE(test_sbuf_append_empty),
          UNIT_CASE(test_sbuf_appends), UNIT_CASE(test_sbuf_appendf),
          UNIT_CASE(test_sbuf_appendf_grows), UNIT_CASE(test_sbuf_growth_many_appends),
          UNIT_CASE(test_sbuf_reserve), UNIT_CASE(test_sbuf_take), UNIT_CASE(test_sbuf_free_reuse), UNIT_CASE(test_bufq_empty),
          UNIT_CASE(test_bufq_push_copies), UNIT_CASE(test_bufq_chunk_boundaries),
          UNIT_CASE(test_bufq_drop_spanning_many), UNIT_CASE(test_bufq_peek_max),
          UNIT_CASE(test_bufq_clear), UNIT_CASE(test_bufq_large_chunk),
          UNIT_CASE(test_bufq_scripted_model))
