/* tls.c: mbedTLS sessions over memory buffers (see tls.h).
 *
 * Each session gets a pair of callbacks instead of a socket: recv drains an
 * input buffer that nw_tls_feed fills with ciphertext from the network (and
 * says MBEDTLS_ERR_SSL_WANT_READ when it is empty), send appends to an
 * output buffer that always accepts and that nw_tls_take_out hands over.
 * Nothing here blocks, touches a socket or knows about libuv.
 *
 * Throughput: on the wss tunnel nearly all of the CPU (70-77 % of serve's
 * and the agent's time in a 100 MiB transfer) is the AEAD itself, so what
 * this file can do is not waste records: nw_tls_writev fills 16 KiB records
 * across the caller's pieces and returns after a slice so the connection
 * can send it while the rest is encrypted, and the ciphersuite order puts
 * the cipher that is fastest with this library first.
 *
 * A configuration owns its certificates, key and a CTR-DRBG seeded once
 * from the system entropy source. It is reference-counted: every session
 * holds a reference, so a SIGHUP reload can drop the old server
 * configuration while sessions that started with it finish normally.
 * Neither configurations nor sessions are thread-safe; use them from the
 * loop thread that made them.
 *
 * Built against mbedTLS 2.28 (Debian 12). The few calls that changed in
 * 3.x are guarded by MBEDTLS_VERSION_NUMBER. Debian's 2.28 is built
 * without MBEDTLS_SSL_PROTO_TLS1_3_EXPERIMENTAL, and that experimental
 * code has no server side anyway, so here the maximum is TLS 1.2; with a
 * 3.x library built with TLS 1.3 the library default (1.3) applies. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <mbedtls/version.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "tls.h"

#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

/* An input buffer larger than this is released once it has been drained,
 * so idle sessions do not keep a burst-sized block. */
#define IN_KEEP_MAX (64 * 1024)

struct nw_tls_conf_s {
    int refs;
    int is_server;
    mbedtls_ssl_config ssl;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt chain; /* server: own chain, leaf first; client: CAs */
    mbedtls_pk_context key; /* server only */
};

struct nw_tls_s {
    nw_tls_conf_t *conf;
    mbedtls_ssl_context ssl;
    char *in; /* ciphertext fed, not yet consumed: in[in_off..in_len) */
    size_t in_off, in_len, in_cap;
    char *out; /* ciphertext produced, not yet taken */
    size_t out_len, out_cap;
    unsigned char rec_hdr[5]; /* record framing of what was fed: */
    size_t rec_hn, rec_left;  /* header bytes seen, body bytes to come */
    int first_byte; /* first byte ever fed, -1 before any */
    int done;       /* handshake complete */
    int fatal;      /* latched failure (negative), 0 while healthy */
    int closed;     /* peer's close_notify seen */
    int oom;        /* the send callback could not grow the buffer */
    unsigned char ip[16]; /* client to an IP literal: the address to match */
    size_t ip_len;        /* 4 or 16; 0 for a DNS name */
    char err[NW_TLS_ERRLEN];
};

static const char *alpn_list[] = {"http/1.1", NULL};

/* ---- error text ---------------------------------------------------------- */

static void fmt(char *buf, size_t len, const char *f, ...) {
    va_list ap;
    if (!buf || !len)
        return;
    va_start(ap, f);
    vsnprintf(buf, len, f, ap);
    va_end(ap);
}

/* "<mbedtls text> (-0xNNNN)" for an mbedTLS error code. */
static void mbed_text(int code, char *buf, size_t len) {
    size_t used;
    mbedtls_strerror(code, buf, len);
    used = strlen(buf);
    if (used < len)
        snprintf(buf + used, len - used, " (-0x%04x)", (unsigned)-code);
}

/* Short, stable words for the verification flags a user can act on; the
 * rest fall back to mbedTLS's own description. */
