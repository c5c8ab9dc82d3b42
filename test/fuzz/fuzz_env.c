/* fuzz_env.c: libFuzzer target for the .env parser (nw_env_parse, src/core/env.c).
 *
 * The input is the file's text. It is not NUL-terminated (libFuzzer hands
 * over an exact-size heap copy), so a parser that relied on a terminator
 * would read into ASan's redzone. Checked on every KEY=VALUE the parser
 * reports:
 *   - key and value are NUL-terminated strings (strlen on them is what
 *     ASan watches), the key is non-empty and holds no '=', blank or line
 *     break (the parser splits at the first '=' and trims);
 *   - together they are no longer than the input: unescaping and trimming
 *     only ever shrink the text.
 * And on the call as a whole:
 *   - a non-zero callback return stops the parse at once and is returned
 *     as is (the callback returns one for the key STOP);
 *   - otherwise the result is 0 or NW_ECONFIG (NW_ENOMEM can't happen
 *     here); NW_ECONFIG comes with "line N: reason" in err, NUL-terminated
 *     within errlen, also when errlen is tiny;
 *   - at most one pair per line; nothing leaks (LeakSanitizer). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h" /* NW_CFG_ERRLEN */
#include "env.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "fuzz_env: check failed at line %d: %s\n", __LINE__, #c); \
            abort();                                                           \
        }                                                                      \
    } while (0)

#define STOP_RC 42 /* what the callback returns to stop the parse */

typedef struct {
    size_t size;  /* input length: a bound on every key + value */
    size_t calls; /* pairs reported */
    int stopped;  /* the callback asked to stop */
} env_ctx_t;

static int on_pair(const char *key, const char *val, void *ud) {
    env_ctx_t *c = ud;
    size_t kl, vl;

    CHECK(!c->stopped); /* no call after a non-zero return */
    kl = strlen(key);
    vl = strlen(val);
    CHECK(kl > 0);
    CHECK(strpbrk(key, "= \t\r\n") == NULL);
    CHECK(kl + vl <= c->size);
    c->calls++;
    if (kl == 4 && memcmp(key, "STOP", 4) == 0) {
        c->stopped = 1;
        return STOP_RC;
    }
    return 0;
}

/* One parse with an err buffer of exactly errlen bytes on the heap, so an
 * error message written past errlen lands in ASan's redzone. */
static int parse(const uint8_t *data, size_t size, size_t errlen, env_ctx_t *c) {
    char *err = malloc(errlen);
    int rc;

    if (!err)
        abort();
    memset(err, 'x', errlen);
    memset(c, 0, sizeof(*c));
    c->size = size;
    rc = nw_env_parse((const char *)data, size, on_pair, c, err, errlen);
    if (c->stopped) {
        CHECK(rc == STOP_RC);
    } else {
        CHECK(rc == 0 || rc == NW_ECONFIG);
        if (rc == NW_ECONFIG) {
            CHECK(memchr(err, 0, errlen) != NULL);
            CHECK(errlen < 6 ? err[errlen - 1] == 0 : strncmp(err, "line ", 5) == 0);
        }
    }
    free(err);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    env_ctx_t c1, c2;
    size_t lines = 1, i;
    int rc;

    for (i = 0; i < size; i++)
        lines += data[i] == '\n';
    rc = parse(data, size, NW_CFG_ERRLEN, &c1);
    CHECK(c1.calls <= lines);
    /* A failure again with a 4-byte err buffer: same result, same pairs
     * before it (the parser holds no state between calls), message cut. */
    if (rc == NW_ECONFIG) {
        CHECK(parse(data, size, 4, &c2) == rc);
        CHECK(c2.calls == c1.calls);
    }
    return 0;
}
