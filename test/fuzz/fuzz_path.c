/* fuzz_path.c: libFuzzer target for request-path normalisation
 * (nw_path_normalize, src/net/path.c), what access rules and the base-path
 * check read.
 *
 * The input is a request target, in an exact-size heap copy (no NUL), so
 * a read past its end lands in ASan's redzone. Each input is normalised
 * with and without NW_PATH_KEEP_DOTS into a buffer of exactly len + 2
 * bytes, the documented minimum. Checked:
 *   - the result is OK, CLIMBS or EINVAL; never ENOSPC at that size;
 *   - on success the output is NUL-terminated at *out_len, starts with
 *     '/', holds no "//", no '\' and no NUL or control byte that the
 *     input did not have (decoding is one pass, as a service's: "%%32f"
 *     becomes "%2f", which is not decoded again);
 *   - without KEEP_DOTS no segment is "." or "..": a rule that matches
 *     the normalised path sees where the service ends up;
 *   - with KEEP_DOTS the result climbs only if the resolved one does;
 *   - nw_path_len never exceeds the input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "path.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                \
    do {                                                                        \
        if (!(c)) {                                                             \
            fprintf(stderr, "fuzz_path: check failed at line %d: %s\n", __LINE__, #c); \
            abort();                                                            \
        }                                                                       \
    } while (0)

static int has_byte(const uint8_t *p, size_t n, uint8_t b) { return memchr(p, b, n) != NULL; }

static void check_out(const uint8_t *in, size_t len, const char *out, size_t olen, int flags) {
    size_t i, seg = 1;
    CHECK(olen <= len + 1);
    CHECK(out[olen] == 0);
    CHECK(olen >= 1 && out[0] == '/');
    for (i = 0; i < olen; i++) {
        unsigned char c = (unsigned char)out[i];
        CHECK(c != '\\');
        CHECK(!(c == '/' && i + 1 < olen && out[i + 1] == '/'));
        if (c < 0x20 || c == 0x7f)
            CHECK(has_byte(in, len, c)); /* never made by decoding */
        if (c == '/' || i + 1 == olen) {
            /* The segment [seg, end) just ended. */
            size_t end = c == '/' ? i : i + 1, n = end - seg;
            if (!(flags & NW_PATH_KEEP_DOTS) && end >= seg)
                CHECK(!(n == 1 && out[seg] == '.') && !(n == 2 && out[seg] == '.' && out[seg + 1] == '.'));
            seg = i + 1;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *in = malloc(size ? size : 1), *out = malloc(size + 2);
    size_t olen = 0, olen2 = 0;
    int rc, rc2;
    if (!in || !out)
        abort();
    memcpy(in, data, size);
    CHECK(nw_path_len(in, size) <= size);
    rc = nw_path_normalize(in, size, 0, out, size + 2, &olen);
    CHECK(rc == NW_PATH_OK || rc == NW_PATH_CLIMBS || rc == NW_PATH_EINVAL);
    if (rc >= 0)
        check_out(data, size, out, olen, 0);
    rc2 = nw_path_normalize(in, size, NW_PATH_KEEP_DOTS, out, size + 2, &olen2);
    CHECK(rc2 == NW_PATH_OK || rc2 == NW_PATH_CLIMBS || rc2 == NW_PATH_EINVAL);
    CHECK((rc2 == NW_PATH_EINVAL) == (rc == NW_PATH_EINVAL));
    if (rc2 >= 0) {
        check_out(data, size, out, olen2, NW_PATH_KEEP_DOTS);
        CHECK(rc2 != NW_PATH_CLIMBS || rc == NW_PATH_CLIMBS);
    }
    free(in);
    free(out);
    return 0;
}
