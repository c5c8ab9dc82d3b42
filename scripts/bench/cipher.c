/* scripts/bench/cipher.c: single-core AEAD throughput of the mbedTLS the
 * tunnel links against, over TLS-sized records, so the wss tunnel's MB/s
 * can be read beside what its cipher allows on this CPU in the same run.
 *
 * For each suite cipher (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305) it
 * seals (encrypt + tag) and then opens (decrypt + verify) RECORD-byte
 * records with a 13-byte additional data and a fresh nonce per record, as a
 * TLS 1.2 record does, through the generic mbedtls_cipher AEAD calls the
 * TLS layer itself uses. Each direction is bounded twice: at most MIB MiB
 * and at most SECS seconds of CPU time, whichever comes first.
 *
 * Output, one line per measurement (bench.sh records them):
 *   cipher <name> seal|open <MB/s> <bytes> <seconds>
 * plus a line "aesni <0|1>": whether mbedTLS has AES-NI code and this CPU
 * has the instructions.
 *
 * Build: cc -O2 -o cipher scripts/bench/cipher.c -lmbedcrypto
 * Usage: cipher [RECORD [MIB [SECS]]]   (defaults 16384, 512, 2) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/version.h>
#if MBEDTLS_VERSION_NUMBER < 0x03000000
#include <mbedtls/config.h>
#endif
#include <mbedtls/cipher.h>
#if defined(MBEDTLS_AESNI_C)
#include <mbedtls/aesni.h>
#endif

#define TAG_LEN 16

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One direction: seal (encrypt) or open (decrypt + verify) records until
 * the byte or time bound is reached. Returns 0, or -1 on a library error
 * (reported on stderr). */
static int run(const char *name, mbedtls_cipher_type_t type, int seal, size_t rec,
               size_t max_bytes, double max_secs) {
    const mbedtls_cipher_info_t *info = mbedtls_cipher_info_from_type(type);
    mbedtls_cipher_context_t ctx;
    unsigned char key[32], iv[12], aad[13];
    unsigned char *pt = malloc(rec), *ct = malloc(rec + TAG_LEN), *out = malloc(rec + TAG_LEN);
    size_t done = 0, olen = 0, ctlen = 0;
    unsigned long long seq = 0;
    double t0, t1;
    int rc = -1;

    if (!info || !pt || !ct || !out) {
        fprintf(stderr, "cipher: %s: not available in this mbedTLS\n", name);
        goto out;
    }
    memset(key, 0x42, sizeof(key));
    memset(iv, 0x24, sizeof(iv));
    memset(aad, 0x17, sizeof(aad));
    memset(pt, 0x5a, rec);
    mbedtls_cipher_init(&ctx);
    if (mbedtls_cipher_setup(&ctx, info) != 0 ||
        mbedtls_cipher_setkey(&ctx, key, (int)info->key_bitlen, seal ? MBEDTLS_ENCRYPT
                                                                      : MBEDTLS_DECRYPT) != 0)
        goto fail;
    if (!seal) {
        /* One valid record to open over and over (the tag must verify). */
        mbedtls_cipher_context_t enc;
        int e;
        mbedtls_cipher_init(&enc);
        e = mbedtls_cipher_setup(&enc, info) != 0 ||
            mbedtls_cipher_setkey(&enc, key, (int)info->key_bitlen, MBEDTLS_ENCRYPT) != 0 ||
            mbedtls_cipher_auth_encrypt_ext(&enc, iv, sizeof(iv), aad, sizeof(aad), pt, rec, ct,
                                            rec + TAG_LEN, &ctlen, TAG_LEN) != 0;
        mbedtls_cipher_free(&enc);
        if (e)
            goto fail;
    }
    t0 = cpu_now();
    t1 = t0;
    while (done < max_bytes && t1 - t0 < max_secs) {
        int i;
        for (i = 0; i < 16; i++) {
            int e;
            if (seal) {
                /* A fresh nonce per record, as the TLS layer derives one. */
                memcpy(iv + 4, &seq, sizeof(seq));
                seq++;
                e = mbedtls_cipher_auth_encrypt_ext(&ctx, iv, sizeof(iv), aad, sizeof(aad), pt,
                                                    rec, out, rec + TAG_LEN, &olen, TAG_LEN);
            } else {
                e = mbedtls_cipher_auth_decrypt_ext(&ctx, iv, sizeof(iv), aad, sizeof(aad), ct,
                                                    ctlen, out, rec, &olen, TAG_LEN);
            }
            if (e != 0 || olen != (seal ? rec + TAG_LEN : rec))
                goto fail;
            done += rec;
        }
        t1 = cpu_now();
    }
    printf("cipher %s %s %.1f %zu %.3f\n", name, seal ? "seal" : "open",
           t1 > t0 ? (double)done / (t1 - t0) / 1e6 : 0.0, done, t1 - t0);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "cipher: %s %s failed\n", name, seal ? "seal" : "open");
done:
    mbedtls_cipher_free(&ctx);
out:
    free(pt);
    free(ct);
    free(out);
    return rc;
}

int main(int argc, char **argv) {
    static const struct {
        const char *name;
        mbedtls_cipher_type_t type;
    } suites[] = {
        {"AES-128-GCM", MBEDTLS_CIPHER_AES_128_GCM},
        {"AES-256-GCM", MBEDTLS_CIPHER_AES_256_GCM},
        {"CHACHA20-POLY1305", MBEDTLS_CIPHER_CHACHA20_POLY1305},
    };
    size_t rec = argc > 1 ? strtoul(argv[1], NULL, 10) : 16384;
    size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 512;
    double secs = argc > 3 ? strtod(argv[3], NULL) : 2.0;
    size_t i;
    int rc = 0, aesni = 0;

    if (rec < 1 || rec > 16384 || mib < 1 || mib > 65536 || !(secs > 0 && secs <= 60)) {
        fprintf(stderr, "usage: cipher [RECORD 1..16384 [MIB 1..65536 [SECS 0..60]]]\n");
        return 2;
    }
#if defined(MBEDTLS_AESNI_C) && MBEDTLS_VERSION_NUMBER < 0x03000000
    aesni = mbedtls_aesni_has_support(MBEDTLS_AESNI_AES) &&
            mbedtls_aesni_has_support(MBEDTLS_AESNI_CLMUL);
#endif
    printf("aesni %d\n", aesni);
    printf("mbedtls %s\n", MBEDTLS_VERSION_STRING);
    for (i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
        if (run(suites[i].name, suites[i].type, 1, rec, mib << 20, secs) != 0)
            rc = 1;
        if (run(suites[i].name, suites[i].type, 0, rec, mib << 20, secs) != 0)
            rc = 1;
    }
    return rc;
}
