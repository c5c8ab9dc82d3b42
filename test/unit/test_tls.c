/* test_tls.c: mbedTLS sessions over memory buffers (nw_tls_*).
 *
 * Everything runs in memory: a client session and a server session hand
 * ciphertext to each other through nw_tls_take_out -> nw_tls_feed, so the
 * tests need no sockets and no event loop. The certificates come from a
 * throwaway PKI that test/mkpki.sh builds in a fresh temporary directory on
 * first use; the directory is removed when the binary exits. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nw.h"
#include "tls.h"
#include "unit.h"

/* Fail the current test with a message (after the caller has cleaned up). */
#define GIVE_UP(msg)                           \
    do {                                       \
        fprintf(stderr, "  %s\n", (msg));      \
        CHECK(0);                              \
    } while (0)

/* ---- the throwaway PKI --------------------------------------------------- */

static char pki_dir[64];
static int pki_state; /* 0 not tried yet, 1 ready, -1 failed */

static void pki_cleanup(void) {
    char cmd[128];
    if (!pki_dir[0])
        return;
    /* the name came from mkdtemp: no quoting problems */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pki_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", pki_dir);
}

/* Build the PKI once per run. 0 when ready; says why on stderr otherwise,
 * so a missing openssl shows up as a clear message, not a cascade of
 * confusing TLS failures. */
static int pki(void) {
    char cmd[256], done[128];
    int rc;

    if (pki_state)
        return pki_state > 0 ? 0 : -1;
    pki_state = -1;
    snprintf(pki_dir, sizeof(pki_dir), "/tmp/natwrp-test-tls-XXXXXX");
    if (!mkdtemp(pki_dir)) {
        perror("mkdtemp");
        pki_dir[0] = 0;
        return -1;
    }
    atexit(pki_cleanup);
    /* run from the repository root, like scripts/test.sh does */
    snprintf(cmd, sizeof(cmd), "sh test/mkpki.sh '%s'", pki_dir);
    rc = system(cmd);
    snprintf(done, sizeof(done), "%s/done", pki_dir);
    if (rc != 0 || access(done, F_OK) != 0) {
        fprintf(stderr,
                "  PKI setup failed: `%s` exited with status %d (is openssl installed? "
                "run from the repository root)\n",
                cmd, rc);
        return -1;
    }
    pki_state = 1;
    return 0;
}

/* Full path of a file in the PKI directory. A small ring of buffers, so
 * several calls can appear in one argument list. */
static const char *P(const char *name) {
    static char ring[8][160];
    static unsigned next;
    char *b = ring[next++ % 8];
    snprintf(b, sizeof(ring[0]), "%s/%s", pki_dir, name);
    return b;
}

static nw_tls_conf_t *server_conf(const char *cert, const char *key) {
    char err[NW_TLS_ERRLEN];
    nw_tls_conf_t *c = nw_tls_conf_server(P(cert), P(key), err, sizeof(err));
    if (!c)
        fprintf(stderr, "  nw_tls_conf_server(%s, %s): %s\n", cert, key, err);
    return c;
}

static nw_tls_conf_t *client_conf(const char *ca, int insecure) {
    char err[NW_TLS_ERRLEN];
    nw_tls_conf_t *c = nw_tls_conf_client(ca ? P(ca) : NULL, insecure, err, sizeof(err));
    if (!c)
        fprintf(stderr, "  nw_tls_conf_client(%s): %s\n", ca ? ca : "(system)", err);
    return c;
}

/* ---- deterministic bytes ------------------------------------------------- */

static uint32_t rng_state = 0x2545f491u;