static void verify_text(uint32_t flags, char *buf, size_t len) {
    static const struct {
        uint32_t flag;
        const char *text;
    } words[] = {
        {MBEDTLS_X509_BADCERT_NOT_TRUSTED, "not trusted (unknown CA)"},
        {MBEDTLS_X509_BADCERT_EXPIRED, "expired"},
        {MBEDTLS_X509_BADCERT_FUTURE, "not yet valid"},
        {MBEDTLS_X509_BADCERT_CN_MISMATCH, "hostname mismatch"},
        {MBEDTLS_X509_BADCERT_REVOKED, "revoked"},
        {MBEDTLS_X509_BADCERT_MISSING, "no certificate"},
        {MBEDTLS_X509_BADCERT_BAD_MD, "signature hash not allowed"},
        {MBEDTLS_X509_BADCERT_BAD_PK, "key type not allowed"},
        {MBEDTLS_X509_BADCERT_BAD_KEY, "key too weak"},
        {MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE |
             MBEDTLS_X509_BADCERT_NS_CERT_TYPE,
         "not allowed for TLS server use (key usage)"},
    };
    const char *sep = "";
    size_t i, used;
    uint32_t rest = flags & ~(uint32_t)MBEDTLS_X509_BADCERT_SKIP_VERIFY;

    used = (size_t)snprintf(buf, len, "certificate verify failed: ");
    for (i = 0; i < NW_ARRAY_LEN(words) && used < len; i++) {
        if (!(rest & words[i].flag))
            continue;
        used += (size_t)snprintf(buf + used, len - used, "%s%s", sep, words[i].text);
        sep = ", ";
        rest &= ~words[i].flag;
    }
    if (rest && used < len) {
        /* Unusual flags: let mbedTLS describe them, first line only. */
        char info[200], *nl;
        if (mbedtls_x509_crt_verify_info(info, sizeof(info), "", rest) <= 0)
            snprintf(info, sizeof(info), "flags 0x%x", (unsigned)rest);
        if ((nl = strchr(info, '\n')))
            *nl = 0;
        snprintf(buf + used, len - used, "%s%s", sep, info);
    }
}

/* Latch a failure on the session and describe it. Returns the nw error. */
static int fail(nw_tls_t *t, int code) {
    int rc = NW_ETLS;

    if (t->oom || code == MBEDTLS_ERR_SSL_ALLOC_FAILED) {
        snprintf(t->err, sizeof(t->err), "out of memory");
        rc = NW_ENOMEM;
    } else if (code == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);
        if (flags == 0 || flags == (uint32_t)-1)
            snprintf(t->err, sizeof(t->err), "certificate verify failed");
        else
            verify_text(flags, t->err, sizeof(t->err));
    } else if (!t->done && t->first_byte >= 0 && t->first_byte != MBEDTLS_SSL_MSG_HANDSHAKE &&
               t->first_byte != MBEDTLS_SSL_MSG_ALERT) {
        /* The very first byte from the peer was not a TLS record type: it
         * is speaking plain HTTP (or something else) to a TLS port, or
         * answered our ClientHello in plain text. */
        snprintf(t->err, sizeof(t->err), "peer does not speak TLS");
        rc = NW_EPROTO;
    } else {
        mbed_text(code, t->err, sizeof(t->err));
    }
    t->fatal = rc;
    return rc;
}

/* ---- memory BIO ---------------------------------------------------------- */

static int bio_send(void *ctx, const unsigned char *p, size_t n) {
    nw_tls_t *t = ctx;
    if (n > (size_t)INT32_MAX)
        n = (size_t)INT32_MAX;
    if (t->out_cap - t->out_len < n) {
        size_t cap = t->out_cap ? t->out_cap : 4096;
        char *q;
        while (cap - t->out_len < n)
            cap *= 2;
        q = nw_realloc(t->out, cap);
        if (!q) {
            t->oom = 1;
            return MBEDTLS_ERR_SSL_ALLOC_FAILED;
        }
        t->out = q;
        t->out_cap = cap;
    }
    memcpy(t->out + t->out_len, p, n);
    t->out_len += n;
    return (int)n;
}

static int bio_recv(void *ctx, unsigned char *p, size_t n) {
    nw_tls_t *t = ctx;
    size_t avail = t->in_len - t->in_off;
    if (avail == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > avail)
        n = avail;
    if (n > (size_t)INT32_MAX)
        n = (size_t)INT32_MAX;
    memcpy(p, t->in + t->in_off, n);
    t->in_off += n;
    if (t->in_off == t->in_len) {
        t->in_off = t->in_len = 0;
        if (t->in_cap > IN_KEEP_MAX) {
            nw_free(t->in);
            t->in = NULL;
            t->in_cap = 0;
        }
    }
    return (int)n;
}

