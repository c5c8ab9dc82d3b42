/* unit.h: a tiny unit-test runner. Each test file defines tests with
 * UNIT_TEST(name) { ... } and lists them in UNIT_MAIN(t1, t2, ...).
 * A failed CHECK records the failure and returns from the test. The run
 * ends with "N passed, N failed" and exits non-zero on any failure. */
#ifndef NW_UNIT_H
#define NW_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unit_failed_now;

#define UNIT_TEST(name) static void name(void)

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, \
                    #cond);                                                   \
            unit_failed_now = 1;                                              \
            return;                                                           \
        }                                                                     \
    } while (0)

#define CHECK_EQ(a, b)                                                          \
    do {                                                                        \
        long long a_ = (long long)(a), b_ = (long long)(b);                     \
        if (a_ != b_) {                                                         \
            fprintf(stderr, "  %s:%d: CHECK_EQ(%s, %s) failed: %lld != %lld\n", \
                    __FILE__, __LINE__, #a, #b, a_, b_);                        \
            unit_failed_now = 1;                                                \
            return;                                                             \
        }                                                                       \
    } while (0)

#define CHECK_STR(a, b)                                                          \
    do {                                                                         \
        const char *a_ = (a), *b_ = (b);                                         \
        if (strcmp(a_, b_) != 0) {                                               \
            fprintf(stderr, "  %s:%d: CHECK_STR(%s, %s) failed: \"%s\" != \"%s\"\n", \
                    __FILE__, __LINE__, #a, #b, a_, b_);                         \
            unit_failed_now = 1;                                                 \
            return;                                                              \
        }                                                                        \
    } while (0)

typedef struct {
    const char *name;
    void (*fn)(void);
} unit_case_t;

static int unit_run(const char *file, const unit_case_t *cases, size_t n) {
    size_t pass = 0, fail = 0, i;
    for (i = 0; i < n; i++) {
        unit_failed_now = 0;
        cases[i].fn();
        if (unit_failed_now) {
            fail++;
            fprintf(stderr, "FAIL %s: %s\n", file, cases[i].name);
        } else {
            pass++;
            printf("ok   %s: %s\n", file, cases[i].name);
        }
    }
    printf("%zu passed, %zu failed\n", pass, fail);
    return fail ? 1 : 0;
}

#define UNIT_CASE(fn) {#fn, fn}
#define UNIT_MAIN(...)                                                        \
    int main(void) {                                                          \
        static const unit_case_t cases[] = {__VA_ARGS__};                     \
        return unit_run(__FILE__, cases, sizeof(cases) / sizeof(cases[0]));   \
    }

#endif