static uint32_t rng(void) {
    /* xorshift32: deterministic, so a failure reproduces */
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

/* Pattern byte for stream offset i; salt tells the two directions apart
 * so bytes delivered to the wrong side cannot pass for the right ones. */
static unsigned char pat(size_t i, unsigned salt) {
    return (unsigned char)((i * 131u + i / 251u + salt) & 0xff);
}

/* ---- the in-memory wire -------------------------------------------------- */

/* Ciphertext one side produced that the other has not been fed yet. The
 * pump holds it so it can hand it over in pieces of any size. */
typedef struct {
    char *p;
    size_t off, len;
} pipe_t;

static int pipe_fill(pipe_t *q, nw_tls_t *from) {
    size_t n;
    char *out = nw_tls_take_out(from, &n);
    if (!out)
        return 0;
    if (q->off == q->len) {
        free(q->p);
        q->p = NULL;
        q->off = q->len = 0;
    }
    q->p = realloc(q->p, q->len + n);
    if (!q->p) {
        nw_free(out);
        return -1;
    }
    memcpy(q->p + q->len, out, n);
    q->len += n;
    nw_free(out);
    return 0;
}

/* Feed at most piece bytes; returns how many moved. */
static size_t pipe_deliver(pipe_t *q, nw_tls_t *to, size_t piece) {
    size_t n = q->len - q->off;
    if (n > piece)
        n = piece;
    if (n && nw_tls_feed(to, q->p + q->off, n) != 0)
        return 0;
    q->off += n;
    return n;
}

/* Run both handshakes until both finish (returns 0), one fails, or nothing
 * moves any more (returns -1 for those two). Ciphertext crosses in pieces of
 * at most piece bytes, with a handshake step after each piece, so piece=1
 * makes every record arrive a byte at a time. The round limit is a safety
 * net: a real handshake needs a few rounds, or a few thousand at piece=1. */
#define PUMP_ROUNDS 100000

static int pump(nw_tls_t *cli, nw_tls_t *srv, size_t piece, int *crc_out, int *src_out) {
    pipe_t c2s = {0}, s2c = {0};
    int crc = 1, src = 1, rounds, result = -1;

    for (rounds = 0; rounds < PUMP_ROUNDS; rounds++) {
        size_t moved = 0;
        if (crc == 1)
            crc = nw_tls_handshake(cli);
        if (src == 1)
            src = nw_tls_handshake(srv);
        if (pipe_fill(&c2s, cli) != 0 || pipe_fill(&s2c, srv) != 0)
            break;
        if (crc < 0 || src < 0)
            break;
        if (crc == 0 && src == 0 && c2s.off == c2s.len && s2c.off == s2c.len) {
            result = 0;
            break;
        }
        moved += pipe_deliver(&c2s, srv, piece);
        moved += pipe_deliver(&s2c, cli, piece);
        /* Nothing left to deliver and still not both done: each side
         * waits for the other, so further rounds cannot change anything. */
        if (!moved)
            break;
    }
    free(c2s.p);
    free(s2c.p);
    if (crc_out)
        *crc_out = crc;
    if (src_out)
        *src_out = src;
    return result;
}

/* Send n patterned bytes from one session to the other and check that they
 * arrive byte-exact. The ciphertext is fed in pieces of feed_piece bytes
 * (so records get split) and read with a cap that alternates between two
 * sizes (so records are also read in parts). Along the way nw_tls_pending
 * must never claim more than is still to come, and when it claims
 * something, a read must return data without more input. 0 on success,
 * -1 with a message on stderr. */
static int xfer(nw_tls_t *from, nw_tls_t *to, size_t n, unsigned salt, size_t feed_piece) {
    unsigned char *src = malloc(n ? n : 1), *dst = malloc(n ? n : 1), *ct;
    size_t i, got = 0, ct_len, ct_off = 0, reads = 0, junk_len;
    char *junk;
    int ok = -1;

    if (!src || !dst)
        goto out;
    for (i = 0; i < n; i++)
        src[i] = pat(i, salt);
    if (nw_tls_write(from, src, n) != 0) {
        fprintf(stderr, "  xfer: write failed: %s\n", nw_tls_error(from));
        goto out;
    }
    ct = (unsigned char *)nw_tls_take_out(from, &ct_len);
    if (n && (!ct || ct_len <= n)) { /* records add framing and a tag */
        fprintf(stderr, "  xfer: %zu ciphertext bytes for %zu plaintext\n", ct_len, n);
        nw_free(ct);
        goto out;
    }
    while (got < n) {
        size_t cap = (reads++ & 1) ? 700 : 5000, pend = nw_tls_pending(to);
        ssize_t r;
        if (pend > n - got) {
            fprintf(stderr, "  xfer: pending %zu but only %zu bytes left\n", pend, n - got);
            break;
        }
        r = nw_tls_read(to, dst + got, cap);
        if (r < 0) {
            fprintf(stderr, "  xfer: read %zd: %s\n", r, nw_tls_error(to));
            break;
        }
        if (r == 0) {
            if (pend) {
                fprintf(stderr, "  xfer: pending %zu but read wants input\n", pend);
                break;
            }
            if (ct_off == ct_len) {
                fprintf(stderr, "  xfer: stalled at %zu of %zu bytes\n", got, n);
                break;
            }
            i = ct_len - ct_off < feed_piece ? ct_len - ct_off : feed_piece;
            if (nw_tls_feed(to, ct + ct_off, i) != 0)
                break;
            ct_off += i;
            continue;
        }
        if ((size_t)r > cap || (size_t)r > n - got) {
            fprintf(stderr, "  xfer: read %zd with cap %zu, %zu left\n", r, cap, n - got);
            break;
        }
        got += (size_t)r;
    }
    nw_free(ct);
    if (got != n)
        goto out;
    if (memcmp(src, dst, n) != 0) {
        for (i = 0; i < n && src[i] == dst[i]; i++)
            ;
        fprintf(stderr, "  xfer: data differs at offset %zu\n", i);
        goto out;
    }
    if (ct_off != ct_len || nw_tls_pending(to) != 0) {
        fprintf(stderr, "  xfer: %zu ciphertext bytes unused, %zu pending\n", ct_len - ct_off,
                nw_tls_pending(to));
        goto out;
    }
    /* Reading application data must not make the receiver answer. */
    junk = nw_tls_take_out(to, &junk_len);
    nw_free(junk);
    if (junk_len) {
        fprintf(stderr, "  xfer: receiver produced %zu bytes of output\n", junk_len);
        goto out;
    }
    ok = 0;
out:
    free(src);
    free(dst);
    return ok;
}

/* A client and a server session plus their configurations, so each test
 * can set up and tear down a connection in two lines. */
typedef struct {
    nw_tls_conf_t *cc, *sc;
    nw_tls_t *cli, *srv;
} pair_t;

static void pair_free(pair_t *p) {
    nw_tls_free(p->cli);
    nw_tls_free(p->srv);
    nw_tls_conf_unref(p->cc);
    nw_tls_conf_unref(p->sc);
    memset(p, 0, sizeof(*p));
}

/* 0 when all four objects exist. ca NULL with insecure=1 for an
 * unverifying client. */
static int pair_new(pair_t *p, const char *ca, int insecure, const char *host, const char *cert,
                    const char *key) {
    memset(p, 0, sizeof(*p));
    if (pki() != 0)
        return -1;
    p->cc = client_conf(ca, insecure);
    p->sc = server_conf(cert, key);
    if (p->cc)
        p->cli = nw_tls_new(p->cc, host);
    if (p->sc)
        p->srv = nw_tls_new(p->sc, NULL);
    if (!p->cli || !p->srv) {
        pair_free(p);
        return -1;
    }
    return 0;
}

static int contains(const char *hay, const char *needle) {
    return strstr(hay, needle) != NULL;
}

/* Handshake that should fail on the client because of its verification;
 * leaves the client's error in p for the caller to inspect. */
static int client_rejects(pair_t *p, int *crc) {
    int src;
    return pump(p->cli, p->srv, SIZE_MAX, crc, &src) != 0 && *crc < 0;
}

/* ---- successful handshakes and data -------------------------------------- */

/* The common part of tests 1 and 2: handshake, version, data both ways. */
static int handshake_and_data(const char *cert) {
    pair_t p;
    int crc, src, ok = -1;
    const char *v;
    size_t n;
    char *none;

    if (pair_new(&p, "ca.pem", 0, "localhost", cert, "server.key") != 0)
        return -1;
    /* nothing to send before the handshake starts */
    none = nw_tls_take_out(p.cli, &n);
    if (none || n) {
        nw_free(none);
        goto out;
    }
    if (nw_tls_handshake_done(p.cli) || nw_tls_handshake_done(p.srv))
        goto out;
    if (pump(p.cli, p.srv, SIZE_MAX, &crc, &src) != 0) {
        fprintf(stderr, "  handshake: client %d \"%s\", server %d \"%s\"\n", crc,
                nw_tls_error(p.cli), src, nw_tls_error(p.srv));
        goto out;
    }
    if (!nw_tls_handshake_done(p.cli) || !nw_tls_handshake_done(p.srv))
        goto out;
    /* once done, handshake keeps saying so */
    if (nw_tls_handshake(p.cli) != 0 || nw_tls_handshake(p.srv) != 0)
        goto out;
    if (strcmp(nw_tls_error(p.cli), "") != 0 || strcmp(nw_tls_error(p.srv), "") != 0)
        goto out;
    v = nw_tls_version(p.cli);
    if (strcmp(v, "TLSv1.2") != 0 && strcmp(v, "TLSv1.3") != 0) {
        fprintf(stderr, "  unexpected version \"%s\"\n", v);
        goto out;
    }
    if (strcmp(v, nw_tls_version(p.srv)) != 0)
        goto out;
    if (nw_tls_pending(p.cli) != 0 || nw_tls_pending(p.srv) != 0)
        goto out;
    /* 1 MiB up, 64 KiB down, then a little more up to show the stream
     * keeps going after a direction change */
    if (xfer(p.cli, p.srv, 1u << 20, 1, 3001) != 0)
        goto out;
    if (xfer(p.srv, p.cli, 64u << 10, 2, 16384 + 29) != 0)
        goto out;
    if (xfer(p.cli, p.srv, 1, 3, 1) != 0)
        goto out;
    ok = 0;
out:
    pair_free(&p);
    return ok;
}

UNIT_TEST(test_handshake_and_data) {
    CHECK_EQ(handshake_and_data("server.pem"), 0);
}

UNIT_TEST(test_handshake_with_chain) {
    /* a PEM chain (leaf first, then the CA) serves the same way */
    CHECK_EQ(handshake_and_data("chain.pem"), 0);
}

/* ---- certificate verification failures ---------------------------------- */

UNIT_TEST(test_hostname_mismatch_client_name) {
    pair_t p;
    int crc;
    CHECK_EQ(pair_new(&p, "ca.pem", 0, "wrong.example", "server.pem", "server.key"), 0);
    if (!client_rejects(&p, &crc)) {
        pair_free(&p);
        GIVE_UP("client accepted a certificate for another name");
    }
    if (!contains(nw_tls_error(p.cli), "hostname mismatch") ||
        !contains(nw_tls_error(p.cli), "certificate verify failed")) {
        fprintf(stderr, "  error: \"%s\"\n", nw_tls_error(p.cli));
        pair_free(&p);
        GIVE_UP("error does not say hostname mismatch");
    }
    /* the failure is latched: later calls keep failing the same way */
    {
        char b[16];
        int again = nw_tls_handshake(p.cli), done = nw_tls_handshake_done(p.cli);
        int w = nw_tls_write(p.cli, "x", 1);
        ssize_t r = nw_tls_read(p.cli, b, sizeof(b));
        pair_free(&p);
        CHECK_EQ(again, crc);
        CHECK(!done);
        CHECK(w < 0);
        CHECK(r < 0);
    }
}

UNIT_TEST(test_hostname_mismatch_server_cert) {
    /* the right name asked for, but the server's certificate is for
     * other.example only */
    pair_t p;
    int crc, rej;
    char e[NW_TLS_ERRLEN];
    CHECK_EQ(pair_new(&p, "ca.pem", 0, "localhost", "other.pem", "other.key"), 0);
    rej = client_rejects(&p, &crc);
    snprintf(e, sizeof(e), "%s", nw_tls_error(p.cli));
    pair_free(&p);
    CHECK(rej);
    CHECK(contains(e, "hostname mismatch"));
}

/* A peer addressed by IP: its certificate must list that address as an
 * iPAddress SAN (server.pem has IP:127.0.0.1; other.pem has no address). */
static int ip_case(const char *host, const char *cert, const char *key, char *e, size_t elen) {
    pair_t p;
    int crc, src, rc;
    if (pair_new(&p, "ca.pem", 0, host, cert, key) != 0)
        return -2;
    rc = pump(p.cli, p.srv, SIZE_MAX, &crc, &src);
    snprintf(e, elen, "%s", nw_tls_error(p.cli));
    pair_free(&p);
    return rc == 0 && crc == 0 ? 0 : -1;
}

UNIT_TEST(test_ip_address_san) {
    char e[NW_TLS_ERRLEN];
    CHECK_EQ(ip_case("127.0.0.1", "server.pem", "server.key", e, sizeof(e)), 0);
    CHECK_EQ(ip_case("127.0.0.2", "server.pem", "server.key", e, sizeof(e)), -1);
    CHECK(contains(e, "hostname mismatch"));
    CHECK_EQ(ip_case("::1", "server.pem", "server.key", e, sizeof(e)), -1);
    CHECK(contains(e, "hostname mismatch"));
    CHECK_EQ(ip_case("127.0.0.1", "other.pem", "other.key", e, sizeof(e)), -1);
    CHECK(contains(e, "hostname mismatch"));
}

UNIT_TEST(test_untrusted_ca) {
    pair_t p;
    int crc, rej;
    char e[NW_TLS_ERRLEN];
    CHECK_EQ(pair_new(&p, "other-ca.pem", 0, "localhost", "server.pem", "server.key"), 0);
    rej = client_rejects(&p, &crc);
    snprintf(e, sizeof(e), "%s", nw_tls_error(p.cli));
    pair_free(&p);
    CHECK(rej);
    CHECK(contains(e, "not trusted"));
    /* only the trust problem: the name and dates are fine */
    CHECK(!contains(e, "hostname"));
    CHECK(!contains(e, "expired"));
}

UNIT_TEST(test_expired) {
    pair_t p;
    int crc, rej;
    char e[NW_TLS_ERRLEN];
    CHECK_EQ(pair_new(&p, "ca.pem", 0, "localhost", "expired.pem", "expired.key"), 0);
    rej = client_rejects(&p, &crc);
    snprintf(e, sizeof(e), "%s", nw_tls_error(p.cli));
    pair_free(&p);
    CHECK(rej);
    CHECK(contains(e, "expired"));
    CHECK(!contains(e, "not trusted"));
}

UNIT_TEST(test_insecure_client_accepts_anything) {
    /* verify nothing: the expired, the wrongly named and (since an
     * insecure client has no CA at all) every untrusted certificate pass */
    static const struct {
        const char *cert, *key, *host;
    } cases[] = {
        {"expired.pem", "expired.key", "localhost"},
        {"other.pem", "other.key", "localhost"},
        {"server.pem", "server.key", "wrong.example"},
    };
    size_t i;
    for (i = 0; i < NW_ARRAY_LEN(cases); i++) {
        pair_t p;
        int crc, src, rc, dr;
        CHECK_EQ(pair_new(&p, NULL, 1, cases[i].host, cases[i].cert, cases[i].key), 0);
        rc = pump(p.cli, p.srv, SIZE_MAX, &crc, &src);
        if (rc != 0)
            fprintf(stderr, "  %s: client %d \"%s\", server %d \"%s\"\n", cases[i].cert, crc,
                    nw_tls_error(p.cli), src, nw_tls_error(p.srv));
        dr = rc == 0 ? xfer(p.cli, p.srv, 1000, 4, 100) : -1;
        pair_free(&p);
        CHECK_EQ(rc, 0);
        CHECK_EQ(dr, 0);
    }
    /* an insecure client ignores the CA file entirely, even a missing one */
    {
        char err[NW_TLS_ERRLEN];
        nw_tls_conf_t *c = nw_tls_conf_client("/nonexistent/ca.pem", 1, err, sizeof(err));
        int made = c != NULL;
        nw_tls_conf_unref(c);
        CHECK(made);
    }
}

/* ---- plain text where TLS was expected ---------------------------------- */

UNIT_TEST(test_plain_http_to_server) {
    static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    nw_tls_conf_t *sc;
    nw_tls_t *srv;
    int rc;
    char e[NW_TLS_ERRLEN];

    CHECK_EQ(pki(), 0);
    CHECK((sc = server_conf("server.pem", "server.key")) != NULL);
    srv = nw_tls_new(sc, NULL);
    nw_tls_conf_unref(sc);
    CHECK(srv != NULL);
    CHECK_EQ(nw_tls_feed(srv, req, sizeof(req) - 1), 0);
    rc = nw_tls_handshake(srv);
    snprintf(e, sizeof(e), "%s", nw_tls_error(srv));
    nw_tls_free(srv);
    CHECK(rc < 0);
    CHECK_STR(e, "peer does not speak TLS");
}

UNIT_TEST(test_plain_http_answer_to_client) {
    static const char resp[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
    nw_tls_conf_t *cc;
    nw_tls_t *cli;
    char *hello, e[NW_TLS_ERRLEN];
    size_t n;
    int rc1, rc2, first;

    CHECK_EQ(pki(), 0);
    CHECK((cc = client_conf("ca.pem", 0)) != NULL);
    cli = nw_tls_new(cc, "localhost");
    nw_tls_conf_unref(cc);
    CHECK(cli != NULL);
    rc1 = nw_tls_handshake(cli);
    hello = nw_tls_take_out(cli, &n);
    first = hello && n ? (unsigned char)hello[0] : -1;
    nw_free(hello);
    CHECK_EQ(nw_tls_feed(cli, resp, sizeof(resp) - 1), 0);
    rc2 = nw_tls_handshake(cli);
    snprintf(e, sizeof(e), "%s", nw_tls_error(cli));
    nw_tls_free(cli);
    CHECK_EQ(rc1, 1);     /* ClientHello sent, now waiting */
    CHECK_EQ(first, 0x16); /* ...and it is a TLS handshake record */
    CHECK(rc2 < 0);
    CHECK_STR(e, "peer does not speak TLS");
}

/* ---- configuration errors ----------------------------------------------- */

/* Calls nw_tls_conf_server and returns 1 when it failed with a message
 * containing both needles (needle2 may be NULL). */
static int server_conf_fails(const char *cert, const char *key, const char *needle,
                             const char *needle2) {
    char err[NW_TLS_ERRLEN];
    nw_tls_conf_t *c = nw_tls_conf_server(cert, key, err, sizeof(err));
    if (c) {
        nw_tls_conf_unref(c);
        fprintf(stderr, "  nw_tls_conf_server(%s, %s) succeeded\n", cert, key);
        return 0;
    }
    if (!contains(err, needle) || (needle2 && !contains(err, needle2))) {
        fprintf(stderr, "  nw_tls_conf_server(%s, %s): \"%s\" lacks \"%s\"\n", cert, key, err,
                needle);
        return 0;
    }
    return 1;
}

static int client_conf_fails(const char *ca, const char *needle, const char *needle2) {
    char err[NW_TLS_ERRLEN];
    nw_tls_conf_t *c = nw_tls_conf_client(ca, 0, err, sizeof(err));
    if (c) {
        nw_tls_conf_unref(c);
        fprintf(stderr, "  nw_tls_conf_client(%s) succeeded\n", ca);
        return 0;
    }
    if (!contains(err, needle) || (needle2 && !contains(err, needle2))) {
        fprintf(stderr, "  nw_tls_conf_client(%s): \"%s\" lacks \"%s\"\n", ca, err, needle);
        return 0;
    }
    return 1;
}

/* Write text into a new file in the PKI directory; its path, or NULL. */
static const char *write_file(const char *name, const char *text) {
    const char *path = P(name);
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    fputs(text, f);
    return fclose(f) == 0 ? path : NULL;
}

UNIT_TEST(test_conf_errors) {
    char missing[160], garbage[160], sp[160], sk[160];
    const char *g;

    CHECK_EQ(pki(), 0);
    snprintf(missing, sizeof(missing), "%s", P("missing.pem"));
    snprintf(sp, sizeof(sp), "%s", P("server.pem"));
    snprintf(sk, sizeof(sk), "%s", P("server.key"));
    g = write_file("garbage.pem", "this is not a certificate\n\x01\x02\x03 nor a key\n");
    CHECK(g != NULL);
    snprintf(garbage, sizeof(garbage), "%s", g);

    /* unreadable files are named */
    CHECK(server_conf_fails(missing, sk, missing, NULL));
    CHECK(server_conf_fails(sp, missing, missing, NULL));
    /* a key for some other certificate */
    CHECK(server_conf_fails(sp, P("wrong.key"), "does not match", NULL));
    /* a key that belongs to a different certificate of the same CA */
    CHECK(server_conf_fails(sp, P("server2.key"), "does not match", NULL));
    /* not PEM at all, as certificate and as key */
    CHECK(server_conf_fails(garbage, sk, "not a valid PEM", garbage));
    CHECK(server_conf_fails(sp, garbage, "not a valid PEM", garbage));
    /* a certificate where the key should be and vice versa */
    CHECK(server_conf_fails(sk, sp, "not a valid PEM", NULL));
    /* an empty path */
    CHECK(server_conf_fails("", sk, "no file", NULL));

    CHECK(client_conf_fails(missing, missing, NULL));
    CHECK(client_conf_fails(garbage, "not a valid PEM", garbage));

    /* err may be NULL/0 when the caller does not care */
    CHECK(nw_tls_conf_server(missing, sk, NULL, 0) == NULL);

    /* a truncating error buffer stays NUL-terminated */
    {
        char small[8];
        memset(small, 'x', sizeof(small));
        CHECK(nw_tls_conf_server(missing, sk, small, sizeof(small)) == NULL);
        CHECK(memchr(small, 0, sizeof(small)) != NULL);
    }
}

UNIT_TEST(test_conf_client_system_bundle) {
    char err[NW_TLS_ERRLEN];
    nw_tls_conf_t *c;
    if (access("/etc/ssl/certs/ca-certificates.crt", R_OK) != 0) {
        printf("  (no system CA bundle here: check skipped)\n");
        return;
    }
    c = nw_tls_conf_client(NULL, 0, err, sizeof(err));
    if (!c)
        fprintf(stderr, "  system bundle: %s\n", err);
    CHECK(c != NULL);
    CHECK_STR(err, ""); /* success leaves the error empty */
    nw_tls_conf_unref(c);
}

UNIT_TEST(test_new_rejects_misuse) {
    /* a server session has no peer name to verify */
    nw_tls_conf_t *sc;
    nw_tls_t *t;
    CHECK_EQ(pki(), 0);
    CHECK((sc = server_conf("server.pem", "server.key")) != NULL);
    t = nw_tls_new(sc, "localhost");
    nw_tls_free(t);
    nw_tls_conf_unref(sc);
    CHECK(t == NULL);
    CHECK(nw_tls_new(NULL, NULL) == NULL);
}

/* ---- close_notify -------------------------------------------------------- */

UNIT_TEST(test_close_notify) {
    pair_t p;
    char *ct, b[64];
    size_t n;
    ssize_t r1, r2;
    size_t pend;
    int rc;

    CHECK_EQ(pair_new(&p, "ca.pem", 0, "localhost", "server.pem", "server.key"), 0);
    rc = pump(p.cli, p.srv, SIZE_MAX, NULL, NULL);
    if (rc == 0)
        rc = xfer(p.cli, p.srv, 100, 5, 4096);
    if (rc != 0) {
        pair_free(&p);
        GIVE_UP("handshake or data failed");
    }
    nw_tls_close_notify(p.cli);
    ct = nw_tls_take_out(p.cli, &n);
    if (!ct || !n) {
        nw_free(ct);
        pair_free(&p);
        GIVE_UP("close_notify produced no bytes");
    }
    rc = nw_tls_feed(p.srv, ct, n);
    nw_free(ct);
    r1 = nw_tls_read(p.srv, b, sizeof(b));
    r2 = nw_tls_read(p.srv, b, sizeof(b)); /* stays closed */
    pend = nw_tls_pending(p.srv);
    pair_free(&p);
    CHECK_EQ(rc, 0);
    CHECK_EQ(r1, NW_ECLOSED);
    CHECK_EQ(r2, NW_ECLOSED);
    CHECK_EQ(pend, 0);
}

UNIT_TEST(test_close_notify_after_data_in_flight) {
    /* data and close_notify in the same burst: the data is read first */
    pair_t p;
    char *ct, b[64];
    size_t n;
    ssize_t r1, r2;
    int rc;

    CHECK_EQ(pair_new(&p, "ca.pem", 0, "localhost", "server.pem", "server.key"), 0);
    rc = pump(p.cli, p.srv, SIZE_MAX, NULL, NULL);
    if (rc == 0)
        rc = nw_tls_write(p.srv, "bye", 3);
    if (rc != 0) {
        pair_free(&p);
        GIVE_UP("handshake or write failed");
    }
    nw_tls_close_notify(p.srv);
    ct = nw_tls_take_out(p.srv, &n);
    rc = ct ? nw_tls_feed(p.cli, ct, n) : -1;
    nw_free(ct);
    r1 = nw_tls_read(p.cli, b, sizeof(b));
    r2 = nw_tls_read(p.cli, b + 3, sizeof(b) - 3);
    pair_free(&p);
    CHECK_EQ(rc, 0);
    CHECK_EQ(r1, 3);
    CHECK(memcmp(b, "bye", 3) == 0);
    CHECK_EQ(r2, NW_ECLOSED);
}

/* ---- nw_tls_writev: full records, slices ---------------------------------- */

/* Read everything fed to `to` into dst (at most cap bytes). */
static size_t read_all(nw_tls_t *to, unsigned char *dst, size_t cap) {
    size_t got = 0;
    for (;;) {
        ssize_t r = nw_tls_read(to, dst + got, cap - got);
        if (r <= 0)
            return got;
        got += (size_t)r;
    }
}

UNIT_TEST(test_writev_full_records_and_slices) {
    /* Pieces shorter than a record share one: a 10-byte "head", a 100-byte
     * piece, 40000 bytes, two tiny pieces and an empty one make
     * ceil(40118 / 16384) = 3 records, not 6. Sliced at max = 16384 each
     * call takes one record's worth; the bytes arrive in order. */
    static unsigned char src[40118], dst[40118 + 16];
    static const size_t lens[] = {10, 100, 40000, 5, 0, 3};
    struct iovec iov[6];
    pair_t p;
    size_t i, off = 0, one_len = 0, ct_len = 0, got = 0, calls = 0, done = 0;
    char *ct;
    ssize_t k;
    int rc;

    for (i = 0; i < sizeof(src); i++)
        src[i] = pat(i, 9);
    for (i = 0; i < 6; i++) {
        iov[i].iov_base = src + off;
        iov[i].iov_len = lens[i];
        off += lens[i];
    }
    CHECK_EQ(pair_new(&p, "ca.pem", 0, "localhost", "server.pem", "server.key"), 0);
    rc = pump(p.cli, p.srv, SIZE_MAX, NULL, NULL);
    /* The framing of one record: a 1-byte write. */
    if (rc == 0)
        rc = nw_tls_write(p.cli, "x", 1);
    ct = rc == 0 ? nw_tls_take_out(p.cli, &one_len) : NULL;
    if (ct)
        rc = nw_tls_feed(p.srv, ct, one_len) != 0 || read_all(p.srv, dst, 1) != 1 || dst[0] != 'x';
    nw_free(ct);
    if (rc != 0 || one_len <= 1) {
        pair_free(&p);
        GIVE_UP("handshake or first record failed");
    }
    /* Whole writev in one go. */
    k = nw_tls_writev(p.cli, iov, 6, 0, SIZE_MAX);
    ct = nw_tls_take_out(p.cli, &ct_len);
    if (ct) {
        nw_tls_feed(p.srv, ct, ct_len);
        got = read_all(p.srv, dst, sizeof(dst));
    }
    nw_free(ct);
    CHECK_EQ(k, (ssize_t)sizeof(src));
    CHECK_EQ(ct_len, sizeof(src) + 3 * (one_len - 1));
    CHECK_EQ(got, sizeof(src));
    CHECK(memcmp(src, dst, sizeof(src)) == 0);
    /* Again in slices of one record, the ciphertext taken between calls. */
    got = 0;
    while (done < sizeof(src) && calls < 10) {
        k = nw_tls_writev(p.cli, iov, 6, done, 16384);
        if (k <= 0)
            break;
        calls++;
        done += (size_t)k;
        ct = nw_tls_take_out(p.cli, &ct_len);
        if (ct)
            nw_tls_feed(p.srv, ct, ct_len);
        nw_free(ct);
        got += read_all(p.srv, dst + got, sizeof(dst) - got);
    }
    pair_free(&p);
    CHECK_EQ(done, sizeof(src));
    CHECK_EQ(calls, 3);
    CHECK_EQ(got, sizeof(src));
    CHECK(memcmp(src, dst, sizeof(src)) == 0);
}

/* ---- reference counting --------------------------------------------------- */

UNIT_TEST(test_session_keeps_conf_alive) {
    /* The SIGHUP case: the caller drops its server configuration while a
     * session made from it is still starting. The session must go on with
     * it; ASan reports a use-after-free if it does not. */
    nw_tls_conf_t *sc, *cc;
    nw_tls_t *srv, *cli;
    int rc, dr = -1;

    CHECK_EQ(pki(), 0);
    CHECK((sc = server_conf("server.pem", "server.key")) != NULL);
    CHECK(nw_tls_conf_ref(sc) == sc); /* ref/unref balance too */
    nw_tls_conf_unref(sc);
    CHECK(nw_tls_conf_ref(NULL) == NULL);
    nw_tls_conf_unref(NULL);
    srv = nw_tls_new(sc, NULL);
    nw_tls_conf_unref(sc); /* the session now holds the only reference */
    CHECK(srv != NULL);
    if (!(cc = client_conf("ca.pem", 0))) {
        nw_tls_free(srv);
        GIVE_UP("client conf");
    }
    cli = nw_tls_new(cc, "localhost");
    nw_tls_conf_unref(cc); /* same on the client side */
    rc = cli ? pump(cli, srv, SIZE_MAX, NULL, NULL) : -1;
    if (rc == 0)
        dr = xfer(srv, cli, 20000, 6, 1000);
    nw_tls_free(cli);
    nw_tls_free(srv); /* frees the configuration last */
    CHECK_EQ(rc, 0);
    CHECK_EQ(dr, 0);
}

/* ---- hostile input after the handshake ----------------------------------- */

UNIT_TEST(test_garbage_record_after_handshake) {
    /* A record header that looks right (application data, TLS 1.2, length
     * 95) followed by random bytes: decryption must fail cleanly. */
    pair_t p;
    unsigned char rec[100];
    size_t i;
    ssize_t r1, r2;
    int rc, w;
    char b[256], e[NW_TLS_ERRLEN];

    CHECK_EQ(pair_new(&p, "ca.pem", 0, "localhost", "server.pem", "server.key"), 0);
    rc = pump(p.cli, p.srv, SIZE_MAX, NULL, NULL);
    if (rc != 0) {
        pair_free(&p);
        GIVE_UP("handshake failed");
    }
    rec[0] = 0x17;
    rec[1] = 0x03;
    rec[2] = 0x03;
    rec[3] = 0x00;
    rec[4] = (unsigned char)(sizeof(rec) - 5);
    for (i = 5; i < sizeof(rec); i++)
        rec[i] = (unsigned char)rng();
    rc = nw_tls_feed(p.srv, rec, sizeof(rec));
    r1 = nw_tls_read(p.srv, b, sizeof(b));
    r2 = nw_tls_read(p.srv, b, sizeof(b)); /* the failure is latched */
    w = nw_tls_write(p.srv, "x", 1);
    snprintf(e, sizeof(e), "%s", nw_tls_error(p.srv));
    pair_free(&p);
    CHECK_EQ(rc, 0);
    CHECK(r1 < 0);
    CHECK(r1 != NW_ECLOSED);
    CHECK_EQ(r2, r1);
    CHECK(w < 0);
    CHECK(e[0] != 0);
}

UNIT_TEST(test_random_garbage_handshake) {
    /* Random bytes (starting like a handshake record, so the "does not
     * speak TLS" shortcut does not apply) must fail the server without a
     * crash, for a range of lengths. */
    size_t len, i;
    CHECK_EQ(pki(), 0);
    for (len = 1; len <= 600; len += 37) {
        nw_tls_conf_t *sc = server_conf("server.pem", "server.key");
        nw_tls_t *srv;
        unsigned char g[600];
        int rc, rc2;
        CHECK(sc != NULL);
        srv = nw_tls_new(sc, NULL);
        nw_tls_conf_unref(sc);
        CHECK(srv != NULL);
        g[0] = 0x16;
        for (i = 1; i < len; i++)
            g[i] = (unsigned char)rng();
        if (len > 2) {
            g[1] = 3;
            g[2] = 3;
        }
        rc = nw_tls_feed(srv, g, len);
        rc2 = nw_tls_handshake(srv);
        nw_tls_free(srv);
        CHECK_EQ(rc, 0);
        /* short inputs may only be incomplete; nothing may succeed */
        CHECK(rc2 != 0);
    }
}

/* ---- byte-at-a-time delivery --------------------------------------------- */

UNIT_TEST(test_handshake_one_byte_at_a_time) {
    pair_t p;
    int rc, crc, src, dr = -1, dr2 = -1;

    CHECK_EQ(pair_new(&p, "ca.pem", 0, "localhost", "chain.pem", "server.key"), 0);
    rc = pump(p.cli, p.srv, 1, &crc, &src);
    if (rc != 0)
        fprintf(stderr, "  client %d \"%s\", server %d \"%s\"\n", crc, nw_tls_error(p.cli), src,
                nw_tls_error(p.srv));
    if (rc == 0) {
        /* records that straddle many feeds, in both directions */
        dr = xfer(p.cli, p.srv, 5000, 7, 1);
        dr2 = xfer(p.srv, p.cli, 3000, 8, 1);
    }
    pair_free(&p);
    CHECK_EQ(rc, 0);
    CHECK_EQ(dr, 0);
    CHECK_EQ(dr2, 0);
}

/* ---- misuse --------------------------------------------------------------- */

UNIT_TEST(test_write_before_handshake) {
    pair_t p;
    int w1, w2, rc, sent;
    char *out;
    size_t n;
    char e[NW_TLS_ERRLEN];

    CHECK_EQ(pair_new(&p, "ca.pem", 0, "localhost", "server.pem", "server.key"), 0);
    w1 = nw_tls_write(p.cli, "hello", 5);
    snprintf(e, sizeof(e), "%s", nw_tls_error(p.cli));
    /* a refused write sends nothing and does not spoil the session */
    out = nw_tls_take_out(p.cli, &n);
    sent = out != NULL;
    nw_free(out);
    w2 = nw_tls_write(p.srv, "hello", 5);
    rc = pump(p.cli, p.srv, SIZE_MAX, NULL, NULL);
    if (rc == 0)
        rc = xfer(p.cli, p.srv, 10, 9, 100);
    pair_free(&p);
    CHECK(w1 < 0);
    CHECK(w2 < 0);
    CHECK(e[0] != 0);
    CHECK(!sent);
    CHECK_EQ(n, 0);
    CHECK_EQ(rc, 0);
}

UNIT_MAIN(UNIT_CASE(test_handshake_and_data), UNIT_CASE(test_handshake_with_chain),
          UNIT_CASE(test_hostname_mismatch_client_name),
          UNIT_CASE(test_hostname_mismatch_server_cert), UNIT_CASE(test_ip_address_san),
          UNIT_CASE(test_untrusted_ca),
          UNIT_CASE(test_expired), UNIT_CASE(test_insecure_client_accepts_anything),
          UNIT_CASE(test_plain_http_to_server), UNIT_CASE(test_plain_http_answer_to_client),
          UNIT_CASE(test_conf_errors), UNIT_CASE(test_conf_client_system_bundle),
          UNIT_CASE(test_new_rejects_misuse), UNIT_CASE(test_close_notify),
          UNIT_CASE(test_close_notify_after_data_in_flight),
          UNIT_CASE(test_session_keeps_conf_alive), UNIT_CASE(test_garbage_record_after_handshake),
          UNIT_CASE(test_random_garbage_handshake), UNIT_CASE(test_handshake_one_byte_at_a_time),
          UNIT_CASE(test_write_before_handshake), UNIT_CASE(test_writev_full_records_and_slices))