/* ---- configurations ------------------------------------------------------ */

/* A suite serve offers: ephemeral key exchange (forward secrecy) and an
 * AEAD cipher, as Mozilla's "intermediate" profile and TLS scanners ask:
 * no static RSA, no CBC, no PSK, CAMELLIA or ARIA. Every browser and TLS
 * library of the last ten years has one of these. (A client keeps the
 * library's whole list: a local service may be old.) */
static int server_suite(const char *name) {
    static const char *const kx[] = {"TLS-ECDHE-ECDSA-WITH-", "TLS-ECDHE-RSA-WITH-",
                                      "TLS-DHE-RSA-WITH-"};
    static const char *const ciph[] = {"AES-128-GCM-", "AES-256-GCM-", "CHACHA20-POLY1305-"};
    size_t i, j, k;
    for (i = 0; i < NW_ARRAY_LEN(kx); i++) {
        k = strlen(kx[i]);
        if (strncmp(name, kx[i], k) != 0)
            continue;
        for (j = 0; j < NW_ARRAY_LEN(ciph); j++)
            if (strncmp(name + k, ciph[j], strlen(ciph[j])) == 0)
                return 1;
    }
    return 0;
}

/* The library's ciphersuites (for a server, those server_suite takes) with
 * the ChaCha20-Poly1305 ones moved to the front (the rest keep their
 * order). Here mbedTLS 2.28 seals and opens ChaCha20-Poly1305 records
 * faster than AES-GCM even with AES-NI (its GCM multiplies one 16-byte
 * block per call): scripts/bench/cipher.c measures both, and the tunnel's
 * MB/s is bound by the cipher on both ends. The server picks by its own
 * order, so this decides for every client that offers ChaCha20 too. Built
 * once per side; every configuration points at it. */
static const int *suite_order(int server) {
    static int lists[2][512];
    static int built[2];
    int *list = lists[server];
    const int *lib = mbedtls_ssl_list_ciphersuites();
    size_t n = 0, i, pass;

    if (built[server])
        return built[server] > 0 ? list : NULL;
    for (i = 0; lib[i]; i++)
        ;
    if (i >= NW_ARRAY_LEN(lists[0])) {
        built[server] = -1; /* an unexpectedly long list: keep the library's */
        return NULL;
    }
    for (pass = 0; pass < 2; pass++)
        for (i = 0; lib[i]; i++) {
            const char *name = mbedtls_ssl_get_ciphersuite_name(lib[i]);
            int chacha = name && strstr(name, "CHACHA20") != NULL;
            if (chacha == (pass == 0) && (!server || (name && server_suite(name))))
                list[n++] = lib[i];
        }
    list[n] = 0;
    /* None at all (a library built without them) would refuse every
     * client: keep the library's list then. */
    built[server] = n ? 1 : -1;
    return n ? list : NULL;
}

static nw_tls_conf_t *conf_new(int endpoint, char *err, size_t errlen) {
    static const char pers[] = "natwrp-tls";
    nw_tls_conf_t *c = nw_calloc(1, sizeof(*c));
    int rc;

    if (!c) {
        fmt(err, errlen, "out of memory");
        return NULL;
    }
    c->refs = 1;
    c->is_server = endpoint == MBEDTLS_SSL_IS_SERVER;
    mbedtls_ssl_config_init(&c->ssl);
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    mbedtls_x509_crt_init(&c->chain);
    mbedtls_pk_init(&c->key);

    rc = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
                               (const unsigned char *)pers, sizeof(pers) - 1);
    if (rc == 0)
        rc = mbedtls_ssl_config_defaults(&c->ssl, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc == 0)
        rc = mbedtls_ssl_conf_alpn_protocols(&c->ssl, alpn_list);
    if (rc != 0) {
        char m[160];
        mbed_text(rc, m, sizeof(m));
        fmt(err, errlen, "TLS setup failed: %s", m);
        nw_tls_conf_unref(c);
        return NULL;
    }
    mbedtls_ssl_conf_rng(&c->ssl, mbedtls_ctr_drbg_random, &c->drbg);
    if (suite_order(c->is_server))
        mbedtls_ssl_conf_ciphersuites(&c->ssl, suite_order(c->is_server));
#if MBEDTLS_VERSION_NUMBER >= 0x03020000
    mbedtls_ssl_conf_min_tls_version(&c->ssl, MBEDTLS_SSL_VERSION_TLS1_2);
#else
    mbedtls_ssl_conf_min_version(&c->ssl, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(&c->ssl, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
#endif
#if defined(MBEDTLS_SSL_RENEGOTIATION)
    mbedtls_ssl_conf_renegotiation(&c->ssl, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
#endif
    return c;
}

/* Explain why path cannot be opened, if it cannot. 0 when readable. */
static int check_readable(const char *what, const char *path, char *err, size_t errlen) {
    if (!path || !*path) {
        fmt(err, errlen, "%s: no file given", what);
        return -1;
    }
    if (access(path, R_OK) != 0) {
        fmt(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Parse a PEM/DER certificate file into chain. allow_partial accepts a
 * bundle where some entries are unsupported, as long as one parsed. */
static int load_certs(mbedtls_x509_crt *chain, const char *what, const char *path,
                      int allow_partial, char *err, size_t errlen) {
    int rc;
    if (check_readable(what, path, err, errlen) != 0)
        return -1;
    rc = mbedtls_x509_crt_parse_file(chain, path);
    if (rc < 0 || (rc > 0 && !allow_partial) || chain->version == 0) {
        char m[160];
        if (rc < 0)
            mbed_text(rc, m, sizeof(m));
        else if (rc > 0)
            snprintf(m, sizeof(m), "%d certificate(s) could not be parsed", rc);
        else
            snprintf(m, sizeof(m), "no certificate found");
        fmt(err, errlen, "%s %s: not a valid PEM certificate file: %s", what, path, m);
        return -1;
    }
    return 0;
}

nw_tls_conf_t *nw_tls_conf_server(const char *cert_file, const char *key_file, char *err,
                                  size_t errlen) {
    nw_tls_conf_t *c;
    int rc;

    fmt(err, errlen, "%s", "");
    if (!(c = conf_new(MBEDTLS_SSL_IS_SERVER, err, errlen)))
        return NULL;
    if (load_certs(&c->chain, "certificate file", cert_file, 0, err, errlen) != 0)
        goto fail;
    if (check_readable("key file", key_file, err, errlen) != 0)
        goto fail;
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    rc = mbedtls_pk_parse_keyfile(&c->key, key_file, NULL, mbedtls_ctr_drbg_random, &c->drbg);
#else
    rc = mbedtls_pk_parse_keyfile(&c->key, key_file, NULL);
#endif
    if (rc != 0) {
        char m[160];
        if (rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED)
            snprintf(m, sizeof(m), "the key is encrypted (passphrases are not supported)");
        else
            mbed_text(rc, m, sizeof(m));
        fmt(err, errlen, "key file %s: not a valid PEM private key: %s", key_file, m);
        goto fail;
    }
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    rc = mbedtls_pk_check_pair(&c->chain.pk, &c->key, mbedtls_ctr_drbg_random, &c->drbg);
#else
    rc = mbedtls_pk_check_pair(&c->chain.pk, &c->key);
#endif
    if (rc != 0) {
        fmt(err, errlen, "key file %s does not match the certificate in %s", key_file, cert_file);
        goto fail;
    }
    rc = mbedtls_ssl_conf_own_cert(&c->ssl, &c->chain, &c->key);
    if (rc != 0) {
        char m[160];
        mbed_text(rc, m, sizeof(m));
        fmt(err, errlen, "certificate %s: %s", cert_file, m);
        goto fail;
    }
    mbedtls_ssl_conf_authmode(&c->ssl, MBEDTLS_SSL_VERIFY_NONE);
    return c;

fail:
    nw_tls_conf_unref(c);
    return NULL;
}

nw_tls_conf_t *nw_tls_conf_client(const char *ca_file, int insecure, char *err, size_t errlen) {
    nw_tls_conf_t *c;

    fmt(err, errlen, "%s", "");
    if (!(c = conf_new(MBEDTLS_SSL_IS_CLIENT, err, errlen)))
        return NULL;
    if (insecure) {
        mbedtls_ssl_conf_authmode(&c->ssl, MBEDTLS_SSL_VERIFY_NONE);
        return c;
    }
    if (ca_file) {
        if (load_certs(&c->chain, "CA file", ca_file, 0, err, errlen) != 0)
            goto fail;
    } else if (load_certs(&c->chain, "system CA bundle", SYSTEM_CA_BUNDLE, 1, err, errlen) != 0) {
        goto fail;
    }
    mbedtls_ssl_conf_ca_chain(&c->ssl, &c->chain, NULL);
    mbedtls_ssl_conf_authmode(&c->ssl, MBEDTLS_SSL_VERIFY_REQUIRED);
    return c;

fail:
    nw_tls_conf_unref(c);
    return NULL;
}

nw_tls_conf_t *nw_tls_conf_ref(nw_tls_conf_t *c) {
    if (c)
        c->refs++;
    return c;
}

void nw_tls_conf_unref(nw_tls_conf_t *c) {
    if (!c || --c->refs > 0)
        return;
    mbedtls_ssl_config_free(&c->ssl);
    mbedtls_x509_crt_free(&c->chain);
    mbedtls_pk_free(&c->key);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    nw_free(c);
}

/* ---- sessions ------------------------------------------------------------ */

/* mbedTLS 2.28 matches only DNS names, but keeps a certificate's iPAddress
 * SAN entries (tag [7], 4 or 16 raw bytes) in subject_alt_names: for a
 * peer addressed by IP, the leaf must list exactly that address there. */
static int verify_ip(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags) {
    nw_tls_t *t = ctx;
    const mbedtls_x509_sequence *san;

    if (depth != 0)
        return 0;
    for (san = &crt->subject_alt_names; san && san->buf.p; san = san->next)
        if (san->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && san->buf.len == t->ip_len &&
            memcmp(san->buf.p, t->ip, t->ip_len) == 0)
            return 0;
    *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
    return 0;
}

nw_tls_t *nw_tls_new(nw_tls_conf_t *conf, const char *host) {
    nw_tls_t *t;

    if (!conf || (host && conf->is_server))
        return NULL;
    if (!(t = nw_calloc(1, sizeof(*t))))
        return NULL;
    t->first_byte = -1;
    mbedtls_ssl_init(&t->ssl);
    if (mbedtls_ssl_setup(&t->ssl, &conf->ssl) != 0)
        goto fail;
    if (host && inet_pton(AF_INET, host, t->ip) == 1)
        t->ip_len = 4;
    else if (host && inet_pton(AF_INET6, host, t->ip) == 1)
        t->ip_len = 16;
    if (t->ip_len) {
        /* No SNI for an address (RFC 6066 3) and no name check by the
         * library; verify_ip matches the iPAddress SAN instead. */
        mbedtls_ssl_set_verify(&t->ssl, verify_ip, t);
    } else if (!conf->is_server && mbedtls_ssl_set_hostname(&t->ssl, host) != 0) {
        /* A DNS name: both SNI and the name the certificate must carry. */
        goto fail;
    }
    mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
    t->conf = nw_tls_conf_ref(conf);
    return t;

fail:
    mbedtls_ssl_free(&t->ssl);
    nw_free(t);
    return NULL;
}

void nw_tls_free(nw_tls_t *t) {
    if (!t)
        return;
    mbedtls_ssl_free(&t->ssl);
    nw_tls_conf_unref(t->conf);
    nw_free(t->in);
    nw_free(t->out);
    nw_free(t);
}

/* Follow the record framing (5-byte header with the body's length) of
 * the ciphertext fed, so nw_tls_input_pending knows when a record is cut. */
static void rec_track(nw_tls_t *t, const unsigned char *p, size_t n) {
    while (n) {
        if (t->rec_left) {
            size_t k = n < t->rec_left ? n : t->rec_left;
            t->rec_left -= k;
            p += k, n -= k;
            continue;
        }
        t->rec_hdr[t->rec_hn++] = *p++;
        n--;
        if (t->rec_hn == sizeof(t->rec_hdr)) {
            t->rec_left = ((size_t)t->rec_hdr[3] << 8) | t->rec_hdr[4];
            t->rec_hn = 0;
        }
    }
}

int nw_tls_input_pending(const nw_tls_t *t) {
    return t->rec_hn || t->rec_left || t->in_len > t->in_off ||
           mbedtls_ssl_get_bytes_avail(&t->ssl) || mbedtls_ssl_check_pending(&t->ssl);
}

int nw_tls_feed(nw_tls_t *t, const void *p, size_t n) {
    size_t live;
    if (n == 0)
        return 0;
    rec_track(t, p, n);
    if (t->first_byte < 0)
        t->first_byte = *(const unsigned char *)p;
    live = t->in_len - t->in_off;
    if (t->in_off && t->in_cap - t->in_len < n) {
        memmove(t->in, t->in + t->in_off, live);
        t->in_off = 0;
        t->in_len = live;
    }
    if (t->in_cap - t->in_len < n) {
        size_t cap = t->in_cap ? t->in_cap : 4096;
        char *q;
        while (cap - t->in_len < n) {
            if (cap > SIZE_MAX / 2)
                return NW_ENOMEM;
            cap *= 2;
        }
        if (!(q = nw_realloc(t->in, cap)))
            return NW_ENOMEM;
        t->in = q;
        t->in_cap = cap;
    }
    memcpy(t->in + t->in_len, p, n);
    t->in_len += n;
    return 0;
}

int nw_tls_handshake(nw_tls_t *t) {
    int rc;
    if (t->fatal)
        return t->fatal;
    if (t->done)
        return 0;
    for (;;) {
        rc = mbedtls_ssl_handshake(&t->ssl);
        if (rc == 0) {
            t->done = 1;
            return 0;
        }
        if (rc == MBEDTLS_ERR_SSL_WANT_READ)
            return 1;
        /* WANT_WRITE cannot happen: bio_send always accepts. */
#if defined(MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
        if (rc == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
            continue;
#endif
        return fail(t, rc);
    }
}

int nw_tls_handshake_done(const nw_tls_t *t) { return t->done; }

ssize_t nw_tls_read(nw_tls_t *t, void *buf, size_t cap) {
    int rc;
    if (t->fatal)
        return t->fatal;
    if (t->closed)
        return NW_ECLOSED;
    if (!t->done) {
        rc = nw_tls_handshake(t);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    if (cap == 0)
        return 0;
    if (cap > (size_t)INT32_MAX)
        cap = (size_t)INT32_MAX;
    for (;;) {
        size_t before = t->in_len - t->in_off;
        rc = mbedtls_ssl_read(&t->ssl, buf, cap);
        if (rc > 0)
            return rc;
        if (rc == MBEDTLS_ERR_SSL_WANT_READ)
            return 0;
        if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
            t->closed = 1;
            snprintf(t->err, sizeof(t->err), "peer sent close_notify");
            return NW_ECLOSED;
        }
#if defined(MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
        if (rc == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
            continue;
#endif
        if (rc == 0) {
            /* An empty record: keep going while input is being consumed. */
            if (t->in_len - t->in_off < before || mbedtls_ssl_get_bytes_avail(&t->ssl))
                continue;
            return 0;
        }
        return fail(t, rc);
    }
}

size_t nw_tls_pending(const nw_tls_t *t) {
    if (t->fatal || t->closed)
        return 0;
    return mbedtls_ssl_get_bytes_avail(&t->ssl);
}

/* Plaintext per record: mbedTLS makes one record of at most this per call
 * (the TLS maximum; MBEDTLS_SSL_OUT_CONTENT_LEN is this by default). */
#define REC_MAX 16384
/* Room for a record's header, explicit nonce and tag, with margin. */
#define REC_OVERHEAD 64

/* Pieces shorter than a record are gathered here first, so a head and the
 * start of a body travel in one record instead of one record each. Only
 * used within one nw_tls_writev call, on the loop thread. */
static _Thread_local unsigned char gather[REC_MAX];

/* Grow the output buffer once for what the next records will add, instead
 * of doubling from 4 KiB record by record (each step a copy). */
static int out_reserve(nw_tls_t *t, size_t n) {
    char *q;
    if (t->out_cap - t->out_len >= n)
        return 0;
    if (n > SIZE_MAX / 2 - t->out_len)
        return NW_ENOMEM;
    if (!(q = nw_realloc(t->out, t->out_len + n)))
        return NW_ENOMEM;
    t->out = q;
    t->out_cap = t->out_len + n;
    return 0;
}

/* One record of n <= REC_MAX bytes. 0 or the latched failure. */
static int write_record(nw_tls_t *t, const unsigned char *p, size_t n) {
    while (n > 0) {
        int rc = mbedtls_ssl_write(&t->ssl, p, n);
        if (rc <= 0)
            return fail(t, rc);
        p += rc;
        n -= (size_t)rc;
    }
    return 0;
}

ssize_t nw_tls_writev(nw_tls_t *t, const struct iovec *iov, size_t n, size_t skip, size_t max) {
    size_t i = 0, off = skip, done = 0, left = 0, k;
    int rc;

    if (t->fatal)
        return t->fatal;
    if (!t->done) {
        snprintf(t->err, sizeof(t->err), "write before the handshake completed");
        return NW_EINVAL;
    }
    while (i < n && off >= iov[i].iov_len)
        off -= iov[i++].iov_len;
    for (k = i; k < n; k++)
        left += iov[k].iov_len;
    left -= off;
    /* The slice, the record it may run into past max, and the framing. */
    k = NW_MIN(left, NW_MAX(max, (size_t)1));
    k += (k < left ? REC_MAX : 0) + (k / REC_MAX + 2) * REC_OVERHEAD;
    if (out_reserve(t, k) != 0) {
        t->oom = 1;
        return fail(t, MBEDTLS_ERR_SSL_ALLOC_FAILED);
    }
    while (i < n && (done == 0 || done < max)) {
        const unsigned char *src = (const unsigned char *)iov[i].iov_base + off;
        size_t avail = iov[i].iov_len - off;
        if (avail >= REC_MAX || i + 1 == n) {
            /* A full record (or the very end) straight from the caller. */
            k = NW_MIN(avail, (size_t)REC_MAX);
            if ((rc = write_record(t, src, k)) != 0)
                return rc;
            done += k;
            off += k;
            if (off == iov[i].iov_len)
                i++, off = 0;
            continue;
        }
        for (k = 0; i < n && k < REC_MAX;) {
            size_t m = NW_MIN(iov[i].iov_len - off, (size_t)REC_MAX - k);
            if (m)
                memcpy(gather + k, (const char *)iov[i].iov_base + off, m);
            k += m;
            off += m;
            if (off == iov[i].iov_len)
                i++, off = 0;
        }
        if ((rc = write_record(t, gather, k)) != 0)
            return rc;
        done += k;
    }
    return (ssize_t)done;
}

int nw_tls_write(nw_tls_t *t, const void *p, size_t n) {
    struct iovec v;
    size_t done = 0;
    v.iov_base = (void *)p;
    v.iov_len = n;
    while (done < n) {
        ssize_t k = nw_tls_writev(t, &v, 1, done, SIZE_MAX);
        if (k < 0)
            return (int)k;
        done += (size_t)k;
    }
    return t->fatal;
}

void nw_tls_close_notify(nw_tls_t *t) {
    if (t->fatal || !t->done)
        return;
    (void)mbedtls_ssl_close_notify(&t->ssl);
}

char *nw_tls_take_out(nw_tls_t *t, size_t *len) {
    char *p = t->out;
    *len = t->out_len;
    if (!p || !t->out_len) {
        *len = 0;
        return NULL;
    }
    t->out = NULL;
    t->out_len = t->out_cap = 0;
    return p;
}

const char *nw_tls_error(const nw_tls_t *t) { return t->err; }

const char *nw_tls_version(const nw_tls_t *t) { return mbedtls_ssl_get_version(&t->ssl); }

const char *nw_tls_suite(const nw_tls_t *t) {
    const char *s = mbedtls_ssl_get_ciphersuite(&t->ssl);
    return s ? s : "";
}
